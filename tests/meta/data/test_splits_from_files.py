"""split_classes_from_files (the user's files -> meta-train / validation / test classes), parse_class_split and
class_names (meta/data/splits.py)."""

import datasets
import pytest

from hf_transfer_meta.meta import class_names, parse_class_split, split_classes_from_files


def rows(classes, per_class=4, start=0, group=None):
    """A dataset with ``per_class`` rows of each class; ``x`` numbers the rows so they can be traced."""
    data = {"x": [], "label": []}
    if group is not None:
        data["group"] = []
    i = start
    for c in classes:
        for _ in range(per_class):
            data["x"].append(i)
            data["label"].append(c)
            if group is not None:
                data["group"].append(group(c))
            i += 1
    return datasets.Dataset.from_dict(data)


def test_parse_class_split():
    assert parse_class_split("0.6,0.2,0.2") == (0.6, 0.2, 0.2)
    assert parse_class_split("0.8 0 0.2") == (0.8, 0.0, 0.2)
    assert parse_class_split([0.5, 0.25, 0.25]) == (0.5, 0.25, 0.25)
    assert parse_class_split(None) is None and parse_class_split(" ") is None
    with pytest.raises(ValueError, match="give three fractions"):
        parse_class_split("a,b,c")
    with pytest.raises(ValueError, match="three non-negative fractions"):
        parse_class_split("0.5,0.5")
    with pytest.raises(ValueError, match="sum to 0.9"):
        parse_class_split("0.5,0.2,0.2")
    with pytest.raises(ValueError, match="positive train fraction"):
        parse_class_split("0,0.5,0.5")


def test_files_that_share_classes_are_pooled_and_every_row_of_a_class_goes_to_its_split():
    classes = [f"c{i}" for i in range(10)]
    train = rows(classes, per_class=3)  # x 0..29
    test = rows(classes[:5], per_class=2, start=100)  # shares classes with train: not a split of its own
    split = split_classes_from_files({"train": train, "test": test}, "label", (0.6, 0.2, 0.2), seed=0)
    sizes = {s: len(split.keys[s]) for s in ("train", "validation", "test")}
    assert sizes == {"train": 6, "validation": 2, "test": 2}
    seen = []
    for name in ("train", "validation", "test"):
        ds = split[name].to_dict()
        assert set(ds["label"]) == set(split.keys[name])
        for c in split.keys[name]:  # all 3 train-file rows of c, plus its 2 test-file rows when it has them
            expected = 3 + (2 if c in classes[:5] else 0)
            assert ds["label"].count(c) == expected
        seen += ds["x"]
    assert sorted(seen) == sorted(list(train["x"]) + list(test["x"]))  # no row lost or duplicated
    again = split_classes_from_files({"train": train, "test": test}, "label", (0.6, 0.2, 0.2), seed=0)
    other = split_classes_from_files({"train": train, "test": test}, "label", (0.6, 0.2, 0.2), seed=1)
    assert again.keys == split.keys and other.keys != split.keys  # seeded
    assert "class split (0.6, 0.2, 0.2), seed 0" in split.sources["test"]


def test_a_test_file_of_other_classes_is_the_meta_test_split():
    train, test = rows([f"a{i}" for i in range(8)]), rows(["b0", "b1", "b2"], start=100)
    split = split_classes_from_files({"train": train, "test": test}, "label")
    assert split.keys == {"train": [f"a{i}" for i in range(8)], "validation": [], "test": ["b0", "b1", "b2"]}
    assert split.validation is None and list(split.test["x"]) == list(test["x"])
    # with --class_split, validation classes are carved from the train classes: 0.2 / 0.8 of 8 = 2
    carved = split_classes_from_files({"train": train, "test": test}, "label", (0.6, 0.2, 0.2), seed=0)
    assert len(carved.keys["validation"]) == 2 and len(carved.keys["train"]) == 6
    assert set(carved.keys["validation"]) | set(carved.keys["train"]) == set(split.keys["train"])
    assert carved.keys["test"] == ["b0", "b1", "b2"]


def test_a_validation_file_of_a_third_set_of_classes_is_used_as_given():
    train, val, test = rows(["a0", "a1", "a2"]), rows(["v0", "v1"], start=50), rows(["t0", "t1"], start=100)
    split = split_classes_from_files({"train": train, "validation": val, "test": test}, "label")
    assert split.keys == {"train": ["a0", "a1", "a2"], "validation": ["v0", "v1"], "test": ["t0", "t1"]}
    with pytest.raises(ValueError, match="--validation_file shares 1 of its classes with --test_file"):
        split_classes_from_files({"train": train, "validation": rows(["v0", "t0"]), "test": test}, "label")


def test_groups_of_classes_stay_whole():
    classes = list(range(12))
    data = rows(classes, per_class=2, group=lambda c: f"g{c // 3}")  # 4 groups of 3 classes
    split = split_classes_from_files({"train": data}, "label", (0.5, 0.25, 0.25), seed=0, group_column="group")
    assert split.key == "group" and {s: len(split.keys[s]) for s in ("train", "validation", "test")} == {
        "train": 2, "validation": 1, "test": 1}  # fmt: skip
    for name in ("train", "validation", "test"):
        ds = split[name]
        assert set(ds["group"]) == set(split.keys[name])
        assert len(set(ds["label"])) == 3 * len(split.keys[name])


def test_without_a_train_file_the_files_are_taken_as_they_are():
    split = split_classes_from_files({"test": rows(["t0", "t1", "t2"])}, "label")
    assert split.train is None and split.keys["test"] == ["t0", "t1", "t2"]
    with pytest.raises(ValueError, match="give --test_file"):
        split_classes_from_files({"validation": rows(["v0"])}, "label")


def test_missing_label_column_lists_the_columns():
    with pytest.raises(ValueError, match=r"--label_column_name 'intent': --train_file has no column 'intent'; its "
                                         r"columns are \['x', 'label'\]"):  # fmt: skip
        split_classes_from_files({"train": rows(["a", "b"])}, "intent")


def test_class_label_columns_are_compared_by_name():
    """Two image folders number their classes from 0 each: by id they would seem to share classes."""
    a = datasets.Dataset.from_dict(
        {"x": [0, 1, 2, 3], "label": [0, 1, 0, 1]},
        features=datasets.Features({"x": datasets.Value("int64"), "label": datasets.ClassLabel(names=["cat", "dog"])}),
    )
    b = datasets.Dataset.from_dict(
        {"x": [4, 5], "label": [0, 1]},
        features=datasets.Features({"x": datasets.Value("int64"), "label": datasets.ClassLabel(names=["eel", "fox"])}),
    )
    assert class_names(a, ["label"])["label"] == ["cat", "dog", "cat", "dog"]
    split = split_classes_from_files({"train": a, "test": b}, "label")
    assert split.keys["train"] == ["cat", "dog"] and split.keys["test"] == ["eel", "fox"]
    assert class_names(a.with_format("numpy", columns=["x"], output_all_columns=True), ["label"]).format["type"] == (
        "numpy"
    )
