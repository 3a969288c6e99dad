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
        ["ClassSplit", "EpisodeCollator", "EpisodeDataset", "EpisodePlan", "EpisodeShape", "FewShotPreset",
         "ImageProcessorInputs", "PixelValues", "RandomAffine", "SinusoidTasks", "affine_warp", "as_image_column",
         "assert_class_disjoint", "check_episode_sizes", "check_images", "class_names", "load_clinc150",
         "load_digits_dataset", "load_omniglot", "load_preset", "omniglot_meta_splits", "parse_class_split",
         "rotate_image", "shared_data_dir", "split_classes", "split_classes_from_files", "to_pixel_values"],
        ".data",
    ),
    **dict.fromkeys(
        ["AllClassesEvaluation", "EpisodeEvaluation", "all_classes_accuracy", "embed_rows", "episode_accuracies",
         "evaluate_all_classes", "evaluate_episodes", "few_shot_accuracy", "few_shot_accuracy_metric_path",
         "load_few_shot_accuracy", "mean_ci95", "meta_test_metrics"],
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
    "AllClassesEvaluation",
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
    "EpisodeShape",
    "FOMAML",
    "FewShotPreset",
    "FineTuneBaseline",
    "ImageProcessorInputs",
    "MAML",
    "MetaAlgorithm",
    "MetaOutput",
    "MetaSGD",
    "MetaTrainer",
    "MetaTrainingArguments",
    "PixelValues",
    "ProtoNet",
    "RandomAffine",
    "Reptile",
    "SinusoidMLP",
    "SinusoidRun",
    "SinusoidTasks",
    "affine_warp",
    "all_classes_accuracy",
    "as_image_column",
    "assert_class_disjoint",
    "build_algorithm",
    "check_episode_sizes",
    "check_images",
    "class_names",
    "embed_rows",
    "episode_accuracies",
    "evaluate_all_classes",
    "evaluate_episodes",
    "evaluate_sinusoid",
    "few_shot_accuracy",
    "few_shot_accuracy_metric_path",
    "fixed_eval_episodes",
    "load_clinc150",
    "load_digits_dataset",
    "load_few_shot_accuracy",
    "load_omniglot",
    "load_preset",
    "mean_ci95",
    "meta_test_metrics",
    "omniglot_meta_splits",
    "parse_class_split",
    "register_algorithm",
    "rotate_image",
    "shared_data_dir",
    "split_classes",
    "split_classes_from_files",
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
        EpisodeShape,
        FewShotPreset,
        ImageProcessorInputs,
        PixelValues,
        RandomAffine,
        SinusoidTasks,
        affine_warp,
        as_image_column,
        assert_class_disjoint,
        check_episode_sizes,
        check_images,
        class_names,
        load_clinc150,
        load_digits_dataset,
        load_omniglot,
        load_preset,
        omniglot_meta_splits,
        parse_class_split,
        rotate_image,
        shared_data_dir,
        split_classes,
        split_classes_from_files,
        to_pixel_values,
    )
    from .evaluation import (
        AllClassesEvaluation,
        EpisodeEvaluation,
        all_classes_accuracy,
        embed_rows,
        episode_accuracies,
        evaluate_all_classes,
        evaluate_episodes,
        few_shot_accuracy,
        few_shot_accuracy_metric_path,
        load_few_shot_accuracy,
        mean_ci95,
        meta_test_metrics,
    )
    from .models import BatchStatNorm2d, Conv4, Conv4Config, Conv4ForImageClassification, Conv4Model, SinusoidMLP
    from .sinusoid import SinusoidRun, evaluate_sinusoid, train_sinusoid
    from .trainer import MetaTrainer, fixed_eval_episodes
