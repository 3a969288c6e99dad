"""CIFAR-10-C style corruptions: seeded, uint8 of the input's shape, stronger with severity, and exact where a
reference exists (brightness against colorsys' HSV, gaussian blur against a direct 2-D convolution)."""

import colorsys

import numpy as np
import pytest
from PIL import Image

from hf_transfer_meta.vision.corruptions import CORRUPTIONS, SEVERITY_PARAMETERS, corrupt, corrupt_dataset

REQUIRED = [
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "gaussian_blur",
    "contrast",
    "brightness",
    "jpeg_compression",
    "pixelate",
]


def _image(seed=0, side=32):
    """A textured 32x32 RGB image away from 0 and 255 (smooth colour ramps plus pixel noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side] / side
    base = np.stack([0.3 + 0.4 * x, 0.3 + 0.4 * y, 0.5 - 0.2 * x * y], -1) * 255
    return np.clip(base + rng.normal(0, 20, base.shape), 20, 235).astype(np.uint8)


def _mad(a, b):
    return np.abs(a.astype(float) - b.astype(float)).mean()


def test_the_published_set_is_there():
    assert set(REQUIRED) <= set(CORRUPTIONS)
    assert all(len(SEVERITY_PARAMETERS[c]) == 5 for c in CORRUPTIONS)


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_each_severity_is_seeded_changes_the_image_and_grows(name):
    image = _image()
    mads = []
    for severity in range(1, 6):
        a = corrupt(image, name, severity, np.random.default_rng(7))
        b = corrupt(Image.fromarray(image), name, severity, np.random.default_rng(7))  # PIL input too
        assert a.dtype == np.uint8 and a.shape == image.shape
        assert np.array_equal(a, b), f"{name} severity {severity} is not deterministic for a seed"
        mads.append(_mad(a, image))
        assert mads[-1] > 0.5, f"{name} severity {severity} hardly changes the image ({mads[-1]:.3f})"
    # JPEG quality 80 -> 40 on a noisy texture moves the image only somewhat more; the others move it far more.
    factor = 1.05 if name == "jpeg_compression" else 1.5
    assert mads[4] > factor * mads[0], f"{name}: severity 5 ({mads[4]:.2f}) not above severity 1 ({mads[0]:.2f})"


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"])
def test_noise_depends_on_the_seed(name):
    a = corrupt(_image(), name, 3, np.random.default_rng(0))
    b = corrupt(_image(), name, 3, np.random.default_rng(1))
    assert not np.array_equal(a, b)


def test_brightness_matches_hsv_value_shift():
    image = _image(1)
    image[0, 0] = 0  # a black pixel: saturation 0, becomes grey
    out = corrupt(image, "brightness", 4)
    c = SEVERITY_PARAMETERS["brightness"][3]
    for i, j in [(0, 0), (3, 5), (17, 2), (31, 31)]:
        h, s, v = colorsys.rgb_to_hsv(*(image[i, j] / 255.0))
        expected = np.array(colorsys.hsv_to_rgb(h, s, min(v + c, 1.0)))
        assert np.allclose(out[i, j] / 255.0, expected, atol=1 / 255 + 1e-9)


def test_gaussian_blur_matches_a_direct_convolution():
    image = _image(2)
    sigma = SEVERITY_PARAMETERS["gaussian_blur"][4]
    r = int(4 * sigma + 0.5)
    t = np.arange(-r, r + 1)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    k2 = np.outer(k, k) / k.sum() ** 2
    padded = np.pad(image / 255.0, ((r, r), (r, r), (0, 0)), mode="edge")
    i, j = 10, 20
    expected = (padded[i : i + 2 * r + 1, j : j + 2 * r + 1] * k2[..., None]).sum((0, 1))
    assert np.allclose(corrupt(image, "gaussian_blur", 5)[i, j] / 255.0, expected, atol=1 / 255 + 1e-9)


def test_contrast_keeps_the_channel_means_and_scales_deviations():
    image = _image(3)
    out = corrupt(image, "contrast", 5).astype(float)
    assert np.allclose(out.mean((0, 1)), image.mean((0, 1)), atol=1.0)
    spread = lambda a: (a - a.mean((0, 1))).std()  # noqa: E731  (deviations from each channel's own mean)
    assert spread(out) == pytest.approx(spread(image.astype(float)) * SEVERITY_PARAMETERS["contrast"][4], rel=0.05)


def test_bad_name_and_severity_are_refused():
    with pytest.raises(ValueError, match="gaussian_noise"):
        corrupt(_image(), "fog_typo", 3)
    with pytest.raises(ValueError, match="severities are 1"):
        corrupt(_image(), "contrast", 6)


def test_corrupt_dataset_is_deterministic_per_row():
    import datasets

    images = [Image.fromarray(_image(s)) for s in range(4)]
    ds = datasets.Dataset.from_dict({"image": images, "label": [0, 1, 2, 3]}).cast_column("image", datasets.Image())
    a = corrupt_dataset(ds, "gaussian_noise", 3, seed=5)
    b = corrupt_dataset(ds, "gaussian_noise", 3, seed=5, batch_size=1)  # batching does not change the noise
    c = corrupt_dataset(ds, "gaussian_noise", 3, seed=6)
    assert a["label"] == [0, 1, 2, 3]
    for i in range(4):
        x, y, z = (np.asarray(d[i]["image"]) for d in (a, b, c))
        assert np.array_equal(x, y) and not np.array_equal(x, z)
        assert np.array_equal(x, corrupt(images[i], "gaussian_noise", 3, np.random.default_rng([5, i])))
    with pytest.raises(ValueError, match=r"\['image', 'label'\]"):
        corrupt_dataset(ds, "contrast", 3, image_column="img")
