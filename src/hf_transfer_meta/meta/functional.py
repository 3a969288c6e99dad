"""Inner loops as pure functions of parameter dicts (``torch.func``), for any ``nn.Module``.

The model is never mutated: every forward is ``torch.func.functional_call(model, (params, buffers), kwargs)``
on a dict of the adapted parameters merged with the others. Because the inner gradient is taken with
``torch.func.grad`` (not ``torch.autograd.grad``), the same code runs per task or under ``torch.vmap`` over tasks,
and ordinary autograd differentiates through it (second-order MAML) unless the step is first order.

BatchNorm: the forward runs in the model's own mode. Under ``model.train()`` a BatchNorm layer normalises with the
statistics of the batch it sees (the MAML convention: support and query each with their own statistics); its running
statistics, if it tracks them, are updated on *copies* of the buffers (see :func:`buffers_copy`), so meta-learning
never moves the model's running averages. Models meant for MAML should use ``track_running_stats=False``
(``Conv4``/``Conv4Config`` do), which uses batch statistics in eval mode too (transductive, as Finn et al.).

Dropout: runs in the model's mode; under ``vmap`` each task draws its own mask (``randomness="different"``).
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from .._lazy import renamed
from ..model_utils import unwrap_model

if TYPE_CHECKING:
    from ..transfer.layer_map import LayerMap

__all__ = [
    "AdaptSpec",
    "LossSpec",
    "adapted_names",
    "buffers_copy",
    "call_model",
    "functional_logits",
    "inner_loop",
    "output_tensor",
    "param_dict",
    "regex_selector",
    "resolve_loss",
    "sgd_step",
    "unwrap_model",
]

AdaptSpec = str | int | Sequence[str | int] | Callable[[str], bool]
LossSpec = str | Callable[[Tensor, Tensor], Tensor]
LearningRate = float | Tensor | Mapping[str, Tensor | float]


def param_dict(model: nn.Module) -> dict[str, Tensor]:
    """``named_parameters()`` as a dict, tied weights once (``functional_call`` rejects both names of a tie)."""
    return dict(model.named_parameters())


def buffers_copy(model: nn.Module) -> dict[str, Tensor]:
    """The model's buffers, cloned: BatchNorm running statistics updated in a functional forward land on the copies."""
    return {n: b.clone() for n, b in model.named_buffers()}


def output_tensor(output) -> Tensor:
    """The prediction in a model's output: ``.logits`` when there is one (transformers), else the tensor itself."""
    if isinstance(output, Tensor):
        return output
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, Mapping):
        logits = output.get("logits")
    if logits is None and isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        logits = output[0]
    if logits is None:
        raise TypeError(
            f"Cannot find the prediction in a {type(output).__name__}: expected a tensor or an output with `.logits`."
        )
    return logits


@functools.lru_cache(maxsize=256)
def _accepts(forward_fn, name: str) -> bool:
    try:
        sig = inspect.signature(forward_fn)
    except (TypeError, ValueError):
        return True
    return name in sig.parameters or any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())


def _split_inputs(model: nn.Module, inputs: Mapping[str, Tensor]) -> tuple[tuple, dict]:
    """Inputs by keyword; a single input the forward does not name (``nn.Sequential`` takes ``input``) goes by position."""
    if len(inputs) == 1:
        ((name, value),) = inputs.items()
        if not _accepts(type(model).forward, name):
            return (value,), {}
    return (), dict(inputs)


def call_model(model: nn.Module, inputs: Mapping[str, Tensor], params: Mapping[str, Tensor] | None = None):
    """``model(**inputs)``, or with ``params`` (parameters and buffers) in place of the model's own; raw output."""
    args, kwargs = _split_inputs(model, inputs)
    if params is None:
        return model(*args, **kwargs)
    return functional_call(model, dict(params), args=args, kwargs=kwargs, strict=False)


def functional_logits(model: nn.Module, params: Mapping[str, Tensor], inputs: Mapping[str, Tensor]) -> Tensor:
    """``model(**inputs)`` with ``params`` (parameters and buffers) in place of the model's own; returns the logits."""
    return output_tensor(call_model(model, inputs, params))


def resolve_loss(spec: LossSpec) -> Callable[[Tensor, Tensor], Tensor]:
    """The loss of a spec: "auto" (cross-entropy for integer labels, MSE for float labels), "ce", "mse" or a callable."""
    if callable(spec):
        return spec
    key = spec.lower()
    if key == "auto":
        return _auto_loss
    if key in ("ce", "cross_entropy", "cross-entropy"):
        return _cross_entropy
    if key in ("mse", "mse_loss"):
        return F.mse_loss
    raise ValueError(f"Unknown loss {spec!r}: use 'auto', 'ce', 'mse' or a callable (logits, labels) -> scalar.")


def _cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


def _auto_loss(logits: Tensor, labels: Tensor) -> Tensor:
    if labels.dtype.is_floating_point:
        return F.mse_loss(logits.reshape(labels.shape), labels)
    return _cross_entropy(logits, labels)


