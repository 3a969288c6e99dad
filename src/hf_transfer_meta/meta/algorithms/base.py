"""The interface every meta-learning algorithm shares, and the machinery of the gradient-based ones.

An algorithm is an ``nn.Module`` (so the parameters it learns, e.g. Meta-SGD's learning rates, are found by
``algorithm.parameters()`` and can join the outer optimizer) with two verbs:

* ``meta_loss(model, tasks) -> MetaOutput``: a differentiable loss over a meta-batch (a list of episodes), whose
  ``backward()`` leaves the meta-gradient in ``.grad`` of the model's parameters and the algorithm's own; and
  metrics (query loss/accuracy after adaptation, and before it);
* ``adapt_and_predict(model, episode, steps=None, lr=None) -> query logits``: evaluation, with inner steps and
  learning rate that may differ from training.

An episode is ``{"support": {input name: tensor [N*K, ...]}, "support_labels": [N*K], "query": {...: [N*Q, ...]},
"query_labels": [N*Q]}`` (float labels ``[K, 1]`` for regression).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn

from ...model_utils import is_peft_model, is_transformers_model
from ..functional import (
    AdaptSpec,
    LearningRate,
    LossSpec,
    adapted_names,
    buffers_copy,
    functional_logits,
    inner_loop,
    param_dict,
    resolve_loss,
    unwrap_model,
)

if TYPE_CHECKING:
    from ...transfer.layer_map import LayerMap

__all__ = [
    "EPISODE_KEYS",
    "InnerLoopAlgorithm",
    "MetaAlgorithm",
    "MetaOutput",
    "accuracy",
    "check_episode",
    "query_metrics",
    "task_outputs_metrics",
    "stack_tasks",
]

EPISODE_KEYS = ("support", "support_labels", "query", "query_labels")
Episode = Mapping[str, Any]
VmapMode = bool | Literal["auto"]


@dataclass
class MetaOutput:
    """What ``meta_loss`` returns.

    Attributes:
        loss: mean over the tasks, differentiable w.r.t. the model's parameters (and the algorithm's own).
        metrics: floats: ``query_loss`` (after adaptation), ``query_loss_pre`` (before), and for classification
            ``query_accuracy``/``query_accuracy_pre``; algorithm-specific extras.
        query_logits: per task, the (detached) query predictions after adaptation.
    """

    loss: Tensor
    metrics: dict[str, float] = field(default_factory=dict)
    query_logits: list[Tensor] = field(default_factory=list)


def check_episode(episode: Episode, index: int | None = None) -> Episode:
    where = "episode" if index is None else f"task {index} of the meta-batch"
    if not isinstance(episode, Mapping):
        raise TypeError(f"{where} is a {type(episode).__name__}; expected a dict with keys {EPISODE_KEYS}.")
    missing = [k for k in EPISODE_KEYS if k not in episode]
    if missing:
        raise KeyError(f"{where} lacks {missing}: an episode has keys {EPISODE_KEYS} (got {sorted(episode)}).")
    for k in ("support", "query"):
        if not isinstance(episode[k], Mapping):
            raise TypeError(
                f"{where}[{k!r}] must be a dict of model inputs (e.g. {{'pixel_values': ...}}), "
                f"not {type(episode[k]).__name__}."
            )
    return episode


def _as_tasks(tasks: Sequence[Episode] | Episode) -> list[Episode]:
    if isinstance(tasks, Mapping):
        tasks = [tasks]
    tasks = list(tasks)
    if not tasks:
        raise ValueError("The meta-batch is empty: pass a list of at least one episode.")
    return [check_episode(t, i) for i, t in enumerate(tasks)]


def _stack(values: list) -> Any:
    first = values[0]
    if isinstance(first, Tensor):
        return torch.stack(values)
    if isinstance(first, Mapping):
        return {k: _stack([v[k] for v in values]) for k in first}
    raise TypeError(f"Cannot stack {type(first).__name__} values across tasks.")


def stack_tasks(tasks: Sequence[Episode]) -> dict[str, Any]:
    """One episode whose tensors have a leading task dimension (what ``torch.vmap`` maps over).

    Raises ``ValueError`` when the tasks' shapes differ (e.g. text padded per episode), which rules out vmap.
    """
    episodes = [{k: t[k] for k in EPISODE_KEYS} for t in tasks]
    try:
        return _stack(episodes)
    except RuntimeError as e:
        raise ValueError(f"The tasks of this meta-batch have different shapes, so they cannot be vmapped: {e}") from e


def _unbind(tree: Any, n: int) -> list:
    """Inverse of stacking: a pytree with a leading task dimension -> one pytree per task."""
    if isinstance(tree, Tensor):
        return list(tree.unbind(0))
    if isinstance(tree, Mapping):
        parts = {k: _unbind(v, n) for k, v in tree.items()}
        return [{k: parts[k][i] for k in tree} for i in range(n)]
    raise TypeError(f"Cannot split {type(tree).__name__} outputs by task.")


def accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    """Fraction of ``logits.argmax(-1)`` equal to ``labels`` (a 0-d float tensor)."""
    return (logits.argmax(-1) == labels).float().mean()


def _accuracy(logits: Tensor, labels: Tensor) -> float:
    return accuracy(logits, labels).item()


def query_metrics(
    loss_post: Tensor,
    logits_post: Sequence[Tensor],
    labels: Sequence[Tensor],
    loss_pre: Tensor | None = None,
    logits_pre: Sequence[Tensor] | None = None,
) -> dict[str, float]:
    """Mean over tasks of the query loss (and accuracy for integer labels), after and (when given) before adaptation."""
    metrics = {"query_loss": loss_post.detach().float().mean().item()}
    classification = not labels[0].dtype.is_floating_point
    if classification:
        metrics["query_accuracy"] = sum(_accuracy(lg, y) for lg, y in zip(logits_post, labels)) / len(labels)
    if loss_pre is not None:
        metrics["query_loss_pre"] = loss_pre.detach().float().mean().item()
        if classification and logits_pre is not None:
            metrics["query_accuracy_pre"] = sum(_accuracy(lg, y) for lg, y in zip(logits_pre, labels)) / len(labels)
    return metrics


def task_outputs_metrics(outs: Sequence[Mapping[str, Any]], tasks: Sequence[Episode], pre: bool):
    """``(losses [T], query logits per task, metrics)`` from per-task dicts with ``loss``, ``logits`` and, when
    ``pre``, ``loss_pre``/``logits_pre`` (what the inner-loop algorithms' task functions return)."""
    losses = torch.stack([o["loss"] for o in outs])
    logits = [o["logits"] for o in outs]
    metrics = query_metrics(
        losses,
        logits,
        [t["query_labels"] for t in tasks],
        torch.stack([o["loss_pre"] for o in outs]) if pre else None,
        [o["logits_pre"] for o in outs] if pre else None,
    )
    return losses, logits, metrics


class MetaAlgorithm(nn.Module):
    """Base class: ``meta_loss`` for training, ``adapt_and_predict`` for evaluation.

    ``second_order`` tells a trainer whether the loss differentiates through inner gradients (such a loss cannot be
    ``backward()``-ed through DistributedDataParallel: run it on the unwrapped module and all-reduce the gradients).
    """

    second_order: bool = False

    @classmethod
    def from_args(cls, args, model: nn.Module | None = None) -> MetaAlgorithm:
        """The algorithm configured from :class:`~hf_transfer_meta.meta.MetaTrainingArguments` (what
        ``build_algorithm`` calls); the default takes no argument."""
        return cls()

    def meta_loss(self, model: nn.Module, tasks: Sequence[Episode]) -> MetaOutput:
        raise NotImplementedError

    def unadapted_logits(self, model: nn.Module, episode: Episode) -> Tensor | None:
        """Query logits before any adaptation, for the pre-adaptation metrics; ``None`` when the algorithm has no
        such notion (ProtoNet)."""
        return None

    def adapt_and_predict(
        self, model: nn.Module, episode: Episode, steps: int | None = None, lr: float | None = None
    ) -> Tensor:
        raise NotImplementedError

    def forward(self, model: nn.Module, tasks: Sequence[Episode]) -> MetaOutput:
        return self.meta_loss(model, tasks)


def _has_tracked_batchnorm_in_training(model: nn.Module) -> bool:
    return any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.training
        for m in model.modules()
    )


