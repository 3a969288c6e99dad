"""Few-shot models: :class:`Conv4` (plain and as transformers classes registered with the Auto classes) and the
sinusoid MLP. They import with torch and transformers alone."""

from .conv4 import (
    BatchStatNorm2d,
    Conv4,
    Conv4Backbone,
    Conv4Block,
    Conv4Config,
    Conv4ForImageClassification,
    Conv4Model,
    Conv4PreTrainedModel,
    conv4_feature_size,
)
from .sinusoid_mlp import SinusoidMLP

__all__ = [
    "BatchStatNorm2d",
    "Conv4",
    "Conv4Backbone",
    "Conv4Block",
    "Conv4Config",
    "Conv4ForImageClassification",
    "Conv4Model",
    "Conv4PreTrainedModel",
    "SinusoidMLP",
    "conv4_feature_size",
]
