"""recipes/text-classification/run_text_classification.py: a run on an easy task writes what transformers' examples
write and learns it; string labels reach the config; bad input is refused before anything is written; two CPU ranks
with gradual unfreezing end where one process with the same global batch ends; real AG News with MiniLM."""

import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "recipes" / "text-classification" / "run_text_classification.py"
_spec = importlib.util.spec_from_file_location("run_text_classification", SCRIPT)
recipe = importlib.util.module_from_spec(_spec)
sys.modules["run_text_classification"] = (
    recipe  # dataclasses resolve their module while the recipe's classes are built
)
_spec.loader.exec_module(recipe)

FILLER = [f"w{i}" for i in range(30)]
CLASSES = {"Sports": "goal", "World": "treaty", "Sci/Tech": "laptop"}  # topic -> the stem of its words
TOPIC_WORDS = [f"{stem}{i}" for stem in CLASSES.values() for i in range(5)]
COMMON = ["--report_to", "none", "--use_cpu", "--disable_tqdm", "true", "--save_strategy", "no", "--seed", "0"]


def write_task(path: Path, n: int, seed: int = 0) -> Path:
    """`text<TAB>topic` rows of 6 words: 4 of the topic's 5 words and 2 shared fillers, shuffled."""
    rng = random.Random(seed)
    lines = ["text\ttopic"]
    for _ in range(n):
        topic = rng.choice(sorted(CLASSES))
        words = rng.choices([f"{CLASSES[topic]}{i}" for i in range(5)], k=4) + rng.choices(FILLER, k=2)
        rng.shuffle(words)
        lines.append(" ".join(words) + "\t" + topic)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A 2-block BERT (hidden 16) saved with a BertTokenizerFast built from a word list: no download."""
    from tiny_models import tiny_bert
    from transformers import BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *FILLER, *TOPIC_WORDS]
    # transformers 5 takes the vocabulary as `vocab` (a dict); a `vocab_file=` keyword is silently ignored.
    tokenizer = BertTokenizerFast(vocab={word: i for i, word in enumerate(vocab)}, do_lower_case=True)
    assert tokenizer.unk_token_id not in tokenizer("w1 goal3")["input_ids"]
    tokenizer.save_pretrained(folder)
    # A wider init (and ReLU) than BERT's 0.02: the tiny model leaves the ln(3) plateau within a few epochs.
    tiny_bert(layers=2, num_labels=3, vocab_size=len(vocab), hidden_act="relu", initializer_range=0.2).save_pretrained(
        folder
    )
    return folder


@pytest.fixture(scope="module")
def task_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("task")
    return {
        "train": write_task(root / "train.tsv", 240, seed=1),
        "validation": write_task(root / "dev.tsv", 60, seed=2),
        "test": write_task(root / "test.tsv", 60, seed=3),
    }


def run_args(model, out, files, *extra):
    return [
        "--model_name_or_path", str(model), "--output_dir", str(out),
        "--train_file", str(files["train"]), "--validation_file", str(files["validation"]),
        "--test_file", str(files["test"]), "--text_column_names", "text", "--label_column_name", "topic",
        *COMMON, *extra,
    ]  # fmt: skip


def test_help_lists_the_strategy_flags():
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    for flag in ("--train_file", "--text_column_names", "--gradual_unfreezing", "--lp_mode", "--use_lora",
                 "--wise_ft_alphas", "--cv_folds", "--max_train_samples"):  # fmt: skip
        assert flag in out.stdout


def test_smoke_run_learns_and_writes_the_example_files(tiny_model, task_files, tmp_path):
    out = tmp_path / "run"
    train = ["--do_train", "--do_eval", "--do_predict", "--num_train_epochs", "4", "--learning_rate", "5e-3",
             "--per_device_train_batch_size", "16"]  # fmt: skip
    results = recipe.main(run_args(tiny_model, out, task_files, *train))
    for name in ("train_results.json", "eval_results.json", "test_results.json", "all_results.json",
                 "trainer_state.json", "config.json", "model.safetensors", "tokenizer.json", "README.md",
                 "predict_results.txt"):  # fmt: skip
        assert (out / name).is_file(), name
    # A chance-level (1/3) or broken run cannot reach this: the keyword decides the topic.
    assert results["eval"]["eval_accuracy"] > 0.9
    assert results["test"]["test_accuracy"] > 0.9
    assert json.loads((out / "all_results.json").read_text())["eval_accuracy"] == results["eval"]["eval_accuracy"]
    config = json.loads((out / "config.json").read_text())
    assert config["label2id"] == {"Sci/Tech": 0, "Sports": 1, "World": 2}
    assert config["id2label"] == {"0": "Sci/Tech", "1": "Sports", "2": "World"}
    assert config["problem_type"] == "single_label_classification"
    lines = (out / "predict_results.txt").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 61 and lines[1].split("\t")[1] in CLASSES


def test_one_file_is_split_by_rows_and_strategies_compose(tiny_model, task_files, tmp_path):
    """ULMFiT flags on one file split into train/validation/test; a json config file gives the same arguments."""
    out = tmp_path / "ulmfit"
    args = {
        "model_name_or_path": str(tiny_model), "output_dir": str(out), "train_file": str(task_files["train"]),
        "text_column_names": ["text"], "label_column_name": "topic", "validation_split": 40, "test_split": 0.25,
        "do_train": True, "do_eval": True, "do_predict": True, "num_train_epochs": 4, "learning_rate": 1e-2,
        "per_device_train_batch_size": 16, "gradual_unfreezing": True, "layer_lr_decay": 0.3846,
        "lr_scheduler_type": "slanted_triangular", "report_to": "none", "use_cpu": True, "save_strategy": "no", "logging_steps": 2,
    }  # fmt: skip
    path = tmp_path / "args.json"
    path.write_text(json.dumps(args))
    results = recipe.main([str(path)])
    assert results["train"]["train_samples"] == 240 - 40 - 60
    assert results["eval"]["eval_samples"] == 40 and results["test"]["test_samples"] == 60
    assert results["eval"]["eval_accuracy"] > 0.8
    state = json.loads((out / "trainer_state.json").read_text())
    logged = [
        log for log in state["log_history"] if "lr/00_embeddings_no_decay" in log
    ]  # weight_decay 0: all no_decay
    assert logged and logged[0]["lr/00_embeddings_no_decay"] == 0.0  # frozen first (gradual unfreezing) ...
    last = logged[-1]  # ... and, once unfrozen, 0.3846^3 of the head's LR (LLRD over blocks 1, 2 and the head)
    assert last["lr/00_embeddings_no_decay"] == pytest.approx(last["lr/03_head_no_decay"] * 0.3846**3, rel=1e-6)


def test_lora_and_lp_ft(tiny_model, task_files, tmp_path):
    lora = recipe.main(run_args(tiny_model, tmp_path / "lora", task_files, "--do_train", "--do_eval", "--use_lora",
                                "--lora_r", "4", "--lora_target_modules", "query", "value", "--max_steps", "3"))  # fmt: skip
    assert (tmp_path / "lora" / "adapter_config.json").is_file() and lora["train"]["train_samples"] == 240
    lpft = recipe.main(run_args(tiny_model, tmp_path / "lpft", task_files, "--do_train", "--do_eval",
                                "--lp_mode", "logistic", "--lp_c_grid", "0.1", "1", "10", "--max_steps", "3"))  # fmt: skip
    assert "lp_probe_val_accuracy" in lpft["train"]


def test_multi_label_and_regression(tiny_model, tmp_path):
    rng = random.Random(0)
    multi, reg = [], []
    for _ in range(40):
        words = rng.choices(FILLER, k=5)
        multi.append({"text": " ".join(words), "tags": sorted({rng.choice(["a", "b", "c"]) for _ in range(2)})})
        reg.append({"text": " ".join(words), "score": rng.random()})
    for name, rows in (("multi.jsonl", multi), ("reg.jsonl", reg)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = ["--model_name_or_path", str(tiny_model), "--text_column_names", "text", "--do_train", "--do_eval",
            "--max_steps", "2", "--ignore_mismatched_sizes", *COMMON]  # fmt: skip
    m = recipe.main([*base, "--output_dir", str(tmp_path / "m"), "--train_file", str(tmp_path / "multi.jsonl"),
                     "--label_column_name", "tags"])  # fmt: skip
    assert {"eval_f1_micro", "eval_f1_macro", "eval_accuracy"} <= set(m["eval"])
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification" and config["label2id"] == {"a": 0, "b": 1, "c": 2}
    r = recipe.main([*base, "--output_dir", str(tmp_path / "r"), "--train_file", str(tmp_path / "reg.jsonl"),
                     "--label_column_name", "score"])  # fmt: skip
    assert "eval_mse" in r["eval"]
    assert json.loads((tmp_path / "r" / "config.json").read_text())["problem_type"] == "regression"


# ---------------------------------------------------------------------- bad input: refused, nothing written
def _refused(argv, out: Path, match: str):
    with pytest.raises(ValueError, match=match):
        recipe.main(argv)
    assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.iterdir())


def test_missing_file_is_named_and_nothing_is_written(tiny_model, task_files, tmp_path):
    out = tmp_path / "out"
    files = {**task_files, "validation": tmp_path / "no-such-dev.tsv"}
    _refused(
        run_args(tiny_model, out, files, "--do_train"), out, r"--validation_file .*no-such-dev\.tsv: no such file"
    )


def test_missing_column_lists_the_columns_there_are(tiny_model, task_files, tmp_path):
    out = tmp_path / "out"
    argv = run_args(tiny_model, out, task_files, "--do_train") + ["--label_column_name", "label"]
    _refused(argv, out, r"no column 'label'; its columns are \['text', 'topic'\]")
    argv = run_args(tiny_model, out, task_files, "--do_train") + ["--text_column_names", "sentence"]
    _refused(argv, out, r"--text_column_names 'sentence'.*its columns are \['text', 'topic'\]")


def test_float_labels_are_refused_for_classification(tiny_model, tmp_path):
    (tmp_path / "scores.csv").write_text("text,label\n" + "".join(f"w{i} w{i + 1},{i / 10}\n" for i in range(20)))
    out = tmp_path / "out"
    argv = ["--model_name_or_path", str(tiny_model), "--output_dir", str(out), "--train_file",
            str(tmp_path / "scores.csv"), "--text_column_names", "text", "--do_train",
            "--problem_type", "single_label_classification", *COMMON]  # fmt: skip
    _refused(argv, out, r"float labels \(e\.g\. 0\.\d+\).*--problem_type regression")


def test_two_ranks_launched_without_gloo_are_refused(tiny_model, task_files, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    out = tmp_path / "out"
    argv = [a for a in run_args(tiny_model, out, task_files, "--do_train") if a != "--use_cpu"]
    _refused(argv, out, r"WORLD_SIZE=2.*--use_cpu --ddp_backend gloo")


# ---------------------------------------------------------------------- two CPU processes
@pytest.mark.slow
def test_two_cpu_ranks_with_gradual_unfreezing_match_one_process(tiny_model, task_files, tmp_path):
    """torchrun, 2 ranks x batch 4 (gloo) vs 1 process x batch 8: the same steps, so the same metrics."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("WORLD_SIZE", None)
    flags = ["--do_train", "--do_eval", "--num_train_epochs", "2", "--learning_rate", "5e-3", "--gradual_unfreezing",
             "--layer_lr_decay", "0.5", "--lr_scheduler_type", "slanted_triangular",
             "--per_device_eval_batch_size", "6", "--logging_steps", "1"]  # fmt: skip
    torchrun = Path(sys.executable).with_name("torchrun")
    cmds = {
        "ddp": [str(torchrun), "--standalone", "--nproc_per_node", "2", str(SCRIPT),
                *run_args(tiny_model, tmp_path / "ddp", task_files, *flags, "--per_device_train_batch_size", "4",
                          "--ddp_backend", "gloo")],
        "one": [sys.executable, str(SCRIPT),
                *run_args(tiny_model, tmp_path / "one", task_files, *flags, "--per_device_train_batch_size", "8")],
    }  # fmt: skip
    procs = {k: subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for k, c in cmds.items()}  # fmt: skip
    for name, proc in procs.items():
        log, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{name} failed:\n{log[-4000:]}"
        if name == "ddp":
            assert "world size: 2" in log
    ddp = json.loads((tmp_path / "ddp" / "all_results.json").read_text())
    one = json.loads((tmp_path / "one" / "all_results.json").read_text())
    state = {k: json.loads((tmp_path / k / "trainer_state.json").read_text()) for k in ("ddp", "one")}
    assert state["ddp"]["global_step"] == state["one"]["global_step"] == 2 * 240 // 8
    losses = {k: [log["loss"] for log in s["log_history"] if "loss" in log] for k, s in state.items()}
    assert losses["ddp"] == pytest.approx(losses["one"], abs=1e-4)
    assert ddp["eval_accuracy"] == one["eval_accuracy"] and ddp["eval_samples"] == one["eval_samples"] == 60
    assert ddp["eval_loss"] == pytest.approx(one["eval_loss"], abs=1e-4)
    assert ddp["train_loss"] == pytest.approx(one["train_loss"], abs=1e-4)
    assert one["eval_accuracy"] > 0.8  # and the shared run did learn the task


