"""L2-SP (Li, Grandvalet & Davoine 2018): ``alpha/2 * ||w_S - w_S^0||^2 + beta/2 * ||w_new||^2``.

``w_S`` are the parameters that exist in the pretrained model (every depth below the head), ``w_S^0`` their
pretrained values, ``w_new`` the new head. It replaces weight decay, which pulls towards zero, i.e. away from what
pretraining learnt.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from torch import nn

from ...model_utils import strip_wrapper_prefixes, unwrap_parallel
from ..layer_map import LayerMap

__all__ = ["L2SP"]

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------------------- L2-SP


class L2SP:
    """The L2-SP penalty: ``alpha/2 * sum ||w - w0||^2`` over the backbone + ``beta/2 * sum ||w||^2`` over the head.

    The starting weights ``w0`` are copied when the object is built: build it after loading the pretrained model
    (and after any head re-initialisation or linear probe) and before training starts; build it before
    ``Trainer.train(resume_from_checkpoint=...)`` loads a checkpoint, so that ``w0`` stays the pretrained model.

    Args:
        model: the model (also DDP-, ``torch.compile``- or PEFT-wrapped). Parameters are keyed by their names below
            DDP/compile wrappers, so ``penalty`` accepts the model wrapped or not.
        layer_map: which parameters form the head (depth L+1, the ``beta`` term); every other depth is backbone
            (the ``alpha`` term). ``LayerMap.from_model(model)`` when None.
        alpha: strength of the pull towards the pretrained weights.
        beta: weight decay of the new head. Li et al. choose both on validation data.
        only_trainable: skip parameters with ``requires_grad=False`` when computing the penalty. They do not change
            the gradient, but a frozen parameter that has moved (frozen after training) adds a constant to the loss.
        reference: ``w0`` by parameter name (default: a copy of the model's weights now); `TransferTrainer` passes
            the weights it saved when the run started, so that a resumed run pulls toward the same ones.

    Example:
        ```python
        l2sp = L2SP(model, alpha=0.1, beta=0.01)
        loss = task_loss + l2sp.penalty(model)
        ```
    """

    def __init__(
        self,
        model: nn.Module,
        layer_map: LayerMap | None = None,
        alpha: float = 0.1,
        beta: float = 0.01,
        only_trainable: bool = False,
        reference: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        if alpha < 0 or beta < 0:
            raise ValueError(f"L2-SP strengths must be >= 0, got alpha={alpha}, beta={beta}.")
        layer_map = layer_map or LayerMap.from_model(model)
        self.alpha, self.beta, self.only_trainable = float(alpha), float(beta), only_trainable
        head_ids = _head_param_ids(model, layer_map)
        self.reference: dict[str, torch.Tensor] = {}
        self.head_names: list[str] = []
        with torch.no_grad():
            for name, p in unwrap_parallel(model).named_parameters():
                if id(p) in head_ids:
                    self.head_names.append(name)
                elif reference is not None:  # the weights a resumed run must pull toward (saved at its start)
                    if name not in reference:
                        raise KeyError(f"The L2-SP reference weights lack {name!r}: save them from this model.")
                    self.reference[name] = reference[name].detach().to(p.device)
                else:
                    # a detached copy on the parameter's own device: the penalty never moves data
                    self.reference[name] = p.detach().clone()

    @property
    def backbone_names(self) -> list[str]:
        return list(self.reference)

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """The penalty for the current weights, a scalar with gradients towards ``w0`` (backbone) and 0 (head)."""
        params = dict(unwrap_parallel(model).named_parameters())
        missing = [n for n in (*self.reference, *self.head_names) if n not in params]
        if missing:
            raise KeyError(
                f"L2-SP was built on a model with parameters {missing[:3]} that this model lacks: pass the same "
                "model (wrapped or not) to `penalty`."
            )
        device = next(iter(params.values())).device
        sp = torch.zeros((), device=device, dtype=torch.float32)
        if self.alpha:
            for name, w0 in self.reference.items():
                p = params[name]
                if self.only_trainable and not p.requires_grad:
                    continue
                if w0.device != p.device:  # the model was moved after the snapshot (Trainer moves it at train())
                    w0 = self.reference[name] = w0.to(p.device)
                sp = sp + (p.float() - w0.float()).pow(2).sum().to(device)
        head = torch.zeros((), device=device, dtype=torch.float32)
        if self.beta:
            for name in self.head_names:
                p = params[name]
                if self.only_trainable and not p.requires_grad:
                    continue
                head = head + p.float().pow(2).sum().to(device)
        return 0.5 * self.alpha * sp + 0.5 * self.beta * head

    __call__ = penalty

    def distance(self, model: nn.Module) -> float:
        """``||w - w0||`` over the backbone, for logging how far fine-tuning moved."""
        params = dict(unwrap_parallel(model).named_parameters())
        with torch.no_grad():
            total = sum(
                (params[n].float() - w0.to(params[n].device).float()).pow(2).sum().item()
                for n, w0 in self.reference.items()
            )
        return total**0.5


def _head_param_ids(model: nn.Module, layer_map: LayerMap) -> set[int]:
    """Identities of the head's parameters, whatever wrapper prefixes the map's names carry."""
    head_names = set(layer_map.names_at(layer_map.head_depth))
    ids, found = set(), set()
    for m in (model, unwrap_parallel(model)):
        for name, p in m.named_parameters():
            for candidate in (name, strip_wrapper_prefixes(name)):
                if candidate in head_names:
                    ids.add(id(p))
                    found.add(candidate)
    unmatched = head_names - found
    if unmatched:
        raise ValueError(
            f"The layer map's head parameters {sorted(unmatched)[:3]} are not parameters of {type(model).__name__}: "
            "build the map on this model (`LayerMap.from_model(model)`)."
        )
    return ids


# ------------------------------------------------------------------------------------------------------- strategy


def _check(a) -> None:
    import math

    from .base import check_field

    for name in ("l2sp_alpha", "l2sp_beta"):
        value = getattr(a, name)
        check_field(value >= 0 and math.isfinite(value), name, value, "a penalty weight must be >= 0")


def _make_strategy():
    from .base import Strategy

    return Strategy(
        name="l2sp",
        title="L2-SP (pull toward the pretrained weights)",
        paper="Li, Grandvalet & Davoine 2018, Explicit Inductive Bias for Transfer Learning with Convolutional Networks",
        fields=("l2sp_alpha", "l2sp_beta"),
        is_active=lambda a: bool(a.l2sp_alpha or a.l2sp_beta),
        describe=lambda a: f"L2-SP (alpha={a.l2sp_alpha:g}, beta={a.l2sp_beta:g})",
        check=_check,
        reference_weights=True,
    )


STRATEGY = _make_strategy()
