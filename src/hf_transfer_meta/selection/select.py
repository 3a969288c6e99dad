"""Rank pretrained checkpoints on the user's data before fine-tuning ("consider different architectures").

Each candidate (a Hub id or a local folder) is loaded once with a fresh classification head; the input of that
head (the features a linear probe and LP-FT see, `extract_features`) is extracted once for every training example,
and scored two ways from the same features:

* **cross-validated linear probe**: stratified k-fold; in each fold the probe's C is chosen on a split of the
  training folds only, refit on all of them, and scored on the held-out fold (mean and spread over the folds);
* **LogME** (You et al. 2021): the evidence of a Bayesian linear model, no training at all.

A candidate that fails to load or run is a row of the table with its error, not the end of the search.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import numpy as np

from .evidence import logme

__all__ = ["CandidateScore", "SelectionResult", "cross_validated_probe", "select_pretrained"]

logger = logging.getLogger(__name__)

RANK_BY = ("cv_accuracy", "logme")
PROBE_CS = tuple(np.logspace(-4, 3, 15).tolist())


@dataclass
class CandidateScore:
    """One row of the table: a candidate's scores, cost and size (``error`` set when it could not be scored)."""

    candidate: str
    cv_accuracy: float | None = None
    cv_std: float | None = None
    cv_fold_accuracies: list[float] = field(default_factory=list)
    logme: float | None = None
    num_parameters: int | None = None
    feature_dim: int | None = None
    num_examples: int | None = None
    extract_seconds: float | None = None
    score_seconds: float | None = None
    error: str | None = None
    finetune: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def seconds(self) -> float | None:
        if self.extract_seconds is None:
            return None
        return self.extract_seconds + (self.score_seconds or 0.0)


@dataclass
class SelectionResult:
    """Every candidate, best first by ``ranked_by`` (failed candidates last)."""

    rows: list[CandidateScore]
    ranked_by: str
    folds: int
    num_classes: int

    @property
    def best(self) -> CandidateScore | None:
        return next((r for r in self.rows if r.ok), None)

    def to_dict(self) -> dict[str, Any]:
        rows = [dict(asdict(r), seconds=r.seconds) for r in self.rows]
        return {"ranked_by": self.ranked_by, "folds": self.folds, "num_classes": self.num_classes, "candidates": rows}

    def table(self) -> str:
        """A markdown table: rank, candidate, CV probe accuracy +- fold std, LogME, seconds, parameters."""
        head = "| rank | candidate | CV probe accuracy | LogME | seconds | parameters |"
        has_ft = any(r.finetune for r in self.rows)
        if has_ft:
            head += " fine-tuned accuracy |"
        lines = [head, "|" + "---|" * (head.count("|") - 1)]
        for i, r in enumerate(self.rows, 1):
            if not r.ok:
                cells = [str(i), r.candidate, f"failed: {r.error}", "", "", ""]
            else:
                cells = [
                    str(i),
                    r.candidate,
                    f"{r.cv_accuracy:.4f} +- {r.cv_std:.4f} ({self.folds} folds)",
                    f"{r.logme:.4f}",
                    f"{r.seconds:.1f}",
                    f"{r.num_parameters:,}",
                ]
            if has_ft:
                ft = r.finetune or {}
                cells.append(f"{ft['eval_accuracy']:.4f}" if "eval_accuracy" in ft else "")
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def save(self, output_dir: str) -> str:
        """Write ``selection.json`` and ``selection.md`` into ``output_dir``; returns the JSON path."""
        os.makedirs(output_dir, exist_ok=True)
        path = os.path.join(output_dir, "selection.json")
        for name, text in (("selection.json", json.dumps(self.to_dict(), indent=2)), ("selection.md", self.table())):
            target = os.path.join(output_dir, name)
            with open(target + ".tmp", "w") as f:
                f.write(text + "\n")
            os.replace(target + ".tmp", target)
        return path


def cross_validated_probe(
    features: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0, Cs: Sequence[float] = PROBE_CS
) -> list[float]:
    """Held-out accuracy of an L2 logistic probe in each of ``folds`` stratified folds; C is chosen inside the
    training folds (80/20), never on the fold that is scored."""
    from sklearn.model_selection import StratifiedKFold, train_test_split

    from ..transfer.strategies.linear_probe import fit_linear_probe

    counts = np.bincount(labels)
    present = counts[counts > 0]
    if present.min() < folds:
        raise ValueError(
            f"{folds}-fold cross-validation needs at least {folds} examples of every class; the smallest class has "
            f"{present.min()}. Use fewer folds or more data."
        )
    num_classes = int(labels.max()) + 1
    scores = []
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for train_idx, test_idx in splitter.split(features, labels):
        x, y = features[train_idx], labels[train_idx]
        stratify = y if np.bincount(y)[np.bincount(y) > 0].min() >= 2 else None
        fit_idx, val_idx = train_test_split(np.arange(len(y)), test_size=0.2, random_state=seed, stratify=stratify)
        chosen = fit_linear_probe(x[fit_idx], y[fit_idx], x[val_idx], y[val_idx], Cs=Cs, num_classes=num_classes)
        probe = fit_linear_probe(x, y, Cs=[chosen.C], num_classes=num_classes)
        scores.append(float((probe.predict(features[test_idx]) == labels[test_idx]).mean()))
    return scores


