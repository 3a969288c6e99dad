"""Staying close to the pretrained model: the L2-SP penalty and WiSE-FT weight interpolation.

* **L2-SP** (Li, Grandvalet & Davoine 2018, "Explicit Inductive Bias for Transfer Learning with Convolutional
  Networks"): ``alpha/2 * ||w_S - w_S^0||^2 + beta/2 * ||w_new||^2``, where ``w_S`` are the parameters that exist in
  the pretrained model (here: every depth below the head), ``w_S^0`` their pretrained values, and ``w_new`` the new
  head. It replaces weight decay, which pulls towards zero, i.e. away from what pretraining learnt.
* **WiSE-FT** (Wortsman et al. 2022, "Robust fine-tuning of zero-shot models"): after fine-tuning, evaluate the
  weight-space interpolation ``(1 - alpha) * theta_0 + alpha * theta_1`` between the starting model ``theta_0`` and
  the fine-tuned one ``theta_1``; alpha is chosen on held-out data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from .layer_map import LayerMap

__all__ = ["L2SP", "select_wise_alpha", "state_dict_copy", "wise_ft_interpolate"]

logger = logging.getLogger(__name__)

DEFAULT_WISE_ALPHAS = tuple(i / 10 for i in range(11))


def _unwrap_parallel(model: nn.Module) -> nn.Module:
    """Below DDP/DataParallel (``module.``) and ``torch.compile`` (``_orig_mod.``), not below PEFT."""
    while True:
        if hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        elif isinstance(getattr(model, "module", None), nn.Module) and len(list(model.children())) == 1:
            model = model.module
        else:
            return model


_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def _strip_wrappers(name: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, stripped = name[len(prefix) :], True
    return name


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
    ) -> None:
        if alpha < 0 or beta < 0:
            raise ValueError(f"L2-SP strengths must be >= 0, got alpha={alpha}, beta={beta}.")
        layer_map = layer_map or LayerMap.from_model(model)
        self.alpha, self.beta, self.only_trainable = float(alpha), float(beta), only_trainable
        head_ids = _head_param_ids(model, layer_map)
        self.reference: dict[str, torch.Tensor] = {}
        self.head_names: list[str] = []
        with torch.no_grad():
            for name, p in _unwrap_parallel(model).named_parameters():
                if id(p) in head_ids:
                    self.head_names.append(name)
                else:
                    # a detached copy on the parameter's own device: the penalty never moves data
                    self.reference[name] = p.detach().clone()

    @property
    def backbone_names(self) -> list[str]:
        return list(self.reference)

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """The penalty for the current weights, a scalar with gradients towards ``w0`` (backbone) and 0 (head)."""
        params = dict(_unwrap_parallel(model).named_parameters())
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
        params = dict(_unwrap_parallel(model).named_parameters())
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
    for m in (model, _unwrap_parallel(model)):
        for name, p in m.named_parameters():
            for candidate in (name, _strip_wrappers(name)):
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


# ----------------------------------------------------------------------------------------------------------- WiSE-FT


def state_dict_copy(model: nn.Module, device: torch.device | str | None = "cpu") -> dict[str, torch.Tensor]:
    """A detached copy of the model's state dict (below DDP/compile wrappers), e.g. ``theta_0`` before training."""
    state = _unwrap_parallel(model).state_dict()
    return {
        k: v.detach().to(device, copy=True) if device is not None else v.detach().clone() for k, v in state.items()
    }


def wise_ft_interpolate(
    model: nn.Module,
    theta_0: Mapping[str, torch.Tensor],
    theta_1: Mapping[str, torch.Tensor],
    alpha: float,
) -> dict[str, torch.Tensor]:
    """Load ``(1 - alpha) * theta_0 + alpha * theta_1`` into ``model``; returns the interpolated state dict.

    Floating-point tensors are interpolated (in float32 at least, then cast back); integer and boolean buffers
    (position ids, BatchNorm's ``num_batches_tracked``) are taken from ``theta_1``. ``alpha=0`` and ``alpha=1`` load
    ``theta_0`` and ``theta_1`` exactly. Both state dicts must have the keys and shapes of ``model.state_dict()``
    (prefixes ``module.``/``_orig_mod.`` are ignored); the head is interpolated like the rest, so a head whose shape
    differs between the two (a zero-shot head for other classes) is refused.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"WiSE-FT mixing coefficient alpha must be in [0, 1], got {alpha}.")
    target = _unwrap_parallel(model)
    expected = target.state_dict()
    theta_0 = {_strip_wrappers(k): v for k, v in theta_0.items()}
    theta_1 = {_strip_wrappers(k): v for k, v in theta_1.items()}
    for which, theta in (("theta_0", theta_0), ("theta_1", theta_1)):
        missing, extra = expected.keys() - theta.keys(), theta.keys() - expected.keys()
        if missing or extra:
            raise KeyError(
                f"{which} does not match the model's state dict: missing {sorted(missing)[:3]}, unexpected "
                f"{sorted(extra)[:3]}. Take both with `state_dict_copy(model)` on the same model class."
            )
    merged = {}
    for key, ref in expected.items():
        t0, t1 = theta_0[key], theta_1[key]
        if t0.shape != t1.shape or t1.shape != ref.shape:
            raise ValueError(
                f"Cannot interpolate {key!r}: theta_0 has shape {tuple(t0.shape)}, theta_1 {tuple(t1.shape)}, the "
                f"model {tuple(ref.shape)}. WiSE-FT needs the same architecture and head on both ends."
            )
        if not t1.is_floating_point() or alpha == 1.0:
            merged[key] = t1
        elif alpha == 0.0:
            merged[key] = t0
        else:
            dtype = torch.promote_types(t1.dtype, torch.float32)
            mixed = torch.lerp(t0.to(t1.device, dtype), t1.to(dtype), alpha)
            merged[key] = mixed.to(t1.dtype)
    target.load_state_dict(merged)
    return merged


def select_wise_alpha(
    model: nn.Module,
    theta_0: Mapping[str, torch.Tensor],
    theta_1: Mapping[str, torch.Tensor],
    evaluate_fn: Callable[[nn.Module], float],
    alphas: Iterable[float] = DEFAULT_WISE_ALPHAS,
) -> tuple[float, dict[float, float]]:
    """Evaluate WiSE-FT at each alpha and leave the model at the best one (the smallest alpha on ties).

    Args:
        evaluate_fn: ``model -> score`` on held-out data, higher is better (e.g. ``lambda m:
            trainer.evaluate()["eval_accuracy"]``; it runs on the same ``model`` object, which the Trainer holds).

    Returns:
        ``(best_alpha, {alpha: score})``.
    """
    alphas = [float(a) for a in alphas]
    if not alphas:
        raise ValueError("select_wise_alpha needs at least one alpha.")
    scores: dict[float, float] = {}
    for alpha in alphas:
        wise_ft_interpolate(model, theta_0, theta_1, alpha)
        scores[alpha] = float(evaluate_fn(model))
        logger.info("WiSE-FT alpha=%.3g: %.6g", alpha, scores[alpha])
    best = max(alphas, key=lambda a: (scores[a], -a))
    wise_ft_interpolate(model, theta_0, theta_1, best)
    return best, scores
