"""One plan per run: the layer map, the parameters the schedule controls, each depth's LR and the phases over the
run's optimizer steps, built once before the first step from plain data (never from the trainer).

The trainer builds it and hands it to the schedule callback; the model card reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .layer_map import LayerMap
from .param_groups import depth_learning_rates
from .schedules import BASE_SCHEDULES, STLR, TransferSchedule, all_depths
from .strategies import PlanInputs, phase_strategy

__all__ = ["TransferPlan", "build_plan", "plan_depth_lrs"]


@dataclass
class TransferPlan:
    """What a run does, decided before its first step."""

    layer_map: LayerMap
    managed: list[str]
    schedule: TransferSchedule
    depth_lrs: dict[int, float]
    steps_per_epoch: int
    description: str

    def describe(self) -> dict:
        """As plain data, for logs and model cards."""
        lm = self.layer_map
        return {
            "description": self.description,
            "phases": self.schedule.describe(),
            "depth_learning_rates": {lm.depth_label(d): lr for d, lr in self.depth_lrs.items()},
            "lr_scheduler_type": self.schedule.base,
        }


def plan_depth_lrs(layer_map: LayerMap, args, learning_rate: float) -> dict[int, float]:
    """Each depth's LR under the strategy arguments (LLRD, slice, head multiplier)."""
    return depth_learning_rates(
        layer_map,
        learning_rate,
        layer_lr_decay=args.layer_lr_decay,
        head_lr_multiplier=args.head_lr_multiplier,
        lr_slice=args.lr_slice,
    )


def build_plan(
    layer_map: LayerMap,
    args,
    *,
    managed: list[str],
    total_steps: int,
    steps_per_epoch: int,
    learning_rate: float,
    base: str,
    warmup: float = 0,
    base_kwargs: dict | None = None,
) -> TransferPlan:
    """The plan of the strategy in ``args`` (`TransferArguments`) over ``total_steps`` optimizer steps.

    Args:
        managed: names of the parameters the schedule controls (those a user or PEFT froze beforehand are not).
        base: the base LR schedule (`lr_scheduler_type`, or ``"slanted_triangular"``); warmup and base_kwargs as
            `TrainingArguments` gives them.
    """
    depth_lrs = plan_depth_lrs(layer_map, args, learning_rate)
    deciding = phase_strategy(args)
    if deciding is None:
        phases, description = all_depths(layer_map.num_depths), "every depth trains"
    else:
        inputs = PlanInputs(layer_map, args, total_steps, max(1, steps_per_epoch), depth_lrs)
        phases, description = deciding.phases(inputs)
    if base == STLR:
        base_kwargs = {"cut_frac": args.stlr_cut_frac, "ratio": args.stlr_ratio}
    schedule = TransferSchedule(
        phases, total_steps, layer_map.num_depths, base=base, warmup=warmup, base_kwargs=base_kwargs or {}
    )
    if not schedule.is_trivial and base not in BASE_SCHEDULES:
        raise ValueError(
            f"lr_scheduler_type={base!r} cannot follow the phases of {args.strategy_name}; use one of "
            f"{sorted(BASE_SCHEDULES)}."
        )
    _check_every_phase_trains_something(schedule, layer_map, managed)
    return TransferPlan(layer_map, list(managed), schedule, depth_lrs, steps_per_epoch, description)


def _check_every_phase_trains_something(schedule: TransferSchedule, lm: LayerMap, managed: list[str]) -> None:
    managed_depths = {lm.depth_of[name] for name in managed}
    for i, phase in enumerate(schedule.phases):
        if not phase.depths & managed_depths:
            start, end = schedule.phase_bounds(i)
            tied = f" (the head is tied: {', '.join(f'{a} -> {b}' for a, b in lm.tied.items())})" if lm.tied else ""
            raise ValueError(
                f"Phase {phase.name!r} (steps {start}-{end}) trains {[lm.depth_label(d) for d in sorted(phase.depths)]}"
                f" of {lm.model_class}, which hold no trainable parameter{tied}. Choose depths that hold parameters "
                "(see `hf-transfer-meta layers`), or untie the head."
            )
