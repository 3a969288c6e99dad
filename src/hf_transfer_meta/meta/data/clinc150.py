"""CLINC150 intents (Larson et al. 2019, "An Evaluation Dataset for Intent Classification and Out-of-Scope
Prediction") from ``data_full.json``."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import datasets

from .paths import resolve_data_dir

__all__ = ["CLINC150_SOURCE", "load_clinc150"]

CLINC150_SOURCE = "github.com/clinc/oos-eval (data/data_full.json, CC BY 3.0)"
_CLINC_SPLITS = {"train": "train", "val": "validation", "test": "test"}


def load_clinc150(
    data_dir: str | os.PathLike | None = None,
    splits: Sequence[str] = ("train", "validation", "test"),
    include_oos: bool = False,
) -> datasets.Dataset:
    """CLINC150 intents from ``data_full.json``: 150 intents x 150 utterances.

    Args:
        data_dir: the folder holding ``data_full.json`` (or the file itself); default ``shared_data_dir()/clinc150``.
        splits: which of the original splits to keep (``"train"``, ``"validation"``, ``"test"``); for few-shot
            work the intents are split instead (:func:`split_classes`), so all three are kept by default.
        include_oos: keep the out-of-scope utterances, as the extra class ``"oos"`` (the last id).

    Returns:
        ``datasets.Dataset`` with ``text``, ``label`` (a ``ClassLabel`` over the sorted intent names, so
        ``features["label"].int2str`` names them) and ``split``.
    """
    if data_dir is not None and Path(data_dir).is_file():
        path = Path(data_dir)
    else:
        path = resolve_data_dir(data_dir, "clinc150", "data_full.json", CLINC150_SOURCE) / "data_full.json"
    unknown = set(splits) - set(_CLINC_SPLITS.values())
    if unknown:
        raise ValueError(f"splits={list(splits)}: unknown {sorted(unknown)}; use {list(_CLINC_SPLITS.values())}.")
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)

    rows: dict[str, list] = {"text": [], "intent": [], "split": []}
    for key, split in _CLINC_SPLITS.items():
        if split not in splits:
            continue
        for prefix in ("", "oos_") if include_oos else ("",):
            for text, intent in raw[prefix + key]:
                rows["text"].append(text)
                rows["intent"].append(intent)
                rows["split"].append(split)
    intents = sorted({i for i in rows["intent"] if i != "oos"})
    if include_oos:
        intents.append("oos")
    label = datasets.ClassLabel(names=intents)
    features = datasets.Features({"text": datasets.Value("string"), "label": label, "split": datasets.Value("string")})
    return datasets.Dataset.from_dict(
        {"text": rows["text"], "label": label.str2int(rows["intent"]), "split": rows["split"]}, features=features
    )
