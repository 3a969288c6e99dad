"""Image augmentation for meta-training episodes: a random affine warp per image, as an ``EpisodeDataset`` transform.

Few-shot image benchmarks with few training classes overfit them (benchmarks/README.md shows it on Omniglot); small
random rotations, shifts and scalings of each training image are the usual remedy. Only meta-*training* episodes should be
augmented: test episodes stay fixed.

``RandomAffine`` needs no torchvision: it warps with ``affine_grid``/``grid_sample`` (bilinear, zeros outside, which
is the background of Omniglot's inverted strokes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .collator import to_pixel_values

__all__ = ["RandomAffine", "affine_warp"]


def affine_warp(
    image: torch.Tensor, degrees: float = 0.0, translate: tuple[float, float] = (0.0, 0.0), scale: float = 1.0
) -> torch.Tensor:
    """``[C, H, W]`` image rotated by ``degrees`` (counter-clockwise) and scaled by ``scale`` about its centre, then
    shifted by ``translate`` pixels (x right, y down); bilinear, zeros outside the image."""
    if scale <= 0:
        raise ValueError(f"scale={scale} must be > 0.")
    _, h, w = image.shape
    a = -math.radians(degrees)  # positive = counter-clockwise as displayed (rows down), like torch.rot90(k=1)
    cos, sin = math.cos(a) / scale, math.sin(a) / scale
    # affine_grid maps output coordinates (normalised to [-1, 1]) to input ones: the inverse of the warp.
    tx, ty = 2.0 * translate[0] / w, 2.0 * translate[1] / h
    theta = torch.tensor(
        [[cos, sin * h / w, -(cos * tx + sin * h / w * ty)], [-sin * w / h, cos, -(-sin * w / h * tx + cos * ty)]],
        dtype=image.dtype,
    )
    grid = F.affine_grid(theta[None], [1, *image.shape], align_corners=False)
    return F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]


class RandomAffine:
    """``EpisodeDataset(transform=RandomAffine())``: each image of an example gets its own random rotation in
    ``[-degrees, degrees]``, shift up to ``translate`` x its size on each axis, and scale in ``scale``.

    The random stream is seeded by ``seed`` and the DataLoader worker id, so runs repeat and workers differ. The
    image comes back as a float ``[C, H, W]`` tensor (what ``EpisodeCollator`` stacks).
    """

    def __init__(
        self,
        degrees: float = 10.0,
        translate: float = 0.1,
        scale: tuple[float, float] = (0.9, 1.1),
        image_column: str = "image",
        seed: int = 0,
    ):
        if degrees < 0 or not 0 <= translate < 1 or not 0 < scale[0] <= scale[1]:
            raise ValueError(
                f"RandomAffine(degrees={degrees}, translate={translate}, scale={scale}): need degrees >= 0, "
                "0 <= translate < 1 and 0 < scale[0] <= scale[1]."
            )
        self.degrees, self.translate, self.scale = float(degrees), float(translate), tuple(scale)
        self.image_column, self.seed = image_column, seed
        self._rng: np.random.Generator | None = None
        self._worker: int | None = None

    def _generator(self) -> np.random.Generator:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else -1
        if self._rng is None or worker != self._worker:
            self._rng, self._worker = np.random.default_rng([self.seed, worker + 1]), worker
        return self._rng

    def __call__(self, example: Mapping[str, Any]) -> dict[str, Any]:
        rng = self._generator()
        image = to_pixel_values(example[self.image_column])
        _, h, w = image.shape
        warped = affine_warp(
            image,
            degrees=rng.uniform(-self.degrees, self.degrees),
            translate=(
                rng.uniform(-self.translate, self.translate) * w,
                rng.uniform(-self.translate, self.translate) * h,
            ),
            scale=rng.uniform(*self.scale),
        )
        return {**example, self.image_column: warped}

    def __repr__(self) -> str:
        return (
            f"RandomAffine(degrees={self.degrees}, translate={self.translate}, scale={self.scale}, seed={self.seed})"
        )
