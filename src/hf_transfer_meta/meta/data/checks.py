"""Checks that the class splits can give the episodes a run asks for, before anything trains or is written.

:class:`~hf_transfer_meta.meta.data.episodes.EpisodeDataset` refuses the same problems when it is built; this
check names the split and the flags, so a command-line user knows what to change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .splits import SPLITS, ClassSplit

__all__ = ["SPLIT_NAMES", "EpisodeShape", "check_episode_sizes"]

SPLIT_NAMES = {"train": "meta-train", "validation": "meta-validation", "test": "meta-test"}


@dataclass(frozen=True)
class EpisodeShape:
    """What one split must give: episodes of ``n_way`` classes, ``per_class`` examples drawn from each.

    ``n_way_flag`` and ``per_class_flags`` name where the numbers come from in messages, e.g. ``"--n_way 5"``
    and ``"--k_shot 1 + --n_query 15"``.
    """

    n_way: int
    per_class: int
    n_way_flag: str = "n_way"
    per_class_flags: str = "k_shot + n_query"


def check_episode_sizes(
    split: ClassSplit,
    label_column: str,
    shapes: Mapping[str, EpisodeShape],
    rotations: Sequence[int] | None = None,
) -> None:
    """Raise ``ValueError`` if a split of ``split`` has fewer classes than its shape's ``n_way`` (rotations count
    as classes) or a class with fewer than ``per_class`` examples; the message names the split, the counts and the
    flags. ``shapes`` maps split names (``"train"``, ``"validation"``, ``"test"``) to what they must give; a split
    that is ``None`` in ``split`` raises too, since the run needs it."""
    counts = {}
    for name in SPLITS:
        ds = split[name]
        counts[name] = 0 if ds is None else len(np.unique(np.asarray(ds.with_format(None)[label_column][:])))
    summary = ", ".join(f"{SPLIT_NAMES[s]} {counts[s]}" for s in SPLITS)
    n_rot = max(1, len(rotations or ()))
    for name, shape in shapes.items():
        ds = split[name]
        if ds is None:
            raise ValueError(f"The run needs {SPLIT_NAMES[name]} classes, and there are none (classes: {summary}).")
        labels = np.asarray(ds.with_format(None)[label_column][:])
        classes, sizes = np.unique(labels, return_counts=True)
        pool = len(classes) * n_rot
        if shape.n_way > pool:
            rotated = f" x {n_rot} rotations = {pool}" if n_rot > 1 else ""
            raise ValueError(
                f"The {SPLIT_NAMES[name]} split has {len(classes)} classes{rotated}, but {shape.n_way_flag} draws "
                f"{shape.n_way} per episode (classes per split: {summary}). Lower it, or give that split more "
                "classes (--class_split, or other files)."
            )
        small = np.flatnonzero(sizes < shape.per_class)
        if len(small):
            listed = ", ".join(f"{classes[i].item()!r} has {sizes[i]}" for i in small[:5])
            more = f" (and {len(small) - 5} more classes)" if len(small) > 5 else ""
            raise ValueError(
                f"Too few examples in the {SPLIT_NAMES[name]} split: class {listed}{more}, but "
                f"{shape.per_class_flags} = {shape.per_class} are drawn from each class of an episode. Lower "
                "them, or drop the small classes from the data."
            )
