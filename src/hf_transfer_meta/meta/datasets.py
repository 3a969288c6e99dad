"""Few-shot data: class-disjoint splits, and loaders for the project's real data sets from local files.

Meta-learning evaluates on classes never seen in meta-training, so the splits here are over classes (or over groups
of classes, e.g. Omniglot alphabets), never over examples.

The loaders read the public files that sit beside the project in ``../shared/data`` (or the folder named by the
environment variable ``HF_TRANSFER_META_DATA``, or an explicit ``data_dir=``); nothing is downloaded:

* :func:`load_omniglot` (Lake et al. 2015, "Human-level concept learning through probabilistic program induction"),
  and :func:`omniglot_meta_splits`, the project's protocol on the small Omniglot sets;
* :func:`load_clinc150` (Larson et al. 2019, "An Evaluation Dataset for Intent Classification and Out-of-Scope
  Prediction");
* :func:`load_digits_dataset`, scikit-learn's bundled 8x8 digits (no file needed).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np

__all__ = [
    "DATA_ENV_VAR",
    "ClassSplit",
    "assert_class_disjoint",
    "load_clinc150",
    "load_digits_dataset",
    "load_omniglot",
    "omniglot_meta_splits",
    "shared_data_dir",
    "split_classes",
]

DATA_ENV_VAR = "HF_TRANSFER_META_DATA"
CACHE_ENV_VAR = "HF_TRANSFER_META_CACHE"
SPLITS = ("train", "validation", "test")


# --------------------------------------------------------------------------------------------------------------------
# Where the data lives
# --------------------------------------------------------------------------------------------------------------------


def _repo_root() -> Path | None:
    # src/hf_transfer_meta/meta/datasets.py -> the checkout's root, when running from a source checkout.
    root = Path(__file__).resolve().parents[3]
    return root if (root / "pyproject.toml").is_file() else None


def shared_data_dir() -> Path | None:
    """The folder holding the project's data sets, or ``None`` when there is none.

    In order: ``$HF_TRANSFER_META_DATA``; ``<repo root>/../shared/data`` (a checkout with ``shared/`` beside it, as
    on developer machines and in CI); ``./../shared/data`` from the working directory. The environment variable is
    returned even when it does not exist, so that errors name the folder the user asked for.
    """
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        return Path(env).expanduser()
    candidates = [Path.cwd().parent / "shared" / "data"]
    root = _repo_root()
    if root is not None:
        candidates.insert(0, root.parent / "shared" / "data")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return None


def _resolve(data_dir: str | os.PathLike | None, name: str, required: str, source: str) -> Path:
    """``data_dir`` or ``shared_data_dir()/name``; a FileNotFoundError naming the path and the source if absent."""
    if data_dir is None:
        root = shared_data_dir()
        folder = root / name if root is not None else None
    else:
        folder = Path(data_dir).expanduser()
    if folder is None or not (folder / required).exists():
        where = (
            str(folder / required)
            if folder is not None
            else f"../shared/data/{name}/{required} (no shared data folder found, and ${DATA_ENV_VAR} is not set)"
        )
        raise FileNotFoundError(
            f"{where} not found. It comes from {source}. Put the file in a folder and pass data_dir=<that folder>, "
            f"or set {DATA_ENV_VAR} to the folder that holds {name}/ (the project's ../shared/data)."
        )
    return folder


def _cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hf_transfer_meta"


# --------------------------------------------------------------------------------------------------------------------
# Class-disjoint splits
# --------------------------------------------------------------------------------------------------------------------


def _column(dataset: datasets.Dataset, column: str) -> np.ndarray:
    if column not in dataset.column_names:
        raise ValueError(f"Column {column!r} is not in the dataset; its columns are {dataset.column_names}.")
    return np.asarray(dataset.with_format(None)[column][:])


def assert_class_disjoint(
    splits: Mapping[str, datasets.Dataset | None], label_column: str = "label", group_column: str | None = None
) -> None:
    """Raise ``ValueError`` if two splits share a class (or a group): meta-test classes must be unseen.

    Checked on ``label_column`` and, when given, on ``group_column`` too.
    """
    columns = [label_column] + ([group_column] if group_column else [])
    present = {name: ds for name, ds in splits.items() if ds is not None and len(ds)}
    for column in columns:
        values = {name: set(_column(ds, column).tolist()) for name, ds in present.items()}
        names = list(values)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                shared = values[a] & values[b]
                if shared:
                    raise ValueError(
                        f"The {a!r} and {b!r} splits share {len(shared)} value(s) of {column!r}, e.g. "
                        f"{sorted(shared, key=str)[:5]}: meta-learning splits must be class-disjoint."
                        + (
                            f" A class of {label_column!r} spans several {group_column!r} groups; make labels "
                            "unique per group."
                            if group_column and column == label_column
                            else ""
                        )
                    )


@dataclass
class ClassSplit:
    """Class-disjoint meta-train / validation / test datasets (``validation`` is ``None`` when it has no classes).

    ``keys[split]`` lists the values of ``key`` (the label column, or the group column when splitting by group)
    that went to each split.
    """

    train: datasets.Dataset
    validation: datasets.Dataset | None
    test: datasets.Dataset
    key: str = "label"
    keys: dict[str, list] = field(default_factory=dict)

    def __getitem__(self, split: str) -> datasets.Dataset | None:
        if split not in SPLITS:
            raise KeyError(f"{split!r} is not a split; the splits are {SPLITS}.")
        return getattr(self, split)

    def items(self) -> Iterator[tuple[str, datasets.Dataset]]:
        """The non-empty splits, as ``(name, dataset)``."""
        for name in SPLITS:
            if getattr(self, name) is not None:
                yield name, getattr(self, name)

    def as_dataset_dict(self) -> datasets.DatasetDict:
        return datasets.DatasetDict(dict(self.items()))


def split_classes(
    dataset: datasets.Dataset,
    label_column: str = "label",
    group_column: str | None = None,
    fractions: Sequence[float] | None = (0.6, 0.2, 0.2),
    classes: Mapping[str, Sequence] | None = None,
    seed: int = 0,
) -> ClassSplit:
    """Split ``dataset`` into class-disjoint meta-train / validation / test sets.

    Args:
        dataset: one row per example.
        label_column: the class column.
        group_column: split by this column instead (e.g. ``"alphabet"``: every character of an alphabet goes to
            the same split). Labels must then be unique across groups (checked).
        fractions: ``(train, validation, test)`` fractions of the classes (or groups), summing to 1; validation may
            be 0. Each split gets ``round(fraction * n)`` keys (train gets the rest), at least one if its fraction
            is positive. Ignored when ``classes`` is given.
        classes: explicit ``{"train": [...], "validation": [...], "test": [...]}`` lists of label (or group)
            values; keys left out of every list are dropped.
        seed: shuffles the keys before the fractions cut them.

    Returns:
        :class:`ClassSplit`; raises ``ValueError`` if the result is not class-disjoint.
    """
    key = group_column or label_column
    values = _column(dataset, key)
    _column(dataset, label_column)  # validates the label column too
    unique = sorted(set(values.tolist()), key=lambda v: (str(type(v)), v))

    if classes is not None:
        unknown_splits = set(classes) - set(SPLITS)
        if unknown_splits:
            raise ValueError(f"classes has unknown splits {sorted(unknown_splits)}; use {SPLITS}.")
        chosen = {name: list(classes.get(name, [])) for name in SPLITS}
        seen: dict = {}
        for name, keys in chosen.items():
            missing = [k for k in keys if k not in set(unique)]
            if missing:
                raise ValueError(f"classes[{name!r}] lists {missing[:5]}, which are not values of column {key!r}.")
            for k in keys:
                if k in seen and seen[k] != name:
                    raise ValueError(
                        f"{key}={k!r} is listed in both {seen[k]!r} and {name!r}: splits must be disjoint."
                    )
                seen[k] = name
    else:
        if fractions is None or len(fractions) != 3 or any(f < 0 for f in fractions):
            raise ValueError(f"fractions={fractions} must be three non-negative numbers (train, validation, test).")
        if abs(sum(fractions) - 1.0) > 1e-6 or fractions[0] == 0 or fractions[2] == 0:
            raise ValueError(
                f"fractions={tuple(fractions)} must sum to 1 (they sum to {sum(fractions)}) with positive train and "
                "test fractions."
            )
        n = len(unique)
        counts = [max(1, round(f * n)) if f > 0 else 0 for f in fractions[1:]]
        n_train = n - sum(counts)
        if n_train < 1:
            raise ValueError(
                f"{n} values of {key!r} cannot be split by fractions={tuple(fractions)} with at least one per "
                "non-zero fraction; use more classes or pass classes={...} explicitly."
            )
        order = np.random.default_rng(seed).permutation(n)
        shuffled = [unique[i] for i in order]
        cuts = np.cumsum([n_train, *counts])
        chosen = {
            "train": shuffled[: cuts[0]],
            "validation": shuffled[cuts[0] : cuts[1]],
            "test": shuffled[cuts[1] : cuts[2]],
        }

    out = {}
    for name in SPLITS:
        rows = np.flatnonzero(np.isin(values, np.asarray(chosen[name], dtype=values.dtype)))
        out[name] = dataset.select(rows) if len(chosen[name]) else None
    if out["train"] is None or out["test"] is None:
        sizes = {k: len(v) for k, v in chosen.items()}
        raise ValueError(f"Both the train and the test split need classes; got {sizes} classes per split.")
    assert_class_disjoint(out, label_column, group_column)
    return ClassSplit(out["train"], out["validation"], out["test"], key=key, keys=chosen)


# --------------------------------------------------------------------------------------------------------------------
# Omniglot
# --------------------------------------------------------------------------------------------------------------------

OMNIGLOT_SOURCE = "github.com/brendenlake/omniglot (folder python/, MIT licence)"
_OMNIGLOT_ZIPS = {
    "small1": "images_background_small1.zip",
    "small2": "images_background_small2.zip",
    "background": "images_background.zip",
    "evaluation": "images_evaluation.zip",
}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
    cache = _cache_dir(cache_dir) / "omniglot" / f"{zip_path.stem}-{_sha256(zip_path)[:16]}-{size}.npz"
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
    """Omniglot (Lake et al. 2015) read from its zip, one row per drawing.

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
    folder = _resolve(data_dir, "omniglot", zip_name, OMNIGLOT_SOURCE)
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
    folder = _resolve(data_dir, "omniglot", _OMNIGLOT_ZIPS["small1"], OMNIGLOT_SOURCE)
    folder = _resolve(folder, "omniglot", _OMNIGLOT_ZIPS["small2"], OMNIGLOT_SOURCE)
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


