"""The fine-tuning strategies, one module each, and the one registry that lists them.

The argument checks, `TransferArguments.strategy_name`, the trainer, the stock-Trainer callbacks and the model card
read `STRATEGIES`. A new strategy is one module that defines a `Strategy` and one line in `_MODULES`.
"""

from __future__ import annotations

import importlib

from .base import PlanInputs, StartInputs, Strategy, check_field

__all__ = ["STRATEGIES", "PlanInputs", "StartInputs", "Strategy", "active_strategies", "check_field",
           "phase_strategy", "register_strategy"]  # fmt: skip

STRATEGIES: dict[str, Strategy] = {}


def register_strategy(strategy: Strategy) -> Strategy:
    """Add a strategy (its fields must exist on `TransferArguments`); the order of registration is the order of
    `strategy_name`."""
    if strategy.name in STRATEGIES and STRATEGIES[strategy.name] is not strategy:
        raise ValueError(f"A strategy named {strategy.name!r} is already registered.")
    STRATEGIES[strategy.name] = strategy
    return strategy


# In the order their parts appear in a strategy's name.
_MODULES = [
    ("lp_ft", "STRATEGY"),
    ("gradual_unfreezing", "STRATEGY"),
    ("plateau_phases", "STRATEGY"),
    ("surgical", "STRATEGY"),
    ("fixed_depths", "STRATEGY"),
    ("surgical", "AUTO_RGN"),
    ("discriminative_lr", "STRATEGY"),
    ("slanted_triangular", "STRATEGY"),
    ("reinit", "STRATEGY"),
    ("l2sp", "STRATEGY"),
    ("wise_ft", "STRATEGY"),
]
for _module, _attr in _MODULES:
    register_strategy(getattr(importlib.import_module(f"{__name__}.{_module}"), _attr))


def active_strategies(args) -> list[Strategy]:
    return [s for s in STRATEGIES.values() if s.is_active(args)]


def phase_strategy(args) -> Strategy | None:
    """The one active strategy that decides which depths train when (None: every depth trains throughout)."""
    deciding = [s for s in active_strategies(args) if s.phases is not None]
    if len(deciding) > 1:
        names = " and ".join(s.fields[0] for s in deciding)
        raise ValueError(f"{names} each decide which depths train when; choose one of them.")
    return deciding[0] if deciding else None
