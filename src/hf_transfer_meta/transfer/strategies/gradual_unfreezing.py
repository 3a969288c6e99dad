"""Gradual unfreezing (Howard & Ruder 2018, ULMFiT): the head alone first, then one more depth from the top.

By default the unfreezing is spread over the first ``unfreeze_fraction`` of the run, so every depth trains for the
rest of it whatever the run's length (as fastai's ``fine_tune`` always ends with the whole model trainable); an
explicit ``unfreeze_every`` that cannot reach the bottom depth before the run ends is refused with the numbers.
"""

from __future__ import annotations

import dataclasses
import math

from ..schedules import Phase
from .base import PlanInputs, Strategy, check_field

__all__ = ["gradual_unfreezing_phases", "plan_gradual_unfreezing", "spread_unfreezing_phases", "STRATEGY"]

UNFREEZE_ON = ("schedule", "plateau")


def gradual_unfreezing_phases(
    num_depths: int, every: int, *, restart: bool = False, start_depths: int = 1, lr_multiplier: float = 1.0
) -> list[Phase]:
    """ULMFiT's gradual unfreezing: the head alone first, then one more depth from the top every ``every`` steps.

    ``start_depths`` depths (from the top) train in the first phase.
    """
    if every < 1:
        raise ValueError(f"Gradual unfreezing needs `unfreeze_every` >= 1 step, got {every}.")
    top = num_depths - 1
    phases = []
    for k in range(start_depths, num_depths + 1):
        depths = frozenset(range(top - k + 1, top + 1))
        phases.append(
            Phase(
                start=(k - start_depths) * every,
                depths=depths,
                lr_multiplier=lr_multiplier,
                restart=restart,
                name=f"unfreeze_{k}_depths" if k < num_depths else "all_depths",
            )
        )
    return phases


def spread_unfreezing_phases(num_depths: int, span_steps: float, *, restart: bool = False) -> list[Phase]:
    """Gradual unfreezing spread evenly over the first ``span_steps`` steps: depth ``k`` from the top joins at step
    ``round(k * span / (num_depths - 1))``, so every depth trains from step ``round(span)`` on. Depths whose turns
    fall on the same step join together (a run shorter than the number of depths)."""
    top = num_depths - 1
    by_start: dict[int, Phase] = {}
    for k in range(1, num_depths + 1):
        start = round((k - 1) * span_steps / max(1, num_depths - 1))
        by_start[start] = Phase(  # a later k at the same start replaces the earlier: more depths
            start=start,
            depths=frozenset(range(top - k + 1, top + 1)),
            restart=restart,
            name=f"unfreeze_{k}_depths" if k < num_depths else "all_depths",
        )
    return [by_start[s] for s in sorted(by_start)]


