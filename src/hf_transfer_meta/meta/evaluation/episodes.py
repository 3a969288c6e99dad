"""Evaluation over test episodes, the one routine behind ``MetaTrainer.evaluate``, ``evaluate_sinusoid`` and the GPU
benchmark: adapt to each episode's support set, score its query set, and report the mean with its 95% CI."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..algorithms.base import MetaAlgorithm, accuracy
from ..functional import resolve_loss
from .few_shot import mean_ci95

__all__ = ["EpisodeEvaluation", "evaluate_episodes", "query_loss", "query_score"]

_auto_loss = resolve_loss("auto")


def query_score(logits: Tensor, labels: Tensor) -> Tensor:
    """Accuracy for integer labels, MSE for float labels (regression)."""
    if labels.dtype.is_floating_point:
        return query_loss(logits, labels)
    return accuracy(logits, labels)


def query_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """The "auto" loss of the inner loop (cross-entropy, or MSE for float labels), in float32 at least."""
    return _auto_loss(logits.float(), labels.float() if labels.dtype.is_floating_point else labels)


@dataclass
class EpisodeEvaluation:
    """Per-episode results of :func:`evaluate_episodes` (1-d tensors, one value per episode)."""

    scores: Tensor
    losses: Tensor
    pre_adaptation_scores: Tensor | None
    regression: bool

    @property
    def score_name(self) -> str:
        return "mse" if self.regression else "accuracy"

    def __len__(self) -> int:
        return len(self.scores)

    def metrics(self, prefix: str = "eval") -> dict[str, float]:
        """``{prefix}_accuracy`` (or ``_mse``) with ``_ci95``, ``{prefix}_loss``, ``{prefix}_episodes``, and
        ``{prefix}_pre_adaptation_accuracy`` (or ``_mse``) when the algorithm adapts parameters."""
        name = self.score_name
        mean, ci95 = mean_ci95(self.scores.double().cpu().numpy())
        metrics = {
            f"{prefix}_{name}": mean,
            f"{prefix}_{name}_ci95": ci95,
            f"{prefix}_loss": self.losses.double().mean().item(),
            f"{prefix}_episodes": len(self),
        }
        if self.pre_adaptation_scores is not None:
            metrics[f"{prefix}_pre_adaptation_{name}"] = self.pre_adaptation_scores.double().mean().item()
        return metrics


def evaluate_episodes(
    algorithm: MetaAlgorithm,
    model: nn.Module,
    batches: Iterable[Sequence[Mapping[str, Any]]],
    steps: int | None = None,
    lr: float | None = None,
    gather: Callable[[Tensor], Tensor] | None = None,
    on_batch: Callable[[], None] | None = None,
) -> EpisodeEvaluation:
    """Adapt ``algorithm`` to every episode of ``batches`` (lists of collated episodes) and score its query set.

    The model runs in eval mode (restored afterwards) and is never modified. ``steps``/``lr``: the inner loop at test
    (``None``: the algorithm's defaults). ``gather``: applied to each batch's per-episode tensors (across processes:
    ``accelerator.gather_for_metrics``); ``on_batch``: called after each batch.
    """
    gather = gather or (lambda values: values)
    scores, losses, pre_scores, regression = [], [], [], False
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            batch_scores, batch_losses, batch_pre = [], [], []
            for episode in batch:
                labels = episode["query_labels"]
                regression = labels.dtype.is_floating_point
                logits = algorithm.adapt_and_predict(model, episode, steps=steps, lr=lr)
                batch_losses.append(query_loss(logits, labels))
                batch_scores.append(query_score(logits, labels))
                unadapted = algorithm.unadapted_logits(model, episode)
                if unadapted is not None:
                    batch_pre.append(query_score(unadapted, labels))
            scores.append(gather(torch.stack(batch_scores)))
            losses.append(gather(torch.stack(batch_losses)))
            if batch_pre:
                pre_scores.append(gather(torch.stack(batch_pre)))
            if on_batch is not None:
                on_batch()
    finally:
        model.train(was_training)
    if not scores:
        raise ValueError("evaluate_episodes got no episodes: pass a non-empty iterable of lists of episodes.")
    return EpisodeEvaluation(
        scores=torch.cat(scores),
        losses=torch.cat(losses),
        pre_adaptation_scores=torch.cat(pre_scores) if pre_scores else None,
        regression=regression,
    )
