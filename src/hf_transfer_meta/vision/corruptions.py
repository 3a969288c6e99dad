"""Seeded image corruptions in the style of CIFAR-10-C (Hendrycks & Dietterich 2019, "Benchmarking Neural Network
Robustness to Common Corruptions and Perturbations").

Each corruption is a pure function ``(image, severity, rng) -> uint8 array`` of the same shape: ``image`` is a PIL
image or an ``[H, W, 3]`` (or ``[H, W]``) uint8 array, ``severity`` 1..5, ``rng`` a ``numpy.random.Generator`` (only
the noises draw from it). The severity parameters are the published ones for 32x32 images (``make_cifar_c.py`` of
hendrycks/robustness); the scikit-image and OpenCV calls of that script are re-written in numpy and PIL:

* ``impulse_noise`` is scikit-image's ``random_noise(mode="s&p")``: each value independently becomes 0 or 1 with
  probability ``amount / 2`` each;
* ``gaussian_blur`` is ``scipy.ndimage.gaussian_filter`` (what scikit-image calls): a separable kernel truncated at
  4 sigma, edges repeated ("nearest");
* ``brightness`` adds to the HSV value channel: with hue and saturation fixed, RGB is linear in V, so the pixel is
  rescaled by ``V_new / V`` (a black pixel, S = 0, becomes grey ``V_new``).

Apply them at the images' own resolution, before a processor resizes them (what CIFAR-10-C does).
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image

__all__ = ["CORRUPTIONS", "SEVERITY_PARAMETERS", "corrupt", "corrupt_dataset"]

# make_cifar_c.py (hendrycks/robustness, ImageNet-C/create_c/make_cifar_c.py), severities 1..5.
SEVERITY_PARAMETERS: dict[str, tuple] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),  # std on [0, 1]
    "shot_noise": (500, 250, 100, 75, 50),  # photons per unit intensity (Poisson rate)
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),  # salt-and-pepper amount
    "speckle_noise": (0.06, 0.1, 0.12, 0.16, 0.2),  # std of the multiplicative noise
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),  # sigma in pixels
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # factor towards the per-channel mean
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),  # added to HSV value
    "jpeg_compression": (80, 65, 58, 50, 40),  # JPEG quality
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),  # side factor of the BOX down-sampling
}


def _as_array(image) -> np.ndarray:
    array = np.asarray(
        image.convert("RGB") if isinstance(image, Image.Image) and image.mode not in ("RGB", "L") else image
    )
    if array.dtype != np.uint8:
        raise TypeError(f"Corruptions take uint8 images; got an array of {array.dtype}.")
    if array.ndim not in (2, 3):
        raise ValueError(f"Corruptions take [H, W] or [H, W, C] images; got shape {array.shape}.")
    return array


def _to_uint8(x01: np.ndarray) -> np.ndarray:
    return np.uint8(np.clip(x01, 0, 1) * 255)  # the script's np.clip(x, 0, 1) * 255 then uint8 (truncation)


def gaussian_noise(image, severity: int, rng: np.random.Generator) -> np.ndarray:
    x = _as_array(image) / 255.0
    return _to_uint8(x + rng.normal(size=x.shape, scale=SEVERITY_PARAMETERS["gaussian_noise"][severity - 1]))


def shot_noise(image, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = SEVERITY_PARAMETERS["shot_noise"][severity - 1]
    x = _as_array(image) / 255.0
    return _to_uint8(rng.poisson(x * c) / c)


def impulse_noise(image, severity: int, rng: np.random.Generator) -> np.ndarray:
    amount = SEVERITY_PARAMETERS["impulse_noise"][severity - 1]
    x = _as_array(image) / 255.0
    u = rng.random(x.shape)
    out = x.copy()
    out[u < amount / 2] = 0.0  # pepper
    out[(u >= amount / 2) & (u < amount)] = 1.0  # salt
    return _to_uint8(out)


def speckle_noise(image, severity: int, rng: np.random.Generator) -> np.ndarray:
    x = _as_array(image) / 255.0
    return _to_uint8(x + x * rng.normal(size=x.shape, scale=SEVERITY_PARAMETERS["speckle_noise"][severity - 1]))


def _gaussian_kernel(sigma: float, truncate: float = 4.0) -> np.ndarray:
    radius = int(truncate * sigma + 0.5)
    t = np.arange(-radius, radius + 1)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _filter_axis(x: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    r = len(kernel) // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (r, r)
    xp = np.pad(x, pad, mode="edge")
    n = x.shape[axis]
    return sum(w * np.take(xp, np.arange(i, i + n), axis=axis) for i, w in enumerate(kernel))


def gaussian_blur(image, severity: int, rng: np.random.Generator | None = None) -> np.ndarray:
    kernel = _gaussian_kernel(SEVERITY_PARAMETERS["gaussian_blur"][severity - 1])
    x = _as_array(image) / 255.0
    return _to_uint8(_filter_axis(_filter_axis(x, kernel, 0), kernel, 1))


def contrast(image, severity: int, rng: np.random.Generator | None = None) -> np.ndarray:
    c = SEVERITY_PARAMETERS["contrast"][severity - 1]
    x = _as_array(image) / 255.0
    means = x.mean(axis=(0, 1), keepdims=True)
    return _to_uint8((x - means) * c + means)


def brightness(image, severity: int, rng: np.random.Generator | None = None) -> np.ndarray:
    c = SEVERITY_PARAMETERS["brightness"][severity - 1]
    x = _as_array(image) / 255.0
    v = x.max(axis=-1, keepdims=True) if x.ndim == 3 else x
    v_new = np.clip(v + c, 0, 1)
    safe = np.where(v > 0, v, 1.0)
    return _to_uint8(np.where(v > 0, x * (v_new / safe), v_new))


def jpeg_compression(image, severity: int, rng: np.random.Generator | None = None) -> np.ndarray:
    array = _as_array(image)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=SEVERITY_PARAMETERS["jpeg_compression"][severity - 1])
    return np.asarray(Image.open(buffer))


def pixelate(image, severity: int, rng: np.random.Generator | None = None) -> np.ndarray:
    array = _as_array(image)
    h, w = array.shape[:2]
    c = SEVERITY_PARAMETERS["pixelate"][severity - 1]
    small = Image.fromarray(array).resize((max(1, int(w * c)), max(1, int(h * c))), Image.BOX)
    return np.asarray(small.resize((w, h), Image.BOX))


CORRUPTIONS: dict[str, Callable] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "speckle_noise": speckle_noise,
    "gaussian_blur": gaussian_blur,
    "contrast": contrast,
    "brightness": brightness,
    "jpeg_compression": jpeg_compression,
    "pixelate": pixelate,
}


def corrupt(image, name: str, severity: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """``CORRUPTIONS[name](image, severity, rng)`` with the name and severity checked."""
    if name not in CORRUPTIONS:
        raise ValueError(f"Unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}.")
    if severity not in (1, 2, 3, 4, 5):
        raise ValueError(f"severity={severity!r}: CIFAR-10-C severities are 1, 2, 3, 4, 5.")
    return CORRUPTIONS[name](image, severity, rng if rng is not None else np.random.default_rng(0))


def corrupt_dataset(dataset, name: str, severity: int, seed: int = 0, image_column: str = "image", **map_kwargs):
    """A copy of a ``datasets.Dataset`` whose ``image_column`` is corrupted, deterministically: row ``i`` draws its
    noise from ``numpy.random.default_rng([seed, i])``, so the result depends on neither batching nor processes.
    Images are stored back losslessly (PNG); the other columns are unchanged."""
    import datasets

    corrupt(np.zeros((2, 2, 3), np.uint8), name, severity)  # checks name and severity before the map
    if image_column not in dataset.column_names:
        raise ValueError(f"Column {image_column!r} is not in the dataset; its columns are {dataset.column_names}.")

    def apply(batch, indices):
        out = []
        for image, i in zip(batch[image_column], indices):
            rgb = image.convert("RGB") if image.mode != "RGB" else image
            array = corrupt(rgb, name, severity, np.random.default_rng([seed, i]))
            out.append(Image.fromarray(array))
        return {image_column: out}

    features = dataset.features.copy()
    features[image_column] = datasets.Image()
    dataset = dataset.cast_column(image_column, datasets.Image())
    map_kwargs.setdefault("desc", f"{name} (severity {severity})")
    return dataset.map(apply, with_indices=True, batched=True, features=features, **map_kwargs)
