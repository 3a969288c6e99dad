"""Reading the user's data files (or a Hub data set) into a `datasets.DatasetDict`, checking columns, splitting.

Each split may come in its own format: ``.csv``, ``.tsv`` (tab-separated, no quoting: a ``"`` is text), ``.json``
or ``.jsonl`` (one object per line, or a JSON list), ``.parquet``. Headerless csv/tsv files take their column names
from ``column_names``. Errors name the argument (``--train_file``), the value, and what to do.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "FILE_FORMATS",
    "check_columns",
    "load_data_files",
    "load_hub_dataset",
    "resolve_data_files",
    "split_by_rows",
]

# file suffix -> (datasets builder, builder keyword arguments)
FILE_FORMATS: dict[str, tuple[str, dict]] = {
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"delimiter": "\t", "quoting": csv.QUOTE_NONE}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
}
SPLITS = ("train", "validation", "test")


def _flag(split: str) -> str:
    return f"--{split}_file"


def resolve_data_files(
    train_file: str | None = None, validation_file: str | None = None, test_file: str | None = None
) -> dict[str, Path]:
    """``{split: path}`` for the files given, each checked to exist and to have a readable format."""
    given = {s: f for s, f in zip(SPLITS, (train_file, validation_file, test_file)) if f}
    if not given:
        raise ValueError(
            "No data: give --train_file (and --validation_file / --test_file, or let the train file be split), or "
            "--dataset_name for a data set on the Hub."
        )
    files = {}
    for split, name in given.items():
        path = Path(name).expanduser()
        if path.is_dir():
            raise ValueError(f"{_flag(split)} {name}: that is a folder; give the data file inside it.")
        if not path.is_file():
            raise ValueError(
                f"{_flag(split)} {name}: no such file (looked in {os.getcwd()} for relative paths). Check the path."
            )
        if path.suffix.lower() not in FILE_FORMATS:
            raise ValueError(
                f"{_flag(split)} {name}: the format {path.suffix or '(no suffix)'!r} is not read here; use one of "
                f"{', '.join(FILE_FORMATS)} (the suffix decides how the file is read)."
            )
        files[split] = path
    return files


def load_data_files(
    files: Mapping[str, str | Path], column_names: Sequence[str] | None = None, cache_dir: str | None = None
):
    """A `datasets.DatasetDict` with one split per file (each read by its own suffix).

    ``column_names``: the columns of headerless csv/tsv files, in order (their first row is then data).
    """
    from datasets import DatasetDict, load_dataset

    out = {}
    for split, name in files.items():
        path = Path(name)
        builder, kwargs = FILE_FORMATS[path.suffix.lower()]
        kwargs = dict(kwargs)
        if column_names:
            if builder != "csv":
                raise ValueError(
                    f"--column_names names the columns of headerless csv/tsv files; {_flag(split)} {name} is "
                    f"{builder}, whose columns are named in the file. Drop --column_names."
                )
            kwargs["column_names"] = list(column_names)
        try:
            ds = load_dataset(builder, data_files={split: str(path)}, split=split, cache_dir=cache_dir, **kwargs)
        except Exception as e:  # pandas/pyarrow parse errors surface as DatasetGenerationError chains
            cause = e.__cause__ or e
            raise ValueError(
                f"{_flag(split)} {name} could not be read as {path.suffix.lower()[1:]}: "
                f"{type(cause).__name__}: {cause}"
            ) from e
        if len(ds) == 0:
            raise ValueError(f"{_flag(split)} {name} has no rows.")
        out[split] = ds
    return DatasetDict(out)


def load_hub_dataset(
    name: str, config_name: str | None = None, cache_dir: str | None = None, token: str | None = None, **kwargs
):
    """A data set from the Hub (``--dataset_name [--dataset_config_name]``); its "validation" split may also be
    called "dev" or "valid". Needs network access (or the data set in the local cache)."""
    from datasets import load_dataset

    ds = load_dataset(name, config_name, cache_dir=cache_dir, token=token, **kwargs)
    for alias in ("dev", "valid"):
        if "validation" not in ds and alias in ds:
            ds["validation"] = ds.pop(alias)
    return ds


def split_by_rows(dataset, validation_size: float = 0.1, test_size: float = 0.1, seed: int = 0):
    """Split one `datasets.Dataset` into train / validation / test by a seeded permutation of its rows.

    A size below 1 is a fraction of the rows, from 1 up a number of rows; 0 leaves that split out.
    """
    import numpy as np
    from datasets import DatasetDict

    n = len(dataset)
    counts = {}
    for what, size in (("validation", validation_size), ("test", test_size)):
        if size is None or size < 0:
            raise ValueError(f"--{what}_split {size!r}: give a fraction in [0, 1) or a number of rows >= 1.")
        counts[what] = int(round(size * n)) if size < 1 else int(size)
        if size < 1 and size > 0 and counts[what] == 0:
            counts[what] = 1
    if counts["validation"] + counts["test"] >= n:
        raise ValueError(
            f"--validation_split {validation_size} and --test_split {test_size} take {counts['validation']} + "
            f"{counts['test']} of the {n} rows, leaving none to train on: give smaller splits."
        )
    order = np.random.default_rng(seed).permutation(n)
    n_val, n_test = counts["validation"], counts["test"]
    parts = {
        "train": order[n_val + n_test :],
        "validation": order[n_test : n_test + n_val],
        "test": order[:n_test],
    }
    return DatasetDict({k: dataset.select(np.sort(v)) for k, v in parts.items() if len(v)})


def check_columns(
    datasets, text_columns: Sequence[str], label_column: str, unlabelled_splits: Sequence[str] = ("test",)
) -> None:
    """Refuse a text or label column that a split lacks, naming the columns it has.

    Splits in ``unlabelled_splits`` may leave the label column out (predictions only).
    """
    if not text_columns or len(text_columns) > 2:
        raise ValueError(f"--text_column_names {list(text_columns)}: give one text column, or two for sentence pairs.")
    if label_column in text_columns:
        raise ValueError(f"--label_column_name {label_column!r} is also a text column: give the label its own column.")
    for split, ds in datasets.items():
        columns = ds.column_names
        for column in text_columns:
            if column not in columns:
                raise ValueError(
                    f"--text_column_names {column!r}: the {split} data has no column {column!r}; its columns are "
                    f"{columns}. Pass the right name{_headerless_hint(columns)}."
                )
        if label_column not in columns and split not in unlabelled_splits:
            raise ValueError(
                f"--label_column_name {label_column!r}: the {split} data has no column {label_column!r}; its "
                f"columns are {columns}. Pass the right name{_headerless_hint(columns)}."
            )


def _headerless_hint(columns: Sequence[str]) -> str:
    """Column names that look like data (long, with spaces) mean a csv/tsv without a header row."""
    if any(len(str(c)) > 30 or " " in str(c) for c in columns):
        return "; the file seems to have no header row: name its columns with --column_names (e.g. text label)"
    return ""
