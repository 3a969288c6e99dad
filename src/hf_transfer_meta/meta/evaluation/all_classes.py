"""The deployment case of few-shot classification: C-way K-shot over **every** test class at once.

An N-way episode asks "which of these 5 intents?"; a user with five examples of each of their 30 intents asks "which
of my 30?". Here every class of the test split gets ``K`` support examples (its prototype: their mean embedding, as
ProtoNets do, Snell et al. 2017), and every other example of those classes is a query (or up to ``n_query`` per
class), classified by its nearest prototype. The support sets are drawn again ``draws`` times (seeded by
``(seed, draw)``); the accuracy of a draw is the fraction of its queries classified right, and the report is the
mean over draws with the package's 95% CI (:func:`~hf_transfer_meta.meta.evaluation.few_shot.mean_ci95`), which here
measures how much the result depends on *which* K examples the user has.

The model does not adapt (ProtoNet), so each example is embedded once and the draws only re-index the embeddings.
Embeddings are computed in batches of rows taken in a seeded random order: a model that normalises with batch
statistics (Conv4's default BatchNorm) then sees batches of mixed classes, as in an episode.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..algorithms.protonet import ProtoNet, embed
from .few_shot import mean_ci95

__all__ = ["AllClassesEvaluation", "all_classes_accuracy", "embed_rows", "evaluate_all_classes", "meta_test_metrics"]


@dataclass
class AllClassesEvaluation:
    """Per-draw accuracies of :func:`all_classes_accuracy`, and the first draw's predictions.

    ``classes``: the class values, in the order of the predicted ids; ``query_rows`` / ``query_labels`` /
    ``predictions`` (first draw): the dataset rows that were queries, their class ids and the predicted ids;
    ``support_rows``: the first draw's support rows.
    """

    accuracies: np.ndarray
    classes: list
    k_shot: int
    queries_per_draw: int
    support_rows: np.ndarray
    query_rows: np.ndarray
    query_labels: np.ndarray
    predictions: np.ndarray

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def metrics(self, prefix: str = "eval_all_classes") -> dict[str, float]:
        """``{prefix}_accuracy``, ``_accuracy_ci95``, ``_num_classes``, ``_k_shot``, ``_draws``, ``_queries``."""
        mean, ci95 = mean_ci95(self.accuracies)
        return {
            f"{prefix}_accuracy": mean,
            f"{prefix}_accuracy_ci95": ci95,
            f"{prefix}_num_classes": self.num_classes,
            f"{prefix}_k_shot": self.k_shot,
            f"{prefix}_draws": len(self.accuracies),
            f"{prefix}_queries": self.queries_per_draw,
        }


def _rows_by_class(labels: Sequence) -> tuple[list, list[np.ndarray]]:
    values = np.asarray(labels)
    classes, inverse = np.unique(values, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    rows = np.split(order, np.cumsum(np.bincount(inverse, minlength=len(classes)))[:-1])
    return [c.item() for c in classes], rows


def all_classes_accuracy(
    embeddings: Tensor,
    labels: Sequence,
    k_shot: int,
    draws: int = 600,
    seed: int = 0,
    n_query: int | None = None,
    classify: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None,
    chunk_size: int = 1024,
) -> AllClassesEvaluation:
    """C-way ``k_shot`` accuracy over every class of ``labels``, from one embedding per row (``[rows, d]``).

    ``n_query``: queries per class and draw (default: every row that is not a support example). ``classify``:
    ``(support embeddings, support labels 0..C-1, query embeddings) -> logits [queries, C]``; default ProtoNet's
    negative squared Euclidean distance to the class means. Queries are scored ``chunk_size`` at a time.
    """
    if k_shot < 1 or draws < 1 or (n_query is not None and n_query < 1):
        raise ValueError(f"k_shot={k_shot}, draws={draws}, n_query={n_query}: each must be >= 1.")
    if len(labels) != len(embeddings):
        raise ValueError(f"{len(labels)} labels for {len(embeddings)} embeddings: give one label per row.")
    classes, rows = _rows_by_class(labels)
    sizes = np.array([len(r) for r in rows])
    short = np.flatnonzero(sizes < k_shot + 1)
    if len(short):
        listed = ", ".join(f"{classes[i]!r} has {sizes[i]}" for i in short[:5])
        raise ValueError(
            f"Scoring every class needs k_shot={k_shot} support examples and at least one query per class: class "
            f"{listed}{' (and more)' if len(short) > 5 else ''}. Lower k_shot or drop the small classes."
        )
    classify = classify or ProtoNet().logits_from_embeddings
    embeddings = embeddings.float()
    device = embeddings.device
    accuracies, first = [], None
    for draw in range(draws):
        rng = np.random.default_rng([seed, draw])
        support, query, query_labels = [], [], []
        for c, class_rows in enumerate(rows):
            picked = rng.permutation(class_rows)
            support.append(picked[:k_shot])
            rest = picked[k_shot:] if n_query is None else picked[k_shot : k_shot + n_query]
            query.append(rest)
            query_labels.append(np.full(len(rest), c))
        support_rows, query_rows = np.concatenate(support), np.concatenate(query)
        yq = np.concatenate(query_labels)
        zs = embeddings[torch.as_tensor(support_rows, device=device)]
        ys = torch.arange(len(rows), device=device).repeat_interleave(k_shot)
        zq = embeddings[torch.as_tensor(query_rows, device=device)]
        with torch.no_grad():
            predicted = torch.cat([classify(zs, ys, chunk).argmax(-1) for chunk in zq.split(chunk_size)]).cpu().numpy()
        accuracies.append(float((predicted == yq).mean()))
        if first is None:
            first = (support_rows, query_rows, yq, predicted)
    return AllClassesEvaluation(np.asarray(accuracies), classes, k_shot, len(first[1]), *first)


def embed_rows(
    model: nn.Module,
    dataset,
    encode: Callable[[list[Mapping[str, Any]]], Mapping[str, Tensor]],
    embedding: Any = "auto",
    batch_size: int = 64,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> Tensor:
    """``[len(dataset), d]`` embeddings of every row of ``dataset`` (a `datasets.Dataset`), in row order.

    ``encode``: a list of row dicts -> model inputs (e.g. ``lambda rows: collator.collate_episode({"support": rows,
    ...})["support"]``). Rows go through the model ``batch_size`` at a time in a seeded random order (see the module
    docstring), in eval mode (restored afterwards), without gradients.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    order = np.random.default_rng(seed).permutation(len(dataset))
    out: Tensor | None = None
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                batch = dataset[rows.tolist()]
                examples = [{k: v[j] for k, v in batch.items()} for j in range(len(rows))]
                inputs = {k: v.to(device) for k, v in encode(examples).items()}
                z = embed(model, inputs, embedding).float()
                if out is None:
                    out = torch.empty(len(dataset), z.shape[-1], device=device)
                out[torch.as_tensor(rows, device=device)] = z
    finally:
        model.train(was_training)
    return out


