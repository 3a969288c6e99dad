"""The task and the label space of a labelled data set, and the labels encoded as the model wants them.

As transformers' ``run_classification.py``: list labels are multi-label, float labels regression, anything else
(strings, integers, `ClassLabel`) single-label classification, with the class names sorted and taken from the
training split. ``problem_type`` may be given to say which is meant; a mismatch is refused (float labels for a
classification, strings for a regression), as are missing labels and validation/test labels unseen in training.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["PROBLEM_TYPES", "LabelSpace", "encode_labels", "infer_label_space"]

PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")


@dataclass(frozen=True)
class LabelSpace:
    """What the model config needs: ``problem_type``, ``num_labels``, ``label2id`` and ``id2label``.

    ``names`` are the class names in id order (empty for a regression).
    """

    problem_type: str
    names: tuple[str, ...] = field(default_factory=tuple)

    @property
    def num_labels(self) -> int:
        return 1 if self.problem_type == "regression" else len(self.names)

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    def config_kwargs(self) -> dict:
        """Keyword arguments for ``AutoConfig.from_pretrained`` (regression: no label names)."""
        kwargs = {"num_labels": self.num_labels, "problem_type": self.problem_type}
        if self.names:
            kwargs.update(label2id=self.label2id, id2label=self.id2label)
        return kwargs

    def encode(self, value):
        """One raw label -> an id (single-label), a multi-hot float list (multi-label) or a float (regression)."""
        if self.problem_type == "regression":
            return float(value)
        ids = self.label2id
        if self.problem_type == "multi_label_classification":
            hot = [0.0] * len(self.names)
            for v in value:
                hot[ids[_name(v)]] = 1.0
            return hot
        return ids[_name(value)]


def _name(value) -> str:
    """A raw class label as its name: integral floats (1.0) read as integers ("1")."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _feature_kind(feature) -> str:
    """ "class", "list", "string", "int", "bool" or "float" for a `datasets` feature."""
    from datasets import ClassLabel, Sequence, Value

    try:
        from datasets import List  # datasets >= 4
    except ImportError:  # pragma: no cover
        List = Sequence
    if isinstance(feature, ClassLabel):
        return "class"
    if isinstance(feature, (Sequence, List, list)):
        return "list"
    if isinstance(feature, Value):
        dtype = feature.dtype
        if dtype in ("string", "large_string"):
            return "string"
        if dtype == "bool":
            return "bool"
        if dtype.startswith(("int", "uint")):
            return "int"
        if dtype.startswith("float") or dtype == "double":
            return "float"
        if dtype == "null":
            return "null"
    return repr(feature)


def _check_present(values, split: str, column: str) -> None:
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            raise ValueError(
                f"Row {i} of the {split} data has no label in column {column!r} (empty or NaN): fill in or drop the "
                "unlabelled rows."
            )


