"""The algorithms, the models and the functional inner loop import with torch (and transformers) alone."""

import subprocess
import sys

import pytest

BLOCKED = "import sys; sys.modules['datasets'] = None; sys.modules['PIL'] = None; sys.modules['pyarrow'] = None\n"


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKED + code], capture_output=True, text=True, timeout=300)


def test_algorithms_models_and_functional_import_without_datasets_or_pil():
    out = run(
        "import hf_transfer_meta.meta.algorithms, hf_transfer_meta.meta.models, hf_transfer_meta.meta.functional\n"
        "import hf_transfer_meta.meta.evaluation\n"
        "from hf_transfer_meta.meta import MAML, Conv4, SinusoidMLP, SinusoidTasks, build_algorithm, mean_ci95\n"
        "print(sorted(hf_transfer_meta.meta.ALGORITHMS))\n"
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "'maml'" in out.stdout


def test_the_data_modules_say_what_they_need():
    out = run("from hf_transfer_meta.meta import EpisodeDataset\n")
    assert out.returncode != 0 and "datasets" in out.stderr


def test_importing_meta_registers_conv4_with_the_auto_classes(tmp_path):
    from hf_transfer_meta.meta import Conv4Config, Conv4ForImageClassification

    Conv4ForImageClassification(Conv4Config(num_labels=3, hidden_size=4, image_size=16)).save_pretrained(tmp_path)
    out = subprocess.run(
        [sys.executable, "-c", "import hf_transfer_meta.meta\nfrom transformers import AutoModelForImageClassification\n"
         f"print(type(AutoModelForImageClassification.from_pretrained({str(tmp_path)!r})).__name__)"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("Conv4ForImageClassification")


def test_unknown_names_raise_attribute_error():
    import hf_transfer_meta.meta as meta

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        meta.Nope  # noqa: B018
    assert {"MetaTrainer", "EpisodeDataset", "build_algorithm"} <= set(dir(meta))
