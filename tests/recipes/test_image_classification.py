"""The image-classification recipe end to end on tiny generated data: files written, a metric a broken run cannot
reach, corrupted evaluation side by side, and bad input refused before anything is written."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "recipes" / "image-classification" / "run_image_classification.py"
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def _image(rng, colour):
    noise = rng.integers(-25, 26, size=(16, 16, 3))
    return Image.fromarray(np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8))


def _image_folder(root: Path, per_class: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            _image(rng, colour).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Image folders (3 colour classes, 16x16 PNGs) and a tiny CIFAR ResNet (about 2k params) with its processor."""
    from transformers import ViTImageProcessorPil

    from hf_transfer_meta.vision import CifarResNetConfig, CifarResNetForImageClassification

    root = tmp_path_factory.mktemp("tiny")
    train = _image_folder(root / "train", 16, seed=0)
    val = _image_folder(root / "val", 6, seed=1)
    model_dir = root / "model"
    config = CifarResNetConfig(depths=[1, 1, 1], hidden_sizes=[8, 8, 8], image_size=16, num_labels=3)
    CifarResNetForImageClassification(config).save_pretrained(model_dir)
    ViTImageProcessorPil(size={"height": 16, "width": 16}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(
        model_dir
    )
    return {"root": root, "train": train, "val": val, "model": model_dir}


def _run(args, timeout=600):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout
    )


def test_help():
    out = _run(["--help"])
    assert out.returncode == 0, out.stderr
    for flag in ("--train_dir", "--eval_corruptions", "--trainable_depths", "--lp_mode", "--image_column_name"):
        assert flag in out.stdout


