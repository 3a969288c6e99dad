"""Reptile (Nichol, Achiam & Schulman 2018, "On First-Order Meta-Learning Algorithms").

Each task: ``inner_steps`` SGD steps on the support set from ``theta`` give ``phi``. The meta-gradient is
``theta - phi`` averaged over the tasks; an outer SGD step of size ``epsilon`` is then the paper's
``theta <- theta + epsilon * mean(phi - theta)``, and any other optimizer (Adam) applies it as a gradient.

``meta_loss`` returns a surrogate whose ``backward()`` writes exactly that into ``.grad`` (of the adapted
parameters; the others get none), so Reptile plugs into the same loop, DDP all-reduce and gradient accumulation as
the other algorithms. Its value is the mean post-adaptation query loss, for logging.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..functional import AdaptSpec, functional_logits, inner_loop
from .base import Episode, InnerLoopAlgorithm, MetaOutput, _as_tasks, task_outputs_metrics
from .registry import register_algorithm

__all__ = ["Reptile"]


@register_algorithm("reptile")
class Reptile(InnerLoopAlgorithm):
    """Reptile with a plain-SGD inner loop on the support set.

    Args:
        inner_lr: inner SGD learning rate (the paper's sinusoid: 0.02).
        inner_steps: inner steps per task while meta-training (paper: 5 to 32; more than one, else Reptile is
            joint training).
        adapt, and the keyword arguments of :class:`~hf_transfer_meta.meta.algorithms.base.InnerLoopAlgorithm`.

    The outer learning rate is the paper's meta step size ``epsilon`` (e.g. ``torch.optim.SGD(lr=1.0)`` linearly
    annealed to 0 for Omniglot, 0.1 for the sinusoid).
    """

    second_order = False

    def __init__(self, inner_lr: float = 0.02, inner_steps: int = 5, adapt: AdaptSpec = "all", **kwargs):
        super().__init__(inner_lr=inner_lr, inner_steps=inner_steps, adapt=adapt, **kwargs)

    def meta_loss(self, model: nn.Module, tasks: Sequence[Episode]) -> MetaOutput:
        tasks = _as_tasks(tasks)
        fast0, fixed = self.split_params(model)
        theta = {n: p.detach() for n, p in fast0.items()}
        fixed_const = {n: p.detach() for n, p in fixed.items()}
        loss_fn, steps, lr, pre = self.loss_fn, self.inner_steps, self.inner_lrs(fast0), self.pre_metrics

        def task(support, support_labels, query, query_labels) -> dict:
            phi = inner_loop(
                model, theta, fixed_const, support, support_labels, steps=steps, lr=lr, loss_fn=loss_fn,
                first_order=True,
            )  # fmt: skip
            logits = functional_logits(model, {**fixed_const, **phi}, query)
            out = {
                "delta": {n: theta[n] - phi[n] for n in theta},
                "loss": loss_fn(logits, query_labels),
                "logits": logits,
            }
            if pre:
                logits_pre = functional_logits(model, {**fixed_const, **theta}, query)
                out["loss_pre"] = loss_fn(logits_pre, query_labels)
                out["logits_pre"] = logits_pre
            return out

        with torch.no_grad():
            outs = self.map_tasks(task, model, tasks)
        delta = {n: torch.stack([o["delta"][n] for o in outs]).mean(0) for n in fast0}
        losses, logits, metrics = task_outputs_metrics(outs, tasks, pre)
        # d/dtheta of sum(theta * delta) is delta; the detached terms only set the value shown in logs.
        surrogate = sum((fast0[n] * delta[n]).sum() for n in fast0)
        loss = surrogate - surrogate.detach() + losses.mean()
        metrics["reptile_step_norm"] = torch.sqrt(sum((d.float() ** 2).sum() for d in delta.values())).item()
        return MetaOutput(loss, metrics, logits)

    def meta_gradient(self, model: nn.Module, tasks: Sequence[Episode]) -> dict[str, Tensor]:
        """``theta - phi`` averaged over ``tasks``, by adapted parameter name (what ``meta_loss().loss.backward()``
        accumulates into ``.grad``)."""
        fast0, _ = self.split_params(model)
        grads = torch.autograd.grad(self.meta_loss(model, tasks).loss, list(fast0.values()), allow_unused=True)
        return {n: (g if g is not None else torch.zeros_like(p)) for (n, p), g in zip(fast0.items(), grads)}
