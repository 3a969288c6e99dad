"""Omniglot (Lake et al. 2015, "Human-level concept learning through probabilistic program induction") from its zips,
and :func:`omniglot_meta_splits`, the project's protocol on the small background sets."""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import datasets
import numpy as np

from .paths import cache_folder, resolve_data_dir, sha256
from .splits import ClassSplit, assert_class_disjoint

__all__ = ["OMNIGLOT_SOURCE", "load_omniglot", "omniglot_meta_splits"]

OMNIGLOT_SOURCE = "github.com/brendenlake/omniglot (folder python/, MIT licence)"
_OMNIGLOT_ZIPS = {
    "small1": "images_background_small1.zip",
    "small2": "images_background_small2.zip",
    "background": "images_background.zip",
    "evaluation": "images_evaluation.zip",
}


def _decode_omniglot_zip(zip_path: Path, image_size: int | None) -> dict[str, np.ndarray]:
    from PIL import Image

    images, alphabets, characters = [], [], []
    with zipfile.ZipFile(zip_path) as archive:
        # <root>/<alphabet>/<characterNN>/<drawing>.png, sorted so labels are stable.
        names = sorted(n for n in archive.namelist() if n.endswith(".png"))
        for name in names:
            parts = name.split("/")
            if len(parts) < 3:
                continue
            image = Image.open(io.BytesIO(archive.read(name))).convert("L")
            if image_size is not None and image.size != (image_size, image_size):
                # LANCZOS, as in the MAML reference code (cbfinn/maml, data/omniglot_resized/resize_images.py).
                image = image.resize((image_size, image_size), resample=Image.Resampling.LANCZOS)
            images.append(np.asarray(image, dtype=np.uint8))
            alphabets.append(parts[-3])
            characters.append(f"{parts[-3]}/{parts[-2]}")
    if not images:
        raise ValueError(f"{zip_path} holds no <alphabet>/<character>/<drawing>.png images.")
    return {"images": np.stack(images), "alphabet": np.asarray(alphabets), "character": np.asarray(characters)}


def _omniglot_arrays(zip_path: Path, image_size: int | None, cache_dir: str | os.PathLike | None) -> dict:
    """Decoded uint8 images (strokes dark, as in the PNGs) + names, cached in a .npz keyed by the zip's sha256."""
    size = "orig" if image_size is None else str(int(image_size))
    cache = cache_folder(cache_dir) / "omniglot" / f"{zip_path.stem}-{sha256(zip_path)[:16]}-{size}.npz"
    if cache.is_file():
        try:
            with np.load(cache) as f:
                return {k: f[k] for k in f.files}
        except (OSError, ValueError):
            pass  # a truncated cache file: decode again
    arrays = _decode_omniglot_zip(zip_path, image_size)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so concurrent processes (DDP ranks) never read a half-written file.
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only cache location only costs the decoding time
    return arrays


def _omniglot_dataset(
    images: np.ndarray, alphabets: np.ndarray, characters: np.ndarray, labels: np.ndarray, invert: bool
) -> datasets.Dataset:
    pixels = images.astype(np.float32) / 255.0
    if invert:
        pixels = 1.0 - pixels  # strokes 1 on a 0 background, as MAML and ProtoNets feed Omniglot
    height, width = pixels.shape[1:]
    features = datasets.Features(
        {
            "image": datasets.Array2D((height, width), "float32"),
            "label": datasets.Value("int64"),
            "alphabet": datasets.Value("string"),
            "character": datasets.Value("string"),
        }
    )
    ds = datasets.Dataset.from_dict(
        {
            "image": pixels,
            "label": labels.astype(np.int64),
            "alphabet": alphabets.tolist(),
            "character": characters.tolist(),
        },
        features=features,
    )
    # Images come back as numpy arrays, not nested lists; the other columns as Python values.
    return ds.with_format("numpy", columns=["image"], output_all_columns=True)


def _labels_by_character(characters: np.ndarray, offset: int = 0) -> np.ndarray:
    _, inverse = np.unique(characters, return_inverse=True)  # sorted "alphabet/characterNN" names
    return inverse + offset


