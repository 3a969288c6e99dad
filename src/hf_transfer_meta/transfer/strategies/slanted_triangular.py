"""Slanted triangular learning rates (Howard & Ruder 2018, ULMFiT): a short linear rise, then a long linear decay.
The formula is `schedules.slanted_triangular`."""

from __future__ import annotations

from .base import Strategy, check_field

__all__ = ["STRATEGY"]


def _check(a) -> None:
    check_field(0 < a.stlr_cut_frac < 1, "stlr_cut_frac", a.stlr_cut_frac, "it is the fraction of the run the LR rises, in (0, 1) (ULMFiT: 0.1)")  # fmt: skip
    check_field(a.stlr_ratio >= 1, "stlr_ratio", a.stlr_ratio, "it is max LR / min LR, >= 1 (ULMFiT: 32)")


STRATEGY = Strategy(
    name="slanted_triangular",
    title="Slanted triangular learning rates",
    paper="Howard & Ruder 2018, Universal Language Model Fine-tuning for Text Classification",
    fields=("slanted_triangular_lr", "stlr_cut_frac", "stlr_ratio"),
    is_active=lambda a: bool(a.slanted_triangular_lr),
    describe=lambda a: "slanted triangular LR",
    check=_check,
)
