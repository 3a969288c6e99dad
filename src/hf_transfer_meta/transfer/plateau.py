"""Phases that end when validation converges: "only the head is trained; once the validation loss converges to some
extent, the entire network is unfrozen" (LP-FT as the lecture states it), and gradual unfreezing that unfreezes the
next depth at each plateau.

`PlateauPhaseCallback` watches the evaluations of the running phase. When the monitored metric has not improved by
``threshold`` for ``patience`` evaluations, the next phase (one that waits for a plateau) begins at the next step:
the callback records that step in the schedule (`TransferSchedule.record_switch`), so which depths train and every
group's LR stay a pure function of (step, recorded switches). The switches, the best value and the patience count are
the callback's `ExportableState`: they are saved in every checkpoint's ``trainer_state.json`` and `TransferTrainer`
restores them on resume whether or not ``restore_callback_states_from_checkpoint`` is set. Under DDP the decision of
rank 0 is broadcast, so every rank switches at the same step.
"""

from __future__ import annotations

import logging

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from .schedules import TransferSchedule

__all__ = ["PlateauPhaseCallback", "monitored_metric"]

logger = logging.getLogger(__name__)


def monitored_metric(metric: str | None, metric_for_best_model: str | None, greater_is_better: bool | None):
    """(metric key, greater is better) of a plateau rule: ``metric``, else Trainer's ``metric_for_best_model``, else
    the eval loss; higher is better unless the name ends in ``loss`` (Trainer's rule), or as Trainer was told."""
    name = metric or metric_for_best_model or "loss"
    key = name if name.startswith("eval_") else f"eval_{name}"
    if metric is None and metric_for_best_model is not None and greater_is_better is not None:
        return key, bool(greater_is_better)
    return key, not key.endswith("loss")


class PlateauPhaseCallback(TrainerCallback, ExportableState):
    """Begins the next phase of a `TransferSchedule` when the monitored eval metric stops improving.

    Args:
        metric: the key in the eval metrics (``eval_loss``, ``eval_accuracy``).
        greater_is_better: whether a higher value is an improvement.
        patience: evaluations without improvement before the phase ends.
        threshold: the least change that counts as an improvement (absolute, as `EarlyStoppingCallback`).
        reset_optimizer: clear the optimizer's state (Adam moments) when a phase begins.
    """

    def __init__(
        self,
        metric: str = "eval_loss",
        greater_is_better: bool = False,
        patience: int = 1,
        threshold: float = 0.0,
        reset_optimizer: bool = False,
    ):
        if patience < 1:
            raise ValueError(f"patience={patience!r} is invalid: wait at least 1 evaluation.")
        self.metric, self.greater_is_better = metric, greater_is_better
        self.patience, self.threshold, self.reset_optimizer = patience, threshold, reset_optimizer
        self.schedule: TransferSchedule | None = None
        self.reset()

    def reset(self) -> None:
        """Forget every decision: a new run (or trial) starts with no recorded switch."""
        self.best: float | None = None
        self.wait = 0
        self.tracked_phase = 0
        self.switches: dict[str, int] = {}  # as JSON keeps them; the schedule holds the same as ints
        self.history: list[dict] = []
        if self.schedule is not None:
            self.schedule.switches.clear()

    def set_schedule(self, schedule: TransferSchedule) -> None:
        """Bind to the run's schedule; switches restored from a checkpoint are applied to it."""
        self.schedule = schedule
        schedule.switches.clear()
        schedule.switches.update({int(k): int(v) for k, v in self.switches.items()})

    # ------------------------------------------------------------------ ExportableState
    def state(self) -> dict:
        return {
            "args": {
                "metric": self.metric,
                "greater_is_better": self.greater_is_better,
                "patience": self.patience,
                "threshold": self.threshold,
                "reset_optimizer": self.reset_optimizer,
            },
            "attributes": {
                "best": self.best,
                "wait": self.wait,
                "tracked_phase": self.tracked_phase,
                "switches": dict(self.switches),
                "history": list(self.history),
            },
        }

    def restore(self, stored: dict) -> None:
        """Take the attributes saved in a checkpoint (``trainer_state.json``'s ``stateful_callbacks`` entry)."""
        for name, value in stored.get("attributes", {}).items():
            setattr(self, name, value)
        if self.schedule is not None:
            self.set_schedule(self.schedule)

    # ------------------------------------------------------------------ decisions
    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.greater_is_better:
            return value > self.best + self.threshold
        return value < self.best - self.threshold

    def on_evaluate(self, args, state, control, metrics=None, optimizer=None, lr_scheduler=None, **kwargs):
        schedule = self.schedule
        if schedule is None or not metrics:
            return
        step = state.global_step
        current = schedule.phase_index(step)
        following = current + 1
        if following >= len(schedule.phases) or not schedule.phases[following].on_plateau:
            return
        if self.metric not in metrics:
            raise KeyError(
                f"The plateau rule watches {self.metric!r}, which the evaluation did not return (it returned "
                f"{sorted(metrics)}). Set phase_metric (or metric_for_best_model) to one of those."
            )
        if current != self.tracked_phase:  # a phase began (by its cap) since the last evaluation: count afresh
            self.tracked_phase, self.best, self.wait = current, None, 0
        value = float(metrics[self.metric])
        if self._improved(value):
            self.best, self.wait = value, 0
        else:
            self.wait += 1
        switch = _agree(self.wait >= self.patience)
        self.history.append({"step": step, "phase": current, self.metric: value, "wait": self.wait, "switch": switch})
        if not switch:
            return
        schedule.record_switch(following, step)
        self.switches[str(following)] = step
        self.tracked_phase, self.best, self.wait = following, None, 0
        _refresh_learning_rates(optimizer, lr_scheduler)
        if state.is_world_process_zero:
            logger.warning(
                f"step {step}: {self.metric} has not improved by more than {self.threshold:g} for {self.patience} "
                f"evaluation(s) (last {value:.6g}): phase {schedule.phases[following].name!r} begins"
            )

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        """Optionally clear the optimizer's state at the step a phase begins (by plateau or cap)."""
        if not self.reset_optimizer or self.schedule is None or optimizer is None or state.global_step == 0:
            return
        if state.global_step in self.schedule.starts()[1:]:
            inner = getattr(optimizer, "optimizer", optimizer)
            inner.state.clear()


def _agree(decision: bool) -> bool:
    """Rank 0's decision on every rank (the metrics are gathered, but a float compare must not split the ranks)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return decision
    box = [decision]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])


def _refresh_learning_rates(optimizer, lr_scheduler) -> None:
    """Trainer stepped the scheduler before this evaluation, with the old phase: set the LRs of the next step from
    the schedule that now holds the switch."""
    scheduler = getattr(lr_scheduler, "scheduler", lr_scheduler)  # Accelerate wraps it
    if optimizer is None or scheduler is None or not hasattr(scheduler, "lr_lambdas"):
        return
    groups = getattr(optimizer, "optimizer", optimizer).param_groups
    step = scheduler.last_epoch
    for group, lr_lambda, base in zip(groups, scheduler.lr_lambdas, scheduler.base_lrs, strict=True):
        group["lr"] = base * lr_lambda(step)
    scheduler._last_lr = [group["lr"] for group in groups]
