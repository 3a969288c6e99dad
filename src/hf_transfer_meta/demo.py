"""`hf-transfer-meta demo`: an end-to-end transfer study on data every machine has (scikit-learn's digits).

A small `ResNetForImageClassification` (built from a config: one input channel, 8x8 digits upsampled to 16x16) is
pretrained on a **source task**, digits 0-5 with noise and shift augmentation, and saved with `save_pretrained` in
`output_dir/source_model`. Every run loads it with `from_pretrained` and fine-tunes it on a few-shot **target task**
(20 images per class by default), one shift of each kind:

* ``new_classes``: digits 6-9, never seen by the source, with a new 4-way head (`ignore_mismatched_sizes=True`).
* ``inverted`` (input-level shift, Lee et al. 2022's CIFAR-10-C case): held-out images of digits 0-5 with inverted
  intensities; the source head is kept.
* ``relabeled`` (output-level shift, Lee et al.'s label-shift case): held-out images of digits 0-5, each label moved
  to the next class; the source head is kept.

ID accuracy is measured on held-out target test images; OOD accuracy on the same images with Gaussian noise, a shift
the source pretraining covered but the few-shot target set lacks (the setting where LP-FT should beat fine-tuning
OOD, Kumar et al. 2022). Strategies are one-line switches of `TransferTrainingArguments` (`STRATEGIES`): full
fine-tuning, linear probe, LP-FT, gradual unfreezing with layer-wise LR decay, surgical fine-tuning of the first or
the last block.

Honest numbers: seeds are fixed; test images are disjoint from the source training images and from every target
train/validation draw; each seed draws its own few-shot train and validation sets; each run's LR is chosen from a
small grid on that seed's validation split (as Lee et al. do), never on test, and every candidate is kept in
`results.json`.

`main` runs the studies listed in `STUDIES` and writes one `results.json`.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from transformers import (
    HfArgumentParser,
    PrinterCallback,
    ProgressCallback,
    ResNetConfig,
    ResNetForImageClassification,
    set_seed,
)
from transformers.utils import logging as hf_logging

from .arguments import TransferTrainingArguments
from .trainer import TransferTrainer

__all__ = ["DemoArguments", "STRATEGIES", "TASKS", "STUDIES", "main", "run_transfer_study", "load_digit_tasks"]

SOURCE_CLASSES = (0, 1, 2, 3, 4, 5)
NEW_CLASSES = (6, 7, 8, 9)


@dataclass
class DemoArguments:
    """Options of `hf-transfer-meta demo` (every field is a CLI flag)."""

    output_dir: str = field(default="outputs/demo", metadata={"help": "Where the source model, runs and results go."})
    seed: int = field(default=0, metadata={"help": "Seed of the data splits and the source model."})
    num_seeds: int = field(
        default=3, metadata={"help": "Target runs per (task, strategy), each with its own few-shot draw and seed."}
    )
    quick: bool = field(
        default=False,
        metadata={"help": "A smoke test in well under a minute: one seed, no LR search, 10 epochs, four strategies."},
    )
    studies: list[str] = field(default_factory=lambda: list(STUDIES), metadata={"help": "Which studies to run."})
    tasks: list[str] = field(
        default_factory=lambda: list(TASKS), metadata={"help": "Target tasks of the transfer study."}
    )
    strategies: list[str] | None = field(
        default=None, metadata={"help": "Strategies to compare (default: all of them; see STRATEGIES)."}
    )
    shots: int = field(default=20, metadata={"help": "Target training images per class."})
    val_per_class: int = field(
        default=10, metadata={"help": "Target validation images per class (they choose the LR and LP-FT's C)."}
    )
    source_epochs: float = field(default=30, metadata={"help": "Epochs of source pretraining."})
    target_epochs: float = field(default=20, metadata={"help": "Epochs of every target fine-tuning."})
    ood_noise: float = field(default=0.4, metadata={"help": "Std of the Gaussian noise of the OOD test images."})
    source_noise: float = field(
        default=0.4, metadata={"help": "Source pretraining adds Gaussian noise of std drawn from U(0, source_noise)."}
    )
    lp_mode: str = field(
        default="logistic",
        metadata={
            "help": "LP-FT's probe: `logistic` (scikit-learn on frozen features, C chosen on validation, as Kumar et "
            "al.) or `epochs` (the head alone by SGD for the first third of training).",
            "choices": ["logistic", "epochs"],
        },
    )
    lr_multipliers: list[float] = field(
        default_factory=lambda: [0.3, 1.0, 3.0],
        metadata={"help": "LR grid, as multiples of each strategy's LR; chosen per run on the validation split."},
    )
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide the Trainer progress bars."})

    def __post_init__(self):
        if self.quick:
            self.num_seeds = 1
            self.lr_multipliers = [1.0]
            self.source_epochs = min(self.source_epochs, 12)
            self.target_epochs = min(self.target_epochs, 10)
            if self.strategies is None:
                self.strategies = ["full_ft", "linear_probe", "lp_ft", "surgical_first"]
        unknown = [s for s in self.studies if s not in STUDIES]
        if unknown:
            raise ValueError(f"Unknown study {unknown}: choose from {sorted(STUDIES)}.")
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"Unknown task {unknown}: choose from {sorted(TASKS)}.")
        unknown = [s for s in self.strategies or [] if s not in STRATEGIES]
        if unknown:
            raise ValueError(f"Unknown strategy {unknown}: choose from {list(STRATEGIES)}.")
        if self.num_seeds < 1 or self.shots < 1 or self.val_per_class < 1:
            raise ValueError(
                f"num_seeds, shots and val_per_class must be >= 1, got {self.num_seeds}, {self.shots}, "
                f"{self.val_per_class}."
            )
        if self.lp_mode not in ("logistic", "epochs"):
            raise ValueError(f"lp_mode must be 'logistic' or 'epochs', got {self.lp_mode!r}.")


# ---------------------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class TargetTask:
    """A target task: its digits, the shift from the source task, and whether a new head replaces the source head.

    `pool` names the images it draws from: "held_out" (digits 0-5 the source never trained on) or "new" (6-9).
    `relabel` shifts every label id by one (mod the number of classes): the same images, other labels.
    """

    name: str
    classes: tuple[int, ...]
    shift: str  # for the table, in Lee et al.'s terms where they apply
    pool: str
    new_head: bool = False
    invert: bool = False
    relabel: bool = False

    def id2label(self) -> dict[int, str]:
        n = len(self.classes)
        return {(i + 1) % n if self.relabel else i: str(c) for i, c in enumerate(self.classes)}


TASKS = {
    "new_classes": TargetTask("new_classes", NEW_CLASSES, "new classes", "new", new_head=True),
    "inverted": TargetTask("inverted", SOURCE_CLASSES, "input-level", "held_out", invert=True),
    "relabeled": TargetTask("relabeled", SOURCE_CLASSES, "output-level", "held_out", relabel=True),
}

IMAGE_SIZE = 16  # the 8x8 digits, upsampled: ResNet's stem divides the resolution by 4


class DigitImages(torch.utils.data.Dataset):
    """8x8 digits in [0, 1] as 1x16x16 `pixel_values`; optional inversion, fixed noise, or random augmentation.

    `augment` draws a shift of up to one pixel and Gaussian noise of std U(0, `augment_noise`) at every access (the
    source pretraining); `noise` adds a fixed, seeded noise image (the OOD test sets).
    """

    def __init__(self, images, labels, *, invert=False, noise=0.0, noise_seed=0, augment=False, augment_noise=0.4):
        x = torch.as_tensor(np.asarray(images), dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
        if invert:
            x = 1.0 - x
        if noise:
            g = torch.Generator().manual_seed(noise_seed)
            x = x + noise * torch.randn(x.shape, generator=g)
        self.augment, self.augment_noise = augment, augment_noise
        self.images = x if augment else _upsample(x)  # fixed images are upsampled once
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = self.images[i]
        if self.augment:
            dx, dy = torch.randint(-1, 2, (2,)).tolist()
            x = torch.roll(F.pad(x, (1, 1, 1, 1)), (dy, dx), dims=(1, 2))[:, 1:-1, 1:-1]
            x = _upsample(x[None] + torch.rand(()) * self.augment_noise * torch.randn_like(x))[0]
        return {"pixel_values": x, "labels": self.labels[i]}


def _upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)


@dataclass
class DigitSplits:
    """Indices into `load_digits()` for the source task and every target task's test set and train/val pool."""

    images: np.ndarray
    targets: np.ndarray
    source: np.ndarray
    target_pool: dict[str, np.ndarray]
    target_test: dict[str, np.ndarray]


