"""Which depths train at step t, and the LR multiplier of every depth at step t.

Everything here is a pure function of the global optimizer step: a resumed run, every DDP rank and the tests get the
same answer without stored state. A strategy is a list of phases; a phase says from which step on which depths
train, with which LR multiplier, and whether the base LR schedule (warmup, decay) restarts at its start.

A phase may instead begin when the validation metric stops improving (``on_plateau``): its ``start`` is then the
latest step it may begin (the previous phase's planned length is a cap). The schedule stays a pure function, of the
step and of ``switches``, the steps at which such phases did begin; `PlateauPhaseCallback` records them and they
are saved with every checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["Phase", "TransferSchedule", "slanted_triangular", "base_lr_lambda", "BASE_SCHEDULES", "STLR", "all_depths"]

STLR = "slanted_triangular"


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
    on_plateau: bool = False  # begins at the previous phase's plateau; `start` - previous start is the cap


@dataclass
class TransferSchedule:
    """A list of phases over ``total_steps`` optimizer steps, for a model of ``num_depths`` depths."""

    phases: list[Phase]
    total_steps: int
    num_depths: int
    base: str = "linear"
    warmup: float = 0  # steps (>= 1) or a ratio of the phase's length (< 1), as TrainingArguments.warmup_steps
    base_kwargs: dict = field(default_factory=dict)
    switches: dict[int, int] = field(default_factory=dict)  # phase index -> the step a plateau began it at

    def __post_init__(self):
        if not self.phases:
            raise ValueError("A TransferSchedule needs at least one phase.")
        self.phases = sorted(self.phases, key=lambda p: p.start)
        if self.phases[0].start != 0:
            raise ValueError(f"The first phase must start at step 0, not {self.phases[0].start}.")
        if self.phases[0].on_plateau:
            raise ValueError("The first phase cannot wait for a plateau: it starts at step 0.")

    @property
    def has_plateau_phases(self) -> bool:
        return any(p.on_plateau for p in self.phases)

    def starts(self) -> list[int]:
        """The step each phase begins at: its planned start, or, for a phase that waits for a plateau, the recorded
        switch, else the previous phase's actual start plus its planned length (the cap)."""
        out = [0]
        for i in range(1, len(self.phases)):
            planned_length = self.phases[i].start - self.phases[i - 1].start
            cap = out[-1] + planned_length
            out.append(min(self.switches[i], cap) if self.phases[i].on_plateau and i in self.switches else cap)
        return out

    def record_switch(self, index: int, step: int) -> None:
        """Phase ``index`` (which waits for a plateau) begins at ``step``."""
        if not self.phases[index].on_plateau:
            raise ValueError(f"Phase {index} ({self.phases[index].name!r}) does not wait for a plateau.")
        self.switches[index] = int(step)

    def phase_index(self, step: int) -> int:
        idx = 0
        for i, start in enumerate(self.starts()):
            if start <= step:
                idx = i
        return idx

    def phase_at(self, step: int) -> Phase:
        return self.phases[self.phase_index(step)]

    def phase_bounds(self, index: int) -> tuple[int, int]:
        starts = self.starts()
        start = starts[index]
        end = starts[index + 1] if index + 1 < len(self.phases) else self.total_steps
        return start, max(end, start + 1)

    def _restart_length(self, index: int) -> int:
        """The length a restarted base schedule decays over: the planned one (a phase that may end early at a
        plateau does not know when), the rest of the run for the last phase."""
        if index + 1 < len(self.phases):
            return max(1, self.phases[index + 1].start - self.phases[index].start)
        return max(1, self.total_steps - self.starts()[index])

    @property
    def is_trivial(self) -> bool:
        """One phase in which every depth trains: the base schedule alone (stock Trainer's, per-depth LRs kept)."""
        return len(self.phases) == 1 and len(self.phases[0].depths) == self.num_depths

    def trainable_depths(self, step: int) -> frozenset[int]:
        return self.phase_at(step).depths

    def _warmup_steps(self, length: int) -> int:
        return math.ceil(self.warmup * length) if 0 < self.warmup < 1 else int(self.warmup)

    def base_multiplier(self, step: int) -> float:
        """The base schedule's value at ``step``: over the whole run, or restarted within a restarting phase."""
        i = self.phase_index(step)
        phase = self.phases[i]
        if phase.restart:
            t, length = step - self.starts()[i], self._restart_length(i)
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
            row = {
                "name": p.name,
                "steps": [start, end],
                "trainable_depths": sorted(p.depths),
                "lr_multiplier": p.lr_multiplier,
                "restart": p.restart,
            }
            if p.on_plateau:
                row["began"] = "plateau" if i in self.switches and self.switches[i] <= start else "cap"
            out.append(row)
        return out


def all_depths(num_depths: int, name: str = "all_depths") -> list[Phase]:
    """One phase from step 0 in which every depth trains (no strategy decides otherwise)."""
    return [Phase(0, frozenset(range(num_depths)), name=name)]


def fixed_phase(depths: Sequence[int], name: str) -> list[Phase]:
    return [Phase(0, frozenset(depths), name=name)]


_MOVED = {
    "gradual_unfreezing_phases": "gradual_unfreezing",
    "spread_unfreezing_phases": "gradual_unfreezing",
    "plan_gradual_unfreezing": "gradual_unfreezing",
    "lp_ft_phases": "lp_ft",
}


def __getattr__(name: str):
    if name in _MOVED:
        import importlib
        import warnings

        module = f"hf_transfer_meta.transfer.strategies.{_MOVED[name]}"
        warnings.warn(f"{__name__}.{name} moved to {module}.{name}.", FutureWarning, stacklevel=2)
        return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
