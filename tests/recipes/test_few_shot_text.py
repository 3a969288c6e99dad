"""recipes/few-shot-text/run_few_shot_text.py: a tiny BERT meta-trained with ProtoNet on keyword classes writes
what transformers' examples write and beats chance by far on unseen classes; the class-split rules; the all-classes
(deployment) evaluation; one .json file of arguments; bad input refused before anything is written; CLINC150 as a
preset and as a user's file give the same intents."""

import importlib.util
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "recipes" / "few-shot-text" / "run_few_shot_text.py"
_spec = importlib.util.spec_from_file_location("run_few_shot_text", SCRIPT)
recipe = importlib.util.module_from_spec(_spec)
sys.modules["run_few_shot_text"] = recipe  # dataclasses resolve their module while the recipe's classes are built
_spec.loader.exec_module(recipe)

FILLER = [f"w{i}" for i in range(20)]
CLASSES = [f"intent{c:02d}" for c in range(15)]
CLASS_WORDS = {name: [f"k{c}x{i}" for i in range(4)] for c, name in enumerate(CLASSES)}  # each class: its own words
COMMON = ["--report_to", "none", "--use_cpu", "--disable_tqdm", "true", "--save_strategy", "no", "--seed", "0",
          "--eval_episodes", "100", "--per_device_eval_batch_size", "20"]  # fmt: skip
SHAPE = ["--algorithm", "protonet", "--embedding", "mean", "--n_way", "3", "--k_shot", "1", "--n_query", "3"]