def load_digit_tasks(seed: int = 0) -> DigitSplits:
    """Split scikit-learn's digits (1797 8x8 images, bundled with the package) into disjoint parts.

    Digits 0-5: half of every class for the source task, the other half ("held_out") for the `inverted` and
    `relabeled` target tasks. Digits 6-9 ("new"): the `new_classes` task. Each target part: 50% test (fixed), 50% a
    pool for few-shot train/validation draws. Keys of `target_pool` and `target_test` are `TargetTask.pool`.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    source, held_out, new = [], [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(digits.target == c))
        if c in SOURCE_CLASSES:
            half = len(idx) // 2
            source.append(idx[:half])
            held_out.append(idx[half:])
        else:
            new.append(idx)
    pool, test = {}, {}
    for name, parts in (("held_out", held_out), ("new", new)):
        pool[name] = np.concatenate([p[: len(p) // 2] for p in parts])
        test[name] = np.concatenate([p[len(p) // 2 :] for p in parts])
    return DigitSplits(digits.images, digits.target, np.concatenate(source), pool, test)


def draw_few_shot(pool: np.ndarray, targets: np.ndarray, shots: int, val_per_class: int, seed: int):
    """`shots` train and `val_per_class` validation indices per class from `pool`, disjoint."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in sorted(set(targets[pool].tolist())):
        idx = rng.permutation(pool[targets[pool] == c])
        if len(idx) < shots + val_per_class:
            raise ValueError(
                f"Digit {c} has {len(idx)} images in the target pool, fewer than shots + val_per_class = "
                f"{shots + val_per_class}: lower --shots or --val_per_class."
            )
        train.append(idx[:shots])
        val.append(idx[shots : shots + val_per_class])
    return np.concatenate(train), np.concatenate(val)