def infer_label_space(
    datasets: Mapping, label_column: str, problem_type: str | None = None, reference_split: str = "train"
) -> LabelSpace:
    """The label space from ``datasets[reference_split]`` (or, without it, from every split that has labels), with
    every other labelled split checked against it."""
    if problem_type is not None and problem_type not in PROBLEM_TYPES:
        raise ValueError(f"--problem_type {problem_type!r}: use one of {PROBLEM_TYPES} (or leave it unset).")
    labelled = {s: ds for s, ds in datasets.items() if label_column in ds.column_names}
    if not labelled:
        raise ValueError(f"No split has the label column {label_column!r}: pass --label_column_name.")
    reference = [reference_split] if reference_split in labelled else list(labelled)
    first = labelled[reference[0]]
    feature = first.features[label_column]
    kind = _feature_kind(feature)
    if kind == "null":
        raise ValueError(f"Column {label_column!r} of the {reference[0]} data is empty: it holds no labels.")
    for split, ds in labelled.items():
        other = _feature_kind(ds.features[label_column])
        if other != kind and {other, kind} != {"int", "float"}:
            raise ValueError(
                f"Column {label_column!r} holds {kind} labels in the {reference[0]} data but {other} labels in the "
                f"{split} data: give every split labels of one kind."
            )
        _check_present(ds[label_column], split, label_column)

    if kind == "list":
        _expect(problem_type, "multi_label_classification", label_column, "lists of labels")
        problem = "multi_label_classification"
        seen = {_name(v) for s in reference for row in labelled[s][label_column] for v in row}
    elif kind == "float":
        values = [v for s in reference for v in labelled[s][label_column]]
        if problem_type in (None, "regression"):
            return LabelSpace("regression")
        if problem_type == "multi_label_classification" or not all(float(v).is_integer() for v in values):
            example = next((v for v in values if not float(v).is_integer()), values[0])
            raise ValueError(
                f"Column {label_column!r} holds float labels (e.g. {example!r}), which cannot be classes of "
                f"--problem_type {problem_type}. For a numeric target use --problem_type regression; for classes write "
                "them as strings or integers."
            )
        problem, seen = problem_type, {_name(v) for v in values}
    elif kind in ("class", "string", "int", "bool"):
        if problem_type == "regression" and kind not in ("int", "bool"):
            raise ValueError(
                f"--problem_type regression needs numeric labels; column {label_column!r} holds {kind} labels (e.g. "
                f"{first[label_column][0]!r}). Drop --problem_type for a classification."
            )
        if problem_type == "regression":
            return LabelSpace("regression")
        _expect(problem_type, "single_label_classification", label_column, f"one {kind} label per row")
        problem = "single_label_classification"
        if kind == "class":
            seen = None
        else:
            seen = {_name(v) for s in reference for v in labelled[s][label_column]}
    else:
        raise ValueError(
            f"Column {label_column!r} has the type {kind}: labels must be strings, integers, floats (regression) or "
            "lists (multi-label)."
        )

    if seen is None:  # a ClassLabel keeps its own names and order
        names = tuple(feature.names)
    else:
        names = tuple(sorted(seen, key=lambda n: (0, int(n)) if _is_int(n) else (1, n)))
    if problem == "single_label_classification" and len(names) < 2:
        raise ValueError(
            f"The {reference[0]} data has a single label ({names[0]!r}) in column {label_column!r}: a classifier "
            "needs at least two classes. Check --label_column_name."
        )
    space = LabelSpace(problem, names)
    known = set(names)
    for split, ds in labelled.items():
        if seen is None or split in reference:
            continue
        rows = ds[label_column]
        values = [v for row in rows for v in row] if problem == "multi_label_classification" else rows
        unseen = sorted({_name(v) for v in values} - known)
        if unseen:
            raise ValueError(
                f"The {split} data has labels the training data lacks: {unseen[:10]}; the classes come from the "
                f"training data ({list(names)[:10]}{'...' if len(names) > 10 else ''}). Fix the labels or the split."
            )
    return space


def _is_int(name: str) -> bool:
    try:
        int(name)
    except ValueError:
        return False
    return True


def _expect(problem_type: str | None, implied: str, column: str, what: str) -> None:
    if problem_type is not None and problem_type != implied:
        raise ValueError(
            f"--problem_type {problem_type}: column {column!r} holds {what}, which is {implied}. Drop --problem_type "
            f"or fix --label_column_name."
        )


def encode_labels(datasets, space: LabelSpace, label_column: str, output_column: str = "labels"):
    """``datasets`` (a `DatasetDict` or `Dataset`) with ``output_column`` holding the encoded labels (ids, multi-hot
    vectors or floats) in place of ``label_column``; splits without the label column are left as they are."""
    from datasets import ClassLabel, Dataset, DatasetDict, Sequence, Value

    def one(ds):
        if label_column not in ds.column_names:
            return ds
        if isinstance(ds.features[label_column], ClassLabel):
            if label_column != output_column:
                ds = ds.rename_column(label_column, output_column)
            return ds
        encoded = [space.encode(v) for v in ds[label_column]]
        # added before the raw column goes: a table whose last column is removed has no rows left
        ds = ds.add_column("__encoded_labels__", encoded).remove_columns(label_column)
        if output_column in ds.column_names:
            ds = ds.remove_columns(output_column)
        ds = ds.rename_column("__encoded_labels__", output_column)
        # float32 targets: the models' MSE / BCE losses refuse float64 labels beside float32 logits
        if space.problem_type == "regression":
            ds = ds.cast_column(output_column, Value("float32"))
        elif space.problem_type == "multi_label_classification":
            ds = ds.cast_column(output_column, Sequence(Value("float32")))
        return ds

    if isinstance(datasets, Dataset):
        return one(datasets)
    return DatasetDict({split: one(ds) for split, ds in datasets.items()})