# ---------------------------------------------------------------------- real data
@pytest.mark.slow
@pytest.mark.shared_data
def test_agnews_string_topics_reach_the_config_and_minilm_learns(minilm_path, shared_data, tmp_path):
    agnews = shared_data("agnews", "test.tsv")
    out = tmp_path / "agnews"
    results = recipe.main([
        "--model_name_or_path", str(minilm_path), "--output_dir", str(out), "--train_file", str(agnews),
        "--column_names", "text", "topic", "--text_column_names", "text", "--label_column_name", "topic",
        "--validation_split", "500", "--test_split", "1000", "--max_train_samples", "256", "--max_eval_samples", "200",
        "--do_train", "--do_eval", "--learning_rate", "1e-4", "--per_device_train_batch_size", "16",
        "--max_seq_length", "64", *COMMON,
    ])  # fmt: skip
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "Business", "1": "Sci/Tech", "2": "Sports", "3": "World"}
    assert results["eval"]["eval_accuracy"] > 0.5  # 256 examples, one epoch; chance is 0.25


def test_cv_folds_choose_the_learning_rate_on_training_folds_only(tiny_model, task_files, tmp_path):
    """--cv_folds 2 --cv_trials 2: each trial trains on one half of the training rows and scores the other; the final
    run uses the best trial's learning rate; validation and test rows are never seen by the search."""
    out = tmp_path / "cv"
    extra = ["--do_train", "--do_eval", "--num_train_epochs", "4", "--per_device_train_batch_size", "16",
             "--cv_folds", "2", "--cv_trials", "2", "--cv_learning_rates", "5e-3", "3e-2"]  # fmt: skip
    results = recipe.main(run_args(tiny_model, out, task_files, *extra))
    cv = results["cv"]
    assert cv["folds"] == 2 and len(cv["trials"]) == 2
    assert all(len(t["fold_scores"]) == 2 and t["state"] == "COMPLETE" for t in cv["trials"])
    best = max(cv["trials"], key=lambda t: t["objective"])
    assert cv["hyperparameters"] == best["hyperparameters"]
    assert cv["objective"] == pytest.approx(sum(best["fold_scores"]) / 2)
    lr = cv["hyperparameters"]["learning_rate"]
    assert 5e-3 <= lr <= 3e-2
    assert results["train"]["cv_learning_rate"] == lr
    assert json.loads((out / "train_results.json").read_text())["cv_learning_rate"] == lr
    assert results["eval"]["eval_accuracy"] > 0.8  # the final run at the chosen LR learned the task