# ---------------------------------------------------------------------------------------------------- strategies
@dataclass
class Strategy:
    """A fine-tuning strategy: a label and the `TransferTrainingArguments` fields that make it.

    `fields(task, epochs)` may depend on the task (a new head must train in every strategy, or its predictions stay
    random) and on the length of training (LP-FT's probe stage, the unfreezing pace). `learning_rate` (and
    `lp_learning_rate`) is the centre of the grid searched on validation.
    """

    label: str
    fields: Callable[[TargetTask, float], dict]


def _surgical(blocks: list[str]) -> Callable[[TargetTask, float], dict]:
    # A new head starts random: it trains with the chosen blocks (Lee et al. keep the source head for same labels).
    return lambda task, epochs: {
        "surgical_blocks": blocks + (["head"] if task.new_head else []),
        "learning_rate": 1e-2,
    }


STRATEGIES: dict[str, Strategy] = {
    "full_ft": Strategy("full fine-tuning", lambda task, epochs: {"learning_rate": 3e-3}),
    "linear_probe": Strategy(
        "linear probe (head only)", lambda task, epochs: {"trainable_depths": ["head"], "learning_rate": 1e-1}
    ),
    "lp_ft": Strategy(
        "LP-FT",
        lambda task, epochs: {
            "lp_mode": "epochs",
            "lp_epochs": epochs / 3,
            "lp_learning_rate": 1e-1,
            "learning_rate": 2e-3,
        },
    ),
    "gradual_llrd": Strategy(
        "gradual unfreezing + LLRD",
        # ULMFiT: one more depth per epoch from the top; here one per 10% of training (5 depths).
        lambda task, epochs: {
            "gradual_unfreezing": True,
            "unfreeze_every": max(1.0, epochs / 10),
            "layer_lr_decay": 0.5,
            "learning_rate": 1e-2,
        },
    ),
    "surgical_first": Strategy("surgical: stem + block 1", _surgical(["embeddings", "first"])),
    "surgical_last": Strategy("surgical: last block", _surgical(["last"])),
}


