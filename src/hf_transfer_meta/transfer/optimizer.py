"""The optimizer and LR lambdas of a run with a strategy: every managed parameter in fixed per-depth groups, built
once before the scheduler (design notes, traps 1, 2 and 11), with the optimizer class Trainer would use.
"""

from __future__ import annotations

from collections import defaultdict

from torch import nn

from .layer_map import LayerMap
from .param_groups import build_param_groups
from .schedules import TransferSchedule

__all__ = ["build_strategy_optimizer", "group_lr_lambda", "schedule_needed"]

_OWN_PARAMS_KEYS = ("params", "model", "optimizer_dict")  # Trainer's optimizer paths that bring their own groups


def build_strategy_optimizer(
    model: nn.Module,
    args,
    optimizer_cls,
    optimizer_kwargs: dict,
    *,
    layer_map: LayerMap,
    depth_lrs: dict[int, float],
    managed: list[str],
    weight_decay: float,
    decay_parameter_names,
    optim_name: str,
):
    """``optimizer_cls`` over one group per (depth, decay / no decay), or None when the optimizer builds its own
    groups (factories such as Muon, GaLore/APOLLO target modules, LOMO, layer-wise optimizers): Trainer's own path
    then builds it over every managed parameter, which freezing strategies need and per-depth LRs cannot use."""
    from transformers.trainer_optimizer import has_mixed_dtensor, is_optimizer_factory

    if is_optimizer_factory(optimizer_cls) or any(k in optimizer_kwargs for k in _OWN_PARAMS_KEYS):
        if args.needs_depth_learning_rates:
            raise ValueError(
                f"optim={optim_name!r} builds its own parameter groups "
                f"({getattr(optimizer_cls, '__name__', optimizer_cls)}), so the per-depth learning rates of "
                f"{args.strategy_name} cannot be applied. Use a standard optimizer (adamw_torch, sgd, ...) or drop "
                "layer_lr_decay / lr_slice / head_lr_multiplier / auto_rgn / lp_learning_rate."
            )
        return None
    groups = build_param_groups(
        model,
        layer_map,
        depth_lrs,
        weight_decay=weight_decay,
        decay_parameter_names=decay_parameter_names,
        include=managed,
    )
    if args.auto_rgn:  # Auto-RGN scales each tensor's LR: one group per tensor
        groups = [
            {**g, "name": f"{g['name']}/{n}", "params": [p], "param_names": [n]}
            for g in groups
            for n, p in zip(g["param_names"], g["params"])
        ]
    if has_mixed_dtensor(p for g in groups for p in g["params"]):
        groups = _split_groups_by_mesh(groups)
    kwargs = {k: v for k, v in optimizer_kwargs.items() if k not in _OWN_PARAMS_KEYS}
    optimizer = optimizer_cls(groups, **kwargs)
    if "bitsandbytes" in str(optimizer_cls) and kwargs.get("optim_bits", None) == 8:
        _bnb_embeddings_in_fp32(model)
    return optimizer


def schedule_needed(args) -> bool:
    """Whether the strategy sets the LR schedule itself (a user's scheduler cannot follow it)."""
    return bool(args.slanted_triangular_lr or args.unfreeze_restart_schedule or args.lp_mode)


def group_lr_lambda(schedule: TransferSchedule, depth: int | None):
    """The LR multiplier of one optimizer group as a plain function of the step.

    LambdaLR stores no state for functions, so checkpoints hold no custom classes (they load with weights_only=True)
    and the schedule is always the one rebuilt from the arguments. A group without a depth (an optimizer Trainer
    built) follows the phase's multiplier; its frozen parameters get no gradient.
    """
    if depth is None:

        def lr_lambda(step: int) -> float:
            return schedule.phase_at(step).lr_multiplier * schedule.base_multiplier(step)

    else:

        def lr_lambda(step: int) -> float:
            return schedule.lr_multiplier(depth, step)

    return lr_lambda


def _split_groups_by_mesh(groups: list[dict]) -> list[dict]:
    """Parameters on different device meshes cannot share one fused/foreach call (as Trainer splits its groups)."""
    from torch.distributed.tensor import DTensor

    out = []
    for g in groups:
        by_mesh = defaultdict(list)
        for n, p in zip(g["param_names"], g["params"]):
            by_mesh[p.device_mesh if isinstance(p, DTensor) else None].append((n, p))
        for items in by_mesh.values():
            out.append({**g, "params": [p for _, p in items], "param_names": [n for n, _ in items]})
    return out


def _bnb_embeddings_in_fp32(model: nn.Module) -> None:
    """Trainer's override for 8-bit bitsandbytes optimizers: embeddings keep 32-bit optimizer state."""
    import bitsandbytes

    manager = bitsandbytes.optim.GlobalOptimManager.get_instance()
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            manager.register_module_override(module, "weight", {"optim_bits": 32})
