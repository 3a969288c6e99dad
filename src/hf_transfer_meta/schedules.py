"""Which depths train at step t, and the LR multiplier of every depth at step t.

Everything here is a pure function of the global optimizer step: a resumed run, every DDP rank and the tests get the
same answer without stored state. A strategy is a list of phases; a phase says from which step on which depths
train, with which LR multiplier, and whether the base LR schedule (warmup, decay) restarts at its start.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "Phase",
    "TransferSchedule",
    "slanted_triangular",
    "base_lr_lambda",
    "BASE_SCHEDULES",
    "gradual_unfreezing_phases",
    "plan_gradual_unfreezing",
    "lp_ft_phases",
]


def slanted_triangular(step: int, total_steps: int, cut_frac: float = 0.1, ratio: float = 32.0) -> float:
    """ULMFiT's slanted triangular LR multiplier (Howard & Ruder 2018, eq. 3).

    ``cut = floor(T * cut_frac)``; ``p = t / cut`` while ``t < cut``, else ``1 - (t - cut) / (cut * (1/cut_frac - 1))``;
    multiplier ``(1 + p * (ratio - 1)) / ratio``: it rises from ``1/ratio`` to 1 over the first ``cut_frac`` of
    training, then falls back to ``1/ratio``.
    """
    cut = math.floor(total_steps * cut_frac)
    if cut <= 0:
        p = 1.0 - step / max(1, total_steps)
    elif step < cut:
        p = step / cut
    else:
        p = 1.0 - (step - cut) / (cut * (1.0 / cut_frac - 1.0))
    p = min(1.0, max(0.0, p))
    return (1.0 + p * (ratio - 1.0)) / ratio


def _warmup(step: int, warmup: int) -> float | None:
    return step / max(1, warmup) if step < warmup else None


def _linear(step, total, warmup, **_):
    w = _warmup(step, warmup)
    return w if w is not None else max(0.0, (total - step) / max(1, total - warmup))


def _cosine(step, total, warmup, num_cycles: float = 0.5, **_):
    w = _warmup(step, warmup)
    if w is not None:
        return w
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress)))


def _constant(step, total, warmup, **_):
    return 1.0


def _constant_with_warmup(step, total, warmup, **_):
    w = _warmup(step, warmup)
    return w if w is not None else 1.0


def _stlr(step, total, warmup, cut_frac: float = 0.1, ratio: float = 32.0, **_):
    return slanted_triangular(step, total, cut_frac=cut_frac, ratio=ratio)


# The same formulas as transformers' `get_*_schedule_with_warmup`, written as functions of (step, length, warmup) so
# that a phase can restart them over its own length.
BASE_SCHEDULES: dict[str, Callable[..., float]] = {
    "linear": _linear,
    "cosine": _cosine,
    "constant": _constant,
    "constant_with_warmup": _constant_with_warmup,
    "slanted_triangular": _stlr,
}


def base_lr_lambda(kind: str, step: int, total: int, warmup: int = 0, **kwargs) -> float:
    if kind not in BASE_SCHEDULES:
        raise ValueError(
            f"lr_scheduler_type {kind!r} cannot be combined with per-depth phase schedules; use one of "
            f"{sorted(BASE_SCHEDULES)}."
        )
    return BASE_SCHEDULES[kind](step, total, warmup, **kwargs)


@dataclass(frozen=True)
class Phase:
    """From global step ``start`` on (until the next phase), ``depths`` train at ``lr_multiplier`` times their LR."""

    start: int
    depths: frozenset[int]
    lr_multiplier: float = 1.0
    restart: bool = False
    name: str = ""


@dataclass
class TransferSchedule:
    """A list of phases over ``total_steps`` optimizer steps, for a model of ``num_depths`` depths."""

    phases: list[Phase]
    total_steps: int
    num_depths: int
    base: str = "linear"
    warmup: float = 0  # steps (>= 1) or a ratio of the phase's length (< 1), as TrainingArguments.warmup_steps
    base_kwargs: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.phases:
            raise ValueError("A TransferSchedule needs at least one phase.")
        self.phases = sorted(self.phases, key=lambda p: p.start)
        if self.phases[0].start != 0:
            raise ValueError(f"The first phase must start at step 0, not {self.phases[0].start}.")

    def phase_index(self, step: int) -> int:
        idx = 0
        for i, p in enumerate(self.phases):
            if p.start <= step:
                idx = i
        return idx

    def phase_at(self, step: int) -> Phase:
        return self.phases[self.phase_index(step)]

    def phase_bounds(self, index: int) -> tuple[int, int]:
        start = self.phases[index].start
        end = self.phases[index + 1].start if index + 1 < len(self.phases) else self.total_steps
        return start, max(end, start + 1)

    def trainable_depths(self, step: int) -> frozenset[int]:
        return self.phase_at(step).depths

    def _warmup_steps(self, length: int) -> int:
        return math.ceil(self.warmup * length) if 0 < self.warmup < 1 else int(self.warmup)

    def base_multiplier(self, step: int) -> float:
        """The base schedule's value at ``step``: over the whole run, or restarted within a restarting phase."""
        i = self.phase_index(step)
        phase = self.phases[i]
        if phase.restart:
            start, end = self.phase_bounds(i)
            t, length = step - start, end - start
        else:
            t, length = step, self.total_steps
        return base_lr_lambda(self.base, t, length, self._warmup_steps(length), **self.base_kwargs)

    def lr_multiplier(self, depth: int, step: int) -> float:
        """What the LR of ``depth`` is multiplied by at ``step``: 0 while it is frozen."""
        phase = self.phase_at(step)
        if depth not in phase.depths:
            return 0.0
        return phase.lr_multiplier * self.base_multiplier(step)

    def describe(self) -> list[dict]:
        """The phases as plain data, for logs and model cards."""
        out = []
        for i, p in enumerate(self.phases):
            start, end = self.phase_bounds(i)
            out.append(
                {
                    "name": p.name,
                    "steps": [start, end],
                    "trainable_depths": sorted(p.depths),
                    "lr_multiplier": p.lr_multiplier,
                    "restart": p.restart,
                }
            )
        return out


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


def lp_ft_phases(
    num_depths: int, lp_steps: int, *, lp_lr_multiplier: float = 1.0, ft_depths: Iterable[int] | None = None
) -> list[Phase]:
    """LP-FT (Kumar et al. 2022): the head alone for ``lp_steps`` (the linear probe), then full fine-tuning.

    Each stage restarts the base LR schedule, as the paper ran them as two trainings.
    """
    head = num_depths - 1
    ft = frozenset(ft_depths) if ft_depths is not None else frozenset(range(num_depths))
    phases = []
    if lp_steps > 0:
        phases.append(Phase(0, frozenset({head}), lr_multiplier=lp_lr_multiplier, restart=True, name="linear_probe"))
    phases.append(Phase(lp_steps, ft, restart=True, name="fine_tune"))
    return phases


def fixed_phase(depths: Sequence[int], name: str) -> list[Phase]:
    return [Phase(0, frozenset(depths), name=name)]
