"""recipes/few-shot-vision/run_few_shot_vision.py: a Conv4 built from its config meta-trained with ProtoNet on
scikit-learn's digits (as the preset, as an image folder, as parquet files of PNG bytes) writes what transformers'
examples write and beats chance by far on unseen digits; the class-split rules (pooled sources, a disjoint test file,
a group column); the MAML family; a transformers model from a folder; one .json file of arguments; bad input
(undecodable images named by file and row) refused before anything is written."""

import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "recipes" / "few-shot-vision" / "run_few_shot_vision.py"
_spec = importlib.util.spec_from_file_location("run_few_shot_vision", SCRIPT)
recipe = importlib.util.module_from_spec(_spec)
sys.modules["run_few_shot_vision"] = recipe  # dataclasses resolve their module while the recipe's classes are built
_spec.loader.exec_module(recipe)

COMMON = ["--report_to", "none", "--use_cpu", "--disable_tqdm", "true", "--save_strategy", "no", "--seed", "0",
          "--eval_episodes", "100", "--per_device_eval_batch_size", "20", "--conv4_hidden_size", "32"]  # fmt: skip
SHAPE = ["--algorithm", "protonet", "--n_way", "3", "--k_shot", "1", "--n_query", "5"]


def digit_pngs(per_class: int = 30, digits=range(10)) -> list[tuple[bytes, int]]:
    """(PNG bytes, digit) of the first ``per_class`` 8x8 images of each digit of scikit-learn's digits."""
    from sklearn.datasets import load_digits

    data = load_digits()
    out = []
    for d in digits:
        for image in data.images[data.target == d][:per_class]:
            buffer = io.BytesIO()
            Image.fromarray((image * 255 / 16).astype(np.uint8), mode="L").save(buffer, format="PNG")
            out.append((buffer.getvalue(), int(d)))
    return out


def write_folder(root: Path, rows) -> Path:
    for i, (png, d) in enumerate(rows):
        (root / f"digit{d}").mkdir(parents=True, exist_ok=True)
        (root / f"digit{d}" / f"{i:04d}.png").write_bytes(png)
    return root


def write_parquet(path: Path, rows, **columns) -> Path:
    import datasets

    table = {"img": [{"bytes": png, "path": None} for png, _ in rows], "digit": [f"d{d}" for _, d in rows]}
    table.update(columns)
    datasets.Dataset.from_dict(table).to_parquet(str(path))
    return path


def base_args(out, *extra):
    return ["--output_dir", str(out), *SHAPE, *COMMON, *extra]


def test_help_answers():
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    for flag in ("--preset", "--train_dir", "--train_file", "--image_column_name", "--class_split",
                 "--class_group_column", "--eval_all_classes", "--k_shot_sweep", "--eval_k_shots", "--n_way",
                 "--algorithm", "--augment"):  # fmt: skip
        assert flag in out.stdout


def test_smoke_digits_preset_meta_trains_and_writes_the_example_files(tmp_path):
    out = tmp_path / "run"
    results = recipe.main(base_args(
        out, "--preset", "digits", "--do_train", "--max_steps", "20", "--per_device_train_batch_size", "2",
        "--do_eval", "--k_shot_sweep", "1", "5", "--eval_all_classes", "--eval_all_classes_draws", "20",
        "--do_predict",
    ))  # fmt: skip
    for name in ("train_results.json", "eval_results.json", "predict_results.json", "all_results.json",
                 "trainer_state.json", "config.json", "model.safetensors", "README.md",
                 "predict_results.txt"):  # fmt: skip
        assert (out / name).is_file(), name
    assert results["classes"] == {"train": 6, "validation": 0, "test": 4}
    written = json.loads((out / "all_results.json").read_text())
    # Chance is 1/3 (3-way) and 1/4 (all four test digits): a broken embedding, prototype or episode stays near it.
    assert written["eval_accuracy"] > 0.55 and 0 < written["eval_accuracy_ci95"] < 0.1
    assert written["eval_episodes"] == 100 and written["eval_n_way"] == 3 and written["eval_num_classes"] == 4
    assert written["eval_1shot_accuracy"] == written["eval_accuracy"]
    assert written["eval_5shot_accuracy"] > written["eval_1shot_accuracy"]
    assert written["eval_all_classes_num_classes"] == 4 and written["eval_all_classes_draws"] == 20
    assert written["eval_all_classes_accuracy"] > 0.4
    assert written["eval_all_classes_5shot_accuracy"] > written["eval_all_classes_accuracy"]
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "conv4" and config["num_blocks"] == 3 and config["image_size"] == 8
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 20
    lines = (out / "predict_results.txt").read_text().splitlines()
    assert lines[0] == "index\trole\tlabel\tprediction"
    assert len(lines) == 1 + 4 + written["predict_samples"]  # a header, one support image per class, the queries


