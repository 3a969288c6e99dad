"""Conv4, the few-shot image backbone of Finn et al. 2017 (MAML) and Snell et al. 2017 (ProtoNets).

Four blocks of ``conv 3x3 (64 filters, padding 1) -> BatchNorm -> ReLU -> max-pool 2``; a 28x28 Omniglot image gives
a 64-d feature (84x84 miniImageNet: 5x5x64 = 1600), followed for MAML by a linear N-way head.

Two forms with the same layers:

* plain ``nn.Module``: :class:`Conv4Backbone` (features) and :class:`Conv4` (backbone + linear head, returns logits);
* transformers: :class:`Conv4Config`, :class:`Conv4Model` (``pooler_output`` = features) and
  :class:`Conv4ForImageClassification` (``.logits``, ``.loss`` given ``labels``), which save and load with
  ``save_pretrained``/``from_pretrained``, work with ``Trainer``, and are registered with the Auto classes
  (``model_type="conv4"``).

BatchNorm: by default ``track_running_stats=False``: batch statistics in training *and* evaluation, the MAML
convention (transductive: each support or query batch is normalised by its own statistics) and what makes the
functional inner loop pure (no running-average buffers to update, so tasks can be vmapped). Set
``bn_track_running_stats=True`` for ProtoNet/transfer training with running averages and ``model.eval()`` at test.

``norm="batch_ops"`` computes the same batch-statistics normalisation with elementary tensor ops
(:class:`BatchStatNorm2d`): equal values and gradients, and unlike ``nn.BatchNorm2d`` it may be vmapped in
second-order MAML (torch's batching rule for the BatchNorm backward gives wrong meta-gradients, functorch#534), so
the tasks of a meta-batch run as one batched call: much faster on a GPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import (
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput

from ...model_utils import image_classifier_output, register_image_classifier

__all__ = [
    "BatchStatNorm2d",
    "Conv4",
    "Conv4Backbone",
    "Conv4Block",
    "Conv4Config",
    "Conv4ForImageClassification",
    "Conv4Model",
    "Conv4PreTrainedModel",
    "conv4_feature_size",
]


def conv4_feature_size(
    image_size: int, hidden_size: int = 64, num_blocks: int = 4, downsample: str = "maxpool"
) -> int:
    """Length of the flattened feature of a square ``image_size`` input (each block halves the side: floor after a
    max-pool, ceil after a stride-2 convolution)."""
    side = image_size
    for _ in range(num_blocks):
        side = side // 2 if downsample == "maxpool" else (side + 1) // 2
    if side < 1:
        raise ValueError(
            f"image_size={image_size} is too small for {num_blocks} max-pool blocks (needs >= {2**num_blocks})."
        )
    return hidden_size * side * side


NORMS = ("batch", "batch_ops")


class BatchStatNorm2d(nn.Module):
    """``nn.BatchNorm2d(track_running_stats=False)`` written with elementary ops: each call normalises by its own
    batch's per-channel mean and (biased) variance, then scales and shifts (``weight``, ``bias``).

    Same parameter names and values as the torch layer, so state dicts load either way. ``torch.vmap`` of its
    second-order gradients is exact (the ops' batching rules are), which is why second-order MAML may vmap through it
    (``vmap_second_order_safe``) and not through ``nn.BatchNorm2d``.
    """

    vmap_second_order_safe = True

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features, self.eps = num_features, eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: Tensor) -> Tensor:
        centred = x - x.mean(dim=(0, 2, 3), keepdim=True)
        var = centred.square().mean(dim=(0, 2, 3), keepdim=True)
        shape = (1, -1, 1, 1)
        return centred * torch.rsqrt(var + self.eps) * self.weight.view(shape) + self.bias.view(shape)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def _norm_layer(norm: str, channels: int, track_running_stats: bool, momentum: float) -> nn.Module:
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r}: use 'batch' (torch BatchNorm2d) or 'batch_ops' (vmappable, same maths).")
    if norm == "batch_ops":
        if track_running_stats:
            raise ValueError(
                "norm='batch_ops' keeps no running statistics: use norm='batch' with bn_track_running_stats=True."
            )
        return BatchStatNorm2d(channels)
    return nn.BatchNorm2d(channels, momentum=momentum, track_running_stats=track_running_stats)


class Conv4Block(nn.Module):
    """``conv 3x3 -> BatchNorm -> ReLU -> max-pool 2`` (Matching Networks, ProtoNets), or with
    ``downsample="stride"`` a stride-2 ``conv 3x3 -> BatchNorm -> ReLU`` (MAML's Omniglot network: about 4x
    fewer multiply-adds at 28x28)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        track_running_stats: bool = False,
        momentum: float = 0.1,
        downsample: str = "maxpool",
        norm: str = "batch",
    ):
        super().__init__()
        if downsample not in ("maxpool", "stride"):
            raise ValueError(f"downsample={downsample!r}: use 'maxpool' or 'stride'.")
        self.pool = downsample == "maxpool"
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, stride=1 if self.pool else 2)
        self.norm = _norm_layer(norm, out_channels, track_running_stats, momentum)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.norm(self.conv(x)))
        return F.max_pool2d(x, 2) if self.pool else x


def _blocks(
    num_channels: int,
    hidden_size: int,
    num_blocks: int,
    track: bool,
    momentum: float,
    downsample: str = "maxpool",
    norm: str = "batch",
) -> nn.ModuleList:
    sizes = [num_channels] + [hidden_size] * num_blocks
    return nn.ModuleList(Conv4Block(a, b, track, momentum, downsample, norm) for a, b in zip(sizes[:-1], sizes[1:]))