def load_omniglot(
    data_dir: str | os.PathLike | None = None,
    which: str = "small1",
    image_size: int | None = 28,
    invert: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> datasets.Dataset:
    """Omniglot read from its zip, one row per drawing.

    Args:
        data_dir: the folder holding the zips; default ``shared_data_dir()/omniglot``.
        which: ``"small1"``, ``"small2"`` (``images_background_small{1,2}.zip``), ``"background"`` or
            ``"evaluation"`` (``images_{background,evaluation}.zip``), or a zip file name.
        image_size: resize the 105x105 drawings to ``image_size`` squared with LANCZOS (28: the MAML/ProtoNet
            convention); ``None`` keeps 105x105.
        invert: ``1 - x`` so strokes are 1 and the background 0 (MAML, ProtoNets); ``False`` keeps the PNG's
            black-on-white.
        cache_dir: where the decoded arrays are cached (default ``$HF_TRANSFER_META_CACHE`` or
            ``~/.cache/hf_transfer_meta``); the zip itself is never extracted.

    Returns:
        ``datasets.Dataset`` with ``image`` (float32 ``[H, W]`` in ``[0, 1]``, read as numpy), ``label`` (one int per
        character, ``0..C-1`` in sorted ``alphabet/character`` order), ``alphabet`` (the group column) and
        ``character`` (``"Greek/character01"``).
    """
    zip_name = _OMNIGLOT_ZIPS.get(which, which)
    if not zip_name.endswith(".zip"):
        raise ValueError(f"which={which!r}: use one of {sorted(_OMNIGLOT_ZIPS)} or a zip file name.")
    folder = resolve_data_dir(data_dir, "omniglot", zip_name, OMNIGLOT_SOURCE)
    arrays = _omniglot_arrays(folder / zip_name, image_size, cache_dir)
    labels = _labels_by_character(arrays["character"])
    return _omniglot_dataset(arrays["images"], arrays["alphabet"], arrays["character"], labels, invert)


def omniglot_meta_splits(
    data_dir: str | os.PathLike | None = None,
    image_size: int | None = 28,
    invert: bool = True,
    cache_dir: str | os.PathLike | None = None,
    validation_alphabets: Sequence[str] = (),
) -> ClassSplit:
    """The project's Omniglot protocol on the small background sets.

    Meta-train: every character of ``images_background_small1`` (5 alphabets, 136 characters). Meta-test: the
    characters of the alphabets of ``images_background_small2`` that small1 lacks (Japanese (katakana), Sanskrit,
    Tagalog: 106 characters); small2's Greek and Latin are left out since small1 has them. Validation: the small1
    alphabets named in ``validation_alphabets`` (e.g. ``["Balinese"]``), taken out of meta-train, for early stopping
    and choosing settings without the test classes; none by default. Labels are unique across splits (test labels
    continue after small1's). Use ``EpisodeDataset(..., rotations=(0, 90, 180, 270))`` for the usual x4 class pool.
    """
    folder = resolve_data_dir(data_dir, "omniglot", _OMNIGLOT_ZIPS["small1"], OMNIGLOT_SOURCE)
    folder = resolve_data_dir(folder, "omniglot", _OMNIGLOT_ZIPS["small2"], OMNIGLOT_SOURCE)
    small1 = _omniglot_arrays(folder / _OMNIGLOT_ZIPS["small1"], image_size, cache_dir)
    small2 = _omniglot_arrays(folder / _OMNIGLOT_ZIPS["small2"], image_size, cache_dir)

    train_labels = _labels_by_character(small1["character"])
    train_alphabets = sorted(set(small1["alphabet"].tolist()))
    test_alphabets = sorted(set(small2["alphabet"].tolist()) - set(train_alphabets))
    keep = np.isin(small2["alphabet"], test_alphabets)
    test_labels = _labels_by_character(small2["character"][keep], offset=int(train_labels.max()) + 1)

    unknown = sorted(set(validation_alphabets) - set(train_alphabets))
    if unknown:
        raise ValueError(
            f"validation_alphabets {unknown} are not alphabets of images_background_small1; choose from "
            f"{train_alphabets}."
        )
    val_alphabets = sorted(set(validation_alphabets))
    if len(val_alphabets) >= len(train_alphabets):
        raise ValueError(f"validation_alphabets would take all of small1's alphabets {train_alphabets}: keep one.")
    train_alphabets = [a for a in train_alphabets if a not in val_alphabets]
    is_val = np.isin(small1["alphabet"], val_alphabets)

    def small1_part(mask: np.ndarray) -> datasets.Dataset:
        return _omniglot_dataset(
            small1["images"][mask], small1["alphabet"][mask], small1["character"][mask], train_labels[mask], invert
        )

    train = small1_part(~is_val)
    validation = small1_part(is_val) if val_alphabets else None
    test = _omniglot_dataset(
        small2["images"][keep], small2["alphabet"][keep], small2["character"][keep], test_labels, invert
    )
    splits = {"train": train, "test": test, **({"validation": validation} if validation is not None else {})}
    assert_class_disjoint(splits, "label", "alphabet")
    assert_class_disjoint(splits, "character")
    return ClassSplit(
        train,
        validation,
        test,
        key="alphabet",
        keys={"train": train_alphabets, "validation": val_alphabets, "test": test_alphabets},
    )