def plan_gradual_unfreezing(
    num_depths: int,
    total_steps: int,
    steps_per_epoch: int,
    *,
    every: float | None = None,
    unit: str = "epoch",
    fraction: float = 0.5,
    allow_partial: bool = False,
    restart: bool = False,
) -> tuple[list[Phase], str]:
    """The phases of gradual unfreezing over a run of ``total_steps``, and one sentence that says what happens.

    ``every=None`` spreads the unfreezing over the first ``fraction`` of the run (every depth then trains for the rest,
    as fastai's ``fine_tune`` always ends with the whole model trainable). An explicit ``every`` that cannot unfreeze
    every depth before the run ends is refused with the numbers, unless ``allow_partial``.
    """
    if num_depths < 2:
        return [Phase(0, frozenset(range(num_depths)), name="all_depths")], "a single depth: it trains throughout"
    if every is None:
        span = fraction * total_steps
        phases = spread_unfreezing_phases(num_depths, span, restart=restart)
        all_from = phases[-1].start
        return phases, (
            f"gradual unfreezing: {num_depths} depths, one more every {span / (num_depths - 1):.3g} steps over the "
            f"first {fraction:.0%} of the run; every depth trains from step {all_from} of {total_steps}"
        )
    every_steps = max(1, round(every * steps_per_epoch) if unit == "epoch" else int(every))
    needed = (num_depths - 1) * every_steps
    phases = gradual_unfreezing_phases(num_depths, every_steps, restart=restart)
    if needed >= total_steps:
        trained = min(num_depths, (total_steps - 1) // every_steps + 1)
        if not allow_partial:
            longest = (total_steps - 1) // (num_depths - 1)
            hint = (
                f"unfreeze_every <= {longest} (steps)"
                if unit == "step"
                else f"unfreeze_every <= {longest / max(1, steps_per_epoch):.3g} (epochs; {steps_per_epoch} steps each)"
            )
            raise ValueError(
                f"Gradual unfreezing of {num_depths} depths, one every {every_steps} steps (unfreeze_every={every:g} "
                f"{unit}), reaches the last depth at step {needed}, but this run has {total_steps} steps: only the top "
                f"{trained} of {num_depths} depths would ever train. Set {hint}, train longer, leave unfreeze_every "
                "unset (the unfreezing is then spread over the first unfreeze_fraction of the run), or set "
                "allow_partial_unfreezing=True to keep the bottom depths frozen on purpose."
            )
        return phases, (
            f"gradual unfreezing: one depth every {every_steps} steps; the run ends at step {total_steps} with only "
            f"the top {trained} of {num_depths} depths unfrozen (allow_partial_unfreezing)"
        )
    return phases, (
        f"gradual unfreezing: {num_depths} depths, one more every {every_steps} steps; every depth trains from step "
        f"{needed} of {total_steps}"
    )


def _phases(inputs: PlanInputs) -> tuple[list[Phase], str]:
    a, lm = inputs.args, inputs.layer_map
    n = lm.num_depths
    # Unfreeze the depths that hold parameters: a tied head (T5, GPT-2) is empty and joins the top block.
    held = [d for d in range(n) if lm.num_params(d) > 0] or list(range(n))
    slots, description = plan_gradual_unfreezing(
        len(held),
        inputs.total_steps,
        inputs.steps_per_epoch,
        every=a.unfreeze_every,
        unit=a.unfreeze_unit,
        fraction=a.unfreeze_fraction,
        allow_partial=a.allow_partial_unfreezing,
        restart=a.unfreeze_restart_schedule,
    )
    phases = [dataclasses.replace(p, depths=frozenset(range(held[min(p.depths)], n))) for p in slots]
    if a.unfreeze_on == "plateau":
        # Each next depth joins at a plateau of the validation metric; the planned interval is the longest wait.
        phases = [phases[0]] + [dataclasses.replace(p, on_plateau=True) for p in phases[1:]]
        description += "; each next depth joins earlier when validation stops improving (phase_patience)"
    return phases, description


def _check(a) -> None:
    check_field(a.unfreeze_unit in ("epoch", "step"), "unfreeze_unit", a.unfreeze_unit, "use 'epoch' or 'step'")
    every = a.unfreeze_every
    check_field(
        every is None or (every > 0 and math.isfinite(every)),
        "unfreeze_every",
        every,
        "it must be > 0, or unset to spread the unfreezing over the run",
    )
    check_field(0 < a.unfreeze_fraction <= 1, "unfreeze_fraction", a.unfreeze_fraction, "it must be in (0, 1]")
    check_field(a.unfreeze_on in UNFREEZE_ON, "unfreeze_on", a.unfreeze_on, f"use one of {UNFREEZE_ON}")
    check_field(
        a.unfreeze_on != "plateau" or a.gradual_unfreezing,
        "unfreeze_on",
        a.unfreeze_on,
        "it says when gradual unfreezing moves on: set gradual_unfreezing=True too",
    )


def _describe(a) -> str:
    if a.unfreeze_on == "plateau":
        return "gradual unfreezing (one more depth at each validation plateau)"
    if a.unfreeze_every is None:
        return f"gradual unfreezing (over the first {a.unfreeze_fraction:.0%} of the run)"
    unit = a.unfreeze_unit + ("" if a.unfreeze_every == 1 else "s")
    return f"gradual unfreezing (every {a.unfreeze_every:g} {unit})"


STRATEGY = Strategy(
    name="gradual_unfreezing",
    title="Gradual unfreezing",
    paper="Howard & Ruder 2018, Universal Language Model Fine-tuning for Text Classification",
    fields=(
        "gradual_unfreezing",
        "unfreeze_every",
        "unfreeze_unit",
        "unfreeze_fraction",
        "allow_partial_unfreezing",
        "unfreeze_restart_schedule",
        "unfreeze_on",
    ),  # fmt: skip
    is_active=lambda a: bool(a.gradual_unfreezing),
    describe=_describe,
    check=_check,
    phases=_phases,
    freezes=True,
)
