"""Surgical fine-tuning (Lee et al. 2022): only the depths that fit the shift train (input-level shift: the first
block; feature-level: the middle; output-level: the last layer). Auto-RGN, from the same paper, scales each
tensor's LR by its relative gradient norm instead of choosing the blocks by hand.
"""

from __future__ import annotations

import torch
from transformers import TrainerCallback

from ..schedules import Phase
from .base import PlanInputs, Strategy, check_field

__all__ = ["AutoRGNCallback", "STRATEGY", "AUTO_RGN"]


def _phases(inputs: PlanInputs) -> tuple[list[Phase], str]:
    lm = inputs.layer_map
    depths = lm.resolve(inputs.args.surgical_blocks)
    return [Phase(0, frozenset(depths), name="surgical")], (
        f"surgical fine-tuning: only {[lm.depth_label(d) for d in depths]} train"
    )


STRATEGY = Strategy(
    name="surgical",
    title="Surgical fine-tuning",
    paper="Lee et al. 2022, Surgical Fine-Tuning Improves Adaptation to Distribution Shifts",
    fields=("surgical_blocks",),
    is_active=lambda a: a.surgical_blocks is not None,
    describe=lambda a: f"surgical fine-tuning ({', '.join(map(str, a.surgical_blocks))})",
    check=lambda a: check_field(
        a.surgical_blocks is None or len(a.surgical_blocks) > 0,
        "surgical_blocks",
        a.surgical_blocks,
        "name at least one depth (e.g. first, middle, last, 2)",
    ),
    phases=_phases,
    freezes=True,
)

AUTO_RGN = Strategy(
    name="auto_rgn",
    title="Auto-RGN (relative gradient norm LR scaling)",
    paper="Lee et al. 2022, Surgical Fine-Tuning Improves Adaptation to Distribution Shifts",
    fields=("auto_rgn",),
    is_active=lambda a: bool(a.auto_rgn),
    describe=lambda a: "Auto-RGN",
    depth_groups=lambda a: True,
)


class AutoRGNCallback(TrainerCallback):
    """Auto-RGN (Lee et al. 2022): each parameter tensor's LR is multiplied by its relative gradient norm
    ``||g|| / ||w||`` divided by the largest one of the step, so the layers whose gradients are large relative to
    their weights (the ones that fit the shift) move most.

    Needs one optimizer group per tensor (`TransferTrainer` with `auto_rgn=True` builds them). The multipliers are
    applied around `optimizer.step()` and removed afterwards, so the scheduler's LRs stay untouched.
    """

    def __init__(self):
        self._saved: list[float] | None = None
        self.last_multipliers: dict[str, float] = {}

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is None:
            return
        rgn = []
        for g in optimizer.param_groups:
            p = g["params"][0]
            if len(g["params"]) != 1:
                raise RuntimeError(
                    "Auto-RGN needs one optimizer group per parameter tensor: use TransferTrainer(auto_rgn=True)."
                )
            if p.grad is None:
                rgn.append(None)
                continue
            with torch.no_grad():
                rgn.append((p.grad.norm() / p.norm().clamp_min(1e-12)).item())
        top = max((r for r in rgn if r is not None), default=0.0)
        self._saved = [g["lr"] for g in optimizer.param_groups]
        self.last_multipliers = {}
        for g, r in zip(optimizer.param_groups, rgn):
            m = (r / top) if (r is not None and top > 0) else 0.0
            g["lr"] = g["lr"] * m
            self.last_multipliers[g.get("name", "")] = m

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is not None and self._saved is not None:
            for g, lr in zip(optimizer.param_groups, self._saved):
                g["lr"] = lr
            self._saved = None
