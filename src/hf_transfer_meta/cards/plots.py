"""The card's figures, drawn from the run's records alone (log history, phases, drift), saved as PNG beside the card.

matplotlib is the optional extra ``plots`` (``pip install hf-transfer-meta[plots]``); without it every function
here returns no figure and `draw_figures` warns once. Figures use matplotlib's object API (no pyplot state, no
backend switch) and are written atomically.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from dataclasses import dataclass

from .record import RunRecord, atomic_write

__all__ = ["Figure", "draw_figures", "matplotlib_available"]

MISSING_MATPLOTLIB = (
    "matplotlib is not installed: the model card is written without its plots "
    "(pip install hf-transfer-meta[plots] to get them)."
)


@dataclass(frozen=True)
class Figure:
    """A figure saved beside the card: the file name (relative to the card) and what it shows."""

    filename: str
    caption: str


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
        import matplotlib.figure  # noqa: F401
    except ImportError:
        return False
    return True


def _new_figure(rows: int = 1, height: float = 3.2):
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(7.5, height * rows), dpi=100, layout="constrained")
    return fig


def _save(fig, path: str) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    atomic_write(path, buffer.getvalue())


def _series(log_history: list[dict], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for entry in log_history:
        if key in entry and "step" in entry and isinstance(entry[key], (int, float)):
            xs.append(entry["step"])
            ys.append(entry[key])
    return xs, ys


def _depth_labels(transfer: dict) -> list[str]:
    labels = transfer.get("depth_labels")
    if labels:
        return list(labels)
    return list((transfer.get("depth_learning_rates") or {}).keys())


def plot_learning_rates(record: RunRecord, path: str) -> bool:
    """(a) The LR of every depth group (``lr/<group>`` log keys) over the steps and, below, which depths train."""
    lr_keys = sorted({k for e in record.log_history for k in e if k.startswith("lr/")})
    if not lr_keys:
        lr_keys = ["learning_rate"] if any("learning_rate" in e for e in record.log_history) else []
    transfer = record.transfer or {}
    phases = transfer.get("phases") or []
    labels = _depth_labels(transfer)
    if not lr_keys and not phases:
        return False
    rows = 2 if phases and labels else 1
    fig = _new_figure(rows, height=3.0)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    ax = axes[0]
    by_label: dict[str, str] = {}  # a depth's decay and no-decay groups share its LR: one line per depth
    for key in lr_keys:
        label = re.sub(r"_(no_)?decay$", "", re.sub(r"^\d+_", "", key.removeprefix("lr/"))).replace("_", " ")
        by_label.setdefault(label, key)
    series = {label: _series(record.log_history, key) for label, key in by_label.items()}
    peaks = [max(ys) for _, ys in series.values() if ys and max(ys) > 0]
    # Layer-wise decay spreads the depths' LRs over decades: a log scale shows every depth (a frozen depth's 0 is
    # not drawn). One LR (stock Trainer) keeps a linear scale: its decay to 0 is the schedule.
    log = len(peaks) > 1 and max(peaks) > 30 * min(peaks)
    for label, (xs, ys) in series.items():
        ys = [y if y > 0 or not log else float("nan") for y in ys]
        ax.plot(xs, ys, marker=".", markersize=3, linewidth=1, label=label)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel("learning rate" + (" (log; 0 not drawn)" if log else ""))
    ax.set_title("Learning rate of every depth group" if len(series) > 1 else "Learning rate (one for every depth)")
    if len(by_label) > 1:
        ax.legend(fontsize=7, ncol=2, loc="best")
    if rows == 2:
        ax = axes[1]
        for i, phase in enumerate(phases):
            start, end = phase["steps"]
            for d in phase["trainable_depths"]:
                ax.broken_barh([(start, end - start)], (d - 0.4, 0.8), color=f"C{i % 10}")
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_ylim(-0.6, len(labels) - 0.4)
        ax.set_ylabel("trainable depths")
        ax.set_title("Depths that train, by phase")
    axes[-1].set_xlabel("optimizer step")
    _save(fig, path)
    return True


def plot_losses(record: RunRecord, path: str) -> bool:
    """(b) Training and evaluation loss over the steps."""
    from .results import parse_metric_key

    train = _series(record.log_history, "loss")
    logged = sorted({k for e in record.log_history for k in e})
    eval_keys = [k for k in logged if (m := parse_metric_key(k)) is not None and m.metric == "loss" and not m.ci95]
    evals = {k: _series(record.log_history, k) for k in eval_keys[:6]}
    if not train[0] and not any(xs for xs, _ in evals.values()):
        return False
    fig = _new_figure()
    ax = fig.subplots()
    if train[0]:
        ax.plot(*train, linewidth=1, label="training loss")
    for key, (xs, ys) in evals.items():
        ax.plot(xs, ys, marker="o", linewidth=1, label=key)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title("Training and evaluation loss")
    ax.legend()
    _save(fig, path)
    return True


def plot_meta_accuracy(record: RunRecord, path: str) -> bool:
    """(c) Meta-training: few-shot accuracy (or MSE) of each evaluation with its 95% CI (every logged
    ``*_accuracy`` / ``*_mse`` that has a ``*_ci95`` beside it: ``eval_accuracy``, ``test_5way_1shot_accuracy``)."""
    if not record.meta:
        return False
    logged = {k for e in record.log_history for k in e}
    keys = sorted(k for k in logged if k.endswith(("_accuracy", "_mse")) and f"{k}_ci95" in logged)
    keys = [k for k in keys if "pre_adaptation" not in k][:6]
    if not keys:
        return False
    fig = _new_figure()
    ax = fig.subplots()
    meta = record.meta
    shape = f"{meta.get('eval_n_way')}-way {meta.get('eval_k_shot')}-shot"
    if meta.get("eval_n_way") is None:
        shape = f"{meta.get('eval_k_shot')}-shot regression"
    metric = "MSE" if keys[0].endswith("_mse") else "accuracy"
    steps = {x for key in keys for x in _series(record.log_history, key)[0]}
    if len(steps) == 1:  # evaluated once, after training: one point per test setting, side by side
        before = {k: v for k, v in sorted(record.results.items()) if "_no_meta_training_" in k
                  and k.endswith(("_accuracy", "_mse")) and isinstance(v, (int, float))}  # fmt: skip
        names = [*before, *keys]
        values = [before[k] if k in before else _series(record.log_history, k)[1][-1] for k in names]
        cis = [(record.results.get(f"{k}_ci95") if k in before else _series(record.log_history, f"{k}_ci95")[1][-1])
               or 0.0 for k in names]  # fmt: skip
        colors = ["0.5" if k in before else "C0" for k in names]
        for i, (value, ci, color) in enumerate(zip(values, cis, colors, strict=True)):
            ax.errorbar([i], [value], yerr=[ci], marker="o", capsize=4, color=color, linestyle="none")
            ax.annotate(f"{value:.3g}", (i, value), textcoords="offset points", xytext=(8, 0), fontsize=7)
        ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=7)
        ax.set_xlim(-0.5, len(names) - 0.5)
        ways = f"{meta.get('eval_n_way')}-way, " if meta.get("eval_n_way") else ""
        ax.set_title(f"Few-shot {metric} after {steps.pop()} meta-batches ({ways}95% CI)")
        ax.set_ylabel(metric + ("" if not before else " (grey: before meta-training)"))
        _save(fig, path)
        return True
    # The same test before meta-training (``<prefix>_no_meta_training_<metric>`` in the results), at step 0.
    for key, value in sorted(record.results.items()):
        if "_no_meta_training_" in key and key.endswith(("_accuracy", "_mse")) and isinstance(value, (int, float)):
            ci = record.results.get(f"{key}_ci95") or 0.0
            ax.errorbar([0], [value], yerr=[ci], marker="s", capsize=3, color="0.5", linestyle="none",
                        label=f"{key} (before meta-training)")  # fmt: skip
    for i, key in enumerate(keys):
        xs, ys = _series(record.log_history, key)
        ci = dict(zip(*_series(record.log_history, f"{key}_ci95")))
        # Evaluations at the same step (several test sets after training) are shifted apart to stay readable.
        shift = (i - (len(keys) - 1) / 2) * 0.01 * max(1, max(xs) if xs else 1)
        ax.errorbar([x + shift for x in xs], ys, yerr=[ci.get(x, 0.0) for x in xs], marker="o", capsize=3,
                    linewidth=1, label=key)  # fmt: skip
    ax.set_title(f"Few-shot {metric} of each evaluation ({shape} test episodes, 95% CI)")
    ax.set_xlabel("optimizer step (meta-batches)")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    _save(fig, path)
    return True


def plot_depth_drift(record: RunRecord, path: str) -> bool:
    """(d) Relative L2 change of every depth from the weights the run started from."""
    depths = (record.drift or {}).get("depths") or []
    if not depths:
        return False
    fig = _new_figure()
    ax = fig.subplots()
    values = [d["relative_change"] or 0.0 for d in depths]
    moved = sorted(v for v in values if v > 0)
    # One depth far ahead (a new head, LP-FT's probe) would flatten the others to nothing: log scale then.
    log = len(moved) >= 2 and moved[-1] > 20 * moved[0]
    bars = ax.bar(range(len(depths)), [v if v > 0 or not log else float("nan") for v in values], color="C2")
    for bar, v in zip(bars, values):
        y = bar.get_height() if v > 0 else (moved[0] if log and moved else 0.0)
        ax.annotate(f"{v:.3g}", (bar.get_x() + bar.get_width() / 2, y if y == y else 0.0), ha="center",
                    va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")  # fmt: skip
    if log:
        ax.set_yscale("log")
    if moved:  # room for the value above the highest bar
        ax.set_ylim(top=moved[-1] * (3.0 if log else 1.15))
    ax.set_xticks(range(len(depths)), [d["label"] for d in depths], rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("||theta_end - theta_0|| / ||theta_0||" + (" (log)" if log else ""))
    ax.set_title("How far each depth moved from the starting weights (relative L2 change)")
    _save(fig, path)
    return True


PLOTS = (
    ("plot_learning_rates.png", "Learning rate of every depth group and the depths that train", plot_learning_rates),
    ("plot_losses.png", "Training and evaluation loss", plot_losses),
    ("plot_meta_accuracy.png", "Few-shot accuracy of each evaluation with its 95% CI", plot_meta_accuracy),
    ("plot_depth_drift.png", "Relative change of every depth from the starting weights", plot_depth_drift),
)


def draw_figures(record: RunRecord, folder: str) -> list[Figure]:
    """Draw every figure the record has data for into ``folder``; none (and one warning) without matplotlib."""
    if not matplotlib_available():
        warnings.warn(MISSING_MATPLOTLIB, UserWarning, stacklevel=3)
        return []
    out = []
    for filename, caption, draw in PLOTS:
        path = os.path.join(folder, filename)
        if draw(record, path):
            out.append(Figure(filename, caption))
        elif os.path.isfile(path):
            os.remove(path)  # an earlier card's figure this record has no data for
    return out