# ------------------------------------------------------------------------------------------------------- studies
def _source_config(num_labels: int):
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


class _ProgressBarOnly(ProgressCallback):
    """Trainer's progress bar without a printed line per log (the logs stay in each run's trainer_state.json)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass

    def on_prediction_step(self, args, state, control, **kwargs):
        pass  # the test sets are one or two batches: no evaluation bars


def _make_trainer(model, targs, **kwargs) -> TransferTrainer:
    trainer = TransferTrainer(model, targs, compute_metrics=_accuracy, **kwargs)
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    if not targs.disable_tqdm:
        trainer.add_callback(_ProgressBarOnly())
    return trainer


def _accuracy(eval_pred) -> dict:
    logits, labels = eval_pred.predictions, eval_pred.label_ids
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


def _training_args(output_dir: str, args: DemoArguments, seed: int, epochs: float, **fields):
    defaults = dict(
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
        disable_tqdm=args.disable_tqdm,
        dataloader_num_workers=0,
    )
    return TransferTrainingArguments(**{**defaults, **fields})


def pretrain_source(args: DemoArguments, splits: DigitSplits, source_dir: str) -> dict:
    """Train the source model on digits 0-5 (augmented) and save it with `save_pretrained`."""
    set_seed(args.seed)
    labels = np.searchsorted(SOURCE_CLASSES, splits.targets[splits.source])
    train = DigitImages(splits.images[splits.source], labels, augment=True, augment_noise=args.source_noise)
    model = ResNetForImageClassification(_source_config(len(SOURCE_CLASSES)))
    targs = _training_args(
        source_dir, args, args.seed, args.source_epochs, per_device_train_batch_size=32, learning_rate=3e-3
    )
    trainer = _make_trainer(model, targs, train_dataset=train)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    trainer.save_model(source_dir)
    clean = DigitImages(splits.images[splits.source], labels)
    train_acc = trainer.evaluate(clean, metric_key_prefix="source_train")["source_train_accuracy"]
    return {"train_images": len(train), "train_accuracy_clean": train_acc, "seconds": seconds}


def _target_datasets(task: TargetTask, splits: DigitSplits, args: DemoArguments, draw_seed: int):
    t = splits.targets
    train_idx, val_idx = draw_few_shot(splits.target_pool[task.pool], t, args.shots, args.val_per_class, draw_seed)
    test_idx = splits.target_test[task.pool]

    def labels(idx):
        ids = np.searchsorted(task.classes, t[idx])
        return (ids + 1) % len(task.classes) if task.relabel else ids

    def ds(idx, **kw):
        return DigitImages(splits.images[idx], labels(idx), invert=task.invert, **kw)

    return {
        "train": ds(train_idx),
        "val": ds(val_idx),
        "val_ood": ds(val_idx, noise=args.ood_noise, noise_seed=args.seed + 2),
        "test_id": ds(test_idx),
        "test_ood": ds(test_idx, noise=args.ood_noise, noise_seed=args.seed + 1),
    }


def fine_tune(
    task: TargetTask, name: str, fields: dict, data: dict, source_dir: str, run_dir: str, args, seed: int
) -> dict:
    """One target run: load the source model, train with `fields`, evaluate on the ID and OOD test sets."""
    set_seed(seed)
    id2label = task.id2label()
    model = ResNetForImageClassification.from_pretrained(
        source_dir,
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        # new_classes: the source head has 6 outputs, a new 4-way head is initialised in its place
        ignore_mismatched_sizes=task.new_head,
    )
    targs = _training_args(run_dir, args, seed, args.target_epochs, **fields)
    trainer = _make_trainer(model, targs, train_dataset=data["train"], eval_dataset=data["val"])
    start = time.perf_counter()
    train_out = trainer.train()
    seconds = time.perf_counter() - start
    metrics = {}
    for split in ("val", "val_ood", "test_id", "test_ood"):
        out = trainer.evaluate(data[split], metric_key_prefix=split)
        metrics[f"{split}_accuracy"], metrics[f"{split}_loss"] = out[f"{split}_accuracy"], out[f"{split}_loss"]
    lm = trainer.get_layer_map()
    trained_depths = set().union(*(p.depths for p in trainer.transfer_schedule.phases))
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
    print(
        f"[demo]   val {100 * metrics['val_accuracy']:.1f}%  test ID {100 * metrics['test_id_accuracy']:.1f}%  "
        f"OOD {100 * metrics['test_ood_accuracy']:.1f}%  ({seconds:.1f}s)",
        flush=True,
    )
    trainer.save_model(run_dir)
    trainer.state.save_to_json(os.path.join(run_dir, "trainer_state.json"))
    with open(os.path.join(run_dir, "result.json"), "w") as f:
        json.dump({**result, "transfer_summary": trainer.transfer_summary()}, f, indent=2, default=str)
    return result


def _strategy_fields(name: str, task: TargetTask, epochs: float, lp_mode: str) -> dict:
    fields = dict(STRATEGIES[name].fields(task, epochs))
    if fields.get("lp_mode") and lp_mode == "logistic":
        fields = {k: v for k, v in fields.items() if k not in ("lp_epochs", "lp_learning_rate")}
        fields["lp_mode"] = "logistic"
    return fields


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
            weights = os.path.join(c["run_dir"], "model.safetensors")
            if os.path.isfile(weights):
                os.remove(weights)
    with open(os.path.join(seed_dir, "selection.json"), "w") as f:
        chosen = os.path.basename(best["run_dir"])
        scores = {os.path.basename(c["run_dir"]): [c["val_accuracy"], c["val_loss"]] for c in candidates}
        json.dump({"chosen": chosen, "by": "val_accuracy, then lower val_loss", "val": scores}, f, indent=2)
    return candidates


def run_transfer_study(args: DemoArguments) -> dict:
    """Pretrain on the source task once, then fine-tune on every target task with every strategy and seed.

    For every (task, strategy, seed) the LR is chosen among `lr_multipliers` x the strategy's LR on that seed's
    validation split (Lee et al. 2022 choose it on target validation); only the chosen run enters the table.
    """
    study_dir = os.path.join(args.output_dir, "transfer")
    source_dir = os.path.join(args.output_dir, "source_model")
    os.makedirs(study_dir, exist_ok=True)
    splits = load_digit_tasks(args.seed)
    strategies = args.strategies or list(STRATEGIES)
    lp_mode = args.lp_mode
    start = time.perf_counter()
    print(f"[demo] pretraining the source model on digits {SOURCE_CLASSES} -> {source_dir}", flush=True)
    source = pretrain_source(args, splits, source_dir)
    print(f"[demo] source model: {100 * source['train_accuracy_clean']:.1f}% on its clean training images", flush=True)
    runs = []
    total, done = len(args.tasks) * args.num_seeds * len(strategies) * len(args.lr_multipliers), 0
    for task_name in args.tasks:
        task = TASKS[task_name]
        for r in range(args.num_seeds):
            seed = args.seed + r
            data = _target_datasets(task, splits, args, draw_seed=1000 + seed)
            for name in strategies:
                base = _strategy_fields(name, task, args.target_epochs, lp_mode)
                candidates = []
                for m in args.lr_multipliers:
                    fields = _scale_lr(base, m)
                    lr_tag = f"lr{fields['learning_rate']:g}"
                    run_dir = os.path.join(study_dir, task.name, name, f"seed{seed}", lr_tag)
                    done += 1
                    print(
                        f"[demo] run {done}/{total}: {task.name} | {STRATEGIES[name].label} | seed {seed} | {lr_tag}",
                        flush=True,
                    )
                    candidates.append(fine_tune(task, name, fields, data, source_dir, run_dir, args, seed))
                runs.extend(_select(candidates, os.path.join(study_dir, task.name, name, f"seed{seed}")))
    rows = summarise([r for r in runs if r["selected"]], args.tasks, strategies)
    table = format_table(rows, len(args.lr_multipliers) > 1)
    with open(os.path.join(study_dir, "table.txt"), "w") as f:
        f.write(table + "\n")
    print("\n" + table, flush=True)
    return {
        "source": source,
        "lp_mode": lp_mode,
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


def format_table(rows: list[dict], lr_searched: bool = False) -> str:
    """Plain text: task, strategy, ID and OOD test accuracy (mean +- std over seeds), trainable params, LR, seconds."""

    def pct(row, key):
        std = f" +-{100 * row[key + '_std']:.1f}" if row["seeds"] > 1 else ""
        return f"{100 * row[key]:.1f}{std}"

    def lrs(row):
        values = sorted(set(row["learning_rates"]))
        return f"{values[0]:.0e}" if len(values) == 1 else f"{values[0]:.0e}..{values[-1]:.0e}"

    header = ["task (shift)", "strategy", "ID acc %", "OOD acc %", "trainable params", "lr", "seconds"]
    lines = [
        [
            f"{r['task']} ({TASKS[r['task']].shift})",
            r["label"],
            pct(r, "test_id_accuracy"),
            pct(r, "test_ood_accuracy"),
            f"{r['trainable_params']:,} / {r['total_params']:,}",
            lrs(r),
            f"{r['seconds']:.1f}",
        ]
        for r in rows
    ]
    widths = [max(len(x[i]) for x in lines + [header]) for i in range(len(header))]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = [fmt(header), "  ".join("-" * w for w in widths)]
    previous = None
    for r, cells in zip(rows, lines):
        if previous is not None and r["task"] != previous:
            out.append("")
        out.append(fmt(cells))
        previous = r["task"]
    seeds = max((r["seeds"] for r in rows), default=1)
    out += [
        "",
        f"Accuracy on held-out target test images, mean +- std over {seeds} seed(s) (each its own few-shot draw).",
        "OOD: the same test images with Gaussian noise, covered by source pretraining, absent from the target set.",
    ]
    if lr_searched:
        out.append(
            "lr: the base (head) LR, chosen per seed on the target validation split; the test split never chooses."
        )
    return "\n".join(out)


# A study is a function of the demo arguments that prints its own table and returns a JSON-able dict, stored under its
# name in results.json. The meta-learning study joins here as `"meta": run_meta_study` (run by default once listed).
STUDIES: dict[str, Callable[[DemoArguments], dict]] = {"transfer": run_transfer_study}


# ---------------------------------------------------------------------------------------------------------- main
def _check_writable(output_dir: str) -> None:
    try:
        os.makedirs(output_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output_dir, prefix=".write_test_"):
            pass
    except OSError as err:
        raise SystemExit(
            f"error: cannot write to --output_dir {output_dir!r} ({err.strerror or err}). Pass a folder you can "
            "write to, e.g. --output_dir outputs/demo."
        ) from None


@contextlib.contextmanager
def _study_environment():
    """Quiet and fast for a study of many small runs; everything is restored afterwards.

    * transformers' own progress bars and load reports are off: every run reloads the source model, and the head
      mismatch of a new head is expected (Trainer's progress bars stay);
    * objects alive now are moved out of the garbage collector's reach (`gc.freeze`): accelerate runs
      `gc.collect()` after every training, which otherwise walks the large heap of transformers (~0.4 s a run);
    * torch uses one thread: these models are too small to gain from more, and threads spin-wait when the cores are
      shared.
    """
    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    threads = torch.get_num_threads()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    torch.set_num_threads(1)
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
        torch.set_num_threads(threads)
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def main(argv: list[str] | None = None) -> dict:
    """Parse `argv` into `DemoArguments`, run the studies, write `results.json`; returns the results."""
    parser = HfArgumentParser(DemoArguments)
    parser.prog = "hf-transfer-meta demo"
    try:
        (args,) = parser.parse_args_into_dataclasses(args=argv if argv is not None else sys.argv[1:])
    except ValueError as err:
        parser.error(str(err))
    _check_writable(args.output_dir)
    start = time.perf_counter()
    results = {"arguments": asdict(args)}
    with _study_environment():
        for name in args.studies:
            results[name] = STUDIES[name](args)
    results["seconds"] = time.perf_counter() - start
    path = os.path.join(args.output_dir, "results.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2, default=str)
    print(f"[demo] results in {path} ({results['seconds']:.0f}s)", flush=True)
    return results


if __name__ == "__main__":
    main()
