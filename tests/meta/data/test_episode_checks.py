"""check_episode_sizes (meta/data/checks.py): a split that cannot give the run's episodes is refused before
anything trains, naming the split, the counts and the flags."""

import datasets
import pytest

from hf_transfer_meta.meta import ClassSplit, EpisodeShape, check_episode_sizes


def labelled(counts: dict) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"label": [c for c, n in counts.items() for _ in range(n)]})


SPLIT = ClassSplit(labelled({"a": 6, "b": 6, "c": 6, "d": 6}), None, labelled({"x": 6, "y": 2, "z": 6}))


def test_shapes_the_splits_can_give_pass():
    check_episode_sizes(SPLIT, "label", {"train": EpisodeShape(4, 6), "test": EpisodeShape(3, 2)})


def test_too_few_classes_names_the_split_the_flag_and_the_counts():
    with pytest.raises(ValueError, match=r"The meta-train split has 4 classes, but --n_way 5 draws 5 per episode "
                                         r"\(classes per split: meta-train 4, meta-validation 0, meta-test 3\)"):  # fmt: skip
        check_episode_sizes(SPLIT, "label", {"train": EpisodeShape(5, 2, "--n_way 5")})


def test_rotations_count_as_classes():
    check_episode_sizes(SPLIT, "label", {"train": EpisodeShape(16, 6)}, rotations=[0, 90, 180, 270])
    with pytest.raises(ValueError, match=r"4 classes x 4 rotations = 16, but n_way draws 17"):
        check_episode_sizes(SPLIT, "label", {"train": EpisodeShape(17, 6)}, rotations=[0, 90, 180, 270])


def test_a_small_class_is_named_with_its_count():
    with pytest.raises(ValueError, match=r"Too few examples in the meta-test split: class 'y' has 2, but "
                                         r"--k_shot 1 \+ --n_query 2 = 3 are drawn"):  # fmt: skip
        check_episode_sizes(SPLIT, "label", {"test": EpisodeShape(3, 3, "--n_way 3", "--k_shot 1 + --n_query 2")})


def test_a_split_the_run_needs_and_does_not_have():
    with pytest.raises(ValueError, match="needs meta-validation classes, and there are none"):
        check_episode_sizes(SPLIT, "label", {"validation": EpisodeShape(2, 2)})
