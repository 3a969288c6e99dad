"""The transfer study: pretrain a small ResNet on digits 0-5, then fine-tune it on few-shot target tasks.

The source model (`ResNetForImageClassification` from a config: one input channel, 16x16 inputs) is pretrained with
noise and shift augmentation and saved with `save_pretrained`; every run reloads it with `from_pretrained` and
fine-tunes it on a target task of `TASKS` with one strategy of `STRATEGIES`. ID accuracy is measured on held-out
target test images; OOD accuracy on the same images with Gaussian noise, a shift the source pretraining covered but
the few-shot target set lacks: where LP-FT should beat fine-tuning OOD (Kumar et al. 2022, "Fine-Tuning can Distort
Pretrained Features and Underperform Out-of-Distribution"). Seeds are fixed and every seed draws its own few-shot
train and validation sets; with `lr_multipliers` of more than one value, each run's LR is chosen on that seed's
validation split, never on test, and every candidate is kept in `results.json`.

Public for the benchmarks: `source_model_config`, `pretrain_source`, `load_source_model`.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from transformers import ResNetConfig, ResNetForImageClassification, set_seed

from .. import TransferTrainer, TransferTrainingArguments
from ..cards.card import write_card
from ..cards.drift import START_WEIGHTS_FILE
from .data import SOURCE_CLASSES, TASKS, DigitImages, DigitSplits, TargetTask, load_digit_tasks, target_datasets
from .report import format_transfer_table, log, progress_bars_only

if TYPE_CHECKING:
    from .run import DemoArguments

__all__ = [
    "STRATEGIES",
    "StrategySetting",
    "fine_tune",
    "load_source_model",
    "pretrain_source",
    "run_transfer_study",
    "source_model_config",
    "summarise",
]


# ---------------------------------------------------------------------------------------------------- strategies
@dataclass
class StrategySetting:
    """A strategy as the demo runs it: a label and the `TransferTrainingArguments` fields that switch it on (the
    strategies themselves live in `hf_transfer_meta.transfer.strategies`).

    `fields(task, epochs, lp_mode)` may depend on the task (a new head must train in every strategy, or its
    predictions stay random), on the length of training (the unfreezing pace) and on LP-FT's probe (`--lp_mode`).
    `learning_rate` (and `lp_learning_rate`) is the centre of the grid searched on validation.
    """

    label: str
    fields: Callable[[TargetTask, float, str], dict]


def _surgical(blocks: list[str]) -> Callable[[TargetTask, float, str], dict]:
    # A new head starts random: it trains with the chosen blocks (Lee et al. keep the source head for same labels).
    return lambda task, epochs, lp_mode: {
        "surgical_blocks": blocks + (["head"] if task.new_head else []),
        "learning_rate": 1e-2,
    }


def _lp_ft(task: TargetTask, epochs: float, lp_mode: str) -> dict:
    if lp_mode == "logistic":  # Kumar et al.: logistic regression on frozen features, C chosen on validation
        return {"lp_mode": "logistic", "learning_rate": 2e-3}
    # the head alone by SGD for the first third of training, then everything
    return {"lp_mode": "epochs", "lp_epochs": epochs / 3, "lp_learning_rate": 1e-1, "learning_rate": 2e-3}


STRATEGIES: dict[str, StrategySetting] = {
    "full_ft": StrategySetting("full fine-tuning", lambda task, epochs, lp_mode: {"learning_rate": 3e-3}),
    "linear_probe": StrategySetting(
        "linear probe (head only)",
        lambda task, epochs, lp_mode: {"trainable_depths": ["head"], "learning_rate": 1e-1},
    ),
    "lp_ft": StrategySetting("LP-FT", _lp_ft),
    "gradual_llrd": StrategySetting(
        "gradual unfreezing + LLRD",
        # ULMFiT unfreezes one more depth per epoch from the top; here one per 10% of training (5 depths).
        lambda task, epochs, lp_mode: {
            "gradual_unfreezing": True,
            "unfreeze_every": max(1.0, epochs / 10),
            "layer_lr_decay": 0.5,
            "learning_rate": 1e-2,
        },
    ),
    "surgical_first": StrategySetting("surgical: stem + block 1", _surgical(["embeddings", "first"])),
    "surgical_last": StrategySetting("surgical: last block", _surgical(["last"])),
}


# ---------------------------------------------------------------------------------------------------- the model
def source_model_config(num_labels: int = len(SOURCE_CLASSES)) -> ResNetConfig:
    """The demo's ResNet: three basic blocks (16, 32, 64 channels) on one-channel digits, labelled 0-5."""
    return ResNetConfig(
        num_channels=1,
        embedding_size=16,
        hidden_sizes=[16, 32, 64],
        depths=[1, 1, 1],
        layer_type="basic",
        num_labels=num_labels,
        id2label={i: str(c) for i, c in enumerate(SOURCE_CLASSES)},
        label2id={str(c): i for i, c in enumerate(SOURCE_CLASSES)},
    )


