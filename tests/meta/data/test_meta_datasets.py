"""Class-disjoint splits, and the Omniglot / CLINC150 / digits loaders (real data from ../shared/data)."""

import io
import zipfile

import datasets
import numpy as np
import pytest
import torch
from conftest import shared_data_path
from PIL import Image

from hf_transfer_meta.meta import (
    EpisodeCollator,
    EpisodeDataset,
    assert_class_disjoint,
    load_clinc150,
    load_digits_dataset,
    load_omniglot,
    omniglot_meta_splits,
    shared_data_dir,
    split_classes,
)
from hf_transfer_meta.meta.data.paths import DATA_ENV_VAR

OMNIGLOT_TEST_ALPHABETS = ["Japanese_(katakana)", "Sanskrit", "Tagalog"]


def grouped_dataset(num_groups=6, classes_per_group=4, per_class=3):
    """Labels unique across groups (like Omniglot characters within alphabets)."""
    rows = {"label": [], "group": [], "x": []}
    for g in range(num_groups):
        for c in range(classes_per_group):
            for j in range(per_class):
                rows["label"].append(g * classes_per_group + c)
                rows["group"].append(f"g{g}")
                rows["x"].append(float(j))
    return datasets.Dataset.from_dict(rows)


def label_sets(split):
    return {name: set(ds["label"]) for name, ds in split.items()}


# ----------------------------------------------------------------------------------------------------------------------
# split_classes
# ----------------------------------------------------------------------------------------------------------------------


def test_split_by_class_is_disjoint_complete_and_seeded():
    ds = grouped_dataset()  # 24 classes
    split = split_classes(ds, fractions=(0.5, 0.25, 0.25), seed=0)
    sets = label_sets(split)
    assert [len(sets[k]) for k in ("train", "validation", "test")] == [12, 6, 6]
    assert not sets["train"] & sets["validation"] and not sets["train"] & sets["test"]
    assert not sets["validation"] & sets["test"]
    assert set().union(*sets.values()) == set(range(24))
    assert sum(len(d) for _, d in split.items()) == len(ds)  # every row of a class follows its class
    assert sets["test"] == set(split.keys["test"])
    # Seeded: same seed, same split; another seed, another split.
    assert label_sets(split_classes(ds, fractions=(0.5, 0.25, 0.25), seed=0)) == sets
    assert label_sets(split_classes(ds, fractions=(0.5, 0.25, 0.25), seed=1)) != sets


def test_split_by_group_keeps_groups_whole():
    ds = grouped_dataset()
    split = split_classes(ds, group_column="group", fractions=(0.5, 0.0, 0.5), seed=3)
    assert split.validation is None and split.key == "group"
    groups = {name: set(d["group"]) for name, d in split.items()}
    assert len(groups["train"]) == 3 and len(groups["test"]) == 3 and not groups["train"] & groups["test"]
    for name, d in split.items():  # every class of a group went with its group
        for g in groups[name]:
            assert sum(1 for x in d["group"] if x == g) == 4 * 3
    assert not set(split.train["label"]) & set(split.test["label"])
    assert set(split.as_dataset_dict()) == {"train", "test"}


def test_explicit_class_lists():
    ds = grouped_dataset()
    split = split_classes(ds, classes={"train": [0, 1, 2], "test": [5, 6]})
    assert set(split.train["label"]) == {0, 1, 2} and set(split.test["label"]) == {5, 6}
    with pytest.raises(ValueError, match=r"label=2 is listed in both 'train' and 'test'"):
        split_classes(ds, classes={"train": [0, 1, 2], "test": [2, 6]})
    with pytest.raises(ValueError, match=r"\[99\]"):
        split_classes(ds, classes={"train": [0], "test": [99]})


def test_disjointness_is_checked():
    ds = grouped_dataset()
    with pytest.raises(ValueError, match=r"'train' and 'test' splits share 1 value\(s\) of 'label'"):
        assert_class_disjoint({"train": ds.select(range(0, 6)), "test": ds.select(range(3, 9))})
    # A label spread over two groups: splitting by group would leak it.
    leaky = datasets.Dataset.from_dict({"label": [0, 0, 1, 1], "group": ["a", "b", "a", "b"]})
    with pytest.raises(ValueError, match="spans several 'group' groups"):
        split_classes(leaky, group_column="group", fractions=(0.5, 0.0, 0.5))


