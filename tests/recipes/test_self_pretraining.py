"""recipes/self-pretraining/run_self_pretraining.py: MLM pretraining on the training texts only, then fine-tuning by
the text-classification recipe from what stage 1 wrote; the paper's random-init baseline; the two-command form and
stage 2's flags passed through; bad input refused before anything is written; a few steps on real AG News."""

import importlib.util
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "recipes" / "self-pretraining" / "run_self_pretraining.py"
_spec = importlib.util.spec_from_file_location("run_self_pretraining", SCRIPT)
recipe = importlib.util.module_from_spec(_spec)
sys.modules["run_self_pretraining"] = recipe  # dataclasses resolve their module while the recipe's classes are built
_spec.loader.exec_module(recipe)

FILLER = [f"w{i}" for i in range(30)]
KEYWORDS = {"pos": "great", "neg": "awful"}  # the label is decided by one keyword among 5 fillers
HELD_OUT_WORD = "zebra"  # only in validation and test rows: it must not reach the tokenizer's vocabulary
TINY_BERT = "hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64"
COMMON = ["--report_to", "none", "--use_cpu", "--disable_tqdm", "true", "--save_strategy", "no", "--seed", "0"]
STAGE2 = ["--", "--num_train_epochs", "8", "--learning_rate", "2e-3", "--per_device_train_batch_size", "16",
          "--save_strategy", "no"]  # fmt: skip


def write_task(path: Path, n: int, seed: int, extra_word: str | None = None) -> Path:
    rng = random.Random(seed)
    lines = ["text\tlabel"]
    for _ in range(n):
        label = rng.choice(sorted(KEYWORDS))
        words = rng.choices(FILLER, k=5) + [KEYWORDS[label]] + ([extra_word] if extra_word else [])
        rng.shuffle(words)
        lines.append(" ".join(words) + "\t" + label)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def task_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("task")
    return {
        "train": write_task(root / "train.tsv", 240, seed=1),
        "validation": write_task(root / "dev.tsv", 60, seed=2, extra_word=HELD_OUT_WORD),
        "test": write_task(root / "test.tsv", 60, seed=3, extra_word=HELD_OUT_WORD),
    }


def run_args(out, files, *extra):
    return [
        "--output_dir", str(out), "--train_file", str(files["train"]), "--validation_file", str(files["validation"]),
        "--test_file", str(files["test"]), "--text_column_names", "text", "--vocab_size", "100",
        "--config_overrides", TINY_BERT, *COMMON, *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def runs(task_files, tmp_path_factory):
    """Self-pretrained (MLM, 4 epochs) and the random-init baseline, each fine-tuned with the same stage 2 flags."""
    root = tmp_path_factory.mktemp("runs")
    pretrain = ["--do_train", "--do_eval", "--num_train_epochs", "4", "--learning_rate", "5e-3",
                "--per_device_train_batch_size", "16", "--logging_steps", "1"]  # fmt: skip
    self_pt = recipe.main(run_args(root / "self", task_files, *pretrain, *STAGE2))
    baseline = recipe.main(run_args(root / "scratch", task_files, "--random_init", "--do_eval", *STAGE2))
    return {"self": (root / "self", self_pt), "scratch": (root / "scratch", baseline)}


def embeddings(folder: Path, kind: str = "word"):
    from safetensors.torch import load_file

    weights = load_file(folder / "model.safetensors")
    return next(v for k, v in weights.items() if k.endswith(f"embeddings.{kind}_embeddings.weight"))


def vocabulary(folder: Path) -> dict:
    return json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]


def test_help_lists_both_stages_flags():
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    for flag in ("--config_overrides", "--model_type", "--tokenizer_name", "--vocab_size", "--mlm_probability",
                 "--max_seq_length", "--stage", "--finetune_args", "--random_init", "--column_names",
                 "--validation_split", "--max_train_samples", "--resume_from_checkpoint"):  # fmt: skip
        assert flag in out.stdout, flag


