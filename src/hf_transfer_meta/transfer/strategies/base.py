"""What a fine-tuning strategy is, as data: its fields, when it is on, how it reads in a name, how its fields are
checked, which depths train when, and what it does before the first step.

A strategy never sees the trainer: it gets the layer map, the strategy arguments and a few numbers (`PlanInputs`),
or the model and plain callables (`StartInputs`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from ..arguments import TransferArguments
    from ..layer_map import LayerMap
    from ..schedules import Phase

__all__ = ["PlanInputs", "StartInputs", "Strategy", "check_field"]


@dataclass(frozen=True)
class PlanInputs:
    """What deciding the phases needs: the model's depths, the run's length and the LR of every depth."""

    layer_map: LayerMap
    args: TransferArguments
    total_steps: int
    steps_per_epoch: int
    depth_lrs: dict[int, float]


@dataclass
class StartInputs:
    """What a strategy may do before the first step of a fresh run (not on resume): change the model's weights.

    ``train_batches`` / ``eval_batches`` return the trainer's own data loaders (collator, transforms and column
    removal as Trainer does), unsharded and in order.
    """

    model: nn.Module
    layer_map: LayerMap
    args: TransferArguments
    seed: int
    train_batches: Callable[[], Any]
    eval_batches: Callable[[], Any] | None
    label_names: tuple[str, ...]
    progress: bool = False
    results: dict[str, Any] = field(default_factory=dict)  # what a strategy found (probe C, ...) for logs and cards


@dataclass(frozen=True)
class Strategy:
    """One strategy of the literature.

    Attributes:
        name: the registry key (the module's name).
        title: how a model card names it.
        paper: the paper it comes from.
        fields: the `TransferArguments` fields it owns.
        is_active: whether these arguments turn it on.
        describe: its part of `TransferArguments.strategy_name`.
        check: raises ValueError naming a bad field value and the fix (called when the arguments are built).
        phases: ``PlanInputs -> (phases, what they do)`` for strategies that decide which depths train when; at most
            one such strategy is on.
        before_training: changes the model before the first step of a fresh run (re-initialisation, a probe).
        freezes: it freezes depths for some steps (DDP then needs find_unused_parameters).
        depth_groups: ``args -> bool``, whether it needs one optimizer group per depth (different LRs per depth).
        needs_eval_dataset: ``args -> bool``, whether it chooses something on eval_dataset.
        reference_weights: it needs the weights at the start of the run (saved beside the checkpoints).
    """

    name: str
    title: str
    paper: str | None
    fields: tuple[str, ...]
    is_active: Callable[[TransferArguments], bool]
    describe: Callable[[TransferArguments], str]
    check: Callable[[TransferArguments], None] | None = None
    phases: Callable[[PlanInputs], tuple[list[Phase], str]] | None = None
    before_training: Callable[[StartInputs], None] | None = None
    freezes: bool = False
    depth_groups: Callable[[TransferArguments], bool] | None = None
    needs_eval_dataset: Callable[[TransferArguments], bool] | None = None
    reference_weights: bool = False


def check_field(ok: bool, name: str, value, want: str) -> None:
    """Raise the one error message of every strategy field: the field, its value and what it must be."""
    if not ok:
        raise ValueError(f"{name}={value!r} is invalid: {want}.")
