"""The transfer baseline of the transfer-vs-meta comparison: fine-tune on each episode's support set.

Chen et al. 2019 ("A Closer Look at Few-shot Classification", Baseline): pre-train a backbone with ordinary
supervised learning, then for every test episode train a fresh N-way linear classifier on the frozen features of the
support set (their setting: 100 iterations, SGD lr 0.01, momentum 0.9, weight decay 0.001) and classify the query.
``train="all"`` fine-tunes the backbone too (on a copy of the parameters: the model is never modified).

Pre-training is not an episode loss, so ``meta_loss`` refuses: train the backbone with the transfer Trainer (or any
supervised loop) and use this class for evaluation only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..functional import buffers_copy
from .base import Episode, MetaAlgorithm, MetaOutput, check_episode
from .protonet import EMBEDDINGS, EmbeddingSpec, embed
from .registry import register_algorithm

__all__ = ["FineTuneBaseline"]


@register_algorithm("finetune")
class FineTuneBaseline(MetaAlgorithm):
    """Fresh linear head (and optionally the whole model) fine-tuned on the support set of each episode.

    Args:
        train: "head" (frozen features, linear probe) or "all" (backbone and head).
        steps / lr: optimisation steps (full support batch each) and learning rate; ``adapt_and_predict`` may
            override both.
        optimizer: "sgd" (with ``momentum``) or "adam".
        weight_decay: L2 weight decay of the optimizer.
        embedding: how features are taken from the model (see :func:`~hf_transfer_meta.meta.algorithms.protonet.embed`).
        normalize: L2-normalise the features before the head.
        seed: seeds the head initialisation, so repeated evaluations agree.
    """

    second_order = False

    def __init__(
        self,
        train: str = "head",
        steps: int = 100,
        lr: float = 0.01,
        optimizer: str = "sgd",
        momentum: float = 0.9,
        weight_decay: float = 1e-3,
        embedding: EmbeddingSpec = "auto",
        normalize: bool = False,
        seed: int = 0,
    ):
        super().__init__()
        if train not in ("head", "all"):
            raise ValueError(f"train={train!r}: use 'head' (linear probe on frozen features) or 'all'.")
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer={optimizer!r}: use 'sgd' or 'adam'.")
        if isinstance(embedding, str) and embedding.lower() not in EMBEDDINGS:
            raise ValueError(f"Unknown embedding {embedding!r}: use one of {EMBEDDINGS} or a callable.")
        self.train_what = train
        self.steps = int(steps)
        self.lr = float(lr)
        self.optimizer = optimizer
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.embedding = embedding
        self.normalize = normalize
        self.seed = seed

    def meta_loss(self, model: nn.Module, tasks: Sequence[Episode]) -> MetaOutput:
        raise TypeError(
            "FineTuneBaseline is an evaluation baseline with no episode loss: pre-train the backbone with ordinary supervised "
            "training (e.g. the transfer Trainer), then call FineTuneBaseline().adapt_and_predict(model, episode)."
        )

    def _features(self, model, inputs, params=None) -> Tensor:
        z = embed(model, inputs, self.embedding, params=params)
        return F.normalize(z, dim=-1) if self.normalize else z

    def _new_head(self, dim: int, n_way: int, like: Tensor) -> nn.Linear:
        head = nn.Linear(dim, n_way).to(device=like.device, dtype=like.dtype)
        g = torch.Generator().manual_seed(self.seed)
        bound = 1.0 / math.sqrt(dim)
        with torch.no_grad():
            head.weight.copy_(torch.rand(n_way, dim, generator=g, dtype=like.dtype) * 2 * bound - bound)
            head.bias.zero_()
        return head

    def _make_optimizer(self, params, lr: float) -> torch.optim.Optimizer:
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(params, lr=lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def adapt_and_predict(
        self, model: nn.Module, episode: Episode, steps: int | None = None, lr: float | None = None
    ) -> Tensor:
        """Query logits ``[n_query, n_way]`` of a head trained for ``steps`` steps on the support set."""
        check_episode(episode)
        steps = self.steps if steps is None else int(steps)
        lr = self.lr if lr is None else float(lr)
        ys = episode["support_labels"]
        n_way = int(ys.max().item()) + 1
        with torch.enable_grad():  # evaluators often run under no_grad
            if self.train_what == "head":
                with torch.no_grad():
                    zs = self._features(model, episode["support"])
                    zq = self._features(model, episode["query"])
                head = self._new_head(zs.shape[-1], n_way, zs)
                opt = self._make_optimizer(head.parameters(), lr)
                for _ in range(steps):
                    opt.zero_grad()
                    F.cross_entropy(head(zs), ys).backward()
                    opt.step()
                with torch.no_grad():
                    return head(zq)

            params = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
            state = {**params, **buffers_copy(model)}
            with torch.no_grad():
                dim = self._features(model, episode["support"], state).shape[-1]
            head = self._new_head(dim, n_way, next(iter(params.values())))
            opt = self._make_optimizer([*params.values(), *head.parameters()], lr)
            for _ in range(steps):
                opt.zero_grad()
                F.cross_entropy(head(self._features(model, episode["support"], state)), ys).backward()
                opt.step()
            with torch.no_grad():
                return head(self._features(model, episode["query"], state))
