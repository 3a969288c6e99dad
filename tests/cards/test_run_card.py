"""The model card a run writes: model-index equal to the run's results, the strategy from the registry, the phase
table from the schedule, the depth drift, the base model, the records `hf-transfer-meta card` rebuilds it from."""

import json
import os
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_models import tiny_bert, token_dataset  # noqa: E402

import hf_transfer_meta.cards.plots as plots  # noqa: E402
from hf_transfer_meta.cards import eval_results, load_run, parse_metric_key  # noqa: E402
from hf_transfer_meta.cards.record import command_line, non_default_arguments  # noqa: E402
from hf_transfer_meta.cli import main as cli_main  # noqa: E402
from hf_transfer_meta.transfer import TransferTrainer, TransferTrainingArguments  # noqa: E402
from hf_transfer_meta.transfer.strategies import STRATEGIES  # noqa: E402

TOKEN = "hf_PlantedCardToken0123456789abcdefQQ"


def _accuracy(p):
    return {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())}


def _run(out, model=None, evaluate=True, **kw):
    fields = dict(
        output_dir=str(out), report_to="none", use_cpu=True, max_steps=8, per_device_train_batch_size=16,
        learning_rate=1e-2, logging_steps=1, save_strategy="no", eval_strategy="steps", eval_steps=4,
        disable_tqdm=True, hub_token=TOKEN,
    )  # fmt: skip
    args = TransferTrainingArguments(**{**fields, **kw})
    trainer = TransferTrainer(model or tiny_bert(layers=3), args, train_dataset=token_dataset(),
                              eval_dataset=token_dataset(32, seed=1), compute_metrics=_accuracy)  # fmt: skip
    trainer.train()
    if evaluate:
        metrics = trainer.evaluate()  # the next evaluate() after train must work (accelerate's state intact)
        metrics.update(trainer.evaluate(token_dataset(32, seed=2), metric_key_prefix="test_shuffled"))
        metrics["test_shuffled_corruption_severity"] = 3
        trainer.save_metrics("all", metrics)
    return trainer


