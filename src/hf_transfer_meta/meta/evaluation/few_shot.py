"""Few-shot accuracy as the literature reports it: the mean over (at least 600) test episodes ``± 1.96 * std /
sqrt(n)`` (Snell et al. 2017, Finn et al. 2017), the one CI convention of the package.

The same computation ships as an ``evaluate`` metric script beside this file
(``evaluate.load(few_shot_accuracy_metric_path())``), which works offline since it is a local file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "episode_accuracies",
    "few_shot_accuracy",
    "few_shot_accuracy_metric_path",
    "load_few_shot_accuracy",
    "mean_ci95",
]


def mean_ci95(values: Sequence[float], ddof: int = 0) -> tuple[float, float]:
    """``(mean, 1.96 * std / sqrt(n))`` of per-episode values.

    ``ddof=0`` (the population std, ``np.std``'s default) is what the few-shot evaluation code of the literature
    computes (e.g. Chen et al. 2019, "A Closer Look at Few-shot Classification"); ``ddof=1`` gives the sample std.
    Over 600 episodes the two differ by a factor ``sqrt(600/599)``, about 1.0008.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("mean_ci95 needs at least one value (one per episode); got none.")
    if x.size <= ddof:
        return float(x.mean()), math.nan
    return float(x.mean()), float(1.96 * x.std(ddof=ddof) / math.sqrt(x.size))


def episode_accuracies(predictions, references, episode_ids) -> np.ndarray:
    """Accuracy of each episode, in increasing episode id order, from flat per-query arrays."""
    predictions, references, episode_ids = (np.asarray(a).ravel() for a in (predictions, references, episode_ids))
    if not len(predictions) == len(references) == len(episode_ids):
        raise ValueError(
            f"predictions ({len(predictions)}), references ({len(references)}) and episode_ids ({len(episode_ids)}) "
            "must have one entry per query example each."
        )
    if len(predictions) == 0:
        raise ValueError("No predictions: pass one entry per query example.")
    ids, inverse = np.unique(episode_ids, return_inverse=True)
    correct = np.bincount(inverse, weights=(predictions == references).astype(np.float64), minlength=len(ids))
    return correct / np.bincount(inverse, minlength=len(ids))


def few_shot_accuracy(predictions, references, episode_ids, ddof: int = 0) -> dict[str, float]:
    """``{"accuracy", "accuracy_ci95", "num_episodes"}``: mean of per-episode accuracies and its 95% CI."""
    accuracies = episode_accuracies(predictions, references, episode_ids)
    mean, ci = mean_ci95(accuracies, ddof=ddof)
    return {"accuracy": mean, "accuracy_ci95": ci, "num_episodes": len(accuracies)}


def few_shot_accuracy_metric_path() -> str:
    """Local path of the ``few_shot_accuracy`` evaluate metric folder, for ``evaluate.load(path)``."""
    path = Path(__file__).resolve().parent / "few_shot_accuracy"
    if not (path / "few_shot_accuracy.py").is_file():
        raise FileNotFoundError(
            f"{path / 'few_shot_accuracy.py'} is missing: reinstall hf-transfer-meta (the script is package data, "
            "`meta/evaluation/*/*.py`)."
        )
    return str(path)


def load_few_shot_accuracy(**kwargs):
    """``evaluate.load`` of the bundled ``few_shot_accuracy`` metric (no Hub access); kwargs go to ``evaluate.load``."""
    import evaluate

    return evaluate.load(few_shot_accuracy_metric_path(), **kwargs)
