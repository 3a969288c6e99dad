"""EfficientNet-Lite (Tan & Le 2019; the "Lite" variants: ReLU6, no squeeze-excitation, stem and head not scaled) as
transformers classes, so a converted ImageNet checkpoint saves, loads and resumes like a Hub one.

The layers and their order are those of ``efficientnet_lite_pytorch`` (lukemelas' EfficientNet-PyTorch adapted to
Lite), so its weights load by renaming (``convert.py``); the MBConv blocks are grouped in their seven *stages*
(``efficientnet_lite.stages[i].layers[j]``), which the layer map takes as blocks. Convolutions pad like TensorFlow's
"SAME" (computed from the input, equal to the pip model's static padding at 224x224).

``model_type="efficientnet_lite"`` (transformers' own ``efficientnet`` is the B-series with squeeze-excitation).
"""

from __future__ import annotations

import math

import torch
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
    "EfficientNetLiteConfig",
    "EfficientNetLiteForImageClassification",
    "EfficientNetLiteModel",
    "EfficientNetLitePreTrainedModel",
]

# (repeats, kernel, stride, expand ratio, in channels, out channels) of EfficientNet-B0/Lite0's seven stages.
LITE0_STAGES = [
    [1, 3, 1, 1, 32, 16],
    [2, 3, 2, 6, 16, 24],
    [2, 5, 2, 6, 24, 40],
    [3, 3, 2, 6, 40, 80],
    [3, 5, 1, 6, 80, 112],
    [4, 5, 2, 6, 112, 192],
    [1, 3, 1, 6, 192, 320],
]


class EfficientNetLiteConfig(PreTrainedConfig):
    r"""Configuration of :class:`EfficientNetLiteModel` / :class:`EfficientNetLiteForImageClassification`.

    Args:
        stages: per stage ``[repeats, kernel, stride, expand_ratio, in_channels, out_channels]`` (Lite0's by default;
            the width/depth multipliers of Lite1-4 are applied to this list before it is stored).
        stem_channels: channels of the stride-2 stem convolution (32; not scaled in the Lite models).
        hidden_size: channels of the 1x1 head convolution, the pooled feature size (1280).
        image_size: the training resolution (224 for Lite0), recorded for processors and cards.
        num_channels: input channels.
        dropout_rate: dropout before the classifier (0.2).
        drop_connect_rate: stochastic-depth rate of the last block (0.2); block ``i`` of ``n`` drops with
            ``rate * i / n`` in training.
        batch_norm_eps: BatchNorm epsilon (1e-3, TensorFlow's).
        batch_norm_momentum: PyTorch BatchNorm momentum (0.01 = TensorFlow's 0.99 decay).
        initializer_range: std of a new classifier's normal init. Not TensorFlow's uniform(+-1/sqrt(num_labels)):
            for 10 classes that gives logits of std ~5 that a short fine-tuning at 1e-4 cannot undo.
    """

    model_type = "efficientnet_lite"

    stages: list | None = None
    stem_channels: int = 32
    hidden_size: int = 1280
    image_size: int = 224
    num_channels: int = 3
    dropout_rate: float = 0.2
    drop_connect_rate: float = 0.2
    batch_norm_eps: float = 1e-3
    batch_norm_momentum: float = 0.01
    initializer_range: float = 0.01

    def __post_init__(self, **kwargs):
        if self.stages is None:
            self.stages = [list(s) for s in LITE0_STAGES]
        super().__post_init__(**kwargs)


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding: output side ``ceil(input / stride)``, extra pixel bottom/right."""

    def forward(self, x: Tensor) -> Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int, config: EfficientNetLiteConfig) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=config.batch_norm_eps, momentum=config.batch_norm_momentum)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expansion (unless ratio 1), depthwise kxk, 1x1 projection; ReLU6; identity skip with
    stochastic depth when shape allows."""

    def __init__(self, config, kernel: int, stride: int, expand: int, cin: int, cout: int, drop_rate: float):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self.expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self.bn0 = _bn(mid, config)
        self.depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self.bn1 = _bn(mid, config)
        self.project_conv = SameConv2d(mid, cout, 1, bias=False)
        self.bn2 = _bn(cout, config)
        self.residual = stride == 1 and cin == cout
        self.drop_rate = drop_rate

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu6(self.bn0(self.expand_conv(x))) if self.expand else x
        h = F.relu6(self.bn1(self.depthwise_conv(h)))
        h = self.bn2(self.project_conv(h))
        if not self.residual:
            return h
        if self.training and self.drop_rate > 0:
            keep = 1 - self.drop_rate
            mask = torch.floor(keep + torch.rand(h.shape[0], 1, 1, 1, dtype=h.dtype, device=h.device))
            h = h / keep * mask
        return h + x


