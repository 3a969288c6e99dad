"""`hf-transfer-meta demo`: end-to-end transfer and meta-learning studies on data every machine has.

**Transfer** (`run_transfer_study`, scikit-learn's digits):

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

**Meta-learning** (`run_meta_study`, `MetaTrainer` throughout): episodic meta-training on every image of digits
0-5, tested on episodes of digits 6-9, which meta-training never sees (the same class split as the transfer
study's `new_classes`). Each method (`META_METHODS`: ProtoNet and second-order MAML by default, FOMAML on request)
meta-trains a network of Conv4 blocks once per shot count (4-way 1-shot and 4-way 5-shot) and is tested on 600
fixed, seeded episodes with 15 queries per class, the same episodes for every method; the table gives the mean
query accuracy and its 95% CI. "no meta-training" tests the same randomly initialised network the same way
(ProtoNet: prototypes of random features; MAML: the same 3 SGD steps on the support set), so the table shows what
meta-training buys. Then MAML on the sinusoid exactly as Finn et al. 2017 (K=10, one step at lr 0.01): the MSE
after one step, before it, and from a random initialisation. Hyperparameters were chosen on digits 0-5 alone
(leave-two-out folds, 2-way validation episodes).

`main` runs the studies listed in `STUDIES` (`--studies transfer` or `--studies meta` runs one), prints their
tables together, and writes one `results.json`; each study also writes its own table (and the meta study its
`results.json`) in its folder, and every run's model, `trainer_state.json` and `result.json` in a folder of its own.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
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
from .meta import (
    Conv4Config,
    Conv4ForImageClassification,
    Conv4Model,
    EpisodeDataset,
    MetaTrainer,
    MetaTrainingArguments,
    SinusoidMLP,
    SinusoidTasks,
    assert_class_disjoint,
    load_digits_dataset,
)
from .trainer import TransferTrainer

__all__ = [
    "DemoArguments",
    "META_METHODS",
    "STRATEGIES",
    "STUDIES",
    "TASKS",
    "load_digit_tasks",
    "load_meta_digits",
    "main",
    "run_meta_study",
    "run_transfer_study",
]

SOURCE_CLASSES = (0, 1, 2, 3, 4, 5)
NEW_CLASSES = (6, 7, 8, 9)
QUICK_META_STEPS = 20  # meta-updates of every digits method in --quick


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
        metadata={
            "help": "A smoke test: one seed, no LR search, 10 epochs, four strategies; ProtoNet and MAML for "
            f"{QUICK_META_STEPS} meta-updates, 50 test episodes, 200 sinusoid meta-updates."
        },
    )
    studies: list[str] = field(
        default_factory=lambda: list(STUDIES),
        metadata={"help": "Studies to run, in order (`--studies meta` runs the meta-learning study alone)."},
    )
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
    meta_methods: list[str] | None = field(
        default=None,
        metadata={"help": "Meta-learning methods on digits, from protonet maml fomaml (default: protonet maml)."},
    )
    meta_way: int = field(default=4, metadata={"help": "Classes per episode (N), meta-training and test."})
    meta_shots: list[int] = field(
        default_factory=lambda: [1, 5],
        metadata={"help": "Support images per class (K); one meta-training per K, tested on K-shot episodes."},
    )
    meta_query: int = field(default=15, metadata={"help": "Query images per class of every episode."})
    meta_eval_episodes: int = field(
        default=600, metadata={"help": "Fixed test episodes per setting (digits) and test tasks (sinusoid)."}
    )
    meta_steps: int | None = field(
        default=None, metadata={"help": "Meta-updates of every digits method (default: each method's max_steps)."}
    )
    sinusoid_steps: int = field(
        default=3000, metadata={"help": "Meta-updates of MAML on the sinusoid (25 tasks each); 0 skips it."}
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
            self.meta_steps = min(self.meta_steps or QUICK_META_STEPS, QUICK_META_STEPS)
            self.meta_eval_episodes = min(self.meta_eval_episodes, 50)
            self.sinusoid_steps = min(self.sinusoid_steps, 200)
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
        unknown = [m for m in self.meta_methods or [] if m not in META_METHODS]
        if unknown:
            raise ValueError(f"Unknown meta-learning method {unknown}: choose from {list(META_METHODS)}.")
        if not 2 <= self.meta_way <= len(META_TEST_CLASSES):
            raise ValueError(
                f"meta_way={self.meta_way}: episodes draw from the {len(META_TEST_CLASSES)} test digits, so choose "
                f"2..{len(META_TEST_CLASSES)}."
            )
        if not self.meta_shots or min(self.meta_shots) < 1 or self.meta_query < 1 or self.meta_eval_episodes < 1:
            raise ValueError(
                f"meta_shots, meta_query and meta_eval_episodes must be >= 1, got {self.meta_shots}, "
                f"{self.meta_query}, {self.meta_eval_episodes}."
            )


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


def _progress_bars_only(trainer, bars: type[_ProgressBarOnly] = _ProgressBarOnly):
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    if not trainer.args.disable_tqdm:
        trainer.add_callback(bars())
    return trainer


def _make_trainer(model, targs, **kwargs) -> TransferTrainer:
    return _progress_bars_only(TransferTrainer(model, targs, compute_metrics=_accuracy, **kwargs))


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
    out = _aligned_table(header, lines, [r["task"] for r in rows])
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


# ------------------------------------------------------------------------------------------------ meta-learning
# Both studies learn from digits 0-5 and are tested on digits 6-9, so the two tables answer the same question.
META_TRAIN_CLASSES = SOURCE_CLASSES
META_TEST_CLASSES = NEW_CLASSES


@dataclass(frozen=True)
class MetaMethod:
    """A meta-learning method of the demo: a label, the `MetaTrainingArguments` fields that make it, its steps.

    ProtoNet embeds with `Conv4Model`; the MAML family adapts `Conv4ForImageClassification` (an N-way head) by SGD
    on each episode's support set. `max_steps` meta-batches of `META_BATCH` episodes fit the demo's time budget.
    """

    label: str
    fields: dict
    max_steps: int

    @property
    def encoder_only(self) -> bool:
        return self.fields["algorithm"] == "protonet"


META_BATCH = 4  # episodes per meta-update
# Chosen on meta-train digits only (leave-two-out folds over 0-5, 2-way validation episodes; digits 6-9 chose
# nothing). Finn et al.'s inner LR of 0.4 for Omniglot overshoots on this small network (3 steps at 0.4 from a random
# init: 57% on a fold, at 0.05: 93%); validation accuracy stops rising after ~150 meta-updates of MAML and falls
# after ~100 of ProtoNet (it overfits the few training classes). At test 3 steps (Finn et al.'s Omniglot protocol):
# 1 step gives the meta-learned init the same validation accuracy, but the random init far less, a weaker baseline.
_SGD = {"inner_lr": 0.05, "inner_steps": 1, "eval_inner_steps": 3}
META_METHODS: dict[str, MetaMethod] = {
    "protonet": MetaMethod("ProtoNet", {"algorithm": "protonet"}, max_steps=100),
    "maml": MetaMethod("MAML (2nd order)", {"algorithm": "maml", **_SGD}, max_steps=150),
    "fomaml": MetaMethod("FOMAML", {"algorithm": "fomaml", **_SGD}, max_steps=150),
}
# FOMAML is one flag away (--meta_methods protonet maml fomaml): it adds ~75 s on 2 cores, over the demo's budget.
DEFAULT_META_METHODS = ("protonet", "maml")

# Finn et al. 2017, section 5.1: K=10, one inner step at 0.01, meta-batch 25, Adam 1e-3; 100 query points per test task.
SINUSOID = {"k_shot": 10, "inner_lr": 0.01, "meta_batch": 25, "test_points": 100}


def _conv4_config(n_way: int) -> Conv4Config:
    # Three of Conv4's blocks: each halves the side, and an 8x8 digit is 1x1 (64 features) after three.
    return Conv4Config(num_channels=1, image_size=8, hidden_size=64, num_blocks=3, num_labels=n_way)


def load_meta_digits() -> tuple[datasets.Dataset, datasets.Dataset]:
    """(meta-train, meta-test): every image of digits 0-5, every image of digits 6-9; checked class-disjoint."""
    digits = load_digits_dataset()
    labels = np.asarray(digits.with_format(None)["label"])
    train = digits.select(np.flatnonzero(np.isin(labels, META_TRAIN_CLASSES)))
    test = digits.select(np.flatnonzero(np.isin(labels, META_TEST_CLASSES)))
    assert_class_disjoint({"meta-train": train, "meta-test": test})
    return train, test


class _MetaProgressBars(_ProgressBarOnly):
    """The training bar, and a bar over the test episodes: `MetaTrainer.evaluate` runs its own loop and does not
    hand its dataloader to the callbacks, so the bar's length is set by `expect` before each evaluation."""

    def __init__(self):
        super().__init__()
        self.eval_batches = 0

    def expect(self, batches: int) -> None:
        self.eval_batches = batches

    def on_prediction_step(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.eval_batches:
            if self.prediction_bar is None:
                self.prediction_bar = tqdm(
                    total=self.eval_batches, desc="test episodes", leave=False, dynamic_ncols=True
                )
            self.prediction_bar.update(1)


def _meta_training_args(run_dir: str, args: DemoArguments, max_steps: int, **fields) -> MetaTrainingArguments:
    defaults = dict(
        output_dir=run_dir,
        seed=args.seed,
        episode_seed=args.seed,
        use_cpu=True,
        report_to="none",
        max_steps=max_steps,
        per_device_train_batch_size=META_BATCH,
        learning_rate=1e-3,
        save_strategy="no",
        logging_strategy="steps",
        logging_steps=max(1, max_steps // 10),
        disable_tqdm=args.disable_tqdm,
        dataloader_num_workers=0,
    )
    return MetaTrainingArguments(**{**defaults, **fields})


def _evaluate_episodes(trainer: MetaTrainer, episodes, bars: _MetaProgressBars | None) -> dict:
    """Mean query accuracy (or MSE) over `episodes` with its 95% CI, and the pre-adaptation value."""
    if bars is not None:
        bars.expect(math.ceil(len(episodes) / trainer.args.per_device_eval_batch_size))
    out = trainer.evaluate(episodes)
    name = "mse" if "eval_mse" in out else "accuracy"
    return {
        "metric": name,
        "value": out[f"eval_{name}"],
        "ci95": out[f"eval_{name}_ci95"],
        "pre_adaptation": out.get(f"eval_pre_adaptation_{name}"),
        "loss": out["eval_loss"],
        "episodes": out["eval_episodes"],
        "seconds": out["eval_runtime"],
    }


def meta_train_and_test(
    model, targs: MetaTrainingArguments, train_dataset, test_episodes, before: dict | None = None
) -> dict:
    """Evaluate `model` on `test_episodes` (unless `before` is given), meta-train it, evaluate it again, save it.

    Returns ``{"before": ..., "after": ..., "train_seconds", "train_loss", "meta": trainer.meta_summary()}``; the
    run folder gets the model, `trainer_state.json` (the meta-training curve) and `result.json`.
    """
    trainer = _progress_bars_only(MetaTrainer(model=model, args=targs, train_dataset=train_dataset), _MetaProgressBars)
    bars = next((c for c in trainer.callback_handler.callbacks if isinstance(c, _MetaProgressBars)), None)
    if before is None:
        before = _evaluate_episodes(trainer, test_episodes, bars)
    start = time.perf_counter()
    train_out = trainer.train()
    train_seconds = time.perf_counter() - start
    after = _evaluate_episodes(trainer, test_episodes, bars)
    result = {
        "before": before,
        "after": after,
        "train_seconds": train_seconds,
        "train_loss": train_out.training_loss,
        "meta": trainer.meta_summary(),
        "run_dir": targs.output_dir,
    }
    trainer.save_model(targs.output_dir)
    trainer.state.save_to_json(os.path.join(targs.output_dir, "trainer_state.json"))
    with open(os.path.join(targs.output_dir, "result.json"), "w") as f:
        json.dump(result, f, indent=2, default=str)
    return result


def _meta_row(task: str, method: str, label: str, setting: str, run: dict, **extra) -> dict:
    before, after = run["before"], run["after"]
    return {
        "task": task,
        "method": method,
        "label": label,
        "setting": setting,
        "metric": after["metric"],
        "value": after["value"],
        "ci95": after["ci95"],
        "pre_adaptation": after["pre_adaptation"],
        "no_meta_training": before["value"],
        "no_meta_training_ci95": before["ci95"],
        "episodes": after["episodes"],
        "train_seconds": run["train_seconds"],
        "eval_seconds": after["seconds"] + (0.0 if run.get("shared_before") else before["seconds"]),
        "run_dir": run["run_dir"],
        **extra,
    }


def run_meta_study(args: DemoArguments) -> dict:
    """Meta-train every method of `meta_methods` on digits 0-5 and test it on episodes of digits 6-9; then MAML on
    the sinusoid (Finn et al. 2017). Every row also evaluates the same network before meta-training."""
    study_dir = os.path.join(args.output_dir, "meta")
    os.makedirs(study_dir, exist_ok=True)
    start = time.perf_counter()
    meta_train, meta_test = load_meta_digits()
    way, methods = args.meta_way, args.meta_methods or list(DEFAULT_META_METHODS)
    # The same fixed test episodes for every method (paired comparison); seeded apart from the training episodes.
    tests = {
        k: EpisodeDataset(
            meta_test, way, k, args.meta_query, num_episodes=args.meta_eval_episodes, seed=args.seed + 1, fixed=True
        )
        for k in args.meta_shots
    }
    rows, baselines = [], {}
    total, done = len(methods) * len(args.meta_shots) + int(args.sinusoid_steps > 0), 0
    for name in methods:
        method = META_METHODS[name]
        steps = args.meta_steps if args.meta_steps is not None else method.max_steps
        for k, episodes in tests.items():
            setting = f"{way}-way {k}-shot"
            run_dir = os.path.join(study_dir, "digits", name, f"{way}way_{k}shot")
            done += 1
            print(f"[demo] meta run {done}/{total}: digits | {method.label} | {setting} | {steps} steps", flush=True)
            set_seed(args.seed)
            config = _conv4_config(way)
            model = Conv4Model(config) if method.encoder_only else Conv4ForImageClassification(config)
            fields = {**method.fields, "n_way": way, "k_shot": k, "n_query": args.meta_query}
            targs = _meta_training_args(run_dir, args, steps, **fields)
            # Before meta-training, methods that share the model and the test-time procedure (MAML and FOMAML: the
            # same SGD steps from the same random init) have the same number: evaluate it once.
            lr = targs.eval_inner_lr or targs.inner_lr
            key = (method.encoder_only, k, str(targs.adapt_spec), lr, targs.eval_inner_steps)
            run = meta_train_and_test(model, targs, meta_train, episodes, before=baselines.get(key))
            run["shared_before"] = key in baselines
            baselines.setdefault(key, run["before"])
            rows.append(_meta_row("digits", name, method.label, setting, run, chance=1 / way, meta_steps=steps))
            _print_meta_result(rows[-1])
    if args.sinusoid_steps > 0:
        done += 1
        print(f"[demo] meta run {done}/{total}: sinusoid | MAML (2nd order) | {args.sinusoid_steps} steps", flush=True)
        rows.append(_sinusoid_row(args, os.path.join(study_dir, "sinusoid", "maml")))
        _print_meta_result(rows[-1])
    table = format_meta_table(rows)
    results = {
        "digits": {
            "meta_train_classes": list(META_TRAIN_CLASSES),
            "meta_test_classes": list(META_TEST_CLASSES),
            "meta_train_images": len(meta_train),
            "meta_test_images": len(meta_test),
            "model": _conv4_config(way).to_dict(),
            "meta_batch_size": META_BATCH,
            "test_episodes": args.meta_eval_episodes,
            "n_query": args.meta_query,
        },
        "sinusoid": SINUSOID,
        "summary": rows,
        "table": table,
        "seconds": time.perf_counter() - start,
    }
    with open(os.path.join(study_dir, "table.txt"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(study_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2, default=str)
    print("\n" + table, flush=True)
    return results


def _sinusoid_row(args: DemoArguments, run_dir: str) -> dict:
    """Second-order MAML on the sinusoid, exactly Finn et al.'s setting, through `MetaTrainer` like the digits."""
    s, steps = SINUSOID, args.sinusoid_steps
    set_seed(args.seed)
    model = SinusoidMLP()
    targs = _meta_training_args(
        run_dir,
        args,
        steps,
        algorithm="maml",
        inner_lr=s["inner_lr"],
        inner_steps=1,
        per_device_train_batch_size=s["meta_batch"],
        per_device_eval_batch_size=100,
    )
    train = SinusoidTasks(steps * s["meta_batch"], k_shot=s["k_shot"], k_query=s["k_shot"], seed=args.seed)
    # Test tasks from another seed: new amplitudes and phases, 100 query points each (as `evaluate_sinusoid`).
    test = SinusoidTasks(
        args.meta_eval_episodes, k_shot=s["k_shot"], k_query=s["test_points"], seed=10_000 + args.seed
    )
    run = meta_train_and_test(model, targs, train, test)
    return _meta_row("sinusoid", "maml", "MAML (2nd order)", f"K={s['k_shot']}, 1 step", run, meta_steps=steps)


def _print_meta_result(row: dict) -> None:
    print(
        f"[demo]   {_format_metric(row, 'value', 'ci95')} (no meta-training "
        f"{_format_metric(row, 'no_meta_training', 'no_meta_training_ci95')})  ({row['train_seconds']:.1f}s training, "
        f"{row['eval_seconds']:.1f}s test)",
        flush=True,
    )


def _format_metric(row: dict, key: str, ci_key: str | None = None) -> str:
    value = row[key]
    if value is None:
        return "-"
    ci = row[ci_key] if ci_key else None
    if row["metric"] == "mse":
        return f"MSE {value:.2f}" + (f" +-{ci:.2f}" if ci is not None else "")
    return f"{100 * value:.1f}" + (f" +-{100 * ci:.1f}" if ci is not None else "") + " %"


def format_meta_table(rows: list[dict]) -> str:
    """Plain text: method, test setting, result after meta-training (+- 95% CI), before adaptation, with no
    meta-training, seconds."""
    header = [
        "task",
        "method",
        "test episodes",
        "meta-trained",
        "pre-adaptation",
        "no meta-training",
        "train s",
        "test s",
    ]
    lines = [
        [
            r["task"],
            r["label"],
            r["setting"],
            _format_metric(r, "value", "ci95"),
            _format_metric(r, "pre_adaptation"),
            _format_metric(r, "no_meta_training", "no_meta_training_ci95"),
            f"{r['train_seconds']:.1f}",
            f"{r['eval_seconds']:.1f}",
        ]
        for r in rows
    ]
    out = _aligned_table(header, lines, [r["task"] for r in rows])
    notes = [""]
    digits = [r for r in rows if r["task"] == "digits"]
    if digits:
        d = digits[0]
        notes += [
            f"digits: meta-trained on digits {', '.join(map(str, META_TRAIN_CLASSES))} (all their images), tested on "
            f"{d['episodes']} fixed episodes of digits {', '.join(map(str, META_TEST_CLASSES))} (never meta-trained "
            f"on); query accuracy, mean +- 95% CI over episodes; chance {100 * d['chance']:.0f}%.",
            "  ProtoNet: prototypes of the support embeddings; MAML/FOMAML: 3 SGD steps on the support set at test.",
        ]
    if any(r["task"] == "sinusoid" for r in rows):
        s = SINUSOID
        notes.append(
            f"sinusoid (Finn et al. 2017): {s['k_shot']} support points, one SGD step at lr {s['inner_lr']}; MSE on "
            f"{s['test_points']} query points of unseen amplitudes and phases, mean +- 95% CI over tasks."
        )
    notes += [
        "pre-adaptation: the meta-learned model on the query set before its inner steps (digits: labels are shuffled "
        "per episode, so chance).",
        "no meta-training: the same network at its random initialisation, tested the same way.",
        "train s / test s: seconds of meta-training, and of both tests (one shared no-meta-training test counted "
        "once).",
    ]
    return "\n".join(out + notes)


# A study is a function of the demo arguments that prints its own table and returns a JSON-able dict (with its
# "table"), stored under its name in results.json. Every study listed here runs by default, in this order.
STUDIES: dict[str, Callable[[DemoArguments], dict]] = {"transfer": run_transfer_study, "meta": run_meta_study}


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
    if len(args.studies) > 1:  # each study printed its table when it ended; here they are side by side
        print("\n" + "\n\n".join(results[name]["table"] for name in args.studies), flush=True)
    path = os.path.join(args.output_dir, "results.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2, default=str)
    print(f"[demo] results in {path} ({results['seconds']:.0f}s)", flush=True)
    return results


def _aligned_table(header: list[str], lines: list[list[str]], groups: list[str]) -> list[str]:
    """Left-aligned text columns under a dashed rule, with a blank line between consecutive groups (tasks)."""
    widths = [max(len(x[i]) for x in lines + [header]) for i in range(len(header))]

    def fmt(cells):
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    out = [fmt(header), "  ".join("-" * w for w in widths)]
    for i, cells in enumerate(lines):
        if i and groups[i] != groups[i - 1]:
            out.append("")
        out.append(fmt(cells))
    return out


if __name__ == "__main__":
    main()