def test_image_folder_split_by_class_and_checkpoint_chosen_on_validation(tmp_path):
    folder = write_folder(tmp_path / "digits", digit_pngs(20))
    out = tmp_path / "best"
    results = recipe.main(base_args(
        out, "--train_dir", str(folder), "--class_split", "0.4,0.3,0.3", "--do_train", "--max_steps", "4",
        "--per_device_train_batch_size", "1", "--eval_strategy", "steps", "--eval_steps", "2", "--save_strategy",
        "steps", "--save_steps", "2", "--load_best_model_at_end", "--metric_for_best_model", "accuracy",
        "--max_eval_samples", "30", "--eval_all_classes", "--eval_all_classes_draws", "5",
    ))  # fmt: skip
    assert results["classes"] == {"train": 4, "validation": 3, "test": 3}
    state = json.loads((out / "trainer_state.json").read_text())
    evals = [log for log in state["log_history"] if log.get("eval_episodes") == 30]
    assert [e["step"] for e in evals] == [2, 4]
    assert state["best_metric"] == max(e["eval_accuracy"] for e in evals)
    assert state["best_model_checkpoint"].endswith(("checkpoint-2", "checkpoint-4"))
    written = json.loads((out / "all_results.json").read_text())
    # --eval_strategy implies --do_eval: the meta-test on the three test digits, grey 8x8 PNGs read as grey
    assert written["eval_num_classes"] == 3 and written["eval_accuracy"] > 0.5  # chance 1/3
    assert written["eval_all_classes_queries"] == 3 * 19
    config = json.loads((out / "config.json").read_text())
    assert config["num_channels"] == 1 and config["image_size"] == 28  # grey default side


def test_parquet_with_disjoint_test_file_is_the_split(tmp_path):
    train = write_parquet(tmp_path / "train.parquet", digit_pngs(12, range(6)))
    test = write_parquet(tmp_path / "test.parquet", digit_pngs(12, range(6, 10)))
    results = recipe.main(base_args(
        tmp_path / "p", "--train_file", str(train), "--test_file", str(test), "--image_column_name", "img",
        "--label_column_name", "digit", "--image_size", "8", "--do_eval", "--eval_k_shots", "1", "2",
    ))  # fmt: skip
    assert results["classes"] == {"train": 6, "validation": 0, "test": 4}
    assert results["eval"]["eval_num_classes"] == 4 and results["eval"]["eval_accuracy"] > 0.5
    assert {"eval_1shot_accuracy", "eval_2shot_accuracy"} <= set(results["eval"])


def test_pooled_files_keep_every_row_of_a_class_and_groups_stay_whole(tmp_path):
    rows = digit_pngs(10)
    groups = [f"g{d // 2}" for _, d in rows]  # five groups of two digits
    first = write_parquet(tmp_path / "a.parquet", rows[::2], group=groups[::2])
    second = write_parquet(tmp_path / "b.parquet", rows[1::2], group=groups[1::2])
    split = recipe.load_class_split(
        *_data_args(tmp_path, "--train_file", str(first), "--test_file", str(second), "--class_split", "0.6,0.2,0.2",
                    "--class_group_column", "group"),
        seed=0,
    ).split  # fmt: skip
    assert {s: len(split.keys[s]) for s in ("train", "validation", "test")} == {"train": 3, "validation": 1, "test": 1}
    for name in ("train", "validation", "test"):
        ds = split[name]
        digits = set(ds["digit"])
        assert len(digits) == 2 * len(split.keys[name])
        assert len(ds) == 10 * len(digits)  # every row of each class, from both files


def _data_args(tmp_path, *flags):
    from transformers import HfArgumentParser

    parser = HfArgumentParser((recipe.ModelArguments, recipe.DataTrainingArguments))
    model_args, data_args = parser.parse_args_into_dataclasses(
        args=["--image_column_name", "img", "--label_column_name", "digit", *flags]
    )
    return data_args, model_args