# ------------------------------------------------------------------------------------------------------ candidates
def _load_text_candidate(name: str, num_labels: int, dataset, *, text_columns: Sequence[str], max_length: int, **kw):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

    model = AutoModelForSequenceClassification.from_pretrained(  # first: its error names a missing config.json
        name, num_labels=num_labels, ignore_mismatched_sizes=True, **kw
    )
    tokenizer = AutoTokenizer.from_pretrained(name, **kw)
    if tokenizer.pad_token is None:  # decoder models: pad with EOS, as their sequence classifiers expect
        tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id

    def tokenize(batch):
        texts = [batch[c] for c in text_columns]
        return tokenizer(*texts, truncation=True, max_length=max_length)

    encoded = dataset.map(tokenize, batched=True, remove_columns=[c for c in dataset.column_names if c != "labels"])
    return model, encoded, DataCollatorWithPadding(tokenizer)


def _load_image_candidate(name: str, num_labels: int, dataset, *, image_column: str, **kw):
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from .. import vision  # noqa: F401  (EfficientNet-Lite, CIFAR ResNets, Conv4 as Auto classes)

    model = AutoModelForImageClassification.from_pretrained(
        name, num_labels=num_labels, ignore_mismatched_sizes=True, **kw
    )
    processor = AutoImageProcessor.from_pretrained(name, **kw)

    def transform(batch):
        pixels = processor([im.convert("RGB") for im in batch[image_column]], return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixels, "labels": batch["labels"]}

    def collate(examples):
        return {
            "pixel_values": torch.stack([e["pixel_values"] for e in examples]),
            "labels": torch.tensor([e["labels"] for e in examples]),
        }

    return model, dataset.with_transform(transform), collate


def _label_names(data, label_column: str) -> list[str]:
    import datasets

    feature = data.features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    values = data[label_column]
    if any(isinstance(v, float) and not float(v).is_integer() for v in values):
        raise ValueError(f"Column {label_column!r} holds non-integer numbers: selection ranks classifiers.")
    return sorted({str(v) for v in values})


def _with_label_ids(data, label_column: str, names: list[str], columns: list[str]):
    """The model's columns and ``labels`` (ids in ``names``' order); a label outside ``names`` is refused."""
    import datasets

    values = data[label_column]
    if isinstance(data.features[label_column], datasets.ClassLabel):
        values = [data.features[label_column].int2str(v) for v in values]
    index = {n: i for i, n in enumerate(names)}
    unknown = sorted({str(v) for v in values} - set(index))
    if unknown:
        raise ValueError(f"Labels {unknown[:5]} of the evaluation data are not in the training data's {names[:10]}.")
    ids = [index[str(v)] for v in values]
    return data.remove_columns([c for c in data.column_names if c not in columns]).add_column("labels", ids)


def _finetune(name, load, num_labels, train, evaluation, args, seed, load_kwargs) -> dict[str, Any]:
    """Fine-tune one candidate on ``train`` and score it on ``evaluation``, the same way for every candidate."""
    import tempfile

    import torch

    from ..transfer.trainer import TransferTrainer

    torch.manual_seed(seed)  # the same new head for every candidate of one width
    model, train_set, collator = load(name, num_labels, train, **load_kwargs)
    _, eval_set, _ = load(name, num_labels, evaluation, **load_kwargs)
    with tempfile.TemporaryDirectory() as tmp:
        if args is None:
            from transformers import TrainingArguments

            args = TrainingArguments(
                output_dir=tmp, num_train_epochs=1, learning_rate=5e-5, per_device_train_batch_size=16,
                save_strategy="no", report_to="none", seed=seed, disable_tqdm=True, remove_unused_columns=False,
            )  # fmt: skip

        def accuracy(pred):
            return {"accuracy": float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())}

        trainer = TransferTrainer(
            model=model, args=args, train_dataset=train_set, eval_dataset=eval_set, data_collator=collator,
            compute_metrics=accuracy,
        )  # fmt: skip
        train_metrics = trainer.train().metrics
        metrics = trainer.evaluate()
    return {"eval_accuracy": metrics["eval_accuracy"], "eval_loss": metrics["eval_loss"],
            "train_seconds": train_metrics["train_runtime"], "epochs": float(args.num_train_epochs),
            "learning_rate": float(args.learning_rate)}  # fmt: skip


