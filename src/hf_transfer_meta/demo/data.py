"""The digit data of both studies: scikit-learn's 1797 8x8 digits, split into disjoint parts every machine has.

Both studies learn from digits 0-5 and are tested on digits 6-9, so the transfer table and the meta-learning table
answer the same question. Public for the benchmarks (`benchmarks/lp_probe.py`):

* `load_digit_tasks(seed)`: the transfer study's source set and every target task's test set and few-shot pool;
* `draw_few_shot(pool, targets, shots, val_per_class, seed)`: a disjoint few-shot train/validation draw;
* `target_datasets(task, splits, ...)`: a target task's train, validation and ID/OOD test datasets;
* `DigitImages`: the images as ``pixel_values`` (1x16x16) and ``labels``, what the ResNet reads;
* `TASKS`: the target tasks (`TargetTask`), one shift of each kind;
* `load_meta_digits()`: the meta-learning study's class-disjoint meta-train and meta-test sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import datasets
import numpy as np
import torch
import torch.nn.functional as F

from ..meta import assert_class_disjoint, load_digits_dataset

__all__ = [
    "IMAGE_SIZE",
    "META_TEST_CLASSES",
    "META_TRAIN_CLASSES",
    "NEW_CLASSES",
    "SOURCE_CLASSES",
    "TASKS",
    "DigitImages",
    "DigitSplits",
    "TargetTask",
    "draw_few_shot",
    "load_digit_tasks",
    "load_meta_digits",
    "target_datasets",
]

SOURCE_CLASSES = (0, 1, 2, 3, 4, 5)
NEW_CLASSES = (6, 7, 8, 9)
META_TRAIN_CLASSES = SOURCE_CLASSES
META_TEST_CLASSES = NEW_CLASSES
IMAGE_SIZE = 16  # the 8x8 digits, upsampled: ResNet's stem divides the resolution by 4


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

    def label_ids(self, digits: np.ndarray) -> np.ndarray:
        ids = np.searchsorted(self.classes, digits)
        return (ids + 1) % len(self.classes) if self.relabel else ids


# One shift of each kind of Lee et al. 2022 ("Surgical Fine-Tuning Improves Adaptation to Distribution Shifts"):
# new classes under a new head, an input-level shift (their CIFAR-10-C case), an output-level shift (label shift).
TASKS = {
    "new_classes": TargetTask("new_classes", NEW_CLASSES, "new classes", "new", new_head=True),
    "inverted": TargetTask("inverted", SOURCE_CLASSES, "input-level", "held_out", invert=True),
    "relabeled": TargetTask("relabeled", SOURCE_CLASSES, "output-level", "held_out", relabel=True),
}


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

    def source_labels(self) -> np.ndarray:
        """Label ids (0-5) of the source images, in the order of `source`."""
        return np.searchsorted(SOURCE_CLASSES, self.targets[self.source])

    def smallest_pool_class(self, task: TargetTask) -> int:
        """Images of the rarest digit in `task`'s pool: the most `shots + val_per_class` can be."""
        pool = self.targets[self.target_pool[task.pool]]
        return int(min(np.sum(pool == c) for c in task.classes))


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


def target_datasets(
    task: TargetTask,
    splits: DigitSplits,
    *,
    shots: int,
    val_per_class: int,
    draw_seed: int,
    ood_noise: float = 0.4,
    noise_seed: int = 0,
) -> dict[str, DigitImages]:
    """A target task's few-shot `train` and `val` draw, its fixed `test_id` images, and their noisy OOD copies.

    `val_ood` and `test_ood` add Gaussian noise of std `ood_noise` (seeds `noise_seed + 2` and `+ 1`): a shift the
    source pretraining covered but the few-shot target set lacks.
    """
    train_idx, val_idx = draw_few_shot(splits.target_pool[task.pool], splits.targets, shots, val_per_class, draw_seed)
    test_idx = splits.target_test[task.pool]

    def ds(idx, **kw):
        return DigitImages(splits.images[idx], task.label_ids(splits.targets[idx]), invert=task.invert, **kw)

    return {
        "train": ds(train_idx),
        "val": ds(val_idx),
        "val_ood": ds(val_idx, noise=ood_noise, noise_seed=noise_seed + 2),
        "test_id": ds(test_idx),
        "test_ood": ds(test_idx, noise=ood_noise, noise_seed=noise_seed + 1),
    }


def load_meta_digits() -> tuple[datasets.Dataset, datasets.Dataset]:
    """(meta-train, meta-test): every image of digits 0-5, every image of digits 6-9; checked class-disjoint."""
    digits = load_digits_dataset()
    labels = np.asarray(digits.with_format(None)["label"])
    train = digits.select(np.flatnonzero(np.isin(labels, META_TRAIN_CLASSES)))
    test = digits.select(np.flatnonzero(np.isin(labels, META_TEST_CLASSES)))
    assert_class_disjoint({"meta-train": train, "meta-test": test})
    return train, test
