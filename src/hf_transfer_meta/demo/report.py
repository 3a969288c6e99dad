"""What the demo shows while it runs and when it ends: progress (bars on a terminal, plain lines in a log), tables.

Progress bars redraw one line with carriage returns, which a log file keeps as clutter; so the bars show only when
stderr (where tqdm writes) is a terminal, and every run also prints one plain ``[demo] ...`` line on stdout.
"""

from __future__ import annotations

import math
import sys

from tqdm.auto import tqdm
from transformers import PrinterCallback, ProgressCallback

from .data import TASKS

__all__ = [
    "EpisodeProgressBars",
    "ProgressBarOnly",
    "aligned_table",
    "format_meta_table",
    "format_metric",
    "format_transfer_table",
    "log",
    "meta_result_line",
    "progress_bars_only",
    "stderr_is_terminal",
]


def log(message: str) -> None:
    """One plain progress line, flushed at once so that a log file follows the run."""
    print(f"[demo] {message}", flush=True)


def stderr_is_terminal() -> bool:
    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


class ProgressBarOnly(ProgressCallback):
    """Trainer's progress bar without a printed line per log (the logs stay in each run's trainer_state.json)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass

    def on_prediction_step(self, args, state, control, **kwargs):
        pass  # the test sets are one or two batches: no evaluation bars


class EpisodeProgressBars(ProgressBarOnly):
    """The training bar, and a bar over the test episodes: `MetaTrainer.evaluate` runs its own loop and does not
    hand its dataloader to the callbacks, so the bar's length is set by `expect` before each evaluation."""

    def __init__(self):
        super().__init__()
        self.eval_batches = 0

    def expect(self, episodes: int, batch_size: int) -> None:
        self.eval_batches = math.ceil(episodes / batch_size)

    def on_prediction_step(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.eval_batches:
            if self.prediction_bar is None:
                self.prediction_bar = tqdm(
                    total=self.eval_batches, desc="test episodes", leave=False, dynamic_ncols=True
                )
            self.prediction_bar.update(1)


def progress_bars_only(trainer, bars: type[ProgressBarOnly] = ProgressBarOnly):
    """Replace the Trainer's progress and printer callbacks by `bars` (none when `disable_tqdm`); returns them."""
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    if trainer.args.disable_tqdm:
        return None
    callback = bars()
    trainer.add_callback(callback)
    return callback


def aligned_table(header: list[str], lines: list[list[str]], groups: list[str]) -> list[str]:
    """Left-aligned text columns under a dashed rule, with a blank line between consecutive groups (tasks)."""
    widths = [max(len(x[i]) for x in lines + [header]) for i in range(len(header))]

    def fmt(cells):
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    out = [fmt(header), "  ".join("-" * w for w in widths)]
    for i, cells in enumerate(lines):
        if i and groups[i] != groups[i - 1]:
            out.append("")
        out.append(fmt(cells))
    return out


# --------------------------------------------------------------------------------------------------- transfer
def format_transfer_table(rows: list[dict], lr_searched: bool = False) -> str:
    """Plain text: task, strategy, ID and OOD test accuracy (mean +- std over seeds), trainable params, LR, seconds."""

    def pct(row, key):
        std = f" +-{100 * row[key + '_std']:.1f}" if row["seeds"] > 1 else ""
        return f"{100 * row[key]:.1f}{std}"

    def lrs(row):
        values = sorted(set(row["learning_rates"]))
        return f"{values[0]:.0e}" if len(values) == 1 else f"{values[0]:.0e}..{values[-1]:.0e}"

    header = ["task (shift)", "strategy", "ID acc %", "OOD acc %", "trainable params", "lr", "seconds"]
    lines = [
        [
            f"{r['task']} ({TASKS[r['task']].shift})",
            r["label"],
            pct(r, "test_id_accuracy"),
            pct(r, "test_ood_accuracy"),
            f"{r['trainable_params']:,} / {r['total_params']:,}",
            lrs(r),
            f"{r['seconds']:.1f}",
        ]
        for r in rows
    ]
    out = aligned_table(header, lines, [r["task"] for r in rows])
    seeds = max((r["seeds"] for r in rows), default=1)
    out += [
        "",
        f"Accuracy on held-out target test images, mean +- std over {seeds} seed(s) (each its own few-shot draw).",
        "OOD: the same test images with Gaussian noise, covered by source pretraining, absent from the target set.",
    ]
    if lr_searched:
        out.append(
            "lr: the base (head) LR, chosen per seed on the target validation split; the test split never chooses."
        )
    else:
        out.append(
            "lr: each strategy's fixed base (head) LR, not searched (`--full` chooses it per seed on validation)."
        )
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------- meta-learning
def format_metric(row: dict, key: str, ci_key: str | None = None) -> str:
    value = row[key]
    if value is None:
        return "-"
    ci = row[ci_key] if ci_key else None
    if row["metric"] == "mse":
        return f"MSE {value:.2f}" + (f" +-{ci:.2f}" if ci is not None else "")
    return f"{100 * value:.1f}" + (f" +-{100 * ci:.1f}" if ci is not None else "") + " %"


def meta_result_line(row: dict) -> str:
    return (
        f"  {format_metric(row, 'value', 'ci95')} (no meta-training "
        f"{format_metric(row, 'no_meta_training', 'no_meta_training_ci95')})  ({row['train_seconds']:.1f}s training, "
        f"{row['eval_seconds']:.1f}s test)"
    )


def format_meta_table(rows: list[dict], notes: list[str]) -> str:
    """Plain text: method, test setting, meta-updates, result after meta-training (+- 95% CI), before adaptation,
    with no meta-training, seconds; then `notes` (what each task's rows measured) and the column notes."""
    header = [
        "task",
        "method",
        "test episodes",
        "meta-updates",
        "meta-trained",
        "pre-adaptation",
        "no meta-training",
        "train s",
        "test s",
    ]
    lines = [
        [
            r["task"],
            r["label"],
            r["setting"],
            str(r["meta_steps"]),
            format_metric(r, "value", "ci95"),
            format_metric(r, "pre_adaptation"),
            format_metric(r, "no_meta_training", "no_meta_training_ci95"),
            f"{r['train_seconds']:.1f}",
            f"{r['eval_seconds']:.1f}",
        ]
        for r in rows
    ]
    out = aligned_table(header, lines, [r["task"] for r in rows])
    return "\n".join(
        out
        + [""]
        + notes
        + [
            "pre-adaptation: the meta-learned model on the query set before its inner steps (digits: labels are "
            "shuffled per episode, so chance).",
            "no meta-training: the same network at its random initialisation, tested the same way.",
            "train s / test s: seconds of meta-training, and of both tests (one shared no-meta-training test counted "
            "once).",
        ]
    )
