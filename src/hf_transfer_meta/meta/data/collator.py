"""Collate raw episodes of :class:`~hf_transfer_meta.meta.data.episodes.EpisodeDataset` into tensors: tokenising
text per episode (padded to the longest example of the episode) or stacking images into ``pixel_values``.

A collated episode is::

    {"support": {input name: tensor [N*K, ...]}, "support_labels": LongTensor [N*K] (values 0..N-1),
     "query": {input name: tensor [N*Q, ...]}, "query_labels": LongTensor [N*Q]}

and a batch ``{"tasks": [episode, ...]}`` is what ``MetaTrainer`` hands the algorithm.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["EpisodeCollator", "to_pixel_values"]


def to_pixel_values(image: Any, image_size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """One image as a float tensor ``[C, H, W]`` in ``[0, 1]``; a single channel stays single.

    PIL images and ``uint8`` arrays are scaled by 1/255, boolean images become 0/1, float arrays are kept as they
    are (assumed in ``[0, 1]`` already). Numpy arrays are ``(H, W)`` or ``(H, W, C)``; tensors ``(H, W)`` or
    ``(C, H, W)``. ``image_size`` resizes bilinearly with antialiasing.
    """
    if isinstance(image, Image.Image):
        if image.mode not in ("1", "L", "F", "I;16", "RGB", "RGBA"):
            image = image.convert("RGB")
        image = np.asarray(image)
    if isinstance(image, torch.Tensor):
        x = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
        channels_last = False
    else:
        array = np.asarray(image)
        if array.dtype == np.uint8:
            array = array.astype(np.float32) / 255.0
        elif array.dtype == np.uint16:  # PIL "I;16"
            array = array.astype(np.float32) / 65535.0
        x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        channels_last = x.ndim == 3
    if x.ndim == 2:
        x = x.unsqueeze(0)
    elif channels_last:
        x = x.permute(2, 0, 1)
    if x.ndim != 3:
        raise ValueError(f"Expected an image of shape (H, W), (H, W, C) or (C, H, W); got {tuple(x.shape)}.")
    if image_size is not None:
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    return x.contiguous()


def _is_tokenizer(processing_class: Any) -> bool:
    from transformers import PreTrainedTokenizerBase

    return isinstance(processing_class, PreTrainedTokenizerBase)


@dataclass
class EpisodeCollator:
    """Collate raw episodes from :class:`EpisodeDataset` into ``{"tasks": [episode, ...]}`` of tensors.

    Args:
        processing_class: a tokenizer for text (each episode's support and query sets are tokenised together and
            padded to the longest example of the episode), or a transformers image processor (called as
            ``processing_class(images=[...], return_tensors="pt")``); ``None`` for images through ``transform``.
        input_column: the raw column holding the model input; default ``"text"`` with a tokenizer, else
            ``"image"``. Rows already tokenised (an ``input_ids`` column, no ``input_column``) are padded with
            ``processing_class.pad``.
        transform: ``image -> FloatTensor[C, H, W]`` for each image when there is no image processor; default
            :func:`to_pixel_values` (float in ``[0, 1]``, channels kept, resized to ``image_size`` if given).
        image_size: resize for the default transform (an int or ``(H, W)``).
        max_length / truncation / pad_to_multiple_of: forwarded to the tokenizer.
        input_name: the model input name for images through ``transform`` (default ``"pixel_values"``).

    Episodes that are already in tensor form (``support`` is a dict, e.g. sinusoid tasks) pass through unchanged.
    """

    processing_class: Any = None
    input_column: str | None = None
    transform: Callable[[Any], torch.Tensor] | None = None
    image_size: int | tuple[int, int] | None = None
    max_length: int | None = None
    truncation: bool = True
    pad_to_multiple_of: int | None = None
    input_name: str = "pixel_values"

    def __post_init__(self):
        self._text = _is_tokenizer(self.processing_class)
        if self.input_column is None:
            self.input_column = "text" if self._text else "image"

    def __call__(self, episodes: Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        return {"tasks": [self.collate_episode(e) for e in episodes]}

    def collate_episode(self, episode: Mapping[str, Any]) -> dict[str, Any]:
        """One raw episode -> ``{"support": {...}, "support_labels", "query": {...}, "query_labels"}``."""
        if isinstance(episode["support"], Mapping):
            return episode
        support, query = list(episode["support"]), list(episode["query"])
        inputs = self._encode(support + query)
        n = len(support)
        return {
            "support": {k: v[:n] for k, v in inputs.items()},
            "support_labels": torch.as_tensor(episode["support_labels"], dtype=torch.long),
            "query": {k: v[n:] for k, v in inputs.items()},
            "query_labels": torch.as_tensor(episode["query_labels"], dtype=torch.long),
        }

    def _values(self, examples: list[Mapping[str, Any]]) -> list[Any]:
        try:
            return [ex[self.input_column] for ex in examples]
        except KeyError:
            raise KeyError(
                f"input_column={self.input_column!r} is not in the episode's rows (keys: {sorted(examples[0])}). "
                "Pass EpisodeCollator(input_column=<the text or image column>)."
            ) from None

    def _encode(self, examples: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if self._text:
            tokenizer = self.processing_class
            if self.input_column not in examples[0] and "input_ids" in examples[0]:
                names = [k for k in tokenizer.model_input_names if k in examples[0]]
                features = [{k: ex[k] for k in names} for ex in examples]
                return dict(tokenizer.pad(features, pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt"))
            return dict(
                tokenizer(
                    [str(t) for t in self._values(examples)],
                    padding=True,  # to the longest example of this episode
                    truncation=self.truncation,
                    max_length=self.max_length,
                    pad_to_multiple_of=self.pad_to_multiple_of,
                    return_tensors="pt",
                )
            )
        images = self._values(examples)
        if self.processing_class is not None:
            return dict(self.processing_class(images=images, return_tensors="pt"))
        transform = self.transform or (lambda im: to_pixel_values(im, self.image_size))
        tensors = [transform(im) for im in images]
        try:
            return {self.input_name: torch.stack(tensors)}
        except RuntimeError as e:
            shapes = sorted({tuple(t.shape) for t in tensors})
            raise ValueError(
                f"The images of an episode have different shapes {shapes}: pass EpisodeCollator(image_size=...) "
                "or a transform that resizes."
            ) from e
