"""Discriminative learning rates: lower depths get smaller LRs (ULMFiT's ``lr / 2.6`` per layer, Howard & Ruder
2018; layer-wise LR decay of ELECTRA and BEiT, Clark et al. 2020), or fastai's ``slice(low, high)``. The LRs
themselves are `param_groups.depth_learning_rates`."""

from __future__ import annotations

from .base import Strategy, check_field

__all__ = ["STRATEGY"]


def _check(a) -> None:
    decay = a.layer_lr_decay
    check_field(
        decay is None or 0 < decay <= 1,
        "layer_lr_decay",
        decay,
        "it must be in (0, 1] (ULMFiT: 1/2.6 = 0.3846; ELECTRA: 0.8)",
    )
    if a.lr_slice is not None:
        values = list(a.lr_slice)
        check_field(
            len(values) == 2 and 0 < values[0] <= values[1],
            "lr_slice",
            values,
            "give two learning rates (low, high) with 0 < low <= high, e.g. [1e-5, 1e-3]",
        )
        if decay is not None:
            raise ValueError(
                f"layer_lr_decay={decay!r} and lr_slice={values!r} are two ways to space the per-depth LRs: set one "
                "of them."
            )
    check_field(a.head_lr_multiplier > 0, "head_lr_multiplier", a.head_lr_multiplier, "it must be > 0")


def _describe(a) -> str:
    parts = []
    if a.layer_lr_decay is not None:
        parts.append(f"layer-wise LR decay {a.layer_lr_decay:g}")
    if a.lr_slice:
        parts.append(f"discriminative LRs {a.lr_slice[0]:g}..{a.lr_slice[1]:g}")
    if a.head_lr_multiplier != 1.0:
        parts.append(f"head LR x{a.head_lr_multiplier:g}")
    return " + ".join(parts)


def _active(a) -> bool:
    return a.layer_lr_decay is not None or a.lr_slice is not None or a.head_lr_multiplier != 1.0


STRATEGY = Strategy(
    name="discriminative_lr",
    title="Discriminative (layer-wise) learning rates",
    paper="Howard & Ruder 2018 (ULMFiT); Clark et al. 2020 (ELECTRA, layer-wise LR decay)",
    fields=("layer_lr_decay", "lr_slice", "head_lr_multiplier"),
    is_active=_active,
    describe=_describe,
    check=_check,
    depth_groups=_active,
)