def test_gradual_unfreezing_card(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    out = tmp_path / "gu"
    trainer = _run(
        out, max_steps=10, gradual_unfreezing=True, unfreeze_every=2, unfreeze_unit="step", layer_lr_decay=0.5
    )
    trainer.create_model_card(dataset="random tokens", base_model="org/tiny-bert-base")
    card = ModelCard.load(out / "README.md")
    results = json.loads((out / "all_results.json").read_text())

    # model-index: every evaluation metric of all_results.json, with its own split and subset, nothing else
    got = {r.metric_name: r for r in card.data.eval_results}
    want = {k for k in results if parse_metric_key(k) and not isinstance(results[k], bool)}
    assert set(got) == want and {"eval_accuracy", "eval_loss", "test_shuffled_accuracy"} <= want
    assert all(got[k].metric_value == results[k] for k in got)
    shifted = got["test_shuffled_accuracy"]
    assert (shifted.dataset_split, shifted.dataset_config) == ("test", "shuffled")
    assert shifted.dataset_args == {"corruption": "shuffled", "severity": 3}
    assert got["eval_accuracy"].dataset_split == "validation" and got["eval_accuracy"].dataset_config is None
    assert card.data.base_model == "org/tiny-bert-base" and "[org/tiny-bert-base]" in card.text
    assert {"hf-transfer-meta", "gradual_unfreezing", "discriminative_lr"} <= set(card.data.tags)
    assert card.data.model_name == "gu"  # rendered despite eval_results (design notes, trap 15)

    # strategy rows come from the registry: title and paper of each active strategy
    for name in ("gradual_unfreezing", "discriminative_lr"):
        assert f"{STRATEGIES[name].title} (`{name}`)" in card.text and STRATEGIES[name].paper in card.text
    # the phase table is the schedule's: 5 depths (embeddings, 3 blocks, head), one more every 2 steps
    phases = trainer.transfer_schedule.describe()
    assert [p["trainable_depths"] for p in phases] == [[4], [3, 4], [2, 3, 4], [1, 2, 3, 4], [0, 1, 2, 3, 4]]
    rows = [line for line in card.text.splitlines() if re.match(r"\| (unfreeze_\d+_depths|all_depths) \|", line)]
    assert len(rows) == 5
    assert rows[0].startswith("| unfreeze_1_depths | 0-2 |  |  |  |  | ✓ |")
    assert rows[-1].startswith("| all_depths | 8-10 | ✓ | ✓ | ✓ | ✓ | ✓ |")
    # per-depth LRs: LLRD 0.5 from the head (1e-2) down
    summary = json.loads((out / "transfer_summary.json").read_text())
    lrs = summary["depth_learning_rates"]
    assert lrs == pytest.approx(
        {"embeddings": 6.25e-4, "block 1": 1.25e-3, "block 2": 2.5e-3, "block 3": 5e-3, "head": 1e-2}
    )
    assert "| 4 | head | dropout, classifier |" in card.text

    # drift: the embeddings train for steps 8-10 only, the head all along: both moved, measured exactly
    drift = json.loads((out / "depth_drift.json").read_text())
    start = load_file(out / "_transfer_start_weights.safetensors")
    lm = trainer.get_layer_map()
    for d in drift["depths"]:
        names = [n for n in start if lm.depth_of.get(n) == d["depth"]]
        end = dict(trainer.model.named_parameters())
        moved = sum(float((end[n].detach().double() - start[n].double()).pow(2).sum()) for n in names) ** 0.5
        norm = sum(float(start[n].double().pow(2).sum()) for n in names) ** 0.5
        assert d["relative_change"] == pytest.approx(moved / norm, rel=1e-9) and d["relative_change"] > 0

    # hyper-parameters: ours and Trainer's non-defaults; never a token, anywhere in the folder
    assert "| layer_lr_decay | 0.5 |" in card.text and "| max_steps | 10 |" in card.text
    assert "hub_token" not in card.text
    for path in out.rglob("*"):
        assert TOKEN.encode() not in path.read_bytes(), path
    info = json.loads((out / "run_info.json").read_text())
    assert info["git"] is None or len(info["git"]["commit"]) == 40
    assert info["versions"]["transformers"] and info["versions"]["huggingface_hub"]

    # `hf-transfer-meta card RUN_DIR` writes the same card from the records alone
    before = (out / "README.md").read_bytes()
    os.remove(out / "README.md")
    os.remove(out / "plot_losses.png")
    assert cli_main(["card", str(out)]) == 0
    assert (out / "README.md").read_bytes() == before and (out / "plot_losses.png").is_file()


def test_surgical_card_frozen_depths_did_not_move(tmp_path):
    out = tmp_path / "surgical"
    trainer = _run(out, evaluate=False, surgical_blocks=["first"])
    trainer.create_model_card()
    drift = {d["label"]: d["relative_change"] for d in json.loads((out / "depth_drift.json").read_text())["depths"]}
    trained = set().union(*(p.depths for p in trainer.transfer_schedule.phases))
    lm = trainer.get_layer_map()
    for d in range(lm.num_depths):
        if d in trained:
            assert drift[lm.depth_label(d)] > 0
        else:
            assert drift[lm.depth_label(d)] == 0.0  # exactly: a frozen depth is bit-for-bit unchanged
    assert len(trained) < lm.num_depths
    text = (out / "README.md").read_text()
    assert "Surgical" in text and "surgical_blocks: first" in text
    # No all_results.json: the card falls back to the last logged evaluation, and says so.
    assert "Values from `trainer_state.json`" in text


def test_lp_ft_card_reports_probe(tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "lpft"
    trainer = _run(out, evaluate=False, lp_mode="logistic", lp_c_grid=[0.01, 1.0])
    trainer.create_model_card()
    summary = json.loads((out / "transfer_summary.json").read_text())
    probe = summary["linear_probe"]
    assert probe["C"] in (0.01, 1.0) and 0 <= probe["val_accuracy"] <= 1
    assert probe["C"] == float(trainer.probe_result.C)
    text = (out / "README.md").read_text()
    assert "`linear_probe`" in text and f"| C | {probe['C']:.4g} |" in text
    assert f"| val_accuracy | {probe['val_accuracy']:.4g} |" in text


def test_base_model_from_a_local_folder(tmp_path):
    from transformers import BertForSequenceClassification

    # A Hub cache snapshot folder: its path names the repository.
    snapshot = tmp_path / "hub" / "models--google--bert-tiny" / "snapshots" / "0123abc"
    tiny_bert().save_pretrained(snapshot)
    out = tmp_path / "run"
    trainer = _run(out, model=BertForSequenceClassification.from_pretrained(snapshot), evaluate=False, max_steps=2,
                   eval_strategy="no")  # fmt: skip
    trainer.create_model_card()
    card = ModelCard.load(out / "README.md")
    assert (
        card.data.base_model == "google/bert-tiny"
        and "[google/bert-tiny](https://huggingface.co/google/bert-tiny)" in card.text
    )

    # A folder whose config.json names where it was saved from (transformers 4 wrote `_name_or_path`): named on
    # the card, not claimed as the base model (the pip all-MiniLM-L6-v2 names its parent model there).
    folder = tmp_path / "pretrained"
    tiny_bert().save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "_name_or_path": "nreimers/parent-model"}))
    out1 = tmp_path / "run1"
    trainer = _run(out1, model=BertForSequenceClassification.from_pretrained(folder), evaluate=False, max_steps=2,
                   eval_strategy="no")  # fmt: skip
    trainer.create_model_card()
    card = ModelCard.load(out1 / "README.md")
    assert card.data.base_model is None
    assert f"`{folder}` (its config.json was saved from `nreimers/parent-model`)" in card.text

    other = tmp_path / "mine"
    tiny_bert().save_pretrained(other)
    out2 = tmp_path / "run2"
    trainer = _run(out2, model=BertForSequenceClassification.from_pretrained(other), evaluate=False, max_steps=2,
                   eval_strategy="no")  # fmt: skip
    trainer.create_model_card()
    card = ModelCard.load(out2 / "README.md")
    assert card.data.base_model is None and f"`{other}`" in card.text  # named, not linked


