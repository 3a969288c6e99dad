"""Meta-learning: episodes -> algorithms (ProtoNet, the MAML family) -> the meta trainer -> evaluation with a CI."""

from .algorithms import (
    ALGORITHMS,
    ANIL,
    FOMAML,
    MAML,
    FineTune,
    MetaAlgorithm,
    MetaOutput,
    MetaSGD,
    ProtoNet,
    Reptile,
)
from .arguments import META_ALGORITHMS, MetaTrainingArguments
from .augment import RandomAffine, affine_warp
from .datasets import (
    ClassSplit,
    assert_class_disjoint,
    load_clinc150,
    load_digits_dataset,
    load_omniglot,
    omniglot_meta_splits,
    shared_data_dir,
    split_classes,
)
from .episodes import EpisodeCollator, EpisodeDataset, EpisodePlan, rotate_image, to_pixel_values
from .metrics import (
    episode_accuracies,
    few_shot_accuracy,
    few_shot_accuracy_metric_path,
    load_few_shot_accuracy,
    mean_ci95,
)
from .models import BatchStatNorm2d, Conv4, Conv4Config, Conv4ForImageClassification, Conv4Model
from .sinusoid import SinusoidMLP, SinusoidTasks, evaluate_sinusoid, train_sinusoid
from .trainer import MetaTrainer, build_algorithm

__all__ = [
    "META_ALGORITHMS",
    "MetaTrainer",
    "MetaTrainingArguments",
    "build_algorithm",
    "ALGORITHMS",
    "ANIL",
    "BatchStatNorm2d",
    "RandomAffine",
    "affine_warp",
    "Conv4",
    "Conv4Config",
    "Conv4ForImageClassification",
    "Conv4Model",
    "FOMAML",
    "FineTune",
    "MAML",
    "MetaAlgorithm",
    "MetaOutput",
    "MetaSGD",
    "ProtoNet",
    "Reptile",
    "SinusoidMLP",
    "SinusoidTasks",
    "evaluate_sinusoid",
    "train_sinusoid",
    "ClassSplit",
    "EpisodeCollator",
    "EpisodeDataset",
    "EpisodePlan",
    "assert_class_disjoint",
    "episode_accuracies",
    "few_shot_accuracy",
    "few_shot_accuracy_metric_path",
    "load_clinc150",
    "load_digits_dataset",
    "load_few_shot_accuracy",
    "load_omniglot",
    "mean_ci95",
    "omniglot_meta_splits",
    "rotate_image",
    "shared_data_dir",
    "split_classes",
    "to_pixel_values",
]
