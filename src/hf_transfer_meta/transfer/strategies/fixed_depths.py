"""Fixed trainable depths: the same depths train for the whole run (``trainable_depths head`` is a linear probe by
SGD; ``last head`` fine-tunes the top block and the head)."""

from __future__ import annotations

from ..schedules import Phase
from .base import PlanInputs, Strategy, check_field

__all__ = ["STRATEGY"]


def _phases(inputs: PlanInputs) -> tuple[list[Phase], str]:
    lm = inputs.layer_map
    depths = lm.resolve(inputs.args.trainable_depths)
    return [Phase(0, frozenset(depths), name="fixed")], f"only {[lm.depth_label(d) for d in depths]} train"


STRATEGY = Strategy(
    name="fixed_depths",
    title="Fixed trainable depths",
    paper=None,
    fields=("trainable_depths",),
    is_active=lambda a: a.trainable_depths is not None,
    describe=lambda a: f"training depths {', '.join(map(str, a.trainable_depths))}",
    check=lambda a: check_field(
        a.trainable_depths is None or len(a.trainable_depths) > 0,
        "trainable_depths",
        a.trainable_depths,
        "name at least one depth (e.g. head, last, first, 2)",
    ),
    phases=_phases,
    freezes=True,
)