def _error_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def select_pretrained(
    candidates: Sequence[str],
    train_dataset,
    *,
    label_column: str = "label",
    text_column_names: Sequence[str] | None = None,
    image_column: str | None = None,
    folds: int = 5,
    rank_by: str = "cv_accuracy",
    max_samples: int | None = None,
    max_length: int = 128,
    batch_size: int = 32,
    seed: int = 0,
    output_dir: str | None = None,
    finetune_top: int = 0,
    eval_dataset=None,
    finetune_args=None,
    progress: bool = True,
    **load_kwargs,
) -> SelectionResult:
    """Score every candidate checkpoint on ``train_dataset`` (a `datasets.Dataset` with integer or string labels)
    and rank them, best first.

    Args:
        candidates: Hub ids or local model folders.
        text_column_names / image_column: what the model reads (one or two text columns, or an image column).
        folds: k of the cross-validated probe.
        rank_by: ``cv_accuracy`` or ``logme``.
        max_samples: a seeded random subset of this many rows (features of every row otherwise).
        output_dir: where ``selection.json`` / ``selection.md`` are written.
        finetune_top, eval_dataset, finetune_args: fine-tune the top ``finetune_top`` candidates (all of them the
            same way: `TransferTrainer` with ``finetune_args``, a `TrainingArguments` or `TransferTrainingArguments`;
            by default 1 epoch of full fine-tuning at 5e-5) on the same rows and score them on ``eval_dataset``, to
            confirm the ranking.
        load_kwargs: passed to ``from_pretrained`` (``revision``, ``token``, ``trust_remote_code``, ``cache_dir``).
    """
    import torch
    from torch.utils.data import DataLoader

    from ..transfer.strategies.linear_probe import extract_features

    if rank_by not in RANK_BY:
        raise ValueError(f"rank_by={rank_by!r}: use one of {', '.join(RANK_BY)}.")
    if not candidates:
        raise ValueError("No candidates: give Hub ids or local model folders to compare.")
    if (text_column_names is None) == (image_column is None):
        raise ValueError("Give text_column_names (text models) or image_column (vision models), one of the two.")
    if finetune_top and eval_dataset is None:
        raise ValueError(f"finetune_top={finetune_top} scores the fine-tuned candidates on eval_dataset: give one.")
    columns = list(text_column_names or [image_column])
    for what, ds in (("training", train_dataset), ("evaluation", eval_dataset)):
        for column in [*columns, label_column] if ds is not None else []:
            if column not in ds.column_names:
                raise ValueError(f"The {what} data has no column {column!r}; its columns are {ds.column_names}.")
    if folds < 2:
        raise ValueError(f"folds={folds}: cross-validation needs at least 2 folds.")

    data = train_dataset
    if max_samples is not None and max_samples < len(data):
        data = data.select(np.sort(np.random.default_rng(seed).permutation(len(data))[:max_samples]))
    names = _label_names(data, label_column)
    data = _with_label_ids(data, label_column, names, columns)
    evaluation = _with_label_ids(eval_dataset, label_column, names, columns) if finetune_top else None

    load = partial(_load_text_candidate, text_columns=text_column_names, max_length=max_length)
    if text_column_names is None:
        load = partial(_load_image_candidate, image_column=image_column)
    rows = []
    for name in candidates:
        row = CandidateScore(candidate=str(name))
        start = time.perf_counter()
        try:
            torch.manual_seed(seed)  # the new head does not enter the features, but keep loading reproducible
            model, encoded, collator = load(name, len(names), data, **load_kwargs)
            row.num_parameters = sum(p.numel() for p in model.parameters())
            loader = DataLoader(encoded, batch_size=batch_size, shuffle=False, collate_fn=collator)
            x, y = extract_features(model, loader, progress=progress, desc=f"features: {name}")
            del model
            row.extract_seconds = time.perf_counter() - start
            start = time.perf_counter()
            row.feature_dim, row.num_examples = int(x.shape[1]), int(x.shape[0])
            if not np.isfinite(x).all():
                raise ValueError("the features hold NaN or inf")
            row.cv_fold_accuracies = cross_validated_probe(x, y, folds=folds, seed=seed)
            row.cv_accuracy = float(np.mean(row.cv_fold_accuracies))
            row.cv_std = float(np.std(row.cv_fold_accuracies))
            row.logme = logme(x, y).score
            row.score_seconds = time.perf_counter() - start
        except Exception as err:  # a candidate that cannot be scored is reported, not fatal
            row.error = _error_line(err)
            logger.warning(f"Candidate {name!r} could not be scored: {row.error}")
        else:
            logger.warning(
                f"Candidate {name!r}: CV probe {row.cv_accuracy:.4f} +- {row.cv_std:.4f}, LogME {row.logme:.4f}, "
                f"{row.seconds:.1f} s"
            )
        rows.append(row)

    def key(r: CandidateScore):
        value = getattr(r, rank_by)
        return (not r.ok, -(value if value is not None and not math.isnan(value) else -math.inf))

    rows.sort(key=key)
    for row in [r for r in rows if r.ok][:finetune_top]:
        start = time.perf_counter()
        try:
            row.finetune = _finetune(
                row.candidate, load, len(names), data, evaluation, finetune_args, seed, load_kwargs
            )
        except Exception as err:
            row.finetune = {"error": _error_line(err)}
            logger.warning(f"Fine-tuning {row.candidate!r} failed: {row.finetune['error']}")
        row.finetune["seconds"] = time.perf_counter() - start
    result = SelectionResult(rows=rows, ranked_by=rank_by, folds=folds, num_classes=len(names))
    if output_dir is not None:
        result.save(output_dir)
    return result
