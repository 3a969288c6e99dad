"""The module paths and names of release 0.1 still import, each with a FutureWarning that names the new place."""

import importlib
import subprocess
import sys
import warnings

import pytest

from hf_transfer_meta._deprecated import MOVED_MODULES

OLD_NAMES = {
    "hf_transfer_meta.trainer": ["TransferTrainer"],
    "hf_transfer_meta.arguments": ["TransferTrainingArguments"],
    "hf_transfer_meta.probe": ["linear_probe", "extract_features", "fit_linear_probe", "final_linear"],
    "hf_transfer_meta.regularizers": ["L2SP", "select_wise_alpha", "state_dict_copy", "wise_ft_interpolate"],
    "hf_transfer_meta.reinit": ["reinit_head", "reinit_top_blocks"],
    "hf_transfer_meta.hpo": ["cross_validated_search", "kfold_indices"],
    "hf_transfer_meta.schedules": ["Phase", "TransferSchedule", "slanted_triangular"],
    "hf_transfer_meta.layer_map": ["LayerMap", "LayerMapError"],
    "hf_transfer_meta.param_groups": ["build_param_groups", "depth_learning_rates"],
    "hf_transfer_meta.callbacks": ["GradualUnfreezingCallback", "LPFTCallback", "AutoRGNCallback"],
    "hf_transfer_meta.meta.algorithms.finetune": ["FineTuneBaseline"],
    "hf_transfer_meta.meta.augment": ["RandomAffine"],
    "hf_transfer_meta.meta.datasets": [
        "ClassSplit",
        "load_clinc150",
        "load_digits_dataset",
        "load_omniglot",
        "omniglot_meta_splits",
        "shared_data_dir",
        "assert_class_disjoint",
    ],
    "hf_transfer_meta.meta.episodes": ["EpisodeCollator", "EpisodeDataset", "EpisodePlan", "to_pixel_values"],
    "hf_transfer_meta.meta.metrics": ["mean_ci95", "few_shot_accuracy", "few_shot_accuracy_metric_path"],
}


@pytest.mark.parametrize("old", sorted(MOVED_MODULES))
def test_old_module_path_imports_with_a_warning(old):
    code = (
        "import warnings; warnings.simplefilter('always')\n"
        f"import {old} as m\n"
        f"print(','.join(n for n in {OLD_NAMES[old]!r} if not hasattr(m, n)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"missing in {old}: {out.stdout}"
    assert "FutureWarning" in out.stderr and f"{old} moved to hf_transfer_meta." in out.stderr


def test_moved_phase_helpers_still_reachable_from_schedules():
    schedules = importlib.import_module("hf_transfer_meta.transfer.schedules")
    with pytest.warns(FutureWarning, match="strategies.gradual_unfreezing"):
        fn = schedules.gradual_unfreezing_phases
    assert [p.start for p in fn(3, 2)] == [0, 2, 4]


def test_public_names_are_the_new_objects():
    import hf_transfer_meta
    from hf_transfer_meta.transfer import trainer

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the top-level names are not deprecated
        assert hf_transfer_meta.TransferTrainer is trainer.TransferTrainer
    assert set(hf_transfer_meta.__all__) >= {"TransferTrainer", "TransferArguments", "with_transfer", "STRATEGIES"}
