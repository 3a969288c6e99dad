"""recipes/meta/run_few_shot.py: argument checks that keep choices off the test classes."""

import importlib.util
import sys
from pathlib import Path

import pytest

_path = Path(__file__).resolve().parents[2] / "recipes" / "meta" / "run_few_shot.py"
_spec = importlib.util.spec_from_file_location("run_few_shot", _path)
recipe = importlib.util.module_from_spec(_spec)
sys.modules["run_few_shot"] = recipe  # dataclasses resolve their module while the recipe's classes are built
_spec.loader.exec_module(recipe)


def test_evaluating_during_training_needs_validation_classes(tmp_path):
    base = ["--output_dir", str(tmp_path), "--dataset", "digits", "--algorithm", "protonet", "--n_way", "3",
            "--max_steps", "2", "--report_to", "none", "--use_cpu"]  # fmt: skip
    with pytest.raises(ValueError, match="needs validation classes"):
        recipe.main([*base, "--do_train", "--eval_strategy", "steps", "--eval_steps", "1"])
    with pytest.raises(ValueError, match="no validation classes"):
        recipe.main([*base, "--eval_split", "validation"])
    with pytest.raises(ValueError, match="--validation_alphabets is for --dataset omniglot"):
        recipe.main([*base, "--validation_alphabets", "Balinese"])


def test_digits_protonet_runs_end_to_end(tmp_path):
    flags = (
        "--dataset digits --algorithm protonet --n_way 3 --k_shot 1 --n_query 2 --max_steps 3 --do_train "
        "--report_to none --use_cpu --eval_n_way 4 --eval_k_shots 1 5 --eval_n_query 5"
    )
    results = recipe.main(["--output_dir", str(tmp_path), *flags.split()])
    assert set(results["eval"]) == {"test_4way_1shot", "test_4way_5shot"}
    for metrics in results["eval"].values():
        assert metrics[next(k for k in metrics if k.endswith("_episodes"))] == 600
        assert 0.25 < metrics[next(k for k in metrics if k.endswith("shot_accuracy"))] <= 1.0
    assert (tmp_path / "few_shot_results.json").is_file()