def test_bad_fractions():
    ds = grouped_dataset(num_groups=1, classes_per_group=2)
    with pytest.raises(ValueError, match="sum to 1"):
        split_classes(ds, fractions=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="2 values of 'label' cannot be split"):
        split_classes(ds, fractions=(0.4, 0.3, 0.3))


# ----------------------------------------------------------------------------------------------------------------------
# Missing data: clear errors
# ----------------------------------------------------------------------------------------------------------------------


def test_missing_folders_name_the_path_and_the_source(tmp_path, monkeypatch):
    with pytest.raises(
        FileNotFoundError, match=r"images_background_small1\.zip not found.*brendenlake/omniglot.*data_dir="
    ):
        load_omniglot(data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"data_full\.json not found.*clinc/oos-eval.*data_dir="):
        load_clinc150(data_dir=tmp_path)
    missing = tmp_path / "nowhere"
    monkeypatch.setenv(DATA_ENV_VAR, str(missing))
    assert shared_data_dir() == missing
    with pytest.raises(FileNotFoundError, match=str(missing / "omniglot" / "images_background_small2.zip")):
        load_omniglot(which="small2")


def test_default_data_dir_is_beside_the_repo(monkeypatch):
    monkeypatch.delenv(DATA_ENV_VAR, raising=False)
    expected = shared_data_path()  # fails under CI=true, skips elsewhere, when ../shared/data is missing
    assert shared_data_dir().resolve() == expected.resolve()


# ----------------------------------------------------------------------------------------------------------------------
# digits (bundled with scikit-learn)
# ----------------------------------------------------------------------------------------------------------------------


def test_digits():
    from sklearn.datasets import load_digits

    ds = load_digits_dataset()
    assert len(ds) == 1797 and set(ds["label"]) == set(range(10))
    first = ds[0]
    assert first["image"].shape == (8, 8) and first["image"].dtype == np.float32
    np.testing.assert_allclose(first["image"], load_digits().images[0] / 16.0)
    episode = EpisodeCollator()([EpisodeDataset(ds, n_way=10, k_shot=5, n_query=5, num_episodes=1)[0]])["tasks"][0]
    assert episode["support"]["pixel_values"].shape == (50, 1, 8, 8)


# ----------------------------------------------------------------------------------------------------------------------
# Omniglot (real data)
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def omniglot_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("omniglot_cache")


@pytest.mark.shared_data
def test_omniglot_small1(omniglot_cache):
    folder = shared_data_path("omniglot")
    ds = load_omniglot(folder, "small1", cache_dir=omniglot_cache)
    assert len(ds) == 2720 and ds.column_names == ["image", "label", "alphabet", "character"]
    assert set(ds["label"]) == set(range(136))
    assert np.bincount(ds["label"]).tolist() == [20] * 136
    assert sorted(set(ds["alphabet"])) == ["Balinese", "Early_Aramaic", "Greek", "Korean", "Latin"]
    images = ds.with_format("numpy")["image"][:]
    assert images.shape == (2720, 28, 28) and images.dtype == np.float32
    assert images.min() == 0.0 and images.max() == 1.0
    assert images.mean() < 0.2  # inverted: strokes 1 on a 0 background

    # Row 0 is the first drawing in sorted zip order, resized with LANCZOS and inverted.
    with zipfile.ZipFile(folder / "images_background_small1.zip") as archive:
        name = sorted(n for n in archive.namelist() if n.endswith(".png"))[0]
        png = Image.open(io.BytesIO(archive.read(name))).convert("L").resize((28, 28), Image.Resampling.LANCZOS)
    np.testing.assert_allclose(ds[0]["image"], 1.0 - np.asarray(png, np.float32) / 255.0, atol=1e-6)
    assert ds[0]["character"] == "/".join(name.split("/")[-3:-1])

    # Cached: one .npz per zip and size; a reload reads it and gives the same data; invert=False is 1 - x.
    assert len(list((omniglot_cache / "omniglot").glob("images_background_small1-*-28.npz"))) == 1
    plain = load_omniglot(folder, "small1", invert=False, cache_dir=omniglot_cache)
    np.testing.assert_allclose(plain.with_format("numpy")["image"][:], 1.0 - images, atol=1e-6)


