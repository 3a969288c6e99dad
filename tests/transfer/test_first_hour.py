"""What a daily Trainer user meets in the first hour: schedules that finish, a model card with every scheduler, LP-FT
on `with_transform` images, the stock-Trainer refusal, bad fields refused when the arguments are built, logs that
say what happens, data mistakes named."""

import logging
import os

import numpy as np
import pytest
import torch
import transformers as T
from datasets import Dataset
from tiny_models import tiny_bert
from transformers import Trainer, TrainingArguments

from hf_transfer_meta import (
    GradualUnfreezingCallback,
    LayerMap,
    SurgicalFineTuningCallback,
    TransferTrainer,
    TransferTrainingArguments,
)


def bert(layers=3, seed=0):
    return tiny_bert(layers=layers, seed=seed)


def text_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 50, size=(n, 8))
    return Dataset.from_dict({"input_ids": ids.tolist(), "labels": (ids[:, 0] > 25).astype(int).tolist()})


def args(tmp_path, cls=TransferTrainingArguments, **kw):
    base = dict(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, learning_rate=1e-3, num_train_epochs=1,
        report_to="none", use_cpu=True, save_strategy="no", disable_tqdm=True, seed=0, logging_steps=1,
        dataloader_num_workers=0,
    )  # fmt: skip
    base.update(kw)
    return cls(**base)


def moved_depths(model, before):
    lm = LayerMap.from_model(model)
    moved = dict.fromkeys(range(lm.num_depths), False)
    for n, p in model.named_parameters():
        moved[lm.depth_of[n]] |= not torch.equal(before[n], p.detach())
    return moved


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# ------------------------------------------------------------------------------------- U1: schedules that finish
def test_default_gradual_unfreezing_trains_every_depth_in_a_one_epoch_run(tmp_path, caplog):
    model = bert(layers=3)  # 5 depths; 64 examples / 8 = 8 steps
    before = snapshot(model)
    a = args(tmp_path, gradual_unfreezing=True, layer_lr_decay=1 / 2.6, lr_scheduler_type="slanted_triangular")
    trainer = TransferTrainer(model=model, args=a, train_dataset=text_data())
    with caplog.at_level(logging.WARNING, logger="hf_transfer_meta"):
        trainer.train()
    assert all(moved_depths(model, before).values())
    # spread over the first half: depth k from the top joins at round(k * 4 / 4) = k; all from step 4 of 8
    assert [p["steps"][0] for p in trainer.transfer_schedule.describe()] == [0, 1, 2, 3, 4]
    text = caplog.text
    assert "every depth trains from step 4 of 8" in text
    assert "step 4: training 5 of 5 depths" in text  # each phase change at WARNING


def test_unfreeze_interval_that_cannot_finish_is_refused_before_step_one(tmp_path):
    model = bert(layers=3)
    before = snapshot(model)
    a = args(
        tmp_path, gradual_unfreezing=True, unfreeze_every=1, unfreeze_unit="epoch", save_strategy="steps", save_steps=1
    )
    trainer = TransferTrainer(model=model, args=a, train_dataset=text_data())
    with pytest.raises(
        ValueError, match=r"reaches the last depth at step 32, but this run has 8 steps.*unfreeze_every <= 0\.125"
    ):
        trainer.train()
    assert trainer.state.global_step == 0
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert not os.path.exists(a.output_dir) or not os.listdir(a.output_dir)
    # the same for a stock Trainer with the public callback
    cb = GradualUnfreezingCallback(every=1, unit="epoch")
    with pytest.raises(ValueError, match="but this run has 8 steps"):
        Trainer(
            model=bert(), args=args(tmp_path, TrainingArguments), train_dataset=text_data(), callbacks=[cb]
        ).train()


def test_default_callback_spreads_the_unfreezing_on_a_stock_trainer(tmp_path):
    model = bert(layers=3)
    before = snapshot(model)
    cb = GradualUnfreezingCallback()
    Trainer(model=model, args=args(tmp_path, TrainingArguments), train_dataset=text_data(), callbacks=[cb]).train()
    assert all(moved_depths(model, before).values())


