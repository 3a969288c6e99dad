"""Few-shot data: class-disjoint splits, N-way K-shot episodes and their collator, augmentation, the sinusoid task
family, and loaders for the project's data sets from local files (nothing is downloaded).

Names import lazily: :class:`SinusoidTasks` needs torch alone, the rest ``datasets`` (and PIL for images).
"""

from ..._lazy import lazy_exports

_EXPORTS = {
    "RandomAffine": ".augment",
    "affine_warp": ".augment",
    "load_clinc150": ".clinc150",
    "EpisodeCollator": ".collator",
    "to_pixel_values": ".collator",
    "load_digits_dataset": ".digits",
    "EpisodeDataset": ".episodes",
    "EpisodePlan": ".episodes",
    "rotate_image": ".episodes",
    "load_omniglot": ".omniglot",
    "omniglot_meta_splits": ".omniglot",
    "DATA_ENV_VAR": ".paths",
    "shared_data_dir": ".paths",
    "SinusoidTasks": ".sinusoid",
    "ClassSplit": ".splits",
    "assert_class_disjoint": ".splits",
    "split_classes": ".splits",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = [
    "ClassSplit",
    "DATA_ENV_VAR",
    "EpisodeCollator",
    "EpisodeDataset",
    "EpisodePlan",
    "RandomAffine",
    "SinusoidTasks",
    "affine_warp",
    "assert_class_disjoint",
    "load_clinc150",
    "load_digits_dataset",
    "load_omniglot",
    "omniglot_meta_splits",
    "rotate_image",
    "shared_data_dir",
    "split_classes",
    "to_pixel_values",
]