def test_train_eval_predict_with_corruptions(tiny, tmp_path):
    out_dir = tmp_path / "run"
    # A parquet test file (images as PNG bytes in an `img` column) beside the image folders.
    import datasets

    rng = np.random.default_rng(2)
    rows = [(name, _image(rng, colour)) for name, colour in COLOURS.items() for _ in range(5)]
    test = datasets.Dataset.from_dict(
        {"image": [im for _, im in rows], "label": [n for n, _ in rows]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=sorted(COLOURS))}),
    )
    test.to_parquet(tmp_path / "test.parquet")
    result = _run(
        [
            "--model_name_or_path",
            tiny["model"],
            "--train_dir",
            tiny["train"],
            "--validation_dir",
            tiny["val"],
            "--test_file",
            tmp_path / "test.parquet",
            "--image_column_name",
            "image",
            "--do_train",
            "--do_eval",
            "--do_predict",
            "--learning_rate",
            "0.05",
            "--num_train_epochs",
            "6",
            "--per_device_train_batch_size",
            "8",
            "--eval_corruptions",
            "gaussian_noise",
            "contrast",
            "--corruption_severity",
            "3",
            "--output_dir",
            out_dir,
            "--save_strategy",
            "no",
            "--report_to",
            "none",
            "--seed",
            "0",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--image_column_name" not in result.stderr
    for name in (
        "train_results.json",
        "eval_results.json",
        "all_results.json",
        "trainer_state.json",
        "predict_results.json",
        "predict_results.txt",
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "README.md",
    ):
        assert (out_dir / name).exists(), name
    results = json.loads((out_dir / "all_results.json").read_text())
    # Colour classes: a model that learned nothing scores about 1/3.
    assert results["eval_accuracy"] > 0.9, results
    assert results["predict_accuracy"] > 0.9, results
    for c in ("gaussian_noise", "contrast"):
        assert 0.0 <= results[f"eval_{c}_accuracy"] <= 1.0 and f"predict_{c}_accuracy" in results
    # contrast at severity 3 pulls every colour 60% of the way to grey: the shifted score is its own number
    assert results["eval_corruption_severity"] == 3


def test_linear_probe_trains_only_the_head(tiny, tmp_path):
    from safetensors.torch import load_file

    out_dir = tmp_path / "lp"
    result = _run(
        [
            "--model_name_or_path",
            tiny["model"],
            "--train_dir",
            tiny["train"],
            "--validation_dir",
            tiny["val"],
            "--do_train",
            "--do_eval",
            "--trainable_depths",
            "head",
            "--learning_rate",
            "0.05",
            "--num_train_epochs",
            "2",
            "--output_dir",
            out_dir,
            "--save_strategy",
            "no",
            "--report_to",
            "none",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    before, after = load_file(tiny["model"] / "model.safetensors"), load_file(out_dir / "model.safetensors")
    assert all((before[k] == after[k]).all() for k in before if not k.startswith("classifier.")), "backbone moved"
    assert not (before["classifier.weight"] == after["classifier.weight"]).all()


def _refused(tiny, tmp_path, extra, *needles):
    out_dir = tmp_path / "refused"
    result = _run(["--model_name_or_path", tiny["model"], "--do_train", "--do_eval", "--output_dir", out_dir, *extra])
    assert result.returncode != 0
    for needle in needles:
        assert needle in result.stderr, result.stderr[-2000:]
    assert not out_dir.exists() or not any(out_dir.iterdir()), list(out_dir.iterdir())


def test_missing_folder_is_named(tiny, tmp_path):
    _refused(
        tiny, tmp_path, ["--train_dir", tmp_path / "nope", "--validation_dir", tiny["val"]], str(tmp_path / "nope")
    )


def test_missing_column_lists_the_columns(tiny, tmp_path):
    _refused(
        tiny,
        tmp_path,
        ["--train_dir", tiny["train"], "--validation_dir", tiny["val"], "--image_column_name", "img"],
        "'img'",
        "['image', 'label']",
    )


def test_undecodable_image_is_named(tiny, tmp_path):
    import datasets

    good = (tiny["train"] / "red" / "0.png").read_bytes()
    table = datasets.Dataset.from_dict(
        {"image": [{"bytes": good, "path": None}, {"bytes": b"not a png", "path": None}], "label": [0, 1]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}),
    )
    bad = tmp_path / "bad.parquet"
    table.to_parquet(bad)
    _refused(tiny, tmp_path, ["--train_dir", tiny["train"], "--validation_file", bad], str(bad), "row 1")


def test_single_json_argument_evaluates_only(tiny, tmp_path):
    out_dir = tmp_path / "eval-only"
    args = {
        "model_name_or_path": str(tiny["model"]),
        "validation_dir": str(tiny["val"]),
        "do_eval": True,
        "eval_corruptions": ["pixelate"],
        "corruption_severity": 5,
        "output_dir": str(out_dir),
        "report_to": "none",
    }
    config = tmp_path / "args.json"
    config.write_text(json.dumps(args))
    result = _run([config])
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out_dir / "eval_results.json").read_text())
    assert {"eval_accuracy", "eval_pixelate_accuracy", "eval_samples"} <= set(metrics)
    assert metrics["eval_samples"] == 18 and metrics["eval_corruption_severity"] == 5
    assert not (out_dir / "train_results.json").exists()


def test_undecodable_image_in_a_held_out_split_is_named_by_its_file_row(tiny, tmp_path):
    """--train_val_split shuffles rows into two splits: the message still names the row of the file."""
    import datasets

    good = (tiny["train"] / "red" / "0.png").read_bytes()
    n, bad_row = 20, 13
    images = [{"bytes": b"not a png" if i == bad_row else good, "path": None} for i in range(n)]
    table = datasets.Dataset.from_dict(
        {"image": images, "label": [i % 2 for i in range(n)]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}),
    )
    path = tmp_path / "train.parquet"
    table.to_parquet(path)
    for fraction in ("0.25", "0.75"):  # the bad row lands in one split or the other
        _refused(tiny, tmp_path, ["--train_file", path, "--train_val_split", fraction], str(path), f"row {bad_row}")


def test_config_overrides_reach_the_saved_config_and_bad_keys_are_refused(tiny, tmp_path):
    out_dir = tmp_path / "override"
    common = [
        "--model_name_or_path",
        tiny["model"],
        "--validation_dir",
        tiny["val"],
        "--do_eval",
        "--report_to",
        "none",
    ]
    train = ["--train_dir", tiny["train"], "--do_train", "--max_steps", "1", "--save_strategy", "no"]
    result = _run([*common, *train, "--config_overrides", "image_size=24", "--output_dir", out_dir])
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out_dir / "config.json").read_text())["image_size"] == 24
    assert json.loads((tiny["model"] / "config.json").read_text())["image_size"] == 16
    bad = tmp_path / "bad-override"
    result = _run([*common, "--config_overrides", "no_such_field=1", "--output_dir", bad])
    assert result.returncode != 0 and "--config_overrides" in result.stderr and "no_such_field" in result.stderr
    assert not bad.exists() or not any(bad.iterdir())