# ----------------------------------------------------------------------------------------------- U2: model card
@pytest.mark.parametrize("scheduler", ["slanted_triangular", "cosine", "linear"])
def test_model_card_with_every_scheduler(tmp_path, scheduler):
    a = args(tmp_path, layer_lr_decay=0.5, lr_scheduler_type=scheduler, max_steps=2)
    trainer = TransferTrainer(model=bert(), args=a, train_dataset=text_data())
    trainer.train()
    trainer.create_model_card(model_name="tiny-bert-test")
    card = open(os.path.join(a.output_dir, "README.md")).read()
    assert f"lr_scheduler_type: {scheduler}" in card


# ------------------------------------------------------------------------------ U3: LP-FT with with_transform images
def test_lp_ft_probe_reads_with_transform_images(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 48)
    images = [
        Image.fromarray((np.clip(rng.normal(80 * y, 40, size=(16, 16, 3)), 0, 255)).astype("uint8")) for y in labels
    ]
    raw = Dataset.from_dict({"img": images, "label": labels.tolist()})

    def transform(batch):  # the standard image pattern: decode + normalise on the fly
        x = [torch.tensor(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1) for im in batch["img"]]
        return {"pixel_values": x, "labels": batch["label"]}

    def collate(examples):
        return {
            "pixel_values": torch.stack([e["pixel_values"] for e in examples]),
            "labels": torch.tensor([e["labels"] for e in examples]),
        }

    torch.manual_seed(0)
    cfg = T.ViTConfig(
        image_size=16, patch_size=8, num_channels=3, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, num_labels=3,
    )  # fmt: skip
    model = T.ViTForImageClassification(cfg)
    train, val = raw.select(range(32)).with_transform(transform), raw.select(range(32, 48)).with_transform(transform)
    a = args(tmp_path, lp_mode="logistic", lp_c_grid=[0.1, 1.0, 10.0], remove_unused_columns=False, max_steps=2)
    trainer = TransferTrainer(model=model, args=a, train_dataset=train, eval_dataset=val, data_collator=collate)
    trainer.train()
    # the probe fit on these images: a random 3-class guess is ~1/3, the colour-coded classes are separable
    assert trainer.probe_result.train_accuracy > 0.9
    probe_logs = [h for h in trainer.state.log_history if "lp_probe_C" in h]
    assert probe_logs and probe_logs[0]["lp_probe_C"] in (0.1, 1.0, 10.0)


# --------------------------------------------------------------------------------- U4: the stock-Trainer refusal
@pytest.mark.parametrize("make_cb", [lambda: GradualUnfreezingCallback(every=1, unit="step"),
                                     lambda: SurgicalFineTuningCallback(blocks=["first"])])  # fmt: skip
def test_public_callbacks_refuse_an_optimizer_without_the_frozen_parameters(tmp_path, make_cb):
    model = bert()
    model.bert.requires_grad_(False)  # frozen before Trainer builds its optimizer: it holds the head only
    trainer = Trainer(
        model=model, args=args(tmp_path, TrainingArguments, max_steps=8), train_dataset=text_data(),
        callbacks=[make_cb()],
    )  # fmt: skip
    with pytest.raises(RuntimeError, match=r"does not hold \d+ parameter\(s\)"):
        trainer.train()


# ------------------------------------------------------------------------------- U5: bad fields at construction
@pytest.mark.parametrize(
    "field, value, match",
    [
        ("wise_ft_alphas", [1.5], r"wise_ft_alphas=\[1\.5\].*\[0, 1\]"),
        ("wise_ft_alphas", [], r"wise_ft_alphas=\[\]"),
        ("layer_lr_decay", 1.3, r"layer_lr_decay=1\.3.*\(0, 1\]"),
        ("layer_lr_decay", 0.0, r"layer_lr_decay=0\.0"),
        ("l2sp_alpha", -0.1, r"l2sp_alpha=-0\.1.*>= 0"),
        ("l2sp_beta", -1.0, r"l2sp_beta=-1\.0"),
        ("stlr_cut_frac", 1.5, r"stlr_cut_frac=1\.5.*\(0, 1\)"),
        ("stlr_ratio", 0.5, r"stlr_ratio=0\.5"),
        ("lr_slice", [1e-3], r"lr_slice=\[0\.001\].*two learning rates"),
        ("lr_slice", [1e-3, 1e-5], r"low <= high"),
        ("unfreeze_every", 0, r"unfreeze_every=0.*> 0"),
        ("unfreeze_fraction", 0, r"unfreeze_fraction=0"),
        ("lp_epochs", 0, r"lp_epochs=0"),
        ("lp_learning_rate", -1.0, r"lp_learning_rate=-1\.0"),
        ("lp_c_grid", [0.0, 1.0], r"lp_c_grid"),
        ("reinit_top_blocks", -1, r"reinit_top_blocks=-1"),
        ("head_lr_multiplier", 0.0, r"head_lr_multiplier=0\.0"),
        ("freeze_mode", "sometimes", r"freeze_mode='sometimes'"),
        ("lp_mode", "probe", r"lp_mode='probe'"),
        ("unfreeze_unit", "batch", r"unfreeze_unit='batch'"),
        ("surgical_blocks", [], r"surgical_blocks=\[\]"),
    ],
)
def test_bad_field_is_refused_when_the_arguments_are_built(tmp_path, field, value, match):
    with pytest.raises(ValueError, match=match):
        args(tmp_path, **{field: value})
    assert not os.path.exists(tmp_path / "out")


