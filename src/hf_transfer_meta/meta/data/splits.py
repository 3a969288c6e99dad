"""Class-disjoint meta-train / validation / test splits: meta-learning tests on classes never seen in meta-training,
so the splits are over classes (or groups of classes, e.g. Omniglot alphabets), never over examples."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import datasets
import numpy as np

__all__ = ["SPLITS", "ClassSplit", "assert_class_disjoint", "split_classes"]

SPLITS = ("train", "validation", "test")


def _column(dataset: datasets.Dataset, column: str) -> np.ndarray:
    if column not in dataset.column_names:
        raise ValueError(f"Column {column!r} is not in the dataset; its columns are {dataset.column_names}.")
    return np.asarray(dataset.with_format(None)[column][:])


def assert_class_disjoint(
    splits: Mapping[str, datasets.Dataset | None], label_column: str = "label", group_column: str | None = None
) -> None:
    """Raise ``ValueError`` if two splits share a class (or a group): meta-test classes must be unseen.

    Checked on ``label_column`` and, when given, on ``group_column`` too.
    """
    columns = [label_column] + ([group_column] if group_column else [])
    present = {name: ds for name, ds in splits.items() if ds is not None and len(ds)}
    for column in columns:
        values = {name: set(_column(ds, column).tolist()) for name, ds in present.items()}
        names = list(values)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                shared = values[a] & values[b]
                if shared:
                    raise ValueError(
                        f"The {a!r} and {b!r} splits share {len(shared)} value(s) of {column!r}, e.g. "
                        f"{sorted(shared, key=str)[:5]}: meta-learning splits must be class-disjoint."
                        + (
                            f" A class of {label_column!r} spans several {group_column!r} groups; make labels "
                            "unique per group."
                            if group_column and column == label_column
                            else ""
                        )
                    )


@dataclass
class ClassSplit:
    """Class-disjoint meta-train / validation / test datasets (``validation`` is ``None`` when it has no classes).

    ``keys[split]`` lists the values of ``key`` (the label column, or the group column when splitting by group)
    that went to each split.
    """

    train: datasets.Dataset
    validation: datasets.Dataset | None
    test: datasets.Dataset
    key: str = "label"
    keys: dict[str, list] = field(default_factory=dict)

    def __getitem__(self, split: str) -> datasets.Dataset | None:
        if split not in SPLITS:
            raise KeyError(f"{split!r} is not a split; the splits are {SPLITS}.")
        return getattr(self, split)

    def items(self) -> Iterator[tuple[str, datasets.Dataset]]:
        """The non-empty splits, as ``(name, dataset)``."""
        for name in SPLITS:
            if getattr(self, name) is not None:
                yield name, getattr(self, name)

    def as_dataset_dict(self) -> datasets.DatasetDict:
        return datasets.DatasetDict(dict(self.items()))


def split_classes(
    dataset: datasets.Dataset,
    label_column: str = "label",
    group_column: str | None = None,
    fractions: Sequence[float] | None = (0.6, 0.2, 0.2),
    classes: Mapping[str, Sequence] | None = None,
    seed: int = 0,
) -> ClassSplit:
    """Split ``dataset`` into class-disjoint meta-train / validation / test sets.

    Args:
        dataset: one row per example.
        label_column: the class column.
        group_column: split by this column instead (e.g. ``"alphabet"``: every character of an alphabet goes to
            the same split). Labels must then be unique across groups (checked).
        fractions: ``(train, validation, test)`` fractions of the classes (or groups), summing to 1; validation may
            be 0. Each split gets ``round(fraction * n)`` keys (train gets the rest), at least one if its fraction
            is positive. Ignored when ``classes`` is given.
        classes: explicit ``{"train": [...], "validation": [...], "test": [...]}`` lists of label (or group)
            values; keys left out of every list are dropped.
        seed: shuffles the keys before the fractions cut them.

    Returns:
        :class:`ClassSplit`; raises ``ValueError`` if the result is not class-disjoint.
    """
    key = group_column or label_column
    values = _column(dataset, key)
    _column(dataset, label_column)  # validates the label column too
    unique = sorted(set(values.tolist()), key=lambda v: (str(type(v)), v))

    if classes is not None:
        unknown_splits = set(classes) - set(SPLITS)
        if unknown_splits:
            raise ValueError(f"classes has unknown splits {sorted(unknown_splits)}; use {SPLITS}.")
        chosen = {name: list(classes.get(name, [])) for name in SPLITS}
        seen: dict = {}
        for name, keys in chosen.items():
            missing = [k for k in keys if k not in set(unique)]
            if missing:
                raise ValueError(f"classes[{name!r}] lists {missing[:5]}, which are not values of column {key!r}.")
            for k in keys:
                if k in seen and seen[k] != name:
                    raise ValueError(
                        f"{key}={k!r} is listed in both {seen[k]!r} and {name!r}: splits must be disjoint."
                    )
                seen[k] = name
    else:
        if fractions is None or len(fractions) != 3 or any(f < 0 for f in fractions):
            raise ValueError(f"fractions={fractions} must be three non-negative numbers (train, validation, test).")
        if abs(sum(fractions) - 1.0) > 1e-6 or fractions[0] == 0 or fractions[2] == 0:
            raise ValueError(
                f"fractions={tuple(fractions)} must sum to 1 (they sum to {sum(fractions)}) with positive train and "
                "test fractions."
            )
        n = len(unique)
        counts = [max(1, round(f * n)) if f > 0 else 0 for f in fractions[1:]]
        n_train = n - sum(counts)
        if n_train < 1:
            raise ValueError(
                f"{n} values of {key!r} cannot be split by fractions={tuple(fractions)} with at least one per "
                "non-zero fraction; use more classes or pass classes={...} explicitly."
            )
        order = np.random.default_rng(seed).permutation(n)
        shuffled = [unique[i] for i in order]
        cuts = np.cumsum([n_train, *counts])
        chosen = {
            "train": shuffled[: cuts[0]],
            "validation": shuffled[cuts[0] : cuts[1]],
            "test": shuffled[cuts[1] : cuts[2]],
        }

    out = {}
    for name in SPLITS:
        rows = np.flatnonzero(np.isin(values, np.asarray(chosen[name], dtype=values.dtype)))
        out[name] = dataset.select(rows) if len(chosen[name]) else None
    if out["train"] is None or out["test"] is None:
        sizes = {k: len(v) for k, v in chosen.items()}
        raise ValueError(f"Both the train and the test split need classes; got {sizes} classes per split.")
    assert_class_disjoint(out, label_column, group_column)
    return ClassSplit(out["train"], out["validation"], out["test"], key=key, keys=chosen)