# --------------------------------------------------------------------------------------------------------------------
# CLINC150
# --------------------------------------------------------------------------------------------------------------------

CLINC150_SOURCE = "github.com/clinc/oos-eval (data/data_full.json, CC BY 3.0)"
_CLINC_SPLITS = {"train": "train", "val": "validation", "test": "test"}


def load_clinc150(
    data_dir: str | os.PathLike | None = None,
    splits: Sequence[str] = ("train", "validation", "test"),
    include_oos: bool = False,
) -> datasets.Dataset:
    """CLINC150 intents (Larson et al. 2019) from ``data_full.json``: 150 intents x 150 utterances.

    Args:
        data_dir: the folder holding ``data_full.json`` (or the file itself); default ``shared_data_dir()/clinc150``.
        splits: which of the original splits to keep (``"train"``, ``"validation"``, ``"test"``); for few-shot
            work the intents are split instead (:func:`split_classes`), so all three are kept by default.
        include_oos: keep the out-of-scope utterances, as the extra class ``"oos"`` (the last id).

    Returns:
        ``datasets.Dataset`` with ``text``, ``label`` (a ``ClassLabel`` over the sorted intent names, so
        ``features["label"].int2str`` names them) and ``split``.
    """
    if data_dir is not None and Path(data_dir).is_file():
        path = Path(data_dir)
    else:
        path = _resolve(data_dir, "clinc150", "data_full.json", CLINC150_SOURCE) / "data_full.json"
    unknown = set(splits) - set(_CLINC_SPLITS.values())
    if unknown:
        raise ValueError(f"splits={list(splits)}: unknown {sorted(unknown)}; use {list(_CLINC_SPLITS.values())}.")
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)

    rows: dict[str, list] = {"text": [], "intent": [], "split": []}
    for key, split in _CLINC_SPLITS.items():
        if split not in splits:
            continue
        for prefix in ("", "oos_") if include_oos else ("",):
            for text, intent in raw[prefix + key]:
                rows["text"].append(text)
                rows["intent"].append(intent)
                rows["split"].append(split)
    intents = sorted({i for i in rows["intent"] if i != "oos"})
    if include_oos:
        intents.append("oos")
    label = datasets.ClassLabel(names=intents)
    features = datasets.Features({"text": datasets.Value("string"), "label": label, "split": datasets.Value("string")})
    return datasets.Dataset.from_dict(
        {"text": rows["text"], "label": label.str2int(rows["intent"]), "split": rows["split"]}, features=features
    )


# --------------------------------------------------------------------------------------------------------------------
# scikit-learn digits
# --------------------------------------------------------------------------------------------------------------------


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