def evaluate_all_classes(
    algorithm: nn.Module,
    model: nn.Module,
    dataset,
    encode: Callable[[list[Mapping[str, Any]]], Mapping[str, Tensor]],
    label_column: str = "label",
    k_shots: Sequence[int] = (5,),
    draws: int = 600,
    seed: int = 0,
    n_query: int | None = None,
    batch_size: int = 64,
    device: torch.device | str | None = None,
) -> dict[int, AllClassesEvaluation]:
    """``{K: evaluation}`` of C-way K-shot over every class of ``dataset``, for each K of ``k_shots``: rows are
    embedded once (:func:`embed_rows`) and scored by ``algorithm``'s prototypes (:func:`all_classes_accuracy`).

    ``algorithm`` must be :class:`~hf_transfer_meta.meta.algorithms.protonet.ProtoNet`: the MAML family adapts an
    N-way head, which has no C-way counterpart for all the classes at once.
    """
    if not isinstance(algorithm, ProtoNet):
        raise ValueError(
            f"Scoring every test class at once needs nearest-prototype classification (algorithm protonet); "
            f"{type(algorithm).__name__} adapts an N-way head, which cannot score all the classes at once. Evaluate "
            "it with N-way episodes, or evaluate its encoder with algorithm protonet."
        )
    labels = dataset.with_format(None)[label_column][:]
    _, rows = _rows_by_class(labels)
    smallest = min(len(r) for r in rows)
    too_big = [k for k in k_shots if k + 1 > smallest]
    if too_big:  # checked before the (slow) embedding
        all_classes_accuracy(torch.zeros(len(labels), 1), labels, max(too_big), draws=1)
    embeddings = embed_rows(model, dataset, encode, algorithm.embedding, batch_size, seed, device)
    return {
        k: all_classes_accuracy(embeddings, labels, k, draws, seed, n_query, algorithm.logits_from_embeddings)
        for k in k_shots
    }


def meta_test_metrics(
    trainer, episodes: Mapping[int, Any], main_k: int, all_classes: Mapping[int, AllClassesEvaluation] | None = None
) -> dict[str, Any]:
    """The final meta-test of the few-shot recipes, as ``all_results.json`` keeps it.

    ``eval_*`` is ``trainer.evaluate`` on the ``main_k``-shot test episodes; every K of ``episodes`` adds
    ``eval_{K}shot_accuracy`` and its ``_ci95``; ``all_classes`` (K -> :func:`evaluate_all_classes`' result) adds
    ``eval_all_classes_*`` for ``main_k`` and ``eval_all_classes_{K}shot_accuracy`` / ``_ci95`` for the others.
    """
    kept = ("_accuracy", "_accuracy_ci95")
    metrics = trainer.evaluate(episodes[main_k], metric_key_prefix="eval")
    for k in episodes:
        if k == main_k:
            part = {key.replace("eval_", f"eval_{k}shot_", 1): v for key, v in metrics.items()}
        else:
            part = trainer.evaluate(episodes[k], metric_key_prefix=f"eval_{k}shot")
        metrics.update({key: v for key, v in part.items() if key.endswith(kept)})
    if all_classes:
        metrics.update(all_classes[main_k].metrics("eval_all_classes"))
        for k, run in all_classes.items():
            if k != main_k:
                part = run.metrics(f"eval_all_classes_{k}shot")
                metrics.update({key: v for key, v in part.items() if key.endswith(kept)})
    return metrics
