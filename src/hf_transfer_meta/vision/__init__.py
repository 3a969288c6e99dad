"""Vision: CIFAR-10-C style corruptions (``corruptions``) and two pretrained networks as transformers classes,
registered with ``AutoConfig`` / ``AutoModelForImageClassification`` on import: EfficientNet-Lite0
(``efficientnet_lite``) and the CIFAR ResNets with option-A shortcuts (``resnet_cifar``). ``convert`` writes them as
model folders. They import with torch, transformers, numpy and PIL alone."""

from .corruptions import CORRUPTIONS, SEVERITY_PARAMETERS, corrupt, corrupt_dataset
from .efficientnet_lite import (
    EfficientNetLiteConfig,
    EfficientNetLiteForImageClassification,
    EfficientNetLiteModel,
    EfficientNetLitePreTrainedModel,
)
from .resnet_cifar import (
    CifarResNetConfig,
    CifarResNetForImageClassification,
    CifarResNetModel,
    CifarResNetPreTrainedModel,
)

__all__ = [
    "CORRUPTIONS",
    "SEVERITY_PARAMETERS",
    "CifarResNetConfig",
    "CifarResNetForImageClassification",
    "CifarResNetModel",
    "CifarResNetPreTrainedModel",
    "EfficientNetLiteConfig",
    "EfficientNetLiteForImageClassification",
    "EfficientNetLiteModel",
    "EfficientNetLitePreTrainedModel",
    "corrupt",
    "corrupt_dataset",
]
