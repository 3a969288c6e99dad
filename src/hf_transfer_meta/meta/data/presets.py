"""The project's three few-shot data sets as ready class splits (``--preset`` of the few-shot recipes).

omniglot  ``images_background_small1`` meta-train, small2's three alphabets not in small1 meta-test, rotations x4
          as new classes (:func:`~hf_transfer_meta.meta.data.omniglot.omniglot_meta_splits`); validation
          alphabets held out of small1 on request.
clinc150  the 150 intents split by class fractions (default 0.6/0.2/0.2, seeded), through
          :func:`~hf_transfer_meta.meta.data.splits.split_classes_from_files`, the function a user's own file goes
          through: the same rows with the same seed give the same intents per split.
digits    scikit-learn's digits: meta-train 0-5, meta-test 6-9 (any machine).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from .splits import DEFAULT_FRACTIONS, ClassSplit, class_names, split_classes_from_files

__all__ = ["PRESETS", "FewShotPreset", "load_preset"]

PRESETS = {"omniglot": "image", "clinc150": "text", "digits": "image"}


@dataclass
class FewShotPreset:
    """A preset's class split and how to read it: the input column, rotations (Omniglot), the image side."""

    name: str
    split: ClassSplit
    modality: str
    input_column: str
    label_column: str = "label"
    group_column: str | None = None
    rotations: list[int] | None = None
    image_size: int | None = None


def load_preset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    class_split: Sequence[float] | None = None,
    seed: int = 0,
    image_size: int = 28,
    validation_alphabets: Sequence[str] = (),
) -> FewShotPreset:
    """The class split of preset ``name`` (one of :data:`PRESETS`), read from ``data_dir`` (default
    ``../shared/data/<name>``; digits ship with scikit-learn).

    ``class_split`` / ``seed``: the class fractions and their seed (clinc150 only: Omniglot splits by alphabet and
    digits by digit, as the project's protocol does). ``image_size`` / ``validation_alphabets``: Omniglot's.
    """
    if name not in PRESETS:
        raise ValueError(f"--preset {name!r}: choose one of {', '.join(PRESETS)}.")
    if class_split is not None and name != "clinc150":
        raise ValueError(
            f"--class_split is for --preset clinc150; {name}'s class split is fixed by its protocol"
            + (" (hold alphabets out with --validation_alphabets)." if name == "omniglot" else " (0-5 / 6-9).")
        )
    if validation_alphabets and name != "omniglot":
        raise ValueError("--validation_alphabets is for --preset omniglot.")
    if name == "omniglot":
        from .omniglot import omniglot_meta_splits

        split = omniglot_meta_splits(data_dir, image_size=image_size, validation_alphabets=validation_alphabets)
        split.sources = {
            "train": "omniglot images_background_small1: " + ", ".join(split.keys["train"]),
            "test": "omniglot images_background_small2: " + ", ".join(split.keys["test"]),
        }
        if split.validation is not None:
            split.sources["validation"] = "omniglot images_background_small1: " + ", ".join(split.keys["validation"])
        return FewShotPreset(name, split, "image", "image", group_column="alphabet", rotations=[0, 90, 180, 270],
                             image_size=image_size)  # fmt: skip
    if name == "clinc150":
        from .clinc150 import load_clinc150

        intents = class_names(load_clinc150(data_dir), ["label"])  # by name, as a user's file holds them
        split = split_classes_from_files(
            {"train": intents}, "label", class_split or DEFAULT_FRACTIONS, seed=seed, flags={"train": "clinc150"}
        )
        return FewShotPreset(name, split, "text", "text")
    from .digits import load_digits_dataset

    digits = load_digits_dataset()
    train, test = digits.filter(lambda r: r["label"] < 6), digits.filter(lambda r: r["label"] >= 6)
    split = ClassSplit(
        train, None, test, key="label", keys={"train": list(range(6)), "validation": [], "test": list(range(6, 10))},
        sources={"train": "scikit-learn digits 0-5", "test": "scikit-learn digits 6-9"},
    )  # fmt: skip
    return FewShotPreset(name, split, "image", "image", image_size=8)
