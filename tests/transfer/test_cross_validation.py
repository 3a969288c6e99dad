import dataclasses

import numpy as np
import pytest
import torch
import transformers as T

from hf_transfer_meta.transfer.cross_validation import (
    apply_hyperparameters,
    cross_validated_search,
    folds_summary,
    kfold_indices,
)

datasets = pytest.importorskip("datasets")
pytest.importorskip("optuna")

SMALL = dict(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=20)


def _dataset(n=24):
    g = torch.Generator().manual_seed(0)
    labels = [i % 2 for i in range(n)]
    ids = [(torch.randint(5, 30, (6,), generator=g).tolist()[:5] + [3 + y]) for y in labels]
    return datasets.Dataset.from_dict({"input_ids": ids, "labels": labels, "text": ["unused"] * n})


def _args(tmp_path, **kw):
    defaults = dict(max_steps=2, per_device_train_batch_size=4, per_device_eval_batch_size=16, seed=3)
    return T.TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to="none", save_strategy="no", disable_tqdm=True,
        logging_strategy="no", **{**defaults, **kw},
    )  # fmt: skip


class _Record(T.TrainerCallback):
    """What each fold's trainer actually trained with."""

    def __init__(self):
        self.seen = []

    def on_train_begin(self, args, state, control, optimizer=None, train_dataloader=None, **kwargs):
        self.seen.append(
            {
                "args_lr": args.learning_rate,
                "optimizer_lr": optimizer.param_groups[0]["lr"],
                "batch_size": args.per_device_train_batch_size,
                "warmup_steps": args.warmup_steps,
                "n_train": len(train_dataloader.dataset),
                "output_dir": args.output_dir,
            }
        )


def test_cross_validated_search_scores_folds_and_applies_hyperparameters(tmp_path):
    ds = _dataset()
    record = _Record()
    held_out = []

    def compute_metrics(p):
        labels = np.asarray(p.label_ids)
        held_out.append(labels.tolist())
        logits = np.asarray(p.predictions)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        # a continuous score, so that trials do not tie
        return {
            "accuracy": float((logits.argmax(-1) == labels).mean()),
            "p_true": float(probs[np.arange(len(labels)), labels].mean()),
        }

    def hp_space(trial):
        return {
            "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-1, log=True),
            "per_device_train_batch_size": trial.suggest_categorical("per_device_train_batch_size", [2, 4]),
            "warmup_steps": 1,
        }

    def model_init():
        return T.BertForSequenceClassification(T.BertConfig(num_labels=2, **SMALL))

    base = _args(tmp_path)
    run = cross_validated_search(
        T.Trainer, model_init, base, ds, hp_space, n_folds=2, n_trials=2, compute_metrics=compute_metrics,
        metric_name="eval_p_true", callbacks=[record],
    )  # fmt: skip

    # 2 trials x 2 folds, each fold trained on half and scored on the other, stratified (6 + 6 of each label)
    assert len(run.trials) == 2 and all(len(t["fold_scores"]) == 2 for t in run.trials)
    assert len(record.seen) == 4 and all(s["n_train"] == 12 for s in record.seen)
    assert all(sorted(h) == [0] * 6 + [1] * 6 for h in held_out)
    # the same folds for every trial
    assert held_out[0] == held_out[2] and held_out[1] == held_out[3]
    # the objective is the mean over folds, and the best trial is the argmax of that mean
    for t in run.trials:
        assert t["objective"] == pytest.approx(np.mean(t["fold_scores"]))
    means = [np.mean(t["fold_scores"]) for t in run.trials]
    assert means[0] != means[1]
    best = run.trials[int(np.argmax(means))]
    assert run.run_id == str(best["number"]) and run.objective == pytest.approx(max(means))
    assert run.fold_scores == best["fold_scores"] and run.hyperparameters == best["hyperparameters"]
    # the trial's values reached each fold's trainer and its optimizer; the base args are untouched
    for i, s in enumerate(record.seen):
        hp = run.trials[i // 2]["hyperparameters"]
        assert s["args_lr"] == hp["learning_rate"] and s["batch_size"] == hp["per_device_train_batch_size"]
        assert s["optimizer_lr"] == pytest.approx(0.0)  # warmup_steps=1: the schedule starts at 0 ...
        assert s["warmup_steps"] == 1
        assert s["output_dir"].endswith(f"trial-{i // 2}/fold-{i % 2}")
    assert base.learning_rate == 5e-5 and base.warmup_steps == 0 and base.output_dir == str(tmp_path)
    assert "*" in folds_summary(run)


def test_learning_rate_reaches_the_optimizer(tmp_path):
    record = _Record()
    run = cross_validated_search(
        T.Trainer, lambda: T.BertForSequenceClassification(T.BertConfig(num_labels=2, **SMALL)), _args(tmp_path),
        _dataset(8), lambda trial: {"learning_rate": trial.suggest_float("learning_rate", 1e-3, 1e-2)},
        n_folds=2, n_trials=1, metric_name="loss", direction="minimize", callbacks=[record],
    )  # fmt: skip
    lr = run.hyperparameters["learning_rate"]
    assert [s["optimizer_lr"] for s in record.seen] == pytest.approx([lr, lr])  # ... and without warmup is the lr
    assert run.objective == pytest.approx(np.mean(run.fold_scores)) and run.objective > 0  # eval_loss


def test_missing_metric_is_named(tmp_path):
    with pytest.raises(KeyError, match="'eval_accuracy' is not among the evaluation results"):
        cross_validated_search(
            T.Trainer, lambda: T.BertForSequenceClassification(T.BertConfig(num_labels=2, **SMALL)),
            _args(tmp_path, max_steps=1), _dataset(8), lambda trial: {}, n_folds=2, n_trials=1,
        )  # fmt: skip


def test_apply_hyperparameters_validates_and_casts(tmp_path):
    args = _args(tmp_path)
    new = apply_hyperparameters(args, {"per_device_train_batch_size": 8.0, "lr_scheduler_type": "cosine"})
    assert new.per_device_train_batch_size == 8 and isinstance(new.per_device_train_batch_size, int)
    assert new.lr_scheduler_type == T.SchedulerType.COSINE and args.lr_scheduler_type == T.SchedulerType.LINEAR
    with pytest.raises(ValueError, match=r"'learning_rte'.*did you mean \['learning_rate'"):
        apply_hyperparameters(args, {"learning_rte": 1e-3})
    with pytest.raises(ValueError, match="integer field"):
        apply_hyperparameters(args, {"per_device_train_batch_size": 2.5})

    @dataclasses.dataclass
    class StrategyArgs(T.TrainingArguments):
        layer_lr_decay: float | None = None

    strategy = StrategyArgs(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    assert apply_hyperparameters(strategy, {"layer_lr_decay": 0.8}).layer_lr_decay == 0.8


def test_folds_are_stratified_and_errors_are_clear(tmp_path):
    ds = _dataset(20)
    folds = kfold_indices(ds, 5, seed=0)
    assert sorted(np.concatenate([h for _, h in folds]).tolist()) == list(range(20))
    for train_idx, held in folds:
        assert sorted(np.asarray(ds["labels"])[held].tolist()) == [0, 0, 1, 1]
        assert not set(train_idx) & set(held)
    with pytest.raises(ValueError, match="no such column"):
        kfold_indices(ds, 2, stratify_column="label_id")
    with pytest.raises(ValueError, match="rarest class"):
        kfold_indices(ds, 11)
    assert len(kfold_indices([{"x": i} for i in range(6)], 3, stratify_column=None)) == 3