def test_maml_family_and_a_transformers_model_from_a_folder(tmp_path):
    argv = base_args(tmp_path / "fomaml", "--preset", "digits", "--do_train", "--max_steps", "2", "--do_eval",
                     "--inner_steps", "1", "--inner_lr", "0.1", "--eval_episodes", "20")  # fmt: skip
    argv[argv.index("protonet")] = "fomaml"
    results = recipe.main(argv)
    assert 0.0 < results["eval"]["eval_accuracy"] <= 1.0 and results["eval"]["eval_episodes"] == 20
    from tiny_models import tiny_resnet

    folder = tmp_path / "resnet"
    tiny_resnet(num_labels=3).save_pretrained(folder)
    out = tmp_path / "rn"
    results = recipe.main(base_args(out, "--preset", "digits", "--model_name_or_path", str(folder), "--do_eval",
                                    "--image_size", "16"))  # fmt: skip
    assert results["eval"]["eval_accuracy"] > 0.4  # an untrained ResNet's pooled features, 3-way
    assert (out / "all_results.json").is_file()


def test_json_arguments_give_the_same_run(tmp_path):
    from_flags = recipe.main(base_args(tmp_path / "flags", "--preset", "digits", "--do_eval"))
    config = {"output_dir": str(tmp_path / "json"), "preset": "digits", "algorithm": "protonet", "n_way": 3,
              "k_shot": 1, "n_query": 5, "do_eval": True, "report_to": "none", "use_cpu": True, "save_strategy": "no",
              "seed": 0, "eval_episodes": 100, "per_device_eval_batch_size": 20, "conv4_hidden_size": 32}  # fmt: skip
    path = tmp_path / "args.json"
    path.write_text(json.dumps(config))
    from_json = recipe.main([str(path)])
    assert from_json["eval"]["eval_accuracy"] == from_flags["eval"]["eval_accuracy"]
    assert (tmp_path / "json" / "all_results.json").is_file()


# ---------------------------------------------------------------------- bad input: refused, nothing written
def _refused(argv, out: Path, match: str):
    with pytest.raises(ValueError, match=match):
        recipe.main(argv)
    assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.iterdir())


@pytest.fixture(scope="module")
def train_parquet(tmp_path_factory):
    return write_parquet(tmp_path_factory.mktemp("data") / "train.parquet", digit_pngs(10))


def test_missing_folder_and_file_are_named(tmp_path, train_parquet):
    out = tmp_path / "out"
    _refused(base_args(out, "--train_dir", str(tmp_path / "nowhere"), "--do_eval"), out,
             r"--train_dir .*nowhere: no such folder")  # fmt: skip
    argv = base_args(out, "--train_file", str(train_parquet), "--test_file", str(tmp_path / "nope.parquet"),
                     "--do_eval", "--image_column_name", "img", "--label_column_name", "digit")  # fmt: skip
    _refused(argv, out, r"--test_file .*nope\.parquet: no such file")


def test_missing_column_lists_the_columns(tmp_path, train_parquet):
    out = tmp_path / "out"
    argv = base_args(out, "--train_file", str(train_parquet), "--do_eval", "--label_column_name", "digit")
    _refused(argv, out, r"--image_column_name 'image': --train_file .* has no column 'image'; its columns are "
                        r"\['img', 'digit'\]")  # fmt: skip


def test_float_labels_are_refused(tmp_path):
    rows = digit_pngs(5)
    path = write_parquet(tmp_path / "f.parquet", rows, score=[d / 7 for _, d in rows])
    out = tmp_path / "out"
    argv = base_args(out, "--train_file", str(path), "--image_column_name", "img", "--label_column_name", "score",
                     "--do_eval")  # fmt: skip
    _refused(argv, out, r"float labels \(e\.g\. 0\.14\d*\)")


def test_too_few_classes_and_a_small_class(tmp_path, train_parquet):
    out = tmp_path / "out"
    argv = base_args(out, "--train_file", str(train_parquet), "--image_column_name", "img", "--label_column_name",
                     "digit", "--do_eval", "--eval_n_way", "5")  # fmt: skip
    _refused(argv, out, r"meta-test split has 2 classes, but --eval_n_way 5 .*meta-train 6, meta-validation 2, "
                        r"meta-test 2")  # fmt: skip
    rows = digit_pngs(10, range(5)) + digit_pngs(3, range(5, 6))
    train = write_parquet(tmp_path / "small.parquet", rows)
    test = write_parquet(tmp_path / "test.parquet", digit_pngs(10, range(6, 10)))
    argv = base_args(out, "--train_file", str(train), "--test_file", str(test), "--image_column_name", "img",
                     "--label_column_name", "digit", "--do_train", "--max_steps", "2")  # fmt: skip
    _refused(argv, out, r"meta-train split: class 'd5' has 3, but --k_shot 1 \+ --n_query 5 = 6")