def _norm_layers(model: nn.Module) -> list[str]:
    """Class names of the normalisation layers in ``model`` whose second-order vmap is wrong (GroupNorm vmaps
    correctly; layers marked ``vmap_second_order_safe``, like Conv4's ``norm="batch_ops"``, are built from
    elementary ops)."""
    return sorted(
        {
            type(m).__name__
            for m in model.modules()
            if "norm" in type(m).__name__.lower()
            and not isinstance(m, nn.GroupNorm)
            and not getattr(m, "vmap_second_order_safe", False)
        }
    )


class InnerLoopAlgorithm(MetaAlgorithm):
    """Shared machinery of the algorithms that adapt parameters by gradient steps (MAML family, Reptile).

    Args:
        inner_lr: inner-loop (task adaptation) learning rate.
        inner_steps: inner gradient steps during meta-training.
        adapt: which parameters the inner loop adapts: "all", "head", "last-K", "lora", names, module paths or a
            callable (see :func:`~hf_transfer_meta.meta.functional.adapted_names`). The others are shared.
        layer_map: a :class:`LayerMap` or ``LayerMap.from_model`` keyword arguments, for depth-based ``adapt``.
        loss: "auto" (cross-entropy for integer labels, MSE for float labels), "ce", "mse" or a callable.
        vmap: batch the tasks of a meta-batch with ``torch.vmap`` (True), loop over them (False), or "auto": vmap
            for pure modules (not transformers/PEFT models, no BatchNorm tracking running statistics in training
            mode, equal shapes across tasks), falling back to the loop with a warning if vmap fails.
        eval_steps / eval_lr: defaults of ``adapt_and_predict`` (``None``: the training values).
        pre_metrics: also evaluate the query set before adaptation (one extra forward without graph per task).
    """

    def __init__(
        self,
        *,
        inner_lr: float = 0.01,
        inner_steps: int = 1,
        adapt: AdaptSpec = "all",
        layer_map: LayerMap | Mapping | None = None,
        loss: LossSpec = "auto",
        vmap: VmapMode = "auto",
        eval_steps: int | None = None,
        eval_lr: float | None = None,
        pre_metrics: bool = True,
    ):
        super().__init__()
        if inner_steps < 0:
            raise ValueError(f"inner_steps={inner_steps} must be >= 0.")
        if vmap not in (True, False, "auto"):
            raise ValueError(f"vmap={vmap!r}: use True, False or 'auto'.")
        self.inner_lr = float(inner_lr)
        self.inner_steps = int(inner_steps)
        self.adapt = adapt
        self.layer_map = layer_map
        self.loss = loss
        self.loss_fn = resolve_loss(loss)
        self.vmap = vmap
        self.eval_steps = eval_steps
        self.eval_lr = eval_lr
        self.pre_metrics = pre_metrics
        self._names_cache: tuple[tuple, list[str]] | None = None
        self._vmap_failed: set[str] = set()

    @classmethod
    def from_args(cls, args, model: nn.Module | None = None) -> InnerLoopAlgorithm:
        return cls(**cls.inner_loop_kwargs(args))

    @staticmethod
    def inner_loop_kwargs(args) -> dict[str, Any]:
        """The inner-loop options of :class:`~hf_transfer_meta.meta.MetaTrainingArguments` as keyword arguments."""
        return dict(
            inner_lr=args.inner_lr,
            inner_steps=args.inner_steps,
            adapt=args.adapt_spec,
            vmap=args.vmap_mode,
            eval_steps=args.eval_inner_steps,
            eval_lr=args.eval_inner_lr,
        )

    # ------------------------------------------------------------------ parameters
    def adapted_names(self, model: nn.Module) -> list[str]:
        """Names of the parameters the inner loop adapts (cached per model)."""
        key = (id(model), tuple(n for n, _ in model.named_parameters()))
        if self._names_cache is None or self._names_cache[0] != key:
            self._names_cache = (key, adapted_names(model, self.adapt, self.layer_map))
        return list(self._names_cache[1])

    def split_params(self, model: nn.Module) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """(adapted parameters, everything else the forward needs: other parameters and copies of the buffers)."""
        params = param_dict(model)
        names = self.adapted_names(model)
        fast = {n: params[n] for n in names}
        fixed = {n: p for n, p in params.items() if n not in fast}
        fixed.update(buffers_copy(model))
        return fast, fixed

    def inner_lrs(self, fast: Mapping[str, Tensor]) -> LearningRate:
        """The inner learning rate used during meta-training (Meta-SGD: learned per-parameter tensors)."""
        return self.inner_lr

    def adapt_params(
        self,
        model: nn.Module,
        episode: Episode,
        steps: int | None = None,
        lr: float | None = None,
        first_order: bool = True,
    ) -> dict[str, Tensor]:
        """The full parameter-and-buffer dict after adapting to ``episode``'s support set (the model is untouched).

        ``steps``/``lr`` default to ``eval_steps``/``eval_lr``, then to the training values; a float ``lr`` also
        overrides Meta-SGD's learned rates.
        """
        check_episode(episode)
        fast, fixed = self.split_params(model)
        steps = self._eval_steps(steps)
        rate = lr if lr is not None else (self.eval_lr if self.eval_lr is not None else self.inner_lrs(fast))
        with self._attention_context(not first_order):
            fast = inner_loop(
                model,
                fast,
                fixed,
                episode["support"],
                episode["support_labels"],
                steps=steps,
                lr=rate,
                loss_fn=self.loss_fn,
                first_order=first_order,
            )
        return {**fixed, **fast}

    def adapt_and_predict(
        self, model: nn.Module, episode: Episode, steps: int | None = None, lr: float | None = None
    ) -> Tensor:
        """Query logits after ``steps`` inner steps at ``lr`` on the support set (no graph is kept)."""
        with torch.no_grad():  # torch.func.grad still computes the inner gradients
            params = self.adapt_params(model, episode, steps=steps, lr=lr, first_order=True)
            return functional_logits(model, params, episode["query"])

    def unadapted_logits(self, model: nn.Module, episode: Episode) -> Tensor:
        """Query logits at the model's own parameters (buffers copied, as in the inner loop)."""
        with torch.no_grad():
            fast, fixed = self.split_params(model)
            return functional_logits(model, {**fixed, **fast}, episode["query"])

    def _eval_steps(self, steps: int | None) -> int:
        if steps is not None:
            return int(steps)
        return self.inner_steps if self.eval_steps is None else int(self.eval_steps)

    # ------------------------------------------------------------------ task batching
    def use_vmap(self, model: nn.Module, tasks: Sequence[Episode]) -> bool:
        """Whether this meta-batch runs under ``torch.vmap`` (see the ``vmap`` argument).

        Second order through a normalisation layer is never vmapped: torch's batching rule for the backward of
        layer/batch norm is wrong w.r.t. the input (functorch#534; benchmarks/README.md gives the error measured),
        so "auto" loops and ``vmap=True`` raises.
        """
        norms = self.second_order and _norm_layers(model)
        if self.vmap is True:
            if norms:
                raise ValueError(
                    f"vmap=True with second-order gradients through {norms[0]} of {type(model).__name__} gives wrong "
                    "meta-gradients (torch's vmap batching rule for the norm backward, functorch#534). Use vmap=False "
                    "or 'auto' (loops over tasks), or a first-order algorithm."
                )
            return True
        if self.vmap is False or norms or len(tasks) < 2 or type(model).__name__ in self._vmap_failed:
            return False
        supports = getattr(unwrap_model(model), "supports_task_vmap", None)
        if supports is not None:
            ok = bool(supports)
        else:
            ok = not (is_transformers_model(model) or is_peft_model(model)) and not _has_tracked_batchnorm_in_training(
                model
            )
        return ok and _same_shapes(tasks)

    def map_tasks(self, fn: Callable[..., Any], model: nn.Module, tasks: Sequence[Episode]) -> list:
        """``[fn(support, support_labels, query, query_labels) for each task]``, batched by vmap when it can be
        (``fn`` returns a dict of tensors; tasks may differ in shape on the loop path)."""
        if self.use_vmap(model, tasks):
            stacked = stack_tasks(tasks)
            args = [stacked[k] for k in EPISODE_KEYS]
            try:
                return _unbind(torch.vmap(fn, randomness="different")(*args), len(tasks))
            except Exception as e:  # noqa: BLE001 - "auto" promises a fallback; True surfaces the error
                if self.vmap is True:
                    raise
                self._vmap_failed.add(type(model).__name__)
                warnings.warn(
                    f"torch.vmap over tasks failed for {type(model).__name__} ({type(e).__name__}: {str(e)[:200]}); "
                    "looping over tasks instead. Pass vmap=False to skip the attempt.",
                    stacklevel=3,
                )
        return [fn(*(t[k] for k in EPISODE_KEYS)) for t in tasks]

    def _attention_context(self, second_order: bool) -> contextlib.AbstractContextManager:
        """Second order through ``scaled_dot_product_attention`` on CPU needs the math kernel (the flash kernel's
        backward has no derivative); harmless for models without attention."""
        if not second_order:
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel(SDPBackend.MATH)


def _same_shapes(tasks: Sequence[Episode]) -> bool:
    def shapes(ep):
        out = []
        for k in EPISODE_KEYS:
            v = ep[k]
            if isinstance(v, Mapping):
                out += [(k, n, tuple(t.shape)) for n, t in sorted(v.items())]
            else:
                out.append((k, tuple(v.shape)))
        return out

    first = shapes(tasks[0])
    return all(shapes(t) == first for t in tasks[1:])
