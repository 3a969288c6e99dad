"""Images of the user's files for episodes (meta/data/images.py): paths resolved beside their file, every image
decoded once with a bad one named by file and row, one colour mode for the collator."""

import io

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from hf_transfer_meta.meta import ImageProcessorInputs, PixelValues, as_image_column, check_images
from hf_transfer_meta.meta.data.images import image_mode, to_pil


def png(value: int, mode: str = "L", size: int = 4) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (size, size), value if mode == "L" else (value, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_relative_paths_are_read_beside_their_file(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(png(10))
    ds = datasets.Dataset.from_dict({"path": ["imgs/a.png"], "label": [0]})
    out = as_image_column(ds, "path", "--train_file t.csv", base_dir=tmp_path)
    assert isinstance(out.features["path"], datasets.Image)
    assert np.asarray(out[0]["path"]).max() == 10
    with pytest.raises(ValueError, match=r"--train_file t.csv, row 1: the image file 'imgs/b.png' does not exist"):
        as_image_column(datasets.Dataset.from_dict({"path": ["imgs/a.png", "imgs/b.png"]}), "path", "--train_file t.csv",
                        base_dir=tmp_path)  # fmt: skip


def test_bytes_structs_become_images_and_a_bad_one_is_named_by_row():
    good = {"bytes": png(20), "path": None}
    ds = datasets.Dataset.from_dict({"img": [good, good, {"bytes": b"garbage", "path": "third.png"}]})
    ds = as_image_column(ds, "img", "--train_file x.parquet")
    check_images(ds.select([0, 1]), "img", "--train_file x.parquet")  # decodable: no error
    with pytest.raises(ValueError, match=r"--train_file x.parquet, row 2 \(third.png\): the image cannot be decoded"):
        check_images(ds, "img", "--train_file x.parquet", batch_size=2)  # the row counts across batches


def test_a_column_that_holds_no_images_is_refused():
    with pytest.raises(ValueError, match=r"column 'n' .* does not hold images"):
        as_image_column(datasets.Dataset.from_dict({"n": [1.5, 2.5]}), "n", "--train_file x.csv")


def test_colour_modes_and_the_collator_transforms():
    grey, colour = Image.new("L", (4, 4), 7), Image.new("RGB", (4, 4), (1, 2, 3))
    assert image_mode(grey) == "L" and image_mode(colour) == "RGB"
    assert image_mode(np.zeros((8, 8), np.float32)) == "L" and image_mode(np.zeros((8, 8, 3), np.uint8)) == "RGB"
    assert to_pil(np.full((2, 2), 0.5, np.float32), "L").getpixel((0, 0)) == 128
    x = PixelValues("L", 6)(colour)
    assert x.shape == (1, 6, 6) and torch.allclose(x, torch.full_like(x, (0.299 * 1 + 0.587 * 2 + 0.114 * 3) / 255),
                                                   atol=2e-3)  # fmt: skip
    assert PixelValues("RGB", None)(grey).shape == (3, 4, 4)

    seen = {}

    def processor(images, return_tensors="pt"):
        seen["modes"] = [im.mode for im in images]
        return {"pixel_values": torch.zeros(len(images), 3, 2, 2)}

    out = ImageProcessorInputs(processor, "RGB")([grey, np.zeros((3, 3), np.float32)])
    assert seen["modes"] == ["RGB", "RGB"] and out["pixel_values"].shape[0] == 2