def test_no_matplotlib_card_without_plots(tmp_path, monkeypatch):
    out = tmp_path / "noplots"
    trainer = _run(out, evaluate=False, max_steps=2, eval_strategy="no", layer_lr_decay=0.8)
    monkeypatch.setattr(plots, "matplotlib_available", lambda: False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.create_model_card()
    assert any("pip install hf-transfer-meta[plots]" in str(w.message) for w in caught)
    text = (out / "README.md").read_text()
    assert "## Plots" not in text and not list(out.glob("*.png"))
    assert "## Transfer strategy" in text and "## How far each depth moved" in text


def test_card_cli_refuses_a_folder_that_is_no_run(tmp_path, capsys):
    assert cli_main(["card", str(tmp_path)]) == 2
    assert "neither run_info.json nor trainer_state.json" in capsys.readouterr().err
    assert cli_main(["card", str(tmp_path / "missing")]) == 2
    assert not (tmp_path / "README.md").exists()


# ------------------------------------------------------------------ pieces
def test_command_line_redacts_tokens():
    argv = ["run.py", "--hub_token", TOKEN, "--hub_token=hf_other0123456789abcdefghij", "--lr", "1e-3",
            "--note", f"token={TOKEN}", "--output_dir", "runs/hf_transfer_meta"]  # fmt: skip
    shown = command_line(argv)
    assert shown == ["run.py", "--hub_token", "<redacted>", "--hub_token=<redacted>", "--lr", "1e-3", "--note",
                     "token=<redacted>", "--output_dir", "runs/hf_transfer_meta"]  # fmt: skip


def test_non_default_arguments_does_not_build_arguments(monkeypatch):
    args = TransferTrainingArguments(output_dir="o", report_to="none", layer_lr_decay=0.7, learning_rate=3e-4,
                                     hub_token=TOKEN)  # fmt: skip
    import transformers.training_args as ta

    built = []
    monkeypatch.setattr(ta.TrainingArguments, "__post_init__", lambda self: built.append(self))
    values = non_default_arguments(args)
    assert built == []  # a new TrainingArguments resets accelerate's state
    assert values == {"output_dir": "o", "layer_lr_decay": 0.7, "learning_rate": 3e-4}


def test_few_shot_results_carry_ci_and_episodes():
    results = {"test_5way_1shot_accuracy": 0.61, "test_5way_1shot_accuracy_ci95": 0.012, "test_5way_1shot_episodes":
               600, "test_5way_1shot_runtime": 3.0, "eval_mse_10_steps": 0.2, "eval_mse_10_steps_ci95": 0.02}  # fmt: skip
    got = {
        r.metric_name: r
        for r in eval_results(
            results,
            task_type="few-shot-classification",
            task_name="classification",
            dataset_type="d",
            dataset_name="d",
        )
    }
    assert set(got) == {"test_5way_1shot_accuracy", "test_5way_1shot_accuracy_ci95", "eval_mse_10_steps",
                        "eval_mse_10_steps_ci95"}  # fmt: skip
    acc = got["test_5way_1shot_accuracy"]
    assert acc.metric_args == {"n_way": 5, "k_shot": 1, "episodes": 600, "ci95": 0.012}
    assert acc.task_name == "5-way 1-shot classification" and acc.dataset_split == "test"
    assert got["eval_mse_10_steps"].dataset_config == "10_steps" and got["eval_mse_10_steps"].metric_type == "mse"


def test_load_run_of_a_folder_without_records(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_run(str(tmp_path / "nope"))
    record = load_run(str(tmp_path))
    assert record.results == {} and record.results_source == "none"


def test_tensor_defaults_are_json(tmp_path):
    from hf_transfer_meta.cards.record import jsonable

    assert jsonable({"a": torch.tensor(1.5), "b": np.float32(2.0), "c": float("nan")}) == {"a": 1.5, "b": 2.0,
                                                                                            "c": "nan"}  # fmt: skip


def test_resumed_run_measures_drift_from_the_first_start(tmp_path):
    fields = dict(evaluate=False, layer_lr_decay=0.8, save_strategy="steps", save_steps=4, eval_strategy="no")
    _run(tmp_path / "whole", **fields)
    first = json.loads((tmp_path / "whole" / "depth_drift.json").read_text())

    out = tmp_path / "resumed"
    done = _run(out, **fields)
    start = (out / "_transfer_start_weights.safetensors").read_bytes()
    # A new trainer (its model another random init) resumes the same run from step 4.
    resumed = TransferTrainer(tiny_bert(layers=3, seed=5), done.args, train_dataset=token_dataset())
    resumed.train(resume_from_checkpoint=str(out / "checkpoint-4"))
    # theta_0 stays the first start's (not the checkpoint's, not the seed-5 model): the uninterrupted run's numbers.
    assert (out / "_transfer_start_weights.safetensors").read_bytes() == start
    again = json.loads((out / "depth_drift.json").read_text())
    assert [d["relative_change"] for d in again["depths"]] == pytest.approx(
        [d["relative_change"] for d in first["depths"]], rel=1e-5
    )


def test_plateau_phases_card_shows_where_each_phase_began(tmp_path):
    out = tmp_path / "plateau"
    trainer = _run(out, evaluate=False, max_steps=16, eval_steps=1, gradual_unfreezing=True, unfreeze_every=3,
                   unfreeze_unit="step", unfreeze_on="plateau", phase_patience=1, layer_lr_decay=None)  # fmt: skip
    trainer.create_model_card()
    text = (out / "README.md").read_text()
    phases = trainer.transfer_schedule.describe()  # the phases as they happened (switches at plateaus or caps)
    for p in phases:
        start, end = p["steps"]
        row = next(line for line in text.splitlines() if line.startswith(f"| {p['name']} |"))
        assert f"| {start}-{end} |" in row and row.rstrip().endswith(f"| {p.get('began', '')} |")
    assert "plateau" in {p.get("began") for p in phases[1:]}  # at least one phase began early, at a plateau
    assert "| began at |" in text and "`evaluations`:" in text
