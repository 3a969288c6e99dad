"""Few-shot data: class-disjoint splits (of one dataset, or of the user's files), checks of the episode sizes they
allow, N-way K-shot episodes and their collator, images of the user's files, augmentation, the sinusoid task family,
and loaders and presets for the project's data sets from local files (nothing is downloaded).

Names import lazily: :class:`SinusoidTasks` needs torch alone, the rest ``datasets`` (and PIL for images).
"""

from ..._lazy import lazy_exports

_EXPORTS = {
    "RandomAffine": ".augment",
    "affine_warp": ".augment",
    "EpisodeShape": ".checks",
    "check_episode_sizes": ".checks",
    "load_clinc150": ".clinc150",
    "EpisodeCollator": ".collator",
    "to_pixel_values": ".collator",
    "load_digits_dataset": ".digits",
    "ImageProcessorInputs": ".images",
    "PixelValues": ".images",
    "as_image_column": ".images",
    "check_images": ".images",
    "image_mode": ".images",
    "to_pil": ".images",
    "EpisodeDataset": ".episodes",
    "EpisodePlan": ".episodes",
    "rotate_image": ".episodes",
    "load_omniglot": ".omniglot",
    "omniglot_meta_splits": ".omniglot",
    "DATA_ENV_VAR": ".paths",
    "shared_data_dir": ".paths",
    "PRESETS": ".presets",
    "FewShotPreset": ".presets",
    "load_preset": ".presets",
    "SinusoidTasks": ".sinusoid",
    "ClassSplit": ".splits",
    "DEFAULT_FRACTIONS": ".splits",
    "assert_class_disjoint": ".splits",
    "class_names": ".splits",
    "parse_class_split": ".splits",
    "split_classes": ".splits",
    "split_classes_from_files": ".splits",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
