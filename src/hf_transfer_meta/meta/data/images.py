"""Images of the user's files for episodes: an image column cast to `datasets.Image` (paths resolved beside their
file), every image decoded once before training (a bad one is named by file and row), and the per-image inputs of
:class:`~hf_transfer_meta.meta.data.collator.EpisodeCollator` in one colour mode."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from PIL import Image

from .collator import to_pixel_values

__all__ = ["ImageProcessorInputs", "PixelValues", "as_image_column", "check_images", "image_mode", "to_pil"]

_ARRAYS = (datasets.Array2D, datasets.Array3D)
_GREY = ("1", "L", "LA", "I", "I;16", "F")


def as_image_column(
    dataset: datasets.Dataset, column: str, where: str, base_dir: str | Path | None = None
) -> datasets.Dataset:
    """``dataset`` with ``column`` as `datasets.Image` (lazily decoded). Accepts images already, ``{"bytes",
    "path"}`` structs (parquet written by `datasets`), or file paths (relative ones are taken from ``base_dir``, the
    folder of the file that names them). Fixed-shape arrays (``Array2D``/``Array3D``) are kept as they are."""
    feature = dataset.features[column]
    if isinstance(feature, (datasets.Image, *_ARRAYS)):
        return dataset
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        paths = dataset.with_format(None)[column][:]
        base = Path(base_dir) if base_dir is not None else Path.cwd()
        resolved = []
        for i, p in enumerate(paths):
            path = Path(p) if Path(p).is_absolute() else base / p
            if not path.is_file():
                raise ValueError(
                    f"{where}, row {i}: the image file {p!r} does not exist (relative paths are read from {base})."
                )
            resolved.append(str(path))
        dataset = dataset.add_column("__image_paths__", resolved).remove_columns(column)
        dataset = dataset.rename_column("__image_paths__", column)
    try:
        return dataset.cast_column(column, datasets.Image())
    except Exception as err:  # noqa: BLE001 - pyarrow / datasets raise several types
        raise ValueError(
            f"{where}: column {column!r} ({feature}) does not hold images (file paths, or {{bytes, path}} structs): "
            f"{type(err).__name__}: {err}"
        ) from None


def check_images(dataset: datasets.Dataset, column: str, where: str, batch_size: int = 512) -> None:
    """Decode every image of ``column`` once, so that a bad one stops the run before training, named by ``where``
    (the file or folder), its row and, when it has one, its path."""
    if not isinstance(dataset.features[column], datasets.Image):
        return
    raw = dataset.with_format(None).cast_column(column, datasets.Image(decode=False))
    for start in range(0, len(raw), batch_size):
        for offset, value in enumerate(raw[start : start + batch_size][column]):
            path = value.get("path") if isinstance(value, dict) else None
            data = value.get("bytes") if isinstance(value, dict) else None
            try:
                with Image.open(io.BytesIO(data) if data is not None else path) as image:
                    image.load()
            except Exception as err:  # noqa: BLE001 - PIL raises several types for bad data
                named = f" ({path})" if path else ""
                raise ValueError(
                    f"{where}, row {start + offset}{named}: the image cannot be decoded ({type(err).__name__}: "
                    f"{err}). Fix or drop that row."
                ) from None


def image_mode(image: Any) -> str:
    """``"L"`` for a single-channel image (PIL grey modes, 2-d arrays), else ``"RGB"``."""
    if isinstance(image, Image.Image):
        return "L" if image.mode in _GREY else "RGB"
    array = np.asarray(image)
    return "L" if array.ndim == 2 or (array.ndim == 3 and 1 in (array.shape[0], array.shape[-1])) else "RGB"


def to_pil(image: Any, mode: str) -> Image.Image:
    """A PIL image in ``mode`` from a PIL image or an array (float in ``[0, 1]``, or uint8), ``(H, W[, C])``."""
    if not isinstance(image, Image.Image):
        array = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        if array.dtype != np.uint8:
            array = (np.clip(array, 0.0, 1.0) * 255.0).round().astype(np.uint8)
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        image = Image.fromarray(array)
    return image if image.mode == mode else image.convert(mode)


@dataclass
class PixelValues:
    """``EpisodeCollator(transform=PixelValues("L", 28))``: each image in colour ``mode`` (PIL images converted;
    arrays and tensors kept), as a float ``[C, H, W]`` tensor resized to ``image_size``."""

    mode: str | None = None
    image_size: int | None = None

    def __call__(self, image: Any) -> torch.Tensor:
        if self.mode is not None and isinstance(image, Image.Image) and image.mode != self.mode:
            image = image.convert(self.mode)
        return to_pixel_values(image, self.image_size)


@dataclass
class ImageProcessorInputs:
    """An image processor for ``EpisodeCollator(processing_class=...)`` that first turns every image (PIL or array)
    into a PIL image in ``mode``: image processors expect the colour channels of their model."""

    processor: Any
    mode: str = "RGB"

    def __call__(self, images, return_tensors: str = "pt", **kwargs):
        return self.processor(images=[to_pil(im, self.mode) for im in images], return_tensors=return_tensors, **kwargs)
