"""Meta-learning: episodes (``data/``) -> algorithms (ProtoNet, the MAML family) -> the meta trainer -> evaluation
with a CI (``evaluation/``).

Names import lazily (PEP 562): ``hf_transfer_meta.meta.algorithms``, ``.models`` and ``.functional`` need torch and
transformers alone; ``datasets`` and PIL load with the data and trainer modules that use them.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

# Conv4 registers model_type "conv4" with the transformers Auto classes, so saved Conv4 folders load through them.
from .models import conv4 as _conv4  # noqa: F401

_EXPORTS = {
    **dict.fromkeys(
        ["ALGORITHMS", "ANIL", "FOMAML", "MAML", "FineTuneBaseline", "MetaAlgorithm", "MetaOutput", "MetaSGD",
         "ProtoNet", "Reptile", "build_algorithm", "register_algorithm"],
        ".algorithms",
    ),
    "MetaTrainingArguments": ".arguments",
    "MetaTrainer": ".trainer",
    "fixed_eval_episodes": ".trainer",
    **dict.fromkeys(
        ["BatchStatNorm2d", "Conv4", "Conv4Config", "Conv4ForImageClassification", "Conv4Model", "SinusoidMLP"],
        ".models",
    ),
    **dict.fromkeys(
        ["ClassSplit", "EpisodeCollator", "EpisodeDataset", "EpisodePlan", "RandomAffine", "SinusoidTasks",
         "affine_warp", "assert_class_disjoint", "load_clinc150", "load_digits_dataset", "load_omniglot",
         "omniglot_meta_splits", "rotate_image", "shared_data_dir", "split_classes", "to_pixel_values"],
        ".data",
    ),
    **dict.fromkeys(
        ["EpisodeEvaluation", "episode_accuracies", "evaluate_episodes", "few_shot_accuracy",
         "few_shot_accuracy_metric_path", "load_few_shot_accuracy", "mean_ci95"],
        ".evaluation",
    ),
    **dict.fromkeys(["SinusoidRun", "evaluate_sinusoid", "train_sinusoid"], ".sinusoid"),
}  # fmt: skip


def _algorithms():
    from . import algorithms

    return algorithms


_DEPRECATED = {
    "FineTune": ("hf_transfer_meta.meta.FineTuneBaseline", lambda: _algorithms().FineTuneBaseline),
    "META_ALGORITHMS": ("tuple(hf_transfer_meta.meta.ALGORITHMS)", lambda: tuple(_algorithms().ALGORITHMS)),
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, _DEPRECATED)
__all__ = [
    "ALGORITHMS",
    "ANIL",
    "BatchStatNorm2d",
    "ClassSplit",
    "Conv4",
    "Conv4Config",
    "Conv4ForImageClassification",
    "Conv4Model",
    "EpisodeCollator",
    "EpisodeDataset",
    "EpisodeEvaluation",
    "EpisodePlan",
    "FOMAML",
    "FineTuneBaseline",
    "MAML",
    "MetaAlgorithm",
    "MetaOutput",
    "MetaSGD",
    "MetaTrainer",
    "MetaTrainingArguments",
    "ProtoNet",
    "RandomAffine",
    "Reptile",
    "SinusoidMLP",
    "SinusoidRun",
    "SinusoidTasks",
    "affine_warp",
    "assert_class_disjoint",
    "build_algorithm",
    "episode_accuracies",
    "evaluate_episodes",
    "evaluate_sinusoid",
    "few_shot_accuracy",
    "few_shot_accuracy_metric_path",
    "fixed_eval_episodes",
    "load_clinc150",
    "load_digits_dataset",
    "load_few_shot_accuracy",
    "load_omniglot",
    "mean_ci95",
    "omniglot_meta_splits",
    "register_algorithm",
    "rotate_image",
    "shared_data_dir",
    "split_classes",
    "to_pixel_values",
    "train_sinusoid",
]

if TYPE_CHECKING:
    from .algorithms import (
        ALGORITHMS,
        ANIL,
        FOMAML,
        MAML,
        FineTuneBaseline,
        MetaAlgorithm,
        MetaOutput,
        MetaSGD,
        ProtoNet,
        Reptile,
        build_algorithm,
        register_algorithm,
    )
    from .arguments import MetaTrainingArguments
    from .data import (
        ClassSplit,
        EpisodeCollator,
        EpisodeDataset,
        EpisodePlan,
        RandomAffine,
        SinusoidTasks,
        affine_warp,
        assert_class_disjoint,
        load_clinc150,
        load_digits_dataset,
        load_omniglot,
        omniglot_meta_splits,
        rotate_image,
        shared_data_dir,
        split_classes,
        to_pixel_values,
    )
    from .evaluation import (
        EpisodeEvaluation,
        episode_accuracies,
        evaluate_episodes,
        few_shot_accuracy,
        few_shot_accuracy_metric_path,
        load_few_shot_accuracy,
        mean_ci95,
    )
    from .models import BatchStatNorm2d, Conv4, Conv4Config, Conv4ForImageClassification, Conv4Model, SinusoidMLP
    from .sinusoid import SinusoidRun, evaluate_sinusoid, train_sinusoid
    from .trainer import MetaTrainer, fixed_eval_episodes
