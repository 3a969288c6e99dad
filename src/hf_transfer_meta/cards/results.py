"""A run's metrics (``all_results.json``, or the last logged evaluation) as `huggingface_hub.EvalResult` entries of
the card's ``model-index``.

A metric key reads ``<split>_[<subset>_]<metric>[_ci95]``: ``eval_accuracy`` (clean validation),
``eval_gaussian_noise_accuracy`` / ``predict_contrast_3_accuracy`` (a corrupted copy, its own entry beside the clean
one, with the ``*_corruption_severity`` the run recorded), ``test_5way_1shot_accuracy`` with
``test_5way_1shot_accuracy_ci95`` and ``test_5way_1shot_episodes`` (few-shot accuracy, its 95% CI and the number of
test episodes). Every entry keeps the key it came from as its ``name``, so the card says exactly what was measured.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from huggingface_hub import EvalResult

__all__ = ["MetricKey", "eval_results", "parse_metric_key"]

SPLITS = {"eval": "validation", "validation": "validation", "val": "validation", "predict": "test", "test": "test"}
# Longest first: "pre_adaptation_accuracy" before "accuracy".
METRICS = sorted(
    ["accuracy", "pre_adaptation_accuracy", "f1", "precision", "recall", "mse", "pre_adaptation_mse", "rmse", "mae",
     "matthews_correlation", "pearson", "pearsonr", "spearmanr", "roc_auc", "auc", "exact_match", "bleu", "rouge1",
     "rouge2", "rougeL", "perplexity", "loss", "top5_accuracy", "balanced_accuracy"],
    key=len, reverse=True,
)  # fmt: skip
_SHOT = re.compile(r"(?:^|_)(\d+)way_(\d+)shot(?:$|_)")
_K_SHOT = re.compile(r"(?:^|_)(\d+)shot(?:$|_)")  # eval_5shot_accuracy: the run's N-way, 5 shots


@dataclass(frozen=True)
class MetricKey:
    key: str
    prefix: str  # eval, predict, test, validation
    subset: str | None  # a corruption, an eval dataset's name, "5way_1shot"
    metric: str
    ci95: bool = False


def parse_metric_key(key: str) -> MetricKey | None:
    """``eval_gaussian_noise_accuracy_ci95`` -> prefix eval, subset gaussian_noise, metric accuracy, ci95; None for
    keys that are not an evaluation metric (runtimes, sample counts, the epoch)."""
    prefix, _, rest = key.partition("_")
    if prefix not in SPLITS or not rest:
        return None
    ci95 = rest.endswith("_ci95")
    if ci95:
        rest = rest[: -len("_ci95")]
    for metric in METRICS:
        if rest == metric:
            return MetricKey(key, prefix, None, metric, ci95)
        if rest.endswith("_" + metric):
            return MetricKey(key, prefix, rest[: -len(metric) - 1], metric, ci95)
    # A metric followed by what it was measured after: ``eval_mse_10_steps`` (subset "10_steps").
    for metric in METRICS:
        m = re.fullmatch(rf"(?:(.+)_)?{metric}_(\d+_steps?)", rest)
        if m:
            subset = "_".join(p for p in m.groups() if p)
            return MetricKey(key, prefix, subset, metric, ci95)
    return None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _split(results: dict[str, Any], prefix: str) -> str:
    """The split a prefix measured: ``<prefix>_split`` when the run recorded it (the few-shot recipes' final meta-test
    is ``eval_*`` on the meta-test classes), else the prefix's usual meaning."""
    recorded = results.get(f"{prefix}_split")
    return recorded if isinstance(recorded, str) and recorded else SPLITS[prefix]


def eval_results(
    results: dict[str, Any],
    *,
    task_type: str,
    task_name: str | None,
    dataset_type: str,
    dataset_name: str,
    few_shot: dict | None = None,
) -> list[EvalResult]:
    """One `EvalResult` per evaluation metric in ``results`` (``train_*`` keys and non-finite values are left out).

    Args:
        few_shot: the episode shape of the run's test episodes (``eval_n_way``, ``eval_k_shot``, ``n_query``), for
            keys that do not name their own (``5way_1shot``).
    """
    out = []
    for key in sorted(results):
        value = results[key]
        parsed = parse_metric_key(key)
        if parsed is None or not _is_number(value):
            continue
        base = f"{parsed.prefix}_{parsed.subset}" if parsed.subset else parsed.prefix
        dataset_args: dict[str, Any] = {}
        metric_args: dict[str, Any] = {}
        severity = results.get(f"{base}_corruption_severity", results.get(f"{parsed.prefix}_corruption_severity"))
        shot = _SHOT.search(parsed.subset or "")
        k_only = None if shot else _K_SHOT.search(parsed.subset or "")
        every_class = (parsed.subset or "").startswith("all_classes")  # C-way over every test class
        if parsed.subset and severity is not None and not shot:
            dataset_args = {"corruption": parsed.subset, "severity": severity}
        counts = (f"{base}_episodes", f"{parsed.prefix}_episodes", f"{base}_tasks", f"{parsed.prefix}_tasks")
        if every_class:
            counts = (f"{parsed.prefix}_all_classes_draws",)
        episodes = next((results[k] for k in counts if _is_number(results.get(k))), None)
        if few_shot is not None or shot or k_only or every_class or episodes is not None:
            shape = {**(few_shot or {}), **{k: v for k, v in results.items() if k in ("eval_n_way", "eval_k_shot")}}
            if every_class:
                shape = {"eval_n_way": results.get(f"{parsed.prefix}_all_classes_num_classes"),
                         "eval_k_shot": results.get(f"{parsed.prefix}_all_classes_k_shot")}  # fmt: skip
            n_way = int(shot.group(1)) if shot else shape.get("eval_n_way")
            k_shot = int(shot.group(2)) if shot else int(k_only.group(1)) if k_only else shape.get("eval_k_shot")
            metric_args = {"n_way": n_way, "k_shot": k_shot, "episodes": episodes}
            if not parsed.ci95:
                ci = results.get(f"{parsed.key}_ci95")
                if _is_number(ci):
                    metric_args["ci95"] = ci
            metric_args = {k: v for k, v in metric_args.items() if v is not None}
        name = task_name
        if metric_args.get("n_way") and metric_args.get("k_shot"):
            name = f"{metric_args['n_way']}-way {metric_args['k_shot']}-shot " + (task_name or "few-shot")
            if every_class:
                name += " (every test class at once)"
        out.append(
            EvalResult(
                task_type=task_type,
                task_name=name,
                dataset_type=dataset_type,
                dataset_name=dataset_name,
                dataset_config=parsed.subset,
                dataset_split=_split(results, parsed.prefix),
                dataset_args=dataset_args or None,
                metric_type=f"{parsed.metric}_ci95" if parsed.ci95 else parsed.metric,
                metric_name=key,
                metric_value=value,
                metric_args=metric_args or None,
            )
        )
    return out
