"""The MAML family: MAML, first-order MAML, ANIL and Meta-SGD, on any model, by a functional inner loop.

* MAML (Finn et al. 2017, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks"): adapt by
  ``inner_steps`` SGD steps on the support set, meta-loss = query loss at the adapted parameters, differentiated
  through the inner steps (second order).
* FOMAML (same paper, first-order approximation): the inner gradients are treated as constants, so the
  meta-gradient is the query gradient at the adapted parameters.
* ANIL (Raghu et al. 2020, "Rapid Learning or Feature Reuse?"): only the head adapts in the inner loop; the body is
  shared (and still meta-trained, second order by default).
* Meta-SGD (Li et al. 2017, "Meta-SGD: Learning to Learn Quickly for Few-Shot Learning"): a learned inner learning
  rate per parameter element, initialised to ``inner_lr`` and trained by the outer optimizer with the model.

The model is never modified: parameters are a dict passed to ``torch.func.functional_call``. Second-order variants
run their forwards under the math kernel of ``scaled_dot_product_attention`` (the CPU flash kernel's backward cannot
be differentiated again), so unmodified transformers models work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from ..functional import AdaptSpec, LearningRate, LossSpec, functional_logits, inner_loop
from .base import Episode, InnerLoopAlgorithm, MetaOutput, VmapMode, _as_tasks, task_outputs_metrics
from .registry import register_algorithm

__all__ = ["ANIL", "FOMAML", "MAML", "MetaSGD"]


@register_algorithm("maml")
class MAML(InnerLoopAlgorithm):
    """Model-Agnostic Meta-Learning, second order unless ``first_order=True``.

    Args:
        inner_lr: inner SGD learning rate (the paper: 0.01 sinusoid, 0.4 Omniglot).
        inner_steps: inner steps while meta-training (1 sinusoid, 1 Omniglot 5-way; 5 for 20-way).
        first_order: drop the second-order terms (FOMAML).
        adapt: which parameters the inner loop adapts ("all", "head", "last-K", "lora", names, a callable).
        Other keyword arguments: see :class:`~hf_transfer_meta.meta.algorithms.base.InnerLoopAlgorithm`.

    Example::

        maml = MAML(inner_lr=0.01)
        out = maml.meta_loss(model, episodes)   # list of episode dicts
        out.loss.backward(); optimizer.step(); optimizer.zero_grad()
        logits = maml.adapt_and_predict(model, test_episode, steps=10)
    """

    def __init__(
        self,
        inner_lr: float = 0.01,
        inner_steps: int = 1,
        first_order: bool = False,
        adapt: AdaptSpec = "all",
        *,
        layer_map=None,
        loss: LossSpec = "auto",
        vmap: VmapMode = "auto",
        eval_steps: int | None = None,
        eval_lr: float | None = None,
        pre_metrics: bool = True,
    ):
        super().__init__(
            inner_lr=inner_lr,
            inner_steps=inner_steps,
            adapt=adapt,
            layer_map=layer_map,
            loss=loss,
            vmap=vmap,
            eval_steps=eval_steps,
            eval_lr=eval_lr,
            pre_metrics=pre_metrics,
        )
        self.first_order = bool(first_order)

    @property
    def second_order(self) -> bool:  # type: ignore[override]
        return not self.first_order

    def meta_loss(self, model: nn.Module, tasks: Sequence[Episode]) -> MetaOutput:
        """Mean query loss after adaptation over the tasks; ``backward()`` gives the MAML meta-gradient."""
        tasks = _as_tasks(tasks)
        fast0, fixed = self.split_params(model)
        lr = self.inner_lrs(fast0)
        loss_fn, steps, first_order, pre = self.loss_fn, self.inner_steps, self.first_order, self.pre_metrics

        def task(support, support_labels, query, query_labels) -> dict[str, Tensor]:
            fast = inner_loop(
                model, fast0, fixed, support, support_labels, steps=steps, lr=lr, loss_fn=loss_fn,
                first_order=first_order,
            )  # fmt: skip
            logits = functional_logits(model, {**fixed, **fast}, query)
            out = {"loss": loss_fn(logits, query_labels), "logits": logits.detach()}
            if pre:
                with torch.no_grad():
                    logits_pre = functional_logits(model, {**fixed, **fast0}, query)
                    out["loss_pre"] = loss_fn(logits_pre, query_labels)
                    out["logits_pre"] = logits_pre
            return out

        with self._attention_context(self.second_order):
            outs = self.map_tasks(task, model, tasks)
        losses, logits, metrics = task_outputs_metrics(outs, tasks, pre)
        return MetaOutput(losses.mean(), metrics, logits)


@register_algorithm("fomaml")
class FOMAML(MAML):
    """First-order MAML (section 5.2 of the MAML paper): the meta-gradient is the query gradient at the adapted
    parameters. No graph through the inner loop: memory as plain training, and it works through DDP."""

    def __init__(self, inner_lr: float = 0.01, inner_steps: int = 1, adapt: AdaptSpec = "all", **kwargs):
        kwargs.pop("first_order", None)
        super().__init__(inner_lr=inner_lr, inner_steps=inner_steps, first_order=True, adapt=adapt, **kwargs)


@register_algorithm("anil")
class ANIL(MAML):
    """Almost No Inner Loop: only the head (by the layer map, or ``adapt``) adapts per task."""

    def __init__(self, inner_lr: float = 0.01, inner_steps: int = 1, adapt: AdaptSpec = "head", **kwargs):
        super().__init__(inner_lr=inner_lr, inner_steps=inner_steps, adapt=adapt, **kwargs)


@register_algorithm("metasgd")
class MetaSGD(MAML):
    """Meta-SGD: ``theta' = theta - alpha * grad``, with ``alpha`` learned, one per parameter
    element (``lr_shape="param"``, the paper) or one per tensor (``lr_shape="scalar"``).

    The learning rates are parameters of this module: create them for a model before building the optimizer
    (``MetaSGD(model=model)`` or ``algorithm.setup(model)``), then optimise ``[*model.parameters(),
    *algorithm.parameters()]``. A float ``lr`` given to ``adapt_and_predict`` replaces the learned rates.
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        inner_lr: float = 0.01,
        inner_steps: int = 1,
        adapt: AdaptSpec = "all",
        lr_shape: str = "param",
        **kwargs,
    ):
        super().__init__(inner_lr=inner_lr, inner_steps=inner_steps, adapt=adapt, **kwargs)
        if lr_shape not in ("param", "scalar"):
            raise ValueError(f"lr_shape={lr_shape!r}: use 'param' (one rate per element) or 'scalar' (per tensor).")
        self.lr_shape = lr_shape
        self.lrs = nn.ParameterList()
        self.lr_names: list[str] = []
        if model is not None:
            self.setup(model)

    @classmethod
    def from_args(cls, args, model: nn.Module | None = None) -> MetaSGD:
        return cls(model=model, lr_shape=args.metasgd_lr_shape, **cls.inner_loop_kwargs(args))

    def setup(self, model: nn.Module) -> MetaSGD:
        """Create one learning rate tensor per adapted parameter of ``model``, all equal to ``inner_lr``."""
        fast, _ = self.split_params(model)
        self.lr_names = list(fast)
        self.lrs = nn.ParameterList(
            nn.Parameter(
                torch.full_like(p.detach(), self.inner_lr)
                if self.lr_shape == "param"
                else torch.full((), self.inner_lr, dtype=p.dtype, device=p.device)
            )
            for p in fast.values()
        )
        return self

    def inner_lrs(self, fast: Mapping[str, Tensor]) -> LearningRate:
        if not self.lr_names:
            raise RuntimeError(
                "MetaSGD has no learning rates yet: create them before building the optimizer with "
                "MetaSGD(model=model, ...) or algorithm.setup(model), and add algorithm.parameters() to it."
            )
        if list(fast) != self.lr_names:
            missing = sorted(set(fast) ^ set(self.lr_names))[:5]
            raise RuntimeError(
                f"MetaSGD's learning rates were created for other parameters (differing: {missing}); "
                "call algorithm.setup(model) for this model."
            )
        return dict(zip(self.lr_names, self.lrs))