def _accuracy(eval_pred) -> dict:
    logits, labels = eval_pred.predictions, eval_pred.label_ids
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


def _trainer(model, output_dir: str, seed: int, epochs: float, disable_tqdm: bool, **kwargs) -> TransferTrainer:
    """A `TransferTrainer` with the demo's defaults; `kwargs` are datasets or `TransferTrainingArguments` fields."""
    datasets = {k: kwargs.pop(k) for k in ("train_dataset", "eval_dataset") if k in kwargs}
    fields = dict(
        output_dir=output_dir,
        seed=seed,
        use_cpu=True,
        report_to="none",
        num_train_epochs=epochs,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=256,
        learning_rate=1e-3,
        weight_decay=1e-4,
        lr_scheduler_type="cosine",
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="epoch",
        disable_tqdm=disable_tqdm,
        dataloader_num_workers=0,
    )
    targs = TransferTrainingArguments(**{**fields, **kwargs})
    trainer = TransferTrainer(model, targs, compute_metrics=_accuracy, **datasets)
    progress_bars_only(trainer)
    return trainer


def pretrain_source(
    splits: DigitSplits, source_dir: str, *, epochs: float = 30, seed: int = 0, noise: float = 0.4, disable_tqdm=True
) -> dict:
    """Train the source model on digits 0-5 (shifted, noise of std U(0, `noise`)) and `save_pretrained` it."""
    set_seed(seed)
    labels = splits.source_labels()
    train = DigitImages(splits.images[splits.source], labels, augment=True, augment_noise=noise)
    model = ResNetForImageClassification(source_model_config())
    trainer = _trainer(
        model,
        source_dir,
        seed,
        epochs,
        disable_tqdm,
        train_dataset=train,
        per_device_train_batch_size=32,
        learning_rate=3e-3,
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    trainer.save_model(source_dir)
    clean = DigitImages(splits.images[splits.source], labels)
    train_acc = trainer.evaluate(clean, metric_key_prefix="source_train")["source_train_accuracy"]
    return {"train_images": len(train), "train_accuracy_clean": train_acc, "seconds": seconds}


def load_source_model(source_dir: str, task: TargetTask) -> ResNetForImageClassification:
    """The source model with `task`'s labels; for new classes the 6-way head is replaced by a new, random one."""
    id2label = task.id2label()
    return ResNetForImageClassification.from_pretrained(
        source_dir,
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        ignore_mismatched_sizes=task.new_head,
    )


# ------------------------------------------------------------------------------------------------------ the runs
def fine_tune(
    task: TargetTask, name: str, fields: dict, data: dict, source_dir: str, run_dir: str, args, seed: int
) -> dict:
    """One target run: load the source model, train with `fields`, evaluate on the ID and OOD test sets."""
    set_seed(seed)
    model = load_source_model(source_dir, task)
    trainer = _trainer(
        model,
        run_dir,
        seed,
        args.target_epochs,
        args.disable_tqdm,
        train_dataset=data["train"],
        eval_dataset=data["val"],
        **fields,
    )
    start = time.perf_counter()
    train_out = trainer.train()
    seconds = time.perf_counter() - start
    metrics = {}
    for split in ("val", "val_ood", "test_id", "test_ood"):
        out = trainer.evaluate(data[split], metric_key_prefix=split)
        metrics[f"{split}_accuracy"], metrics[f"{split}_loss"] = out[f"{split}_accuracy"], out[f"{split}_loss"]
    lm = trainer.get_layer_map()
    schedule = trainer.transfer_schedule  # None for full fine-tuning (no strategy: stock Trainer)
    trained_depths = set().union(*(p.depths for p in schedule.phases)) if schedule else set(range(lm.num_depths))
    result = {
        "task": task.name,
        "strategy": name,
        "seed": seed,
        **metrics,
        "train_loss": train_out.training_loss,
        "trainable_params": sum(lm.num_params(d) for d in trained_depths),
        "total_params": sum(lm.num_params(d) for d in range(lm.num_depths)),
        "seconds": seconds,
        "fields": fields,
        "run_dir": run_dir,
    }
    log(
        f"  val {100 * metrics['val_accuracy']:.1f}%  test ID {100 * metrics['test_id_accuracy']:.1f}%  "
        f"OOD {100 * metrics['test_ood_accuracy']:.1f}%  ({seconds:.1f}s)"
    )
    trainer.save_model(run_dir)
    trainer.save_metrics("all", {**metrics, "train_loss": train_out.training_loss, "train_seconds": seconds})
    trainer.state.save_to_json(os.path.join(run_dir, "trainer_state.json"))
    with open(os.path.join(run_dir, "result.json"), "w") as f:
        json.dump({**result, "transfer_summary": trainer.transfer_summary()}, f, indent=2, default=str)
    # The card's text now; its figures once the run is selected (`_select`): the others lose their weights.
    trainer.create_model_card(**card_arguments(task, name, seed), plots=False)
    return result


def card_arguments(task: TargetTask, strategy: str, seed: int) -> dict:
    """What a demo run's model card says about its data (val_ood / test_ood: the same images with noise)."""
    return {
        "model_name": f"demo-{task.name}-{strategy}-seed{seed}",
        "tasks": "image-classification",
        "dataset": f"scikit-learn digits, target task {task.name!r} (digits {list(task.classes)}; {task.shift})",
        "tags": ["hf-transfer-meta-demo"],
    }


def _scale_lr(fields: dict, multiplier: float) -> dict:
    out = dict(fields)
    for key in ("learning_rate", "lp_learning_rate"):
        if key in out:
            out[key] = out[key] * multiplier
    return out


def _selection_key(run: dict) -> tuple[float, float]:
    return run["val_accuracy"], -run["val_loss"]  # ties on the small validation set go to the lower loss


def _select(candidates: list[dict], seed_dir: str) -> list[dict]:
    """Mark the run with the best validation accuracy; the others keep their logs but not their weights."""
    best = max(candidates, key=_selection_key)
    for c in candidates:
        c["selected"] = c is best
        if c is not best:
            for name in ("model.safetensors", START_WEIGHTS_FILE):
                path = os.path.join(c["run_dir"], name)
                if os.path.isfile(path):
                    os.remove(path)
    write_card(best["run_dir"])  # the selected run's card, with its figures
    with open(os.path.join(seed_dir, "selection.json"), "w") as f:
        chosen = os.path.basename(best["run_dir"])
        scores = {os.path.basename(c["run_dir"]): [c["val_accuracy"], c["val_loss"]] for c in candidates}
        json.dump({"chosen": chosen, "by": "val_accuracy, then lower val_loss", "val": scores}, f, indent=2)
    return candidates


def run_transfer_study(args: DemoArguments) -> dict:
    """Pretrain on the source task once, then fine-tune on every target task with every strategy and seed.

    For every (task, strategy, seed) the LR is chosen among `lr_multipliers` x the strategy's LR on that seed's
    validation split (Lee et al. choose it on target validation); only the chosen run enters the table.
    """
    study_dir = os.path.join(args.output_dir, "transfer")
    source_dir = os.path.join(args.output_dir, "source_model")
    os.makedirs(study_dir, exist_ok=True)
    splits = load_digit_tasks(args.seed)
    strategies = args.strategies
    start = time.perf_counter()
    log(f"pretraining the source model on digits {SOURCE_CLASSES} -> {source_dir}")
    source = pretrain_source(
        splits,
        source_dir,
        epochs=args.source_epochs,
        seed=args.seed,
        noise=args.source_noise,
        disable_tqdm=args.disable_tqdm,
    )
    log(f"source model: {100 * source['train_accuracy_clean']:.1f}% on its clean training images")
    runs = []
    total, done = len(args.tasks) * args.num_seeds * len(strategies) * len(args.lr_multipliers), 0
    for task_name in args.tasks:
        task = TASKS[task_name]
        for r in range(args.num_seeds):
            seed = args.seed + r
            data = target_datasets(
                task,
                splits,
                shots=args.shots,
                val_per_class=args.val_per_class,
                draw_seed=1000 + seed,
                ood_noise=args.ood_noise,
                noise_seed=args.seed,
            )
            for name in strategies:
                base = STRATEGIES[name].fields(task, args.target_epochs, args.lp_mode)
                seed_dir = os.path.join(study_dir, task.name, name, f"seed{seed}")
                candidates = []
                for m in args.lr_multipliers:
                    fields = _scale_lr(base, m)
                    lr_tag = f"lr{fields['learning_rate']:g}"
                    done += 1
                    log(f"run {done}/{total}: {task.name} | {STRATEGIES[name].label} | seed {seed} | {lr_tag}")
                    run_dir = os.path.join(seed_dir, lr_tag)
                    candidates.append(fine_tune(task, name, fields, data, source_dir, run_dir, args, seed))
                runs.extend(_select(candidates, seed_dir))
    rows = summarise([r for r in runs if r["selected"]], args.tasks, strategies)
    table = format_transfer_table(rows, len(args.lr_multipliers) > 1)
    with open(os.path.join(study_dir, "table.txt"), "w") as f:
        f.write(table + "\n")
    print("\n" + table, flush=True)
    return {
        "source": source,
        "lp_mode": args.lp_mode,
        "tasks": {
            t: {
                "classes": list(TASKS[t].classes),
                "shift": TASKS[t].shift,
                "new_head": TASKS[t].new_head,
                "chance": 1 / len(TASKS[t].classes),
                "test_images": int(len(splits.target_test[TASKS[t].pool])),
            }
            for t in args.tasks
        },
        "summary": rows,
        "runs": runs,
        "table": table,
        "seconds": time.perf_counter() - start,
    }


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(runs: list[dict], tasks: list[str], strategies: list[str]) -> list[dict]:
    """Mean and std over seeds of every (task, strategy)."""
    rows = []
    for t in tasks:
        for s in strategies:
            rs = [r for r in runs if r["task"] == t and r["strategy"] == s]
            if not rs:
                continue
            row = {"task": t, "strategy": s, "label": STRATEGIES[s].label, "seeds": len(rs)}
            for key in ("val_accuracy", "test_id_accuracy", "test_ood_accuracy", "seconds"):
                row[key], row[key + "_std"] = _mean_std([r[key] for r in rs])
            row["learning_rates"] = [r["fields"]["learning_rate"] for r in rs]
            row["trainable_params"] = rs[0]["trainable_params"]
            row["total_params"] = rs[0]["total_params"]
            rows.append(row)
    return rows