def test_both_stages_write_their_files_and_the_combined_results(runs):
    out, results = runs["self"]
    for name in ("train_results.json", "eval_results.json", "all_results.json", "trainer_state.json", "config.json",
                 "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md"):  # fmt: skip
        assert (out / "pretrain" / name).is_file(), f"pretrain/{name}"
    for name in ("train_results.json", "eval_results.json", "test_results.json", "all_results.json",
                 "trainer_state.json", "model.safetensors", "tokenizer.json", "predict_results.txt"):  # fmt: skip
        assert (out / "finetune" / name).is_file(), f"finetune/{name}"
    combined = json.loads((out / "all_results.json").read_text())
    assert combined == results["all"]
    assert combined["pretrain_eval_loss"] == results["pretrain"]["eval_loss"]
    assert combined["pretrain_perplexity"] == pytest.approx(math.exp(combined["pretrain_eval_loss"]))
    assert combined["finetune_test_accuracy"] == results["finetune"]["test"]["test_accuracy"]
    assert combined["pretrain_train_samples"] == combined["finetune_train_samples"] == 240


def test_mlm_loss_falls_below_the_random_init(runs):
    out, results = runs["self"]
    n_vocab = len(vocabulary(out / "pretrain"))
    losses = [log["loss"] for log in json.loads((out / "pretrain" / "trainer_state.json").read_text())["log_history"]
              if "loss" in log]  # fmt: skip
    assert losses[0] == pytest.approx(math.log(n_vocab), abs=0.3)  # an untrained MLM guesses uniformly ...
    assert sum(losses[-5:]) / 5 < losses[0] - 0.5  # ... a trained one does not
    baseline = runs["scratch"][1]["pretrain"]
    assert "train_loss" not in baseline  # --random_init trained nothing ...
    assert baseline["eval_loss"] == pytest.approx(math.log(n_vocab), abs=0.3)  # ... and scores as an untrained MLM
    assert results["pretrain"]["eval_loss"] < baseline["eval_loss"] - 0.3


def test_the_tokenizer_is_trained_on_training_texts_only_and_reused(runs):
    out, _ = runs["self"]
    vocab = vocabulary(out / "pretrain")
    assert {"great", "awful", "w17", "[MASK]", "[PAD]"} <= set(vocab)
    assert HELD_OUT_WORD not in vocab and "z" not in vocab  # in validation/test rows only
    assert vocabulary(out / "finetune") == vocab  # stage 2 tokenised with stage 1's tokenizer
    config = json.loads((out / "finetune" / "config.json").read_text())
    assert config["vocab_size"] == len(vocab) and config["hidden_size"] == 32 and config["num_hidden_layers"] == 2


def test_stage_2_starts_from_the_pretrained_weights(runs):
    """[MASK] is an input of the MLM only: its row trains in stage 1, gets no gradient in stage 2 (Adam, no weight
    decay: exactly unchanged), so the fine-tuned row equals the pretrained one and not the random init's."""
    import torch

    out, _ = runs["self"]
    mask_id = vocabulary(out / "pretrain")["[MASK]"]
    init, pretrained, finetuned = (embeddings(f) for f in
                                   (runs["scratch"][0] / "pretrain", out / "pretrain", out / "finetune"))  # fmt: skip
    assert torch.equal(finetuned[mask_id], pretrained[mask_id])
    assert not torch.allclose(pretrained[mask_id], init[mask_id], atol=1e-3)  # the MLM moved it ...
    unused = slice(100, 512)  # ... from the same init: positions past the 9-token rows never train
    same_init = embeddings(runs["scratch"][0] / "pretrain", "position"), embeddings(out / "pretrain", "position")
    assert torch.equal(same_init[0][unused], same_init[1][unused])
    great = vocabulary(out / "pretrain")["great"]
    assert not torch.equal(finetuned[great], pretrained[great])  # and fine-tuning did train the task's words
    # the baseline's stage 2 started from its own random init (the same seed: the same init)
    assert torch.equal(embeddings(runs["scratch"][0] / "finetune")[mask_id], init[mask_id])


