"""scikit-learn's bundled 8x8 digits as a ``datasets.Dataset``: the small real image set any machine has."""

from __future__ import annotations

import datasets
import numpy as np

__all__ = ["load_digits_dataset"]


def load_digits_dataset() -> datasets.Dataset:
    """scikit-learn's bundled digits (1,797 images, 10 classes): ``image`` float32 8x8 in ``[0, 1]``, ``label``.

    Works on any machine (the data ships inside scikit-learn): the small real image set for tests and demos.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    features = datasets.Features({"image": datasets.Array2D((8, 8), "float32"), "label": datasets.Value("int64")})
    ds = datasets.Dataset.from_dict(
        {"image": (digits.images / 16.0).astype(np.float32), "label": digits.target.astype(np.int64)},
        features=features,
    )
    return ds.with_format("numpy", columns=["image"], output_all_columns=True)
