"""Per-depth learning rates and the optimizer parameter groups that carry them.

Pure functions: a layer map and a few numbers in, LRs and groups out. Every parameter of the model gets a group,
frozen ones included, so that layers unfrozen later are already in the optimizer (a parameter whose ``.grad`` is
``None`` is skipped by torch's Adam/AdamW/SGD, weight decay included).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from torch import nn

from .layer_map import LayerMap

__all__ = ["depth_learning_rates", "build_param_groups", "group_name"]


def depth_learning_rates(
    layer_map: LayerMap,
    learning_rate: float,
    *,
    layer_lr_decay: float | None = None,
    head_lr_multiplier: float = 1.0,
    lr_slice: Sequence[float] | None = None,
) -> dict[int, float]:
    """The LR of every depth.

    * ``layer_lr_decay`` (LLRD; ELECTRA, BEiT): ``lr_d = learning_rate * decay ** (L + 1 - d)``, the head gets
      ``learning_rate``. ULMFiT's discriminative fine-tuning (Howard & Ruder 2018), ``lr_{l-1} = lr_l / 2.6``, is
      ``decay = 1 / 2.6``.
    * ``lr_slice = (low, high)`` (fastai's ``slice(low, high)``): LRs spaced geometrically from ``low`` at depth 0 to
      ``high`` at the head; ``learning_rate`` is then not used.
    * ``head_lr_multiplier`` multiplies the head's LR (after either of the above).
    """
    top = layer_map.head_depth
    if lr_slice is not None and layer_lr_decay is not None:
        raise ValueError("Set either `layer_lr_decay` or `lr_slice`, not both: they are two ways to space the LRs.")
    if lr_slice is not None:
        if len(lr_slice) != 2 or not 0 < lr_slice[0] <= lr_slice[1]:
            raise ValueError(f"`lr_slice` must be two LRs (low, high) with 0 < low <= high, got {list(lr_slice)}.")
        low, high = lr_slice
        lrs = {d: low * (high / low) ** (d / top) for d in range(top + 1)}
    elif layer_lr_decay is not None:
        if not 0 < layer_lr_decay <= 1:
            raise ValueError(f"`layer_lr_decay` must be in (0, 1], got {layer_lr_decay}.")
        lrs = {d: learning_rate * layer_lr_decay ** (top - d) for d in range(top + 1)}
    else:
        lrs = dict.fromkeys(range(top + 1), learning_rate)
    lrs[top] *= head_lr_multiplier
    return lrs


def group_name(depth: int, layer_map: LayerMap, decay: bool) -> str:
    part = layer_map.depth_label(depth).replace(" ", "_")
    return f"{depth:02d}_{part}" + ("" if decay else "_no_decay")


def build_param_groups(
    model: nn.Module,
    layer_map: LayerMap,
    depth_lrs: Mapping[int, float],
    *,
    weight_decay: float,
    decay_parameter_names: Iterable[str],
    include: Iterable[str] | None = None,
) -> list[dict]:
    """One optimizer group per (depth, decay / no decay), in depth order, each with its own ``lr``.

    Args:
        include: names of the parameters the optimizer owns (default: all). Parameters a user or PEFT froze
            before training (LoRA's base weights) are left out: no schedule ever trains them.

    Each group carries ``name``, ``depth`` and ``param_names`` besides torch's keys, for logging and model cards.
    """
    decay_names = set(decay_parameter_names)
    wanted = set(include) if include is not None else None
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if wanted is not None and name not in wanted:
            continue
        if name not in layer_map.depth_of:
            raise KeyError(
                f"Parameter {name!r} has no depth in the layer map of {layer_map.model_class}: build the map on the "
                "same (unwrapped) model the optimizer sees."
            )
        depth = layer_map.depth_of[name]
        decay = name in decay_names and weight_decay > 0
        key = (depth, decay)
        if key not in groups:
            groups[key] = {
                "name": group_name(depth, layer_map, decay),
                "depth": depth,
                "lr": depth_lrs[depth],
                "weight_decay": weight_decay if decay else 0.0,
                "params": [],
                "param_names": [],
            }
        groups[key]["params"].append(param)
        groups[key]["param_names"].append(name)
    return [groups[k] for k in sorted(groups, key=lambda k: (k[0], not k[1]))]