def test_missing_eval_dataset_is_refused_at_construction(tmp_path):
    for kw in (dict(wise_ft_alphas=[0.5, 1.0]), dict(lp_mode="logistic")):
        with pytest.raises(ValueError, match="eval_dataset"):
            TransferTrainer(model=bert(), args=args(tmp_path, **kw), train_dataset=text_data())
    out = tmp_path / "out"
    assert not out.exists() or not os.listdir(out)  # stock Trainer makes the folder at init; nothing is in it


# ------------------------------------------------------------------------------------------------- U6: the logs
def test_headline_learning_rate_is_the_head_lr_and_group_lrs_are_logged(tmp_path):
    a = args(tmp_path, lp_mode="epochs", lp_epochs=0.5, layer_lr_decay=0.5, lr_scheduler_type="constant")
    trainer = TransferTrainer(model=bert(), args=a, train_dataset=text_data())
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 8
    for h in logs:
        assert h["learning_rate"] == pytest.approx(1e-3)  # the head's LR, not the frozen embeddings' 0
        assert h["learning_rate"] == h["lr/04_head_no_decay"]
    assert logs[0]["lr/00_embeddings_no_decay"] == 0.0  # frozen during the head-only stage
    assert logs[-1]["lr/00_embeddings_no_decay"] == pytest.approx(1e-3 * 0.5**4)


# ------------------------------------------------------------------------------------------- U7: data mistakes
def test_string_labels_with_lp_ft_name_the_column_and_the_fix(tmp_path):
    data = text_data().map(lambda e: {"label": ["World", "Sports"][e["labels"]]}).remove_columns("labels")
    with pytest.raises(
        ValueError,
        match=r"Column 'label' of train_dataset holds strings \(e\.g\. '(World|Sports)'\).*class_encode_column\('label'\)",
    ):
        TransferTrainer(model=bert(), args=args(tmp_path, lp_mode="logistic"), train_dataset=data, eval_dataset=data)


def test_empty_dataset_with_lp_ft_says_it_is_empty(tmp_path):
    empty = text_data().select([])
    with pytest.raises(ValueError, match=r"train_dataset is empty \(0 rows\)"):
        TransferTrainer(
            model=bert(), args=args(tmp_path, lp_mode="logistic"), train_dataset=empty, eval_dataset=text_data()
        )


def test_lp_probe_shows_progress_and_says_what_it_found(tmp_path, capfd, caplog):
    a = args(tmp_path, lp_mode="logistic", lp_c_grid=[0.1, 1.0], max_steps=1, disable_tqdm=False)
    trainer = TransferTrainer(model=bert(), args=a, train_dataset=text_data(), eval_dataset=text_data(seed=1))
    with caplog.at_level(logging.WARNING, logger="hf_transfer_meta"):
        metrics = trainer.train().metrics
    err = capfd.readouterr().err
    assert "LP probe: train features" in err and "LP probe: eval features" in err and "LP probe: C sweep" in err
    assert "LP-FT probe: C=" in caplog.text and "validation accuracy" in caplog.text
    assert metrics["lp_probe_C"] in (0.1, 1.0) and 0 <= metrics["lp_probe_val_accuracy"] <= 1
    first_log = trainer.state.log_history[0]
    assert first_log["lp_probe_C"] == metrics["lp_probe_C"]