@pytest.mark.shared_data
def test_omniglot_meta_splits(omniglot_cache):
    split = omniglot_meta_splits(shared_data_path("omniglot"), cache_dir=omniglot_cache)
    assert split.keys["train"] == ["Balinese", "Early_Aramaic", "Greek", "Korean", "Latin"]
    assert split.keys["test"] == OMNIGLOT_TEST_ALPHABETS
    assert split.validation is None
    assert sorted(set(split.test["alphabet"])) == OMNIGLOT_TEST_ALPHABETS
    train_labels, test_labels = set(split.train["label"]), set(split.test["label"])
    assert len(train_labels) == 136 and len(test_labels) == 47 + 42 + 17 == 106
    assert train_labels == set(range(136)) and test_labels == set(range(136, 242))
    assert not set(split.train["character"]) & set(split.test["character"])
    assert len(split.test) == 106 * 20

    # 5-way 1-shot with the x4 rotation pool, through the collator: Conv4-ready tensors.
    episodes = EpisodeDataset(split.test, n_way=5, k_shot=1, n_query=15, num_episodes=3, rotations=(0, 90, 180, 270))
    assert episodes.num_classes == 424
    episode = EpisodeCollator()([episodes[0]])["tasks"][0]
    assert episode["support"]["pixel_values"].shape == (5, 1, 28, 28)
    assert episode["query"]["pixel_values"].shape == (75, 1, 28, 28)
    assert episode["support"]["pixel_values"].dtype == torch.float32


@pytest.mark.shared_data
def test_omniglot_validation_alphabets_come_out_of_meta_train(omniglot_cache):
    folder = shared_data_path("omniglot")
    full = omniglot_meta_splits(folder, cache_dir=omniglot_cache)
    split = omniglot_meta_splits(folder, cache_dir=omniglot_cache, validation_alphabets=["Balinese"])
    assert split.keys["validation"] == ["Balinese"] and "Balinese" not in split.keys["train"]
    assert set(split.validation["alphabet"]) == {"Balinese"} and len(split.validation) == 24 * 20
    assert len(split.train) + len(split.validation) == len(full.train) == 136 * 20
    # same labels as without the validation split, so the test split (and its episodes) is unchanged
    assert set(split.train["label"]) | set(split.validation["label"]) == set(full.train["label"])
    assert not set(split.train["label"]) & set(split.validation["label"])
    assert split.test["label"] == full.test["label"]
    with pytest.raises(ValueError, match="not alphabets of images_background_small1.*Korean"):
        omniglot_meta_splits(folder, cache_dir=omniglot_cache, validation_alphabets=["Tagalog"])


# ----------------------------------------------------------------------------------------------------------------------
# CLINC150 (real data)
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.shared_data
def test_clinc150():
    folder = shared_data_path("clinc150")
    ds = load_clinc150(folder)
    assert len(ds) == 15000 + 3000 + 4500
    names = ds.features["label"].names
    assert len(names) == 150 and "oos" not in names and names == sorted(names)
    assert np.bincount(ds["label"]).tolist() == [150] * 150
    assert {s: ds["split"].count(s) for s in ("train", "validation", "test")} == {
        "train": 15000,
        "validation": 3000,
        "test": 4500,
    }
    assert ds.features["label"].int2str(ds[0]["label"]) == "translate"

    with_oos = load_clinc150(folder / "data_full.json", splits=("train",), include_oos=True)
    assert len(with_oos) == 15100 and with_oos.features["label"].names[-1] == "oos"


@pytest.mark.shared_data
def test_clinc150_intent_episodes(minilm_path):
    from transformers import AutoTokenizer

    split = split_classes(load_clinc150(shared_data_path("clinc150")), fractions=(0.6, 0.2, 0.2), seed=0)
    assert [len(v) for v in split.keys.values()] == [90, 30, 30]
    episodes = EpisodeDataset(split.test, n_way=5, k_shot=5, n_query=5, num_episodes=2, seed=1)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    episode = EpisodeCollator(processing_class=tokenizer, max_length=64)([episodes[0]])["tasks"][0]
    assert episode["support"]["input_ids"].shape[0] == 25 and episode["query"]["input_ids"].shape[0] == 25
    assert episode["support"]["input_ids"].shape[1] == episode["query"]["input_ids"].shape[1] <= 64
