"""Prototypical Networks (Snell, Swersky & Zemel 2017, "Prototypical Networks for Few-shot Learning").

A class prototype is the mean embedding of its support examples; a query is classified by the softmax over negative
squared Euclidean distances to the prototypes; the loss is the cross-entropy of that softmax. Support and query go
through the model in one forward when their inputs have the same shapes (as the authors' code does, which matters
for BatchNorm batch statistics), else in two.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...model_utils import is_transformers_model
from ..functional import call_model, output_tensor, unwrap_model
from .base import Episode, MetaAlgorithm, MetaOutput, _as_tasks, check_episode, query_metrics
from .registry import register_algorithm

__all__ = ["EMBEDDINGS", "ProtoNet", "embed", "prototypes", "squared_euclidean"]

EMBEDDINGS = ("auto", "pooled", "cls", "mean", "logits", "output")
EmbeddingSpec = str | Callable[[nn.Module, Mapping[str, Tensor]], Tensor]


def squared_euclidean(a: Tensor, b: Tensor) -> Tensor:
    """``[n, d] x [m, d] -> [n, m]`` squared Euclidean distances (by differences: exact, no cancellation)."""
    return ((a.unsqueeze(1) - b.unsqueeze(0)) ** 2).sum(-1)


def prototypes(embeddings: Tensor, labels: Tensor, n_way: int | None = None) -> Tensor:
    """``[n_way, d]`` class means of ``embeddings`` (``[n, d]``) by integer ``labels`` 0..n_way-1."""
    n_way = int(labels.max().item()) + 1 if n_way is None else n_way
    onehot = F.one_hot(labels, n_way).to(embeddings.dtype)  # [n, N]
    counts = onehot.sum(0)
    if (counts == 0).any():
        empty = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"Classes {empty} have no support example: support labels must cover 0..{n_way - 1}.")
    return onehot.t() @ embeddings / counts.unsqueeze(1)


def _base_and_prefix(model: nn.Module) -> tuple[nn.Module, str]:
    """The transformers base model (``model.base_model``) below any PEFT wrapper, and its path in ``model``."""
    inner = unwrap_model(model)
    base = getattr(inner, "base_model", inner)
    if not isinstance(base, nn.Module):
        base = inner
    prefix = next((n for n, m in model.named_modules() if m is base), None)
    if prefix is None:
        raise ValueError(f"Cannot find the base model of {type(model).__name__} among its modules.")
    return base, prefix


def _resolve_embedding(model: nn.Module, how: str) -> str:
    if how != "auto":
        return how
    inner = unwrap_model(model)
    base = getattr(inner, "base_model", None)
    has_body = isinstance(base, nn.Module) and base is not inner  # e.g. Conv4: backbone + classifier
    return "hidden" if is_transformers_model(model) or has_body else "output"


def embed(
    model: nn.Module,
    inputs: Mapping[str, Tensor],
    how: EmbeddingSpec = "auto",
    params: Mapping[str, Tensor] | None = None,
) -> Tensor:
    """``[batch, d]`` embeddings of ``inputs``.

    ``how``: "pooled" (the base model's ``pooler_output``), "cls" (``last_hidden_state[:, 0]``), "mean"
    (attention-masked mean of ``last_hidden_state``), "logits"/"output" (the model's output itself, flattened: for
    plain backbones), a callable ``(model, inputs) -> tensor``, or "auto": "output" for plain modules without a body; for
    transformers models the pooler output when the base model has one, else the masked mean. Hidden states come from
    ``model.base_model`` (the head of a ``*ForSequenceClassification`` model is skipped; a plain module with a
    ``base_model`` body, like :class:`~hf_transfer_meta.meta.models.Conv4`, is embedded by it). ``params``: a parameter
    dict used instead of the model's own (``functional_call``; names as ``model.named_parameters()`` gives them).
    """
    if callable(how):
        return how(model, inputs)
    kind = _resolve_embedding(model, how.lower())
    if kind not in (*EMBEDDINGS, "hidden"):
        raise ValueError(
            f"Unknown embedding {how!r}: use one of {EMBEDDINGS} or a callable (model, inputs) -> [B, d]."
        )
    if kind in ("logits", "output"):
        return output_tensor(call_model(model, inputs, params)).flatten(1)

    base, prefix = _base_and_prefix(model)
    if params is not None and prefix:
        params = {n[len(prefix) + 1 :]: p for n, p in params.items() if n.startswith(prefix + ".")}
    out = call_model(base, inputs, params)
    pooled = out if isinstance(out, Tensor) and out.dim() == 2 else getattr(out, "pooler_output", None)
    if kind == "pooled" or (kind == "hidden" and pooled is not None):
        if pooled is None:
            raise ValueError(
                f"{type(base).__name__} returns no pooler_output: use embedding='cls' or 'mean' (or build the model "
                "with its pooling layer)."
            )
        return pooled.flatten(1)
    hidden = getattr(out, "last_hidden_state", None)
    if hidden is None:
        hidden = output_tensor(out)
    if hidden.dim() == 2:
        return hidden
    if hidden.dim() > 3:  # convolutional feature maps [B, C, H, W]: global average pool
        return hidden.flatten(2).mean(-1)
    if kind == "cls":
        return hidden[:, 0]
    mask = inputs.get("attention_mask")
    if mask is None:
        return hidden.mean(1)
    mask = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def _concatenable(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> bool:
    return set(a) == set(b) and all(a[k].shape[1:] == b[k].shape[1:] for k in a)


@register_algorithm("protonet")
class ProtoNet(MetaAlgorithm):
    """Prototypical Networks: negative squared Euclidean distance to class-mean prototypes as logits.

    Args:
        embedding: "auto", "pooled", "cls", "mean", "logits"/"output" or a callable ``(model, inputs) -> [B, d]``
            (see :func:`embed`).
        distance: "sqeuclidean" (the paper) or "cosine" (scaled by ``temperature``).
        temperature: multiplies the cosine similarities (ignored for "sqeuclidean").
    """

    second_order = False

    def __init__(self, embedding: EmbeddingSpec = "auto", distance: str = "sqeuclidean", temperature: float = 10.0):
        super().__init__()
        if isinstance(embedding, str) and embedding.lower() not in EMBEDDINGS:
            raise ValueError(f"Unknown embedding {embedding!r}: use one of {EMBEDDINGS} or a callable.")
        if distance not in ("sqeuclidean", "cosine"):
            raise ValueError(f"Unknown distance {distance!r}: use 'sqeuclidean' or 'cosine'.")
        self.embedding = embedding
        self.distance = distance
        self.temperature = temperature

    @classmethod
    def from_args(cls, args, model: nn.Module | None = None) -> ProtoNet:
        return cls(embedding=args.embedding, distance=args.protonet_distance, temperature=args.protonet_temperature)

    def logits_from_embeddings(self, support: Tensor, support_labels: Tensor, query: Tensor) -> Tensor:
        """``[n_query, n_way]`` logits: negative distances of the query embeddings to the support prototypes."""
        protos = prototypes(support, support_labels)
        if self.distance == "cosine":
            return self.temperature * F.normalize(query, dim=-1) @ F.normalize(protos, dim=-1).t()
        return -squared_euclidean(query, protos)

    def episode_logits(self, model: nn.Module, episode: Episode) -> Tensor:
        support, query = episode["support"], episode["query"]
        n_support = episode["support_labels"].shape[0]
        if _concatenable(support, query):
            z = embed(model, {k: torch.cat([support[k], query[k]]) for k in support}, self.embedding)
            zs, zq = z[:n_support], z[n_support:]
        else:
            zs, zq = embed(model, support, self.embedding), embed(model, query, self.embedding)
        return self.logits_from_embeddings(zs, episode["support_labels"], zq)

    def meta_loss(self, model: nn.Module, tasks: Sequence[Episode]) -> MetaOutput:
        tasks = _as_tasks(tasks)
        logits = [self.episode_logits(model, t) for t in tasks]
        labels = [t["query_labels"] for t in tasks]
        losses = torch.stack([F.cross_entropy(lg, y) for lg, y in zip(logits, labels)])
        detached = [lg.detach() for lg in logits]
        return MetaOutput(losses.mean(), query_metrics(losses, detached, labels), detached)

    def adapt_and_predict(
        self, model: nn.Module, episode: Episode, steps: int | None = None, lr: float | None = None
    ) -> Tensor:
        """Query logits from the support prototypes (``steps``/``lr`` are ignored: nothing is trained)."""
        check_episode(episode)
        with torch.no_grad():
            return self.episode_logits(model, episode)
