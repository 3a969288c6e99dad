"""Class-disjoint meta-train / validation / test splits: meta-learning tests on classes never seen in meta-training,
so the splits are over classes (or groups of classes, e.g. Omniglot alphabets), never over examples.

:func:`split_classes` splits one dataset by class fractions; :func:`split_classes_from_files` takes the user's
train / validation / test files and decides: files of disjoint classes are the split as given, files that share
classes are pooled and split by class (every row of a class, from every file, lands in that class's split).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import datasets
import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_FRACTIONS",
    "SPLITS",
    "ClassSplit",
    "assert_class_disjoint",
    "class_names",
    "parse_class_split",
    "split_classes",
    "split_classes_from_files",
]

SPLITS = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)


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
    that went to each split; ``sources[split]`` says where a split came from (a file, or the class fractions), for
    logs and model cards. :func:`split_classes_from_files` leaves ``train`` ``None`` when no training file is given
    (evaluation only).
    """

    train: datasets.Dataset | None
    validation: datasets.Dataset | None
    test: datasets.Dataset
    key: str = "label"
    keys: dict[str, list] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

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


def _sorted_unique(values: np.ndarray) -> list:
    return sorted(set(values.tolist()), key=lambda v: (str(type(v)), v))


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
    unique = _sorted_unique(values)

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


def parse_class_split(value: str | Sequence[float] | None) -> tuple[float, float, float] | None:
    """``"0.6,0.2,0.2"`` (the ``--class_split`` flag) or three numbers -> ``(train, validation, test)`` fractions of
    the classes; ``None`` stays ``None``. Checked as :func:`split_classes` checks them."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    parts = [p for p in value.replace(" ", ",").split(",") if p] if isinstance(value, str) else list(value)
    try:
        fractions = tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError(
            f"--class_split {value!r}: give three fractions of the classes, train,validation,test, e.g. 0.6,0.2,0.2."
        ) from None
    if len(fractions) != 3 or any(f < 0 for f in fractions):
        raise ValueError(
            f"--class_split {value!r}: give three non-negative fractions, train,validation,test, e.g. 0.6,0.2,0.2."
        )
    if abs(sum(fractions) - 1.0) > 1e-6 or fractions[0] == 0:
        raise ValueError(
            f"--class_split {value!r}: the fractions sum to {sum(fractions):g}; they must sum to 1, with a positive "
            "train fraction (e.g. 0.6,0.2,0.2, or 0.8,0,0.2 for no validation classes)."
        )
    return fractions


def class_names(dataset: datasets.Dataset, columns: Sequence[str]) -> datasets.Dataset:
    """``dataset`` with its `ClassLabel` columns among ``columns`` replaced by the class names (strings).

    Splits are compared by class *name*: two image folders (or two files) each number their classes from 0, so
    the ids of one say nothing about the other.
    """
    for column in columns:
        feature = dataset.features.get(column)
        if isinstance(feature, datasets.ClassLabel):
            names = feature.int2str(dataset.with_format(None)[column][:])
            fmt = dataset.format
            # added before the old column goes: a table whose last column is removed has no rows left
            dataset = dataset.add_column("__class_names__", names).remove_columns(column)
            dataset = dataset.rename_column("__class_names__", column)
            if fmt["type"] is not None:  # keep numpy image columns of the loaders as they were
                dataset = dataset.with_format(
                    fmt["type"], columns=fmt["columns"], output_all_columns=fmt["output_all_columns"]
                )
    return dataset


def _pool(parts: Mapping[str, datasets.Dataset], flags: Mapping[str, str]) -> datasets.Dataset:
    """The rows of every part, in order, on the columns they all have (cast to the first part's types)."""
    names = list(parts)
    if len(names) == 1:
        return parts[names[0]]
    first = parts[names[0]]
    common = [c for c in first.column_names if all(c in parts[n].column_names for n in names)]
    features = datasets.Features({c: first.features[c] for c in common})
    pieces = []
    for name in names:
        part = parts[name].with_format(None).select_columns(common)
        try:
            part = part.cast(features)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"{flags.get(name, name)}: its columns {dict(part.features)} cannot be read as those of "
                f"{flags.get(names[0], names[0])} ({dict(features)}): {err}. Give the files the same column types."
            ) from None
        pieces.append(part)
    return datasets.concatenate_datasets(pieces)


def _select_keys(dataset: datasets.Dataset, column: str, keys: Sequence) -> datasets.Dataset | None:
    if not len(keys):
        return None
    values = _column(dataset, column)
    return dataset.select(np.flatnonzero(np.isin(values, np.asarray(list(keys), dtype=values.dtype))))


