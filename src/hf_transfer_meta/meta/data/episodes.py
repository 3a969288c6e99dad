"""N-way K-shot episodes from any labelled ``datasets.Dataset``, in the project's shared episode format.

An episode (Vinyals et al. 2016, "Matching Networks for One Shot Learning") samples ``N`` classes, then ``K``
support and ``Q`` query examples of each; the labels are remapped to ``0..N-1`` in the episode. Two pieces, like a
``datasets.Dataset`` and a transformers data collator:

* :class:`EpisodeDataset` is map-style: item ``i`` is a *raw* episode (lists of dataset rows) drawn from an RNG
  seeded by ``(seed, i)`` alone, so every DDP rank, every DataLoader worker and every run sees the same episode
  ``i``, whatever the access order or the global RNG state.
* :class:`~hf_transfer_meta.meta.data.collator.EpisodeCollator` turns a list of raw episodes into
  ``{"tasks": [episode, ...]}``, tokenising text per episode or stacking images into ``pixel_values``.

Examples are ordered class by class (class 0's K shots, then class 1's, ...). With ``Trainer``, the collator's
``{"tasks": [...]}`` is the model input (``_prepare_inputs`` moves the nested tensors to the device), so
``per_device_train_batch_size`` is the number of episodes per device and step (the meta-batch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
import torch
from PIL import Image

__all__ = ["EpisodeDataset", "EpisodePlan", "rotate_image"]

_ARRAY_FEATURES = (datasets.Array2D, datasets.Array3D, datasets.Array4D, datasets.Array5D)
_PIL_ROTATIONS = {1: Image.Transpose.ROTATE_90, 2: Image.Transpose.ROTATE_180, 3: Image.Transpose.ROTATE_270}


def rotate_image(image: Any, quarter_turns: int) -> Any:
    """Rotate an image counter-clockwise by ``90 * quarter_turns`` degrees, keeping its type.

    PIL images and numpy arrays / nested lists in ``(H, W)`` or ``(H, W, C)`` layout (what ``np.asarray(pil_image)``
    gives) turn like ``np.rot90(x, k)``; torch tensors are taken as ``(..., H, W)`` (``(C, H, W)``) and turn like
    ``torch.rot90(x, k, dims=(-2, -1))``.
    """
    k = quarter_turns % 4
    if k == 0:
        return image
    if isinstance(image, Image.Image):
        return image.transpose(_PIL_ROTATIONS[k])
    if isinstance(image, torch.Tensor):
        return torch.rot90(image, k, dims=(-2, -1))
    # copy: np.rot90 returns a negative-stride view, which torch.from_numpy rejects.
    return np.rot90(np.asarray(image), k, axes=(0, 1)).copy()


@dataclass(frozen=True)
class EpisodePlan:
    """Which rows make episode ``index``: its classes (in label order 0..N-1) and the dataset rows of each class.

    ``rotations[c]`` is the rotation in degrees of episode class ``c`` (0 when rotations are not used);
    ``support_rows[c]`` / ``query_rows[c]`` are the ``K`` / ``Q`` dataset row indices of class ``c``.
    """

    index: int
    classes: tuple
    rotations: tuple[int, ...]
    support_rows: tuple[tuple[int, ...], ...]
    query_rows: tuple[tuple[int, ...], ...]


class EpisodeDataset(torch.utils.data.Dataset):
    """Map-style dataset of N-way K-shot episodes; item ``i`` is deterministic in ``(seed, i)``.

    Args:
        dataset: a ``datasets.Dataset`` with one row per example and a label column. Split it into class-disjoint
            meta-train / validation / test sets first (:func:`~hf_transfer_meta.meta.data.splits.split_classes`).
        n_way: classes per episode (N).
        k_shot: support examples per class (K).
        n_query: query examples per class (Q).
        label_column: the column holding each example's class.
        num_episodes: the length of the dataset. Episodes are drawn lazily, so a large value (e.g. ``max_steps *
            meta-batch size``) costs nothing and gives fresh episodes throughout training.
        seed: a non-negative integer; item ``i`` depends on ``(seed, i)`` only. Use a different seed (and
            different classes) for evaluation.
        rotations: rotations in degrees (multiples of 90), e.g. ``(0, 90, 180, 270)``: each rotation of each class
            is a class of its own (the Omniglot convention of Santoro et al. 2016 / Vinyals et al. 2016, used by MAML
            and ProtoNets), so the class pool is ``classes x len(rotations)``. Every image of a chosen class gets
            that class's rotation.
        image_column: the column that ``rotations`` turn (PIL images, ``(H, W[, C])`` arrays or ``(C, H, W)``
            tensors).
        transform: optional ``example dict -> example dict`` applied to every row after rotation (feature
            extraction, augmentation). It runs in the DataLoader workers; a random transform should draw from
            its own seeded RNG if ranks must agree.
        fixed: compute the plans (classes and rows) of all ``num_episodes`` episodes once, at construction: the
            evaluation mode, e.g. 600 test episodes read many times. The episodes are the same as with
            ``fixed=False`` and the same seed (both are a function of ``(seed, i)``); fixed mode only stores them.
        max_in_memory_bytes: fixed-shape array columns (``Array2D``..``Array5D``, e.g. 28x28 Omniglot images) up to
            this size are read into memory once, as numpy, since reading rows through Arrow's extension types is
            slow (benchmarks/README.md). Set 0 to always read through Arrow.

    Item ``i`` is a raw episode: ``{"support": [row dicts], "support_labels": [ints], "query": [row dicts],
    "query_labels": [ints], "classes": [original labels], "rotations": [degrees], "index": i}``;
    :class:`EpisodeCollator` turns it into tensors.

    Raises:
        ValueError: ``n_way`` exceeds the number of classes (times rotations), or a class has fewer than
            ``k_shot + n_query`` examples; both are checked here, not at the first ``__getitem__``.
    """

    def __init__(
        self,
        dataset: datasets.Dataset,
        n_way: int = 5,
        k_shot: int = 1,
        n_query: int = 15,
        label_column: str = "label",
        num_episodes: int = 1000,
        seed: int = 0,
        rotations: Sequence[int] | None = None,
        image_column: str = "image",
        transform: Callable[[dict], dict] | None = None,
        fixed: bool = False,
        max_in_memory_bytes: int = 1 << 30,
    ):
        if not isinstance(dataset, datasets.Dataset):
            raise TypeError(
                f"EpisodeDataset takes a datasets.Dataset, not {type(dataset).__name__}: build one with "
                "datasets.Dataset.from_dict({...}) or from_list([...])."
            )
        for name, value, minimum in (("n_way", n_way, 1), ("k_shot", k_shot, 1), ("n_query", n_query, 1)):
            if int(value) != value or value < minimum:
                raise ValueError(f"{name}={value!r} must be an integer >= {minimum}.")
        if int(num_episodes) != num_episodes or num_episodes < 1:
            raise ValueError(f"num_episodes={num_episodes!r} must be an integer >= 1.")
        if int(seed) != seed or seed < 0:
            raise ValueError(f"seed={seed!r} must be a non-negative integer (it seeds numpy's SeedSequence).")
        if label_column not in dataset.column_names:
            raise ValueError(
                f"label_column={label_column!r} is not a column of the dataset; its columns are {dataset.column_names}."
            )
        self.n_way, self.k_shot, self.n_query = int(n_way), int(k_shot), int(n_query)
        self.label_column = label_column
        self.num_episodes = int(num_episodes)
        self.seed = int(seed)
        self.image_column = image_column
        self.transform = transform
        self.fixed = bool(fixed)

        self.rotations = self._check_rotations(rotations)
        if self.rotations != (0,) and image_column not in dataset.column_names:
            raise ValueError(
                f"rotations={list(self.rotations)} turn the column image_column={image_column!r}, which the dataset "
                f"lacks (columns: {dataset.column_names}). Pass image_column=<the image column>."
            )

        # Index the rows of every class once: __getitem__ then only draws integers.
        labels = np.asarray(dataset.with_format(None)[label_column][:])
        if len(labels) == 0:
            raise ValueError("The dataset is empty: an episode needs at least n_way classes.")
        self.classes, inverse = np.unique(labels, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        counts = np.bincount(inverse, minlength=len(self.classes))
        self.class_rows: list[np.ndarray] = np.split(order, np.cumsum(counts)[:-1])
        self._check_sizes(counts)

        self._rows, self._arrays = self._row_reader(dataset, max_in_memory_bytes)
        self._column_order = {k: i for i, k in enumerate(dataset.column_names)}

        self._plans = [self._draw_plan(i) for i in range(self.num_episodes)] if self.fixed else None

    @staticmethod
    def _row_reader(dataset: datasets.Dataset, max_bytes: int) -> tuple[datasets.Dataset, dict[str, np.ndarray]]:
        """The dataset to read rows from, and the array columns held in memory as numpy."""
        fmt = dataset.format
        arrays = [k for k, f in dataset.features.items() if isinstance(f, _ARRAY_FEATURES)]
        # Only take over array columns when the caller's format is plain, or numpy on the array columns alone (the
        # loaders of meta/data/): any other format (torch, a set_transform) is respected as it is.
        plain = fmt["type"] is None or (
            fmt["type"] == "numpy" and fmt["output_all_columns"] and set(fmt["columns"] or []) <= set(arrays)
        )
        if not arrays or not plain:
            return dataset, {}
        in_memory = {}
        for column in arrays:
            feature = dataset.features[column]
            size = len(dataset) * int(np.prod(feature.shape)) * np.dtype(feature.dtype).itemsize
            if size <= max_bytes:
                in_memory[column] = dataset.with_format("numpy", columns=[column])[column][:]
        rest = [k for k in dataset.column_names if k not in in_memory]
        reader = dataset.select_columns(rest).with_format(None)
        still_arrays = [k for k in arrays if k not in in_memory]
        if still_arrays:  # too large for memory: numpy through Arrow rather than nested lists
            reader = reader.with_format("numpy", columns=still_arrays, output_all_columns=True)
        return reader, in_memory

    @staticmethod
    def _check_rotations(rotations: Sequence[int] | None) -> tuple[int, ...]:
        if rotations is None or len(rotations) == 0:
            return (0,)
        degrees = tuple(int(r) % 360 for r in rotations)
        if any(d % 90 for d in degrees) or len(set(degrees)) != len(degrees):
            raise ValueError(
                f"rotations={list(rotations)} must be distinct multiples of 90 degrees, e.g. (0, 90, 180, 270)."
            )
        return degrees

    @property
    def num_classes(self) -> int:
        """Size of the class pool episodes draw from: dataset classes x rotations."""
        return len(self.classes) * len(self.rotations)

    def _check_sizes(self, counts: np.ndarray) -> None:
        if self.n_way > self.num_classes:
            pool = f"{len(self.classes)} classes in column {self.label_column!r}"
            if len(self.rotations) > 1:
                pool += f" x {len(self.rotations)} rotations = {self.num_classes}"
            raise ValueError(
                f"n_way={self.n_way} but the dataset has only {pool}. Lower n_way, use more classes"
                + ("" if len(self.rotations) > 1 else ", or add rotations=(0, 90, 180, 270) for image data")
                + "."
            )
        needed = self.k_shot + self.n_query
        small = np.flatnonzero(counts < needed)
        if len(small):
            values = [self.classes[c].item() for c in small]
            listed = ", ".join(f"class {v!r} has {counts[c]}" for v, c in zip(values[:5], small[:5]))
            more = f" (and {len(small) - 5} more classes)" if len(small) > 5 else ""
            raise ValueError(
                f"Too few examples: {listed}{more}, but k_shot={self.k_shot} + n_query={self.n_query} = {needed} are "
                f"drawn from every class of an episode. Lower k_shot/n_query, or drop the small classes first, e.g. "
                f"dataset.filter(lambda x: x[{self.label_column!r}] not in {values[:10]}"
                f"{' | ...' if len(values) > 10 else ''})."
            )

    def __len__(self) -> int:
        return self.num_episodes

    def _draw_plan(self, index: int) -> EpisodePlan:
        # The RNG depends on (seed, index) only: no global state, rank, worker id or call order.
        rng = np.random.default_rng([self.seed, index])
        n_rot = len(self.rotations)
        pool_ids = rng.choice(self.num_classes, size=self.n_way, replace=False)
        classes, rotations, support, query = [], [], [], []
        for pool_id in pool_ids:
            c, r = divmod(int(pool_id), n_rot)
            rows = rng.choice(self.class_rows[c], size=self.k_shot + self.n_query, replace=False)
            classes.append(self.classes[c].item())  # a Python int / str, not a numpy scalar
            rotations.append(self.rotations[r])
            support.append(tuple(int(x) for x in rows[: self.k_shot]))
            query.append(tuple(int(x) for x in rows[self.k_shot :]))
        return EpisodePlan(index, tuple(classes), tuple(rotations), tuple(support), tuple(query))

    def plan(self, index: int) -> EpisodePlan:
        """The classes and dataset rows of episode ``index`` (without reading the rows)."""
        if index < 0:
            index += self.num_episodes
        if not 0 <= index < self.num_episodes:
            raise IndexError(f"episode index {index} is out of range for {self.num_episodes} episodes.")
        return self._plans[index] if self._plans is not None else self._draw_plan(index)

    def _read(self, rows_per_class: Sequence[Sequence[int]], rotations: Sequence[int]) -> list[dict]:
        flat = [row for rows in rows_per_class for row in rows]
        batch = self._rows[flat]  # one Arrow take for the whole support (or query) set
        for column, values in self._arrays.items():
            batch[column] = values[flat]
        keys = sorted(batch, key=lambda k: self._column_order.get(k, len(self._column_order)))  # the dataset's order
        examples = [{k: batch[k][j] for k in keys} for j in range(len(flat))]
        j = 0
        for rows, degrees in zip(rows_per_class, rotations):
            for _ in rows:
                if degrees:
                    examples[j][self.image_column] = rotate_image(examples[j][self.image_column], degrees // 90)
                if self.transform is not None:
                    examples[j] = self.transform(examples[j])
                j += 1
        return examples

    def __getitem__(self, index: int) -> dict[str, Any]:
        plan = self.plan(int(index))
        return {
            "support": self._read(plan.support_rows, plan.rotations),
            "support_labels": [c for c in range(self.n_way) for _ in range(self.k_shot)],
            "query": self._read(plan.query_rows, plan.rotations),
            "query_labels": [c for c in range(self.n_way) for _ in range(self.n_query)],
            "classes": list(plan.classes),
            "rotations": list(plan.rotations),
            "index": plan.index,
        }

    def __repr__(self) -> str:
        rot = f", rotations={list(self.rotations)}" if len(self.rotations) > 1 else ""
        return (
            f"{type(self).__name__}(n_way={self.n_way}, k_shot={self.k_shot}, n_query={self.n_query}, "
            f"num_episodes={self.num_episodes}, seed={self.seed}, classes={len(self.classes)}{rot}, fixed={self.fixed})"
        )