def rows_for(classes, per_class: int, seed: int) -> list[dict]:
    """Utterances of 4 words: 3 of the class's 4 keywords and 1 shared filler."""
    rng = random.Random(seed)
    rows = []
    for name in classes:
        for _ in range(per_class):
            words = rng.choices(CLASS_WORDS[name], k=3) + rng.choices(FILLER, k=1)
            rng.shuffle(words)
            rows.append({"text": " ".join(words), "intent": name})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    path.write_text("text,intent\n" + "".join(f"{r['text']},{r['intent']}\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A 1-block BERT (hidden 16) saved with a BertTokenizerFast built from the word list: no download."""
    from tiny_models import tiny_bert
    from transformers import BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *FILLER, *(w for ws in CLASS_WORDS.values() for w in ws)]
    tokenizer = BertTokenizerFast(vocab={word: i for i, word in enumerate(vocab)}, do_lower_case=True)
    assert tokenizer.unk_token_id not in tokenizer("k3x1 w2")["input_ids"]
    tokenizer.save_pretrained(folder)
    tiny_bert(layers=1, num_labels=3, vocab_size=len(vocab), initializer_range=0.2).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def one_file(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("data") / "intents.jsonl", rows_for(CLASSES, 8, seed=0))


def base_args(model, out, *extra):
    return ["--model_name_or_path", str(model), "--output_dir", str(out), "--text_column_names", "text",
            "--label_column_name", "intent", *SHAPE, *COMMON, *extra]  # fmt: skip


def test_help_answers():
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    for flag in ("--preset", "--class_split", "--class_split_seed", "--class_group_column", "--eval_all_classes",
                 "--k_shot_sweep", "--eval_k_shots", "--max_predict_samples", "--n_way", "--algorithm"):  # fmt: skip
        assert flag in out.stdout


def test_smoke_run_meta_trains_and_writes_the_example_files(tiny_model, one_file, tmp_path):
    out = tmp_path / "run"
    results = recipe.main(base_args(
        tiny_model, out, "--train_file", str(one_file), "--class_split", "0.6,0.2,0.2",
        "--do_train", "--max_steps", "4", "--learning_rate", "1e-3", "--per_device_train_batch_size", "2",
        "--do_eval", "--k_shot_sweep", "1", "2", "--eval_all_classes", "--eval_all_classes_draws", "20", "--do_predict",
    ))  # fmt: skip
    for name in ("train_results.json", "eval_results.json", "predict_results.json", "all_results.json",
                 "trainer_state.json", "config.json", "model.safetensors", "tokenizer.json", "README.md",
                 "predict_results.txt"):  # fmt: skip
        assert (out / name).is_file(), name
    assert results["classes"] == {"train": 9, "validation": 3, "test": 3}
    written = json.loads((out / "all_results.json").read_text())
    # The keywords decide the class: chance is 1/3, a broken embedding, prototype or episode cannot reach this.
    assert written["eval_accuracy"] > 0.65 and 0 < written["eval_accuracy_ci95"] < 0.1
    assert written["eval_episodes"] == 100 and written["eval_n_way"] == 3
    assert written["eval_1shot_accuracy"] == written["eval_accuracy"]
    assert written["eval_2shot_accuracy"] >= written["eval_1shot_accuracy"] - 0.05
    assert written["eval_all_classes_num_classes"] == 3 and written["eval_all_classes_draws"] == 20
    assert written["eval_all_classes_accuracy"] > 0.65 and "eval_all_classes_2shot_accuracy" in written
    assert written["eval_all_classes_queries"] == 3 * 7  # 8 rows per class, 1 support
    lines = (out / "predict_results.txt").read_text().splitlines()
    assert lines[0] == "index\trole\tlabel\tprediction\ttext" and len(lines) == 1 + 3 * 8
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 4


def test_checkpoint_chosen_on_validation_classes(tiny_model, one_file, tmp_path):
    out = tmp_path / "best"
    recipe.main(base_args(
        tiny_model, out, "--train_file", str(one_file), "--class_split", "0.6,0.2,0.2", "--do_train",
        "--max_steps", "4", "--per_device_train_batch_size", "1", "--eval_strategy", "steps", "--eval_steps", "2",
        "--save_strategy", "steps", "--save_steps", "2", "--load_best_model_at_end", "--metric_for_best_model",
        "accuracy", "--max_eval_samples", "30",
    ))  # fmt: skip
    state = json.loads((out / "trainer_state.json").read_text())
    # --eval_strategy steps implies --do_eval (TrainingArguments): the meta-test (100 episodes) runs at the end
    evals = [log for log in state["log_history"] if log.get("eval_episodes") == 30]
    assert [e["step"] for e in evals] == [2, 4]
    assert [log["step"] for log in state["log_history"] if log.get("eval_episodes") == 100] == [4]
    assert state["best_metric"] == max(e["eval_accuracy"] for e in evals)
    assert state["best_model_checkpoint"].endswith(("checkpoint-2", "checkpoint-4"))


def test_disjoint_test_file_is_the_split_and_validation_is_carved(tiny_model, tmp_path):
    """(b): a test file of other classes is the meta-test split; --class_split carves validation classes from the
    train file's classes (share 0.2 / 0.8 of 10 = 2 or 3); --eval_k_shots is an accepted alias of the sweep."""
    train = write_csv(tmp_path / "train.csv", rows_for(CLASSES[:10], 6, seed=1))
    test = write_csv(tmp_path / "test.csv", rows_for(CLASSES[10:], 6, seed=2))
    results = recipe.main(base_args(
        tiny_model, tmp_path / "b", "--train_file", str(train), "--test_file", str(test), "--do_eval",
        "--eval_k_shots", "1", "2",
    ))  # fmt: skip
    assert results["classes"] == {"train": 10, "validation": 0, "test": 5}
    assert {"eval_1shot_accuracy", "eval_2shot_accuracy"} <= set(results["eval"])
    results = recipe.main(base_args(
        tiny_model, tmp_path / "b2", "--train_file", str(train), "--test_file", str(test), "--class_split",
        "0.6,0.2,0.2", "--do_eval",
    ))  # fmt: skip
    assert results["classes"] == {"train": 8, "validation": 2, "test": 5}  # round(0.2 / 0.8 * 10) = 2
    assert results["eval"]["eval_num_classes"] == 5


def test_json_arguments_give_the_same_run(tiny_model, one_file, tmp_path):
    flags = base_args(tiny_model, tmp_path / "flags", "--train_file", str(one_file), "--do_eval")
    from_flags = recipe.main(flags)
    config = {"model_name_or_path": str(tiny_model), "output_dir": str(tmp_path / "json"),
              "train_file": str(one_file), "text_column_names": ["text"], "label_column_name": "intent",
              "algorithm": "protonet", "embedding": "mean", "n_way": 3, "k_shot": 1, "n_query": 3, "do_eval": True,
              "report_to": "none", "use_cpu": True, "save_strategy": "no", "seed": 0, "eval_episodes": 100,
              "per_device_eval_batch_size": 20}  # fmt: skip
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


def test_missing_file_is_named(tiny_model, one_file, tmp_path):
    out = tmp_path / "out"
    argv = base_args(tiny_model, out, "--train_file", str(one_file), "--test_file", str(tmp_path / "nope.csv"),
                     "--do_eval")  # fmt: skip
    _refused(argv, out, r"--test_file .*nope\.csv: no such file")


def test_missing_column_lists_the_columns(tiny_model, one_file, tmp_path):
    out = tmp_path / "out"
    argv = base_args(tiny_model, out, "--train_file", str(one_file), "--do_eval") + ["--label_column_name", "label"]
    _refused(argv, out, r"no column 'label'; its columns are \['text', 'intent'\]")
    argv = base_args(tiny_model, out, "--train_file", str(one_file), "--do_eval", "--class_group_column", "domain")
    _refused(argv, out, r"--class_group_column 'domain'.*its columns are \['text', 'intent'\]")


def test_float_labels_are_refused(tiny_model, tmp_path):
    rows = [{"text": f"w{i % 20} w{(i + 1) % 20}", "intent": i / 7} for i in range(40)]
    out = tmp_path / "out"
    argv = base_args(tiny_model, out, "--train_file", str(write_jsonl(tmp_path / "f.jsonl", rows)), "--do_eval")
    _refused(argv, out, r"float labels \(e\.g\. 0\.14\d*\)")


def test_too_few_classes_in_a_split_names_split_and_counts(tiny_model, one_file, tmp_path):
    out = tmp_path / "out"
    argv = base_args(tiny_model, out, "--train_file", str(one_file), "--do_eval", "--eval_n_way", "5")
    _refused(argv, out, r"meta-test split has 3 classes, but --eval_n_way 5 .*meta-train 9, meta-validation 3, "
                        r"meta-test 3")  # fmt: skip


def test_small_class_is_named_with_counts(tiny_model, tmp_path):
    rows = rows_for(CLASSES[:9], 8, seed=3) + rows_for(CLASSES[9:10], 2, seed=4)
    test = write_jsonl(tmp_path / "test.jsonl", rows_for(CLASSES[10:], 8, seed=5))
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    out = tmp_path / "out"
    argv = base_args(tiny_model, out, "--train_file", str(train), "--test_file", str(test), "--do_train",
                     "--max_steps", "2")  # fmt: skip
    _refused(argv, out, r"meta-train split: class 'intent09' has 2, but --k_shot 1 \+ --n_query 3 = 4")


def test_eval_during_training_needs_validation_classes(tiny_model, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", rows_for(CLASSES[:10], 6, seed=1))
    test = write_jsonl(tmp_path / "test.jsonl", rows_for(CLASSES[10:], 6, seed=2))
    out = tmp_path / "out"
    argv = base_args(tiny_model, out, "--train_file", str(train), "--test_file", str(test), "--do_train",
                     "--max_steps", "2", "--eval_strategy", "steps", "--eval_steps", "1")  # fmt: skip
    _refused(argv, out, r"meta-validation classes .* there are none: pass --class_split")


def test_all_classes_needs_protonet(tiny_model, one_file, tmp_path):
    out = tmp_path / "out"
    argv = base_args(tiny_model, out, "--train_file", str(one_file), "--do_eval", "--eval_all_classes")
    argv[argv.index("protonet")] = "fomaml"
    _refused(argv, out, r"--eval_all_classes .* needs --algorithm protonet")


# ---------------------------------------------------------------------- CLINC150: preset == the user's file
@pytest.mark.shared_data
def test_clinc150_preset_and_file_give_the_same_intents(shared_data, tmp_path):
    from hf_transfer_meta.data import load_data_files
    from hf_transfer_meta.meta import load_clinc150, load_preset, split_classes, split_classes_from_files

    data = json.loads(shared_data("clinc150", "data_full.json").read_text())
    # The README's one-line conversion: every in-scope row, train then val then test, as jsonl.
    path = tmp_path / "clinc150.jsonl"
    path.write_text("".join(json.dumps({"text": t, "intent": i}) + "\n" for s in ("train", "val", "test")
                            for t, i in data[s]))  # fmt: skip
    for seed in (0, 42):
        preset = load_preset("clinc150", shared_data("clinc150"), seed=seed).split
        user = split_classes_from_files(
            dict(load_data_files({"train": path})), "intent", (0.6, 0.2, 0.2), seed=seed
        )  # fmt: skip
        for name in ("train", "validation", "test"):
            assert preset.keys[name] == user.keys[name]
            assert preset[name]["text"] == user[name]["text"]  # the same rows, in the same order
        assert [len(preset.keys[s]) for s in ("train", "validation", "test")] == [90, 30, 30]
        old = split_classes(load_clinc150(shared_data("clinc150")), "label", seed=seed)  # run_few_shot.py's split
        names = old.train.features["label"].names
        assert sorted(names[i] for i in old.keys["test"]) == sorted(preset.keys["test"])


def test_dataset_name_reads_a_data_set_by_name(tiny_model, tmp_path):
    """--dataset_name goes through `datasets.load_dataset`; a local folder of train/test files stands in for a Hub
    data set here (no network): its test split has other intents, so it is the meta-test split."""
    folder = tmp_path / "hub-like"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", rows_for(CLASSES[:10], 6, seed=1))
    write_jsonl(folder / "test.jsonl", rows_for(CLASSES[10:], 6, seed=2))
    results = recipe.main(base_args(tiny_model, tmp_path / "out", "--dataset_name", str(folder), "--do_eval"))
    assert results["classes"] == {"train": 10, "validation": 0, "test": 5}
    assert results["eval"]["eval_num_classes"] == 5


def test_maml_family_meta_trains_a_sequence_classifier(tiny_model, one_file, tmp_path):
    argv = base_args(tiny_model, tmp_path / "fomaml", "--train_file", str(one_file), "--do_train", "--max_steps", "2",
                     "--per_device_train_batch_size", "2", "--inner_lr", "0.1", "--do_eval", "--eval_episodes", "20")  # fmt: skip
    argv[argv.index("protonet")] = "fomaml"
    results = recipe.main(argv)
    assert results["train"]["train_samples"] == 4 and results["eval"]["eval_episodes"] == 20
    assert 0.0 < results["eval"]["eval_accuracy"] <= 1.0
    config = json.loads((tmp_path / "fomaml" / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"] and len(config["id2label"]) == 3
