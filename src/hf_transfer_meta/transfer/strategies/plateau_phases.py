"""Phases that end at a validation plateau (`lp_until="plateau"`, `unfreeze_on="plateau"`): the shared rule.

LP-FT and gradual unfreezing mark their later phases ``on_plateau``; this entry owns the rule's fields, checks them
and refuses a run without evaluations during training. `PlateauPhaseCallback`
(`transfer/plateau.py`) applies the rule.
"""

from __future__ import annotations

from .base import Strategy, check_field

__all__ = ["STRATEGY", "check_evaluations", "uses_plateau"]


def uses_plateau(a) -> bool:
    return a.lp_until == "plateau" or a.unfreeze_on == "plateau"


def check_evaluations(a, eval_strategy) -> None:
    """A plateau is seen in evaluations during training: refuse ``eval_strategy='no'`` (checked when
    `TransferTrainingArguments` are built, and by the trainer for `TransferArguments` beside any `TrainingArguments`).
    Without an eval dataset, Trainer itself refuses any other eval strategy."""
    value = str(getattr(eval_strategy, "value", eval_strategy))
    if uses_plateau(a) and value == "no":
        field = "lp_until" if a.lp_until == "plateau" else "unfreeze_on"
        check_field(
            False,
            field,
            "plateau",
            "a plateau is seen in evaluations during training, but eval_strategy='no': set eval_strategy='steps' "
            "(with eval_steps) or 'epoch'",
        )


def _check(a) -> None:
    check_field(a.phase_patience >= 1, "phase_patience", a.phase_patience, "wait at least 1 evaluation")
    check_field(a.phase_threshold >= 0, "phase_threshold", a.phase_threshold, "it must be >= 0")
    if getattr(a, "eval_strategy", None) is not None:  # TransferTrainingArguments: checked when built
        check_evaluations(a, a.eval_strategy)


def _describe(a) -> str:
    threshold = f" by more than {a.phase_threshold:g}" if a.phase_threshold else ""
    watched = a.phase_metric or getattr(a, "metric_for_best_model", None) or "loss"
    return f"next phase when eval {watched} has not improved{threshold} for {a.phase_patience} evaluation(s)"


STRATEGY = Strategy(
    name="plateau_phases",
    title="Phases that end at a validation plateau",
    paper=None,
    fields=("phase_patience", "phase_threshold", "phase_metric", "phase_reset_optimizer"),
    is_active=uses_plateau,
    describe=_describe,
    check=_check,
)
