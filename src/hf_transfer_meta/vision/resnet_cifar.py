"""The CIFAR ResNets of He et al. 2016 (section 4.2: ResNet-20/32/44/56/110, 6n+2 layers, 16/32/64 channels) as
transformers classes, with the parameter-free "option A" shortcut: when a stage halves the side and doubles the
width, the skip path subsamples by 2 and zero-pads the new channels. The layout and order of the layers are those of
akamaster/pytorch_resnet_cifar10, so its checkpoints load by renaming (``convert.py``); each stage is one
``stages[i]`` with its ``layers``, which the layer map takes as a block.

``model_type="cifar_resnet"`` (transformers' ``resnet`` is the ImageNet bottleneck family).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from transformers import (
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndNoAttention, ImageClassifierOutput

from ..model_utils import image_classifier_output, register_image_classifier

__all__ = [
    "CifarResNetConfig",
    "CifarResNetForImageClassification",
    "CifarResNetModel",
    "CifarResNetPreTrainedModel",
]


class CifarResNetConfig(PreTrainedConfig):
    r"""Configuration of :class:`CifarResNetModel` / :class:`CifarResNetForImageClassification`.

    Args:
        depths: basic blocks per stage (``[3, 3, 3]`` = ResNet-20, ``[9, 9, 9]`` = ResNet-56).
        hidden_sizes: channels per stage (``[16, 32, 64]``); the stem has ``hidden_sizes[0]``.
        num_channels: input channels.
        image_size: training resolution (32), recorded for processors and cards.
    """

    model_type = "cifar_resnet"

    depths: list | None = None
    hidden_sizes: list | None = None
    num_channels: int = 3
    image_size: int = 32

    def __post_init__(self, **kwargs):
        self.depths = list(self.depths) if self.depths is not None else [3, 3, 3]
        self.hidden_sizes = list(self.hidden_sizes) if self.hidden_sizes is not None else [16, 32, 64]
        if len(self.depths) != len(self.hidden_sizes):
            raise ValueError(
                f"depths={self.depths} and hidden_sizes={self.hidden_sizes} must have one entry per stage."
            )
        super().__post_init__(**kwargs)


class CifarBasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with ReLU and an identity (option A) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride, self.pad = stride, cout - cin

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x
        if self.stride != 1 or self.pad:
            # option A: subsample, zero-pad the channels equally on both sides (akamaster's LambdaLayer)
            shortcut = F.pad(
                x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2)
            )
        return F.relu(out + shortcut)


class CifarResNetStage(nn.Module):
    def __init__(self, cin: int, cout: int, depth: int, stride: int):
        super().__init__()
        self.layers = nn.ModuleList(
            CifarBasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(depth)
        )

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class CifarResNetPreTrainedModel(PreTrainedModel):
    config_class = CifarResNetConfig
    base_model_prefix = "resnet"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["CifarResNetStage"]

    def _init_weights(self, module: nn.Module) -> None:
        # akamaster's init: Kaiming-normal convolutions and linear layer
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            init.kaiming_normal_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)


class CifarResNetModel(CifarResNetPreTrainedModel):
    """Stem (3x3 conv, BN, ReLU), the stages; ``pooler_output`` is the global average ``[B, hidden_sizes[-1]]``."""

    def __init__(self, config: CifarResNetConfig):
        super().__init__(config)
        widths = config.hidden_sizes
        self.stem_conv = nn.Conv2d(config.num_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(widths[0])
        self.stages = nn.ModuleList(
            CifarResNetStage(widths[max(i - 1, 0)], w, d, 1 if i == 0 else 2)
            for i, (w, d) in enumerate(zip(widths, config.depths))
        )
        self.post_init()

    def forward(
        self, pixel_values: Tensor, output_hidden_states: bool | None = None, return_dict: bool | None = None, **kwargs
    ) -> BaseModelOutputWithPoolingAndNoAttention | tuple:
        x = F.relu(self.stem_bn(self.stem_conv(pixel_values)))
        hidden_states = (x,) if output_hidden_states else None
        for stage in self.stages:
            x = stage(x)
            if output_hidden_states:
                hidden_states += (x,)
        pooled = x.mean(dim=(2, 3))
        if return_dict is False:
            return (x, pooled) + ((hidden_states,) if output_hidden_states else ())
        return BaseModelOutputWithPoolingAndNoAttention(
            last_hidden_state=x, pooler_output=pooled, hidden_states=hidden_states
        )


class CifarResNetForImageClassification(CifarResNetPreTrainedModel):
    """CIFAR ResNet with a linear head over the pooled feature; ``labels`` give a cross-entropy ``loss``."""

    def __init__(self, config: CifarResNetConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.resnet = CifarResNetModel(config)
        self.classifier = nn.Linear(config.hidden_sizes[-1], config.num_labels)
        self.post_init()

    def forward(
        self,
        pixel_values: Tensor,
        labels: Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        out = self.resnet(pixel_values, output_hidden_states=output_hidden_states)
        logits = self.classifier(out.pooler_output)
        hidden = out.hidden_states if output_hidden_states else None
        return image_classifier_output(logits, labels, hidden, return_dict)


register_image_classifier("cifar_resnet", CifarResNetConfig, CifarResNetModel, CifarResNetForImageClassification)