class EfficientNetLiteStage(nn.Module):
    """The MBConv blocks of one stage (the first one strides and changes width)."""

    def __init__(self, layers: list[MBConvBlock]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class EfficientNetLitePreTrainedModel(PreTrainedModel):
    config_class = EfficientNetLiteConfig
    base_model_prefix = "efficientnet_lite"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["EfficientNetLiteStage"]

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, std=self.config.initializer_range)
            init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)


class EfficientNetLiteModel(EfficientNetLitePreTrainedModel):
    """Stem, the seven stages, the 1x1 head convolution; ``pooler_output`` is the global average ``[B, 1280]``."""

    def __init__(self, config: EfficientNetLiteConfig):
        super().__init__(config)
        self.stem_conv = SameConv2d(config.num_channels, config.stem_channels, 3, stride=2, bias=False)
        self.stem_bn = _bn(config.stem_channels, config)
        total = sum(s[0] for s in config.stages)
        stages, index = [], 0
        for repeats, kernel, stride, expand, cin, cout in config.stages:
            layers = []
            for r in range(repeats):
                rate = config.drop_connect_rate * index / total
                layers.append(
                    MBConvBlock(config, kernel, stride if r == 0 else 1, expand, cin if r == 0 else cout, cout, rate)
                )
                index += 1
            stages.append(EfficientNetLiteStage(layers))
        self.stages = nn.ModuleList(stages)
        self.head_conv = SameConv2d(config.stages[-1][5], config.hidden_size, 1, bias=False)
        self.head_bn = _bn(config.hidden_size, config)
        self.post_init()

    def forward(
        self, pixel_values: Tensor, output_hidden_states: bool | None = None, return_dict: bool | None = None, **kwargs
    ) -> BaseModelOutputWithPoolingAndNoAttention | tuple:
        x = F.relu6(self.stem_bn(self.stem_conv(pixel_values)))
        hidden_states = (x,) if output_hidden_states else None
        for stage in self.stages:
            x = stage(x)
            if output_hidden_states:
                hidden_states += (x,)
        x = F.relu6(self.head_bn(self.head_conv(x)))
        pooled = x.mean(dim=(2, 3))
        if return_dict is False:
            return (x, pooled) + ((hidden_states,) if output_hidden_states else ())
        return BaseModelOutputWithPoolingAndNoAttention(
            last_hidden_state=x, pooler_output=pooled, hidden_states=hidden_states
        )


class EfficientNetLiteForImageClassification(EfficientNetLitePreTrainedModel):
    """EfficientNet-Lite with dropout and a linear head over the pooled feature; ``labels`` give a cross-entropy
    ``loss``."""

    def __init__(self, config: EfficientNetLiteConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.efficientnet_lite = EfficientNetLiteModel(config)
        self.dropout = nn.Dropout(config.dropout_rate)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        pixel_values: Tensor,
        labels: Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        out = self.efficientnet_lite(pixel_values, output_hidden_states=output_hidden_states)
        logits = self.classifier(self.dropout(out.pooler_output))
        hidden = out.hidden_states if output_hidden_states else None
        return image_classifier_output(logits, labels, hidden, return_dict)


register_image_classifier(
    "efficientnet_lite", EfficientNetLiteConfig, EfficientNetLiteModel, EfficientNetLiteForImageClassification
)