class Conv4Backbone(nn.Module):
    """The four conv blocks; ``forward(pixel_values [B, C, H, W]) -> [B, features]``."""

    def __init__(
        self,
        num_channels: int = 1,
        hidden_size: int = 64,
        num_blocks: int = 4,
        bn_track_running_stats: bool = False,
        bn_momentum: float = 0.1,
        downsample: str = "maxpool",
        norm: str = "batch",
    ):
        super().__init__()
        self.blocks = _blocks(
            num_channels, hidden_size, num_blocks, bn_track_running_stats, bn_momentum, downsample, norm
        )

    def forward(self, pixel_values: Tensor) -> Tensor:
        x = pixel_values
        for block in self.blocks:
            x = block(x)
        return x.flatten(1)


class Conv4(nn.Module):
    """Conv4 with a linear N-way head, as a plain module: ``forward(pixel_values) -> logits [B, num_labels]``.

    ``base_model`` is the backbone, so the layer map finds blocks and head (ANIL's ``adapt="head"`` works) and
    ProtoNet's ``embedding="auto"`` uses the backbone features.
    """

    def __init__(
        self,
        num_labels: int = 5,
        num_channels: int = 1,
        hidden_size: int = 64,
        num_blocks: int = 4,
        image_size: int = 28,
        bn_track_running_stats: bool = False,
        bn_momentum: float = 0.1,
        downsample: str = "maxpool",
        norm: str = "batch",
    ):
        super().__init__()
        self.backbone = Conv4Backbone(
            num_channels, hidden_size, num_blocks, bn_track_running_stats, bn_momentum, downsample, norm
        )
        self.classifier = nn.Linear(conv4_feature_size(image_size, hidden_size, num_blocks, downsample), num_labels)

    @property
    def base_model(self) -> nn.Module:
        return self.backbone

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.classifier(self.backbone(pixel_values))


class Conv4Config(PreTrainedConfig):
    r"""Configuration of :class:`Conv4Model` / :class:`Conv4ForImageClassification`.

    Args:
        num_channels: input channels (1 for Omniglot, 3 for miniImageNet).
        hidden_size: filters per conv layer (64 in both papers; MAML used 32 on miniImageNet).
        num_blocks: conv blocks (4).
        image_size: side of the square input, fixing the feature length (28 Omniglot, 84 miniImageNet).
        bn_track_running_stats: keep BatchNorm running averages (False: batch statistics always, the MAML way).
        bn_momentum: BatchNorm running-average momentum when tracked.
        downsample: "maxpool" (conv, BN, ReLU, 2x2 max-pool: ProtoNets, Matching Networks) or "stride" (stride-2
            conv, BN, ReLU: MAML's Omniglot network).
        norm: "batch" (``nn.BatchNorm2d``) or "batch_ops" (:class:`BatchStatNorm2d`: batch statistics in elementary
            ops, so second-order MAML can vmap the tasks of a meta-batch; no running statistics).
        num_labels: N of the N-way head (a standard config argument).
    """

    model_type = "conv4"

    num_channels: int = 1
    hidden_size: int = 64
    num_blocks: int = 4
    image_size: int = 28
    bn_track_running_stats: bool = False
    bn_momentum: float = 0.1
    downsample: str = "maxpool"
    norm: str = "batch"


class Conv4PreTrainedModel(PreTrainedModel):
    config_class = Conv4Config
    base_model_prefix = "conv4"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["Conv4Block"]

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, BatchStatNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            if module.weight is not None:
                init.ones_(module.weight)
                init.zeros_(module.bias)
            if module.running_mean is not None:
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)


class Conv4Model(Conv4PreTrainedModel):
    """The Conv4 backbone: ``last_hidden_state`` is the final feature map, ``pooler_output`` its flattening."""

    def __init__(self, config: Conv4Config):
        super().__init__(config)
        conv4_feature_size(config.image_size, config.hidden_size, config.num_blocks, config.downsample)  # checks
        self.blocks = _blocks(
            config.num_channels,
            config.hidden_size,
            config.num_blocks,
            config.bn_track_running_stats,
            config.bn_momentum,
            config.downsample,
            getattr(config, "norm", "batch"),
        )
        self.post_init()

    def forward(
        self, pixel_values: Tensor, output_hidden_states: bool | None = None, return_dict: bool | None = None, **kwargs
    ) -> BaseModelOutputWithPooling | tuple:
        hidden_states = () if output_hidden_states else None
        x = pixel_values
        for block in self.blocks:
            if output_hidden_states:
                hidden_states += (x,)
            x = block(x)
        if output_hidden_states:
            hidden_states += (x,)
        pooled = x.flatten(1)
        if return_dict is False:
            return (x, pooled) + ((hidden_states,) if output_hidden_states else ())
        return BaseModelOutputWithPooling(last_hidden_state=x, pooler_output=pooled, hidden_states=hidden_states)


class Conv4ForImageClassification(Conv4PreTrainedModel):
    """Conv4 with a linear head over the flattened features; ``labels`` give a cross-entropy ``loss``."""

    def __init__(self, config: Conv4Config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.conv4 = Conv4Model(config)
        self.classifier = nn.Linear(
            conv4_feature_size(config.image_size, config.hidden_size, config.num_blocks, config.downsample),
            config.num_labels,
        )
        self.post_init()

    def forward(
        self,
        pixel_values: Tensor,
        labels: Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        out = self.conv4(pixel_values, output_hidden_states=output_hidden_states)
        logits = self.classifier(out.pooler_output)
        hidden = out.hidden_states if output_hidden_states else None
        return image_classifier_output(logits, labels, hidden, return_dict)


register_image_classifier("conv4", Conv4Config, Conv4Model, Conv4ForImageClassification)
