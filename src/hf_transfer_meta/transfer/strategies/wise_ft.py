"""WiSE-FT (Wortsman et al. 2022): after fine-tuning, the weight-space interpolation
``(1 - alpha) * theta_0 + alpha * theta_1`` between the starting and the fine-tuned model, alpha chosen on held-out
data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from ...model_utils import strip_wrapper_prefixes, unwrap_parallel

__all__ = ["select_wise_alpha", "state_dict_copy", "wise_ft_interpolate", "DEFAULT_WISE_ALPHAS"]

logger = logging.getLogger(__name__)

DEFAULT_WISE_ALPHAS = tuple(i / 10 for i in range(11))


# ----------------------------------------------------------------------------------------------------------- WiSE-FT


def state_dict_copy(model: nn.Module, device: torch.device | str | None = "cpu") -> dict[str, torch.Tensor]:
    """A detached copy of the model's state dict (below DDP/compile wrappers), e.g. ``theta_0`` before training."""
    state = unwrap_parallel(model).state_dict()
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
    target = unwrap_parallel(model)
    expected = target.state_dict()
    theta_0 = {strip_wrapper_prefixes(k): v for k, v in theta_0.items()}
    theta_1 = {strip_wrapper_prefixes(k): v for k, v in theta_1.items()}
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


# ------------------------------------------------------------------------------------------------------- strategy


def _check(a) -> None:
    from .base import check_field

    if a.wise_ft_alphas is not None:
        alphas = list(a.wise_ft_alphas)
        check_field(
            len(alphas) > 0 and all(0 <= x <= 1 for x in alphas),
            "wise_ft_alphas",
            alphas,
            "each mixing weight must be in [0, 1] (0 = the weights before fine-tuning, 1 = after)",
        )


def _make_strategy():
    from .base import Strategy

    return Strategy(
        name="wise_ft",
        title="WiSE-FT (weight-space ensembling)",
        paper="Wortsman et al. 2022, Robust fine-tuning of zero-shot models",
        fields=("wise_ft_alphas",),
        is_active=lambda a: bool(a.wise_ft_alphas),
        describe=lambda a: "WiSE-FT",
        check=_check,
        needs_eval_dataset=lambda a: True,
        reference_weights=True,
    )


STRATEGY = _make_strategy()