def test_fine_tuned_models_learn_the_keyword(runs):
    for name in ("self", "scratch"):
        finetune = runs[name][1]["finetune"]
        assert finetune["eval"]["eval_accuracy"] > 0.9, name  # chance is 0.5
        assert finetune["test"]["test_accuracy"] > 0.9, name


def test_two_commands_json_config_and_stage_2_flags(runs, task_files, tmp_path):
    """Stage 1 from a .json file (blocks of concatenated text, an existing tokenizer); then the text recipe from its
    folder; then --stage finetune with --finetune_args, flags after `--` overriding it."""
    out = tmp_path / "two"
    args = {
        "output_dir": str(out), "train_file": str(task_files["train"]), "text_column_names": ["text"],
        "validation_split": 40, "test_split": 0.25, "stage": "pretrain", "tokenizer_name": str(runs["self"][0] / "pretrain"),
        "config_overrides": TINY_BERT, "line_by_line": False, "max_seq_length": 32, "do_train": True,
        "do_eval": True, "max_steps": 3, "report_to": "none", "use_cpu": True, "save_strategy": "no",
    }  # fmt: skip
    (tmp_path / "args.json").write_text(json.dumps(args))
    results = recipe.main([str(tmp_path / "args.json")])
    assert not (out / "finetune").exists() and results["finetune"] == {}
    assert results["pretrain"]["train_samples"] == 140 // 4  # 140 rows x 8 tokens in blocks of 32 (a few are dropped)
    assert vocabulary(out / "pretrain") == vocabulary(runs["self"][0] / "pretrain")

    text_recipe = recipe.load_text_recipe()
    text = text_recipe.main(["--model_name_or_path", str(out / "pretrain"), "--output_dir", str(tmp_path / "text"),
                             "--train_file", str(task_files["train"]), "--text_column_names", "text", "--do_train",
                             "--max_steps", "2", *COMMON])  # fmt: skip
    assert text["train"]["train_samples"] == 192

    (tmp_path / "ft.json").write_text(json.dumps({"max_steps": 5, "layer_lr_decay": 0.5, "logging_steps": 1}))
    args = {**args, "stage": "finetune", "finetune_args": str(tmp_path / "ft.json")}
    (tmp_path / "args.json").write_text(json.dumps(args))
    results = recipe.main([str(tmp_path / "args.json"), "--", "--max_steps", "3"])
    state = json.loads((out / "finetune" / "trainer_state.json").read_text())
    assert state["global_step"] == 3  # `--` beats the file
    logged = [log for log in state["log_history"] if "lr/00_embeddings_no_decay" in log]
    assert logged and logged[0]["lr/00_embeddings_no_decay"] == pytest.approx(logged[0]["lr/03_head_no_decay"] / 8)
    assert results["finetune"]["test"]["test_samples"] == 60  # the rows split as in stage 1
    combined = json.loads((out / "all_results.json").read_text())
    assert combined["pretrain_eval_loss"] == results["pretrain"]["eval_loss"] and "finetune_test_accuracy" in combined


def test_stage_1_resumes_from_its_last_checkpoint(task_files, tmp_path):
    """A rerun with a longer budget continues the checkpoint: steps 1-4 are the first run's (another learning rate
    would have given other losses), and the checkpoint's tokenizer is reused."""
    out = tmp_path / "resume"
    base = [*run_args(out, task_files, "--stage", "pretrain", "--do_train", "--logging_steps", "1"),
            "--save_strategy", "steps", "--save_steps", "2"]  # fmt: skip
    recipe.main([*base, "--max_steps", "4", "--learning_rate", "5e-3"])
    first = json.loads((out / "pretrain" / "trainer_state.json").read_text())["log_history"]
    recipe.main([*base, "--max_steps", "6", "--learning_rate", "1e-4"])
    state = json.loads((out / "pretrain" / "trainer_state.json").read_text())
    losses = {log["step"]: log["loss"] for log in state["log_history"] if "loss" in log}
    assert state["global_step"] == 6 and sorted(losses) == [1, 2, 3, 4, 5, 6]
    assert [losses[s] for s in range(1, 5)] == [log["loss"] for log in first if "loss" in log]
    assert (out / "pretrain" / "checkpoint-6").is_dir()


