"""Random affine augmentation of meta-training images: the warp's geometry, its random stream, and that MetaTrainer
applies it to training episodes only."""

import numpy as np
import pytest
import torch

from hf_transfer_meta.meta import (
    EpisodeCollator,
    EpisodeDataset,
    MetaTrainer,
    MetaTrainingArguments,
    RandomAffine,
    affine_warp,
    load_digits_dataset,
)


def block(h=28, w=28, rows=slice(10, 14), cols=slice(12, 18)):
    x = torch.zeros(1, h, w)
    x[0, rows, cols] = 1.0
    return x


def test_affine_warp_geometry():
    x = block()
    torch.testing.assert_close(affine_warp(x), x, atol=1e-6, rtol=0)  # identity
    shifted = block(rows=slice(13, 17), cols=slice(14, 20))  # 2 px right, 3 px down, zeros come in
    torch.testing.assert_close(affine_warp(x, translate=(2, 3)), shifted, atol=1e-6, rtol=0)
    torch.testing.assert_close(affine_warp(x, degrees=90), torch.rot90(x, 1, dims=(-2, -1)), atol=1e-6, rtol=0)
    assert affine_warp(x, scale=2.0).sum().item() == pytest.approx(4 * x.sum().item(), rel=1e-5)  # area x4
    # non-square: a block 5 px right of the centre ends 5 px above it after a quarter turn counter-clockwise
    y = affine_warp(block(20, 30, slice(9, 11), slice(19, 21)), degrees=90)
    assert torch.nonzero(y[0] > 0.5).tolist() == [[4, 14], [4, 15], [5, 14], [5, 15]]
    with pytest.raises(ValueError, match="scale"):
        affine_warp(x, scale=0)


def test_random_affine_is_seeded_varied_and_bounded():
    image = np.asarray(block()[0])  # (H, W) float array, as Omniglot rows are
    a, b, c = RandomAffine(seed=0), RandomAffine(seed=0), RandomAffine(seed=1)
    outs_a = [a({"image": image, "label": 3})["image"] for _ in range(5)]
    outs_b = [b({"image": image, "label": 3})["image"] for _ in range(5)]
    assert all(torch.equal(p, q) for p, q in zip(outs_a, outs_b))  # same seed, same stream
    assert not torch.equal(outs_a[0], c({"image": image})["image"])
    assert not torch.equal(outs_a[0], outs_a[1])  # a new warp per call
    assert outs_a[0].shape == (1, 28, 28) and outs_a[0].dtype == torch.float32
    # no warp at all when every range is zero
    torch.testing.assert_close(RandomAffine(0, 0, (1, 1))({"image": image})["image"], block(), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="translate"):
        RandomAffine(translate=1.5)


def test_meta_trainer_augments_training_episodes_only(tmp_path):
    digits = load_digits_dataset()
    labels = np.asarray(digits["label"])
    train, test = digits.select(np.flatnonzero(labels < 6)), digits.select(np.flatnonzero(labels >= 6))
    args = MetaTrainingArguments(
        output_dir=str(tmp_path), algorithm="protonet", n_way=3, k_shot=1, n_query=2, max_steps=1,
        eval_episodes=600, report_to="none", use_cpu=True,
    )  # fmt: skip
    from hf_transfer_meta.meta.models import Conv4Backbone

    model = Conv4Backbone(num_blocks=3)
    plain = MetaTrainer(model=model, args=args, train_dataset=train, eval_dataset=test)
    warped = MetaTrainer(
        model=model, args=args, train_dataset=train, eval_dataset=test, train_transform=RandomAffine()
    )
    collate = EpisodeCollator()
    a, b = collate.collate_episode(plain.train_dataset[0]), collate.collate_episode(warped.train_dataset[0])
    assert a["support"]["pixel_values"].shape == b["support"]["pixel_values"].shape  # the same rows ...
    assert not torch.equal(a["support"]["pixel_values"], b["support"]["pixel_values"])  # ... warped
    e1, e2 = collate.collate_episode(plain.eval_dataset[0]), collate.collate_episode(warped.eval_dataset[0])
    assert torch.equal(e1["query"]["pixel_values"], e2["query"]["pixel_values"])  # test episodes untouched
    assert warped.meta_summary()["train_augmentation"].startswith("RandomAffine(degrees=10.0")  # for the model card
    assert "train_augmentation" not in plain.meta_summary()
    episodes = EpisodeDataset(train, 3, 1, 2, num_episodes=4)
    with pytest.raises(ValueError, match="EpisodeDataset\\(transform=...\\)"):
        MetaTrainer(model=model, args=args, train_dataset=episodes, train_transform=RandomAffine())