def test_undecodable_image_bytes_are_named_by_file_and_row(tmp_path):
    rows = digit_pngs(6)
    rows[17] = (b"not a png at all", rows[17][1])
    path = write_parquet(tmp_path / "broken.parquet", rows)
    out = tmp_path / "out"
    argv = base_args(out, "--train_file", str(path), "--image_column_name", "img", "--label_column_name", "digit",
                     "--do_eval")  # fmt: skip
    _refused(argv, out, r"--train_file .*broken\.parquet, row 17: the image cannot be decoded")
    folder = write_folder(tmp_path / "folder", digit_pngs(6))
    (folder / "digit3" / "0020.png").write_bytes(b"\x89PNG truncated")
    _refused(base_args(out, "--train_dir", str(folder), "--do_eval"), out,
             r"--train_dir .*folder, row \d+ \(.*digit3/0020\.png\): the image cannot be decoded")  # fmt: skip


def test_resumes_from_the_last_checkpoint_in_output_dir(tmp_path, caplog):
    out = tmp_path / "resume"
    flags = ["--preset", "digits", "--do_train", "--per_device_train_batch_size", "1", "--save_strategy", "steps",
             "--save_steps", "2", "--log_level", "info"]  # fmt: skip
    recipe.main(base_args(out, *flags, "--max_steps", "4"))
    saved = (out / "checkpoint-4" / "model.safetensors").stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level("INFO", logger="run_few_shot_vision"):
        recipe.main(base_args(out, *flags, "--max_steps", "6"))
    assert any("Checkpoint detected, resuming training at" in r.getMessage() and r.getMessage().endswith(
        "checkpoint-4. Use a new --output_dir to start over.") for r in caplog.records)  # fmt: skip
    # steps 1-4 were not run again (a fresh start would have rewritten checkpoint-4)
    assert (out / "checkpoint-4" / "model.safetensors").stat().st_mtime_ns == saved
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 6
    assert (out / "checkpoint-6").is_dir()


def test_dataset_name_reads_a_data_set_by_name(tmp_path):
    """--dataset_name goes through `datasets.load_dataset`; a local folder of train/test files stands in for a Hub
    data set here (no network): its test split has other digits, so it is the meta-test split."""
    folder = tmp_path / "hub-like"
    folder.mkdir()
    write_parquet(folder / "train.parquet", digit_pngs(8, range(6)))
    write_parquet(folder / "test.parquet", digit_pngs(8, range(6, 10)))
    results = recipe.main(base_args(
        tmp_path / "out", "--dataset_name", str(folder), "--image_column_name", "img", "--label_column_name",
        "digit", "--image_size", "8", "--do_eval", "--eval_episodes", "20",
    ))  # fmt: skip
    assert results["classes"] == {"train": 6, "validation": 0, "test": 4}
    assert results["eval"]["eval_episodes"] == 20


@pytest.mark.shared_data
def test_omniglot_preset_splits_by_alphabet_with_rotations(shared_data, tmp_path):
    data_dir = shared_data("omniglot")
    out = tmp_path / "omniglot"
    argv = ["--output_dir", str(out), "--preset", "omniglot", "--data_dir", str(data_dir), "--validation_alphabets",
            "Balinese", "--algorithm", "protonet", "--n_way", "5", "--k_shot", "1", "--n_query", "2", "--do_eval",
            *COMMON, "--eval_episodes", "20", "--eval_all_classes", "--eval_all_classes_draws", "2"]  # fmt: skip
    results = recipe.main(argv)
    assert results["classes"] == {"train": 4, "validation": 1, "test": 3}  # alphabets: the split is by alphabet
    written = json.loads((out / "all_results.json").read_text())
    assert written["eval_num_classes"] == 106 and written["eval_all_classes_num_classes"] == 106
    assert written["eval_accuracy"] > 0.35  # 5-way: chance 0.2, even for an untrained Conv4's features
    refused = tmp_path / "refused"
    argv[argv.index(str(out))] = str(refused)
    _refused([*argv, "--eval_n_way", "500"], refused, r"meta-test split has 106 classes x 4 rotations = 424, but "
                                                      r"--eval_n_way 500")  # fmt: skip