# ---------------------------------------------------------------------- bad input: refused, nothing written
def _refused(argv, out: Path, match: str):
    with pytest.raises(ValueError, match=match):
        recipe.main(argv)
    assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.rglob("*"))


def test_missing_file_is_named_and_nothing_is_written(task_files, tmp_path):
    out = tmp_path / "out"
    files = {**task_files, "validation": tmp_path / "no-such-dev.tsv"}
    _refused(run_args(out, files, "--do_train", *STAGE2), out, r"--validation_file .*no-such-dev\.tsv: no such file")


def test_missing_column_lists_the_columns_there_are(task_files, tmp_path):
    out = tmp_path / "out"
    argv = run_args(out, task_files, "--do_train", "--text_column_names", "sentence")
    _refused(argv, out, r"--text_column_names 'sentence'.*its columns are \['text', 'label'\]")
    argv = run_args(out, task_files, "--do_train", "--label_column_name", "topic")
    _refused(argv, out, r"no column 'topic'; its columns are \['text', 'label'\]")


def test_bad_config_override_names_the_key(task_files, tmp_path):
    out = tmp_path / "out"
    argv = run_args(out, task_files, "--do_train", "--config_overrides", "hidden_size=32,num_layers=2")
    _refused(argv, out, r"--config_overrides: 'num_layers' is not a field of BertConfig; its fields are \[.*'num_hidden_layers'")  # fmt: skip


def test_bad_stage_2_arguments_are_refused_before_stage_1(task_files, tmp_path):
    out = tmp_path / "out"
    _refused(run_args(out, task_files, "--do_train", "--", "--no_such_flag", "1"), out, r"no_such_flag")
    _refused(run_args(out, task_files, "--do_train", "--", "--model_name_or_path", "x"), out,
             r"Stage 2 takes --model_name_or_path from this command")  # fmt: skip
    _refused(run_args(out, task_files), out, r"give exactly one of them")  # neither --do_train nor --random_init
    _refused(run_args(out, task_files, "--stage", "finetune"), out, r"holds no model: run --stage pretrain")


# ---------------------------------------------------------------------- real data
@pytest.mark.slow
@pytest.mark.shared_data
def test_agnews_headerless_rows_a_few_steps_each(shared_data, tmp_path):
    agnews = shared_data("agnews", "test.tsv")
    out = tmp_path / "agnews"
    results = recipe.main([
        "--output_dir", str(out), "--train_file", str(agnews), "--column_names", "text", "topic",
        "--text_column_names", "text", "--label_column_name", "topic", "--validation_split", "500",
        "--test_split", "1000", "--max_train_samples", "300", "--max_eval_samples", "100", "--max_seq_length", "64",
        "--vocab_size", "2000", "--config_overrides", "hidden_size=64,num_hidden_layers=2,num_attention_heads=2,"
        "intermediate_size=128", "--do_train", "--do_eval", "--max_steps", "10", "--learning_rate", "1e-3",
        *COMMON, "--", "--max_steps", "10", "--learning_rate", "1e-3", "--max_predict_samples", "100",
    ])  # fmt: skip
    vocab = vocabulary(out / "pretrain")
    assert 500 < len(vocab) <= 2000
    assert results["pretrain"]["train_samples"] == 300 and results["finetune"]["eval"]["eval_samples"] == 100
    config = json.loads((out / "finetune" / "config.json").read_text())
    assert config["id2label"] == {"0": "Business", "1": "Sci/Tech", "2": "Sports", "3": "World"}
    assert results["pretrain"]["eval_loss"] < math.log(len(vocab))