def split_classes_from_files(
    files: Mapping[str, datasets.Dataset | None],
    label_column: str = "label",
    fractions: Sequence[float] | None = None,
    seed: int = 0,
    group_column: str | None = None,
    flags: Mapping[str, str] | None = None,
) -> ClassSplit:
    """Meta-train / validation / test splits from the user's ``{"train", "validation", "test"}`` files.

    * Files that share classes (or a train file alone) are pooled, and the classes split by ``fractions``
      (default :data:`DEFAULT_FRACTIONS`, seeded by ``seed``): **all** rows of a class, from every file, go to
      that class's split.
    * A test file whose classes are disjoint from the train file's is the meta-test split as given. The validation
      file is the meta-validation split if its classes are disjoint from both; one that shares classes with the
      train file joins it, and validation classes are carved from the pooled train classes by ``fractions`` (its
      validation share ``f_val / (f_train + f_val)``); without a validation file, they are carved only when
      ``fractions`` is given, else there are none.
    * ``group_column`` (e.g. an alphabet): the same, by groups: a whole group goes to one split.
    * Without a train file (evaluation only), the files are taken as they are; they must be class-disjoint.

    `ClassLabel` columns are compared by class name (:func:`class_names`). ``flags`` names each file in messages
    (default ``--<split>_file``). Returns a :class:`ClassSplit` whose ``sources`` say which rule made each split.
    """
    flags = {s: f"--{s}_file" for s in SPLITS} | dict(flags or {})
    unknown = set(files) - set(SPLITS)
    if unknown:
        raise ValueError(f"files has unknown splits {sorted(unknown)}; use {SPLITS}.")
    given = {s: files[s] for s in SPLITS if files.get(s) is not None}
    if not given:
        raise ValueError("No data: give a train file (and validation / test files), or a test file to evaluate on.")
    key = group_column or label_column
    columns = [label_column] + ([group_column] if group_column else [])
    given = {s: class_names(ds, columns) for s, ds in given.items()}
    for s, ds in given.items():
        for column in columns:
            if column not in ds.column_names:
                what = "--class_group_column" if column == group_column else "--label_column_name"
                raise ValueError(
                    f"{what} {column!r}: {flags[s]} has no column {column!r}; its columns are {ds.column_names}."
                )
    values = {s: set(_column(ds, key).tolist()) for s, ds in given.items()}
    what = f"{group_column!r} groups" if group_column else "classes"

    if "train" not in given:
        out = {s: given.get(s) for s in SPLITS}
        if out["test"] is None:
            raise ValueError(f"Without {flags['train']}, give {flags['test']}: the classes to evaluate on.")
        assert_class_disjoint(out, label_column, group_column)
        return ClassSplit(
            None, out["validation"], out["test"], key=key,
            keys={s: _sorted_unique(_column(ds, key)) if ds is not None else [] for s, ds in out.items()},
            sources={s: flags[s] for s in given},
        )  # fmt: skip

    if "test" in given and values["test"].isdisjoint(values["train"]):
        sources = {"test": f"{flags['test']} (its {what} are not in {flags['train']})"}
        pool_parts = {"train": given["train"]}
        validation = None
        if "validation" in given:
            shared_with_test = values["validation"] & values["test"]
            if shared_with_test:
                raise ValueError(
                    f"{flags['validation']} shares {len(shared_with_test)} of its {what} with {flags['test']} (e.g. "
                    f"{sorted(shared_with_test, key=str)[:5]}), whose {what} are disjoint from {flags['train']}'s: "
                    "validation classes must be unseen by both. Fix the files, or drop the validation file."
                )
            if values["validation"].isdisjoint(values["train"]):
                validation = given["validation"]
                sources["validation"] = f"{flags['validation']} (its {what} are in neither other file)"
            else:
                pool_parts["validation"] = given["validation"]
        pool = _pool(pool_parts, flags)
        carve = validation is None and (fractions is not None or "validation" in pool_parts)
        f = tuple(fractions) if fractions is not None else DEFAULT_FRACTIONS
        share = f[1] / (f[0] + f[1])
        if carve and share > 0:
            keys = _sorted_unique(_column(pool, key))
            n_val = max(1, round(share * len(keys)))
            if n_val >= len(keys):
                raise ValueError(
                    f"{len(keys)} {what} in {' + '.join(flags[p] for p in pool_parts)} cannot give {n_val} to "
                    f"validation (class split {f}) and keep some to train on: use more classes or a smaller "
                    "validation fraction."
                )
            order = np.random.default_rng(seed).permutation(len(keys))
            chosen_val = [keys[i] for i in order[:n_val]]
            chosen_train = [keys[i] for i in order[n_val:]]
            validation = _select_keys(pool, key, chosen_val)
            train = _select_keys(pool, key, chosen_train)
            sources["validation"] = (
                f"{n_val} of the {len(keys)} {what} of {' + '.join(flags[p] for p in pool_parts)} "
                f"(share {share:.3g} of class split {f}, seed {seed})"
            )
            sources["train"] = f"the other {len(keys) - n_val} {what}"
        else:
            train = pool
            sources["train"] = " + ".join(flags[p] for p in pool_parts)
        out = {"train": train, "validation": validation, "test": given["test"]}
        assert_class_disjoint(out, label_column, group_column)
        keys = {s: _sorted_unique(_column(ds, key)) if ds is not None else [] for s, ds in out.items()}
        return ClassSplit(train, validation, given["test"], key=key, keys=keys, sources=sources)

    # Shared classes (or a train file alone): pool every row, split the classes.
    f = tuple(fractions) if fractions is not None else DEFAULT_FRACTIONS
    for s in ("validation", "test"):
        if s in given and not values[s] <= values["train"]:
            logger.warning(
                f"{flags[s]} shares {len(values[s] & values['train'])} of its {len(values[s])} {what} with "
                f"{flags['train']}: the files are pooled and their {what} split by {f}. Give files of disjoint "
                f"{what} to use them as the split."
            )
    pool = _pool(given, flags)
    split = split_classes(pool, label_column, group_column, fractions=f, seed=seed)
    origin = " + ".join(flags[s] for s in given)
    split.sources = {
        s: f"{len(split.keys[s])} of the {len(_sorted_unique(_column(pool, key)))} {what} of {origin} (class split "
        f"{f}, seed {seed})"
        for s in SPLITS
        if split.keys.get(s)
    }
    return split
