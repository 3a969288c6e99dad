"""`hf-transfer-meta select` on files: text candidates from a tsv, vision candidates from an image folder; the table
is printed best first, selection.json written; bad input refused with exit status 2 and nothing written."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from test_select import _texts, candidates  # noqa: F401  (the tiny text candidates fixture)

from hf_transfer_meta.cli import main


def test_text_candidates_from_a_headerless_tsv(candidates, tmp_path, capsys):  # noqa: F811
    data = _texts(120, seed=3)
    path = tmp_path / "train.tsv"
    path.write_text("".join(f"{t}\t{y}\n" for t, y in zip(data["text"], data["topic"], strict=True)))
    out = tmp_path / "out"
    code = main(["select", "--candidates", candidates["blind"], candidates["good"], "--train_file", str(path),
                 "--column_names", "text", "topic", "--text_column_names", "text", "--label_column_name", "topic",
                 "--folds", "3", "--output_dir", str(out)])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.index(candidates["good"]) < printed.index(candidates["blind"])
    saved = json.loads((out / "selection.json").read_text())
    assert saved["candidates"][0]["candidate"] == candidates["good"] and saved["folds"] == 3


def _folder(root, per_class=12, seed=0):
    rng = np.random.default_rng(seed)
    for name, colour in {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.integers(-25, 26, size=(16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_vision_candidates_from_an_image_folder(tmp_path, capsys):
    from transformers import ViTImageProcessorPil

    from hf_transfer_meta.vision import CifarResNetConfig, CifarResNetForImageClassification

    names = []
    for name, scale in (("sees", 1.0), ("dark", 0.0)):
        torch.manual_seed(0)
        model = CifarResNetForImageClassification(
            CifarResNetConfig(depths=[1, 1, 1], hidden_sizes=[8, 8, 8], image_size=16, num_labels=3)
        )
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(scale)  # all-zero weights: every image gives the same features
        model.save_pretrained(tmp_path / name)
        ViTImageProcessorPil(
            size={"height": 16, "width": 16}, image_mean=[0.5] * 3, image_std=[0.5] * 3
        ).save_pretrained(tmp_path / name)
        names.append(str(tmp_path / name))
    out = tmp_path / "out"
    code = main(["select", "--candidates", names[1], names[0], "--train_dir", str(_folder(tmp_path / "imgs")),
                 "--folds", "3", "--output_dir", str(out)])  # fmt: skip
    assert code == 0
    saved = json.loads((out / "selection.json").read_text())
    best, worst = saved["candidates"]
    assert best["candidate"] == names[0] and best["cv_accuracy"] > 0.9 and worst["cv_accuracy"] < 0.5


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--train_file", "nope.tsv", "--text_column_names", "text"], "nope.tsv"),
        (["--text_column_names", "text"], "--train_file or --train_dir"),
        (["--train_file", "x.tsv"], "--text_column_names"),
        (["--train_file", "x.tsv", "--text_column_names", "text", "--finetune_top", "1"], "--validation_file"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, extra, needle):
    out = tmp_path / "out"
    assert main(["select", "--candidates", "some/model", *extra, "--output_dir", str(out)]) == 2
    assert needle in capsys.readouterr().err
    assert not out.exists()