def adapted_names(
    model: nn.Module, adapt: AdaptSpec = "all", layer_map: LayerMap | Mapping | None = None
) -> list[str]:
    """Names (as ``model.named_parameters()`` gives them) of the parameters an inner loop adapts.

    ``adapt``: "all" (every parameter that requires grad), "lora" (PEFT LoRA parameters, "lora_" in the name),
    a depth spec of the layer map ("head", "last-2", an int depth, ...), a list of parameter names, module paths
    or depth specs, or a callable ``name -> bool``. ``layer_map`` is a :class:`LayerMap` or the keyword arguments of
    ``LayerMap.from_model`` (``{"blocks": [...]}`` for plain modules).
    """
    params = param_dict(model)
    trainable = [n for n, p in params.items() if p.requires_grad]
    if callable(adapt) and not isinstance(adapt, str):
        names = [n for n in params if adapt(n)]
    elif isinstance(adapt, str) and adapt.strip().lower() == "all":
        names = trainable
    elif isinstance(adapt, str) and adapt.strip().lower() == "lora":
        names = [n for n in params if "lora_" in n]
        if not names:
            raise ValueError(
                f"adapt='lora' but {type(model).__name__} has no parameter with 'lora_' in its name: wrap it with "
                "peft.get_peft_model(model, LoraConfig(...)) first, or choose adapt='all'/'head'."
            )
    else:
        specs = [adapt] if isinstance(adapt, (str, int)) else list(adapt)
        names, depth_specs = [], []
        for s in specs:
            if isinstance(s, str) and (s in params or any(n.startswith(s + ".") for n in params)):
                names += [n for n in params if (n == s or n.startswith(s + ".")) and n not in names]
            else:
                depth_specs.append(s)
        if depth_specs:
            lm = _layer_map(model, layer_map)
            names += [n for n in lm.names_at(lm.resolve(depth_specs)) if n not in names]
    if not names:
        raise ValueError(
            f"adapt={adapt!r} selects no parameter of {type(model).__name__}. Use 'all', 'head', 'last-K', 'lora', "
            "parameter names or module paths (see model.named_parameters())."
        )
    return names


def _layer_map(model: nn.Module, layer_map: LayerMap | Mapping | None) -> LayerMap:
    from ..transfer.layer_map import LayerMap  # on demand: plain "all"/"head"-free specs need no layer map

    if isinstance(layer_map, LayerMap):
        return layer_map
    try:
        return LayerMap.from_model(model, **dict(layer_map or {}))
    except ValueError as e:
        raise ValueError(
            f"Choosing adapted parameters by depth needs a layer map of {type(model).__name__}: {e}\n"
            "Pass layer_map=LayerMap.from_model(model, blocks=[...]) (or layer_map={'blocks': [...]}), or name the "
            "parameters: adapt=['classifier.weight', ...] or a regex via adapt=lambda name: ...."
        ) from e


def sgd_step(params: Mapping[str, Tensor], grads: Mapping[str, Tensor], lr: LearningRate) -> dict[str, Tensor]:
    """``params - lr * grads``; ``lr`` is a float, a tensor, or a dict of per-parameter tensors (Meta-SGD)."""
    if isinstance(lr, Mapping):
        return {n: p - lr[n] * grads[n] for n, p in params.items()}
    return {n: p - lr * grads[n] for n, p in params.items()}


def inner_loop(
    model: nn.Module,
    fast: Mapping[str, Tensor],
    fixed: Mapping[str, Tensor],
    inputs: Mapping[str, Tensor],
    labels: Tensor,
    *,
    steps: int,
    lr: LearningRate,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    first_order: bool = False,
) -> dict[str, Tensor]:
    """``steps`` steps of gradient descent on ``loss_fn(model(inputs), labels)`` over the ``fast`` parameters.

    ``fixed`` holds everything else the forward needs (non-adapted parameters, buffers). Second order (default):
    the result stays differentiable through the inner gradients. First order: the inner gradients are computed
    without recording a graph, so the result depends on the initial ``fast`` (and a learned ``lr``) only linearly.
    Vmap-safe: it uses ``torch.func.grad``.
    """

    def support_loss(p: dict[str, Tensor], rest: dict[str, Tensor]) -> Tensor:
        return loss_fn(functional_logits(model, {**rest, **p}, inputs), labels)

    # ``fixed`` is an argument, not a closure: BatchNorm may update running statistics (on the copies) in place,
    # which torch.func refuses for captured tensors.
    grad_fn = torch.func.grad(support_loss)
    fast, fixed = dict(fast), dict(fixed)
    for _ in range(steps):
        if first_order:
            with torch.no_grad():  # torch.func.grad still differentiates; the outer graph is not recorded
                grads = grad_fn(fast, fixed)
        else:
            grads = grad_fn(fast, fixed)
        fast = sgd_step(fast, grads, lr)
    return fast


def regex_selector(pattern: str) -> Callable[[str], bool]:
    """An ``adapt`` callable selecting parameters whose name matches ``pattern`` (``re.search``)."""
    compiled = re.compile(pattern)
    return lambda name: compiled.search(name) is not None


def __getattr__(name: str):
    if name == "forward":
        renamed(f"{__name__}.forward", f"{__name__}.functional_logits")
        return functional_logits
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
