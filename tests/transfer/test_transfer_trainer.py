import math
import os

import numpy as np
import pytest
import torch
import transformers as T
from datasets import Dataset
from tiny_models import tiny_bert
from transformers import Trainer, TrainerCallback, TrainingArguments

from hf_transfer_meta import (
    GradualUnfreezingCallback,
    LayerMap,
    TransferTrainer,
    TransferTrainingArguments,
    slanted_triangular,
)


def bert(layers=3, dropout=0.0, seed=0):
    return tiny_bert(layers=layers, dropout=dropout, seed=seed)


def resnet(seed=0):
    torch.manual_seed(seed)
    cfg = T.ResNetConfig(
        num_channels=1, embedding_size=8, hidden_sizes=[8, 8, 8], depths=[1, 1, 1], layer_type="basic", num_labels=3
    )
    return T.ResNetForImageClassification(cfg)


def text_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 50, size=(n, 8))
    return Dataset.from_dict({"input_ids": ids.tolist(), "labels": (ids[:, 0] > 25).astype(int).tolist()})


def image_data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 1, 16, 16)).astype("float32")
    return Dataset.from_dict({"pixel_values": x.tolist(), "labels": rng.integers(0, 3, n).tolist()}).with_format(
        "torch"
    )


def args(tmp_path, cls=TransferTrainingArguments, **kw):
    base = dict(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, learning_rate=1e-3, num_train_epochs=2,
        report_to="none", use_cpu=True, save_strategy="no", disable_tqdm=True, seed=0, logging_steps=1,
        weight_decay=0.01, dataloader_num_workers=0,
    )  # fmt: skip
    base.update(kw)
    return cls(**base)


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def moved_depths(lm, before, model):
    moved = {}
    for n, p in model.named_parameters():
        moved[lm.depth_of[n]] = moved.get(lm.depth_of[n], False) or not torch.equal(before[n], p.detach())
    return moved


class LRRecorder(TrainerCallback):
    def __init__(self):
        self.lrs = []

    def on_optimizer_step(self, args, state, control, optimizer=None, **kw):
        self.lrs.append(
            {g["name"]: g["lr"] for g in optimizer.param_groups}
            if "name" in optimizer.param_groups[0]
            else [g["lr"] for g in optimizer.param_groups]
        )


def test_no_strategy_reproduces_trainer_exactly(tmp_path):
    data = text_data()
    common = dict(warmup_steps=0.2, lr_scheduler_type="cosine", weight_decay=0.01)
    stock_model = bert()
    Trainer(model=stock_model, args=args(tmp_path, TrainingArguments, **common), train_dataset=data).train()
    ours = bert()
    trainer = TransferTrainer(model=ours, args=args(tmp_path, **common), train_dataset=data)
    trainer.train()
    for (n, p), (_, q) in zip(stock_model.named_parameters(), ours.named_parameters()):
        assert torch.equal(p, q), n
    # and it did train
    assert not torch.equal(bert().classifier.weight, ours.classifier.weight)


def test_plain_training_arguments_are_accepted(tmp_path):
    a = args(tmp_path, TrainingArguments, max_steps=2)
    trainer = TransferTrainer(model=bert(), args=a, train_dataset=text_data())
    assert trainer.args is a  # the user's object, not a converted copy (no strategy: stock Trainer)
    trainer.train()


def test_gradual_unfreezing_keeps_frozen_depths_bit_identical(tmp_path):
    model = bert(layers=3)  # depths 0..4
    lm = LayerMap.from_model(model)
    before = snapshot(model)
    rec = LRRecorder()
    a = args(
        tmp_path, gradual_unfreezing=True, unfreeze_every=3, unfreeze_unit="step", max_steps=7,
        allow_partial_unfreezing=True,
    )  # fmt: skip
    trainer = TransferTrainer(model=model, args=a, train_dataset=text_data(), callbacks=[rec])
    trainer.train()
    # steps 0-2: head; 3-5: +block 3; 6: +block 2. Blocks 1 and embeddings never train.
    assert moved_depths(lm, before, model) == {0: False, 1: False, 2: True, 3: True, 4: True}
    # frozen parameters never got optimizer state (no momentum, no weight decay applied)
    state_ids = {id(p) for p in trainer.optimizer.state}
    for n, p in model.named_parameters():
        assert (id(p) in state_ids) == (lm.depth_of[n] >= 2), n
    # everything is trainable again after training, all in the optimizer
    assert all(p.requires_grad for p in model.parameters())
    in_opt = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert in_opt == {id(p) for p in model.parameters()}
    # LR of frozen groups is 0 while frozen
    assert rec.lrs[0]["02_block_2"] == 0 and rec.lrs[6]["02_block_2"] > 0 and rec.lrs[2]["03_block_3"] == 0


def test_mask_mode_equals_requires_grad_mode(tmp_path):
    results = []
    for mode in ("requires_grad", "mask"):
        model = bert()
        a = args(
            tmp_path, gradual_unfreezing=True, unfreeze_every=2, unfreeze_unit="step", max_steps=6, freeze_mode=mode,
            allow_partial_unfreezing=True,
        )  # fmt: skip
        TransferTrainer(model=model, args=a, train_dataset=text_data()).train()
        results.append(snapshot(model))
    for n in results[0]:
        assert torch.allclose(results[0][n], results[1][n], atol=1e-7), n


def test_lp_stage_then_full_fine_tuning(tmp_path):
    model = bert()
    lm = LayerMap.from_model(model)
    before = snapshot(model)
    # 64 examples / 8 = 8 steps per epoch: LP for one epoch, stop inside LP
    a = args(tmp_path, lp_mode="epochs", lp_epochs=1, max_steps=8, lp_learning_rate=5e-3)
    TransferTrainer(model=model, args=a, train_dataset=text_data()).train()
    assert moved_depths(lm, before, model) == {0: False, 1: False, 2: False, 3: False, 4: True}
    model2 = bert()
    rec = LRRecorder()
    a = args(tmp_path, lp_mode="epochs", lp_epochs=1, num_train_epochs=2, lp_learning_rate=5e-3, warmup_steps=0)
    TransferTrainer(model=model2, args=a, train_dataset=text_data(), callbacks=[rec]).train()
    assert all(moved_depths(lm, before, model2).values())
    # LP: 8 steps linear from lp_learning_rate; FT: 8 steps linear from learning_rate (restarted)
    for step in range(16):
        head = rec.lrs[step]["04_head"]
        emb = rec.lrs[step]["00_embeddings"]
        if step < 8:
            assert head == pytest.approx(5e-3 * (8 - step) / 8) and emb == 0
        else:
            assert head == pytest.approx(1e-3 * (8 - (step - 8)) / 8) and emb == pytest.approx(head)


def test_llrd_stlr_lrs_follow_the_formula(tmp_path):
    rec = LRRecorder()
    a = args(tmp_path, layer_lr_decay=0.5, lr_scheduler_type="slanted_triangular", max_steps=20, weight_decay=0.0)
    TransferTrainer(model=bert(), args=a, train_dataset=text_data(), callbacks=[rec]).train()
    assert len(rec.lrs) == 20
    for step in (0, 10, 19):
        for d, name in enumerate(["00_embeddings", "01_block_1", "02_block_2", "03_block_3", "04_head"]):
            expected = 1e-3 * 0.5 ** (4 - d) * slanted_triangular(step, 20, 0.1, 32)
            assert rec.lrs[step][name + "_no_decay"] == pytest.approx(expected, rel=1e-9), (step, name)


def test_slice_with_gradual_unfreezing_restarts(tmp_path):
    rec = LRRecorder()
    a = args(
        tmp_path, lr_slice=[1e-5, 1e-3], gradual_unfreezing=True, unfreeze_every=4, unfreeze_unit="step",
        unfreeze_restart_schedule=True, max_steps=20, weight_decay=0.0, lr_scheduler_type="linear",
    )  # fmt: skip
    TransferTrainer(model=bert(), args=a, train_dataset=text_data(), callbacks=[rec]).train()
    base = {d: 1e-5 * 100 ** (d / 4) for d in range(5)}
    for step in (0, 5, 9, 16, 19):
        phase = min(step // 4, 4)
        start, end = phase * 4, (phase + 1) * 4 if phase < 4 else 20
        mult = (end - step) / (end - start)
        for d in range(5):
            expected = base[d] * mult if d >= 4 - phase else 0.0
            got = [v for k, v in rec.lrs[step].items() if k.startswith(f"{d:02d}_")][0]
            assert got == pytest.approx(expected, rel=1e-9), (step, d)


def test_surgical_first_block_freezes_batchnorm_statistics(tmp_path):
    model = resnet()
    lm = LayerMap.from_model(model)
    before = snapshot(model)
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    a = args(tmp_path, surgical_blocks=["first"], max_steps=4)
    TransferTrainer(model=model, args=a, train_dataset=image_data()).train()
    assert moved_depths(lm, before, model) == {0: False, 1: True, 2: False, 3: False, 4: False}
    for n, b in model.named_buffers():
        if "running_mean" in n:
            assert torch.equal(b, buffers[n]) != n.startswith("resnet.encoder.stages.0."), n
    # without frozen_eval_mode the frozen BatchNorms' statistics drift (what the flag prevents)
    model = resnet()
    a = args(tmp_path, surgical_blocks=["first"], max_steps=4, frozen_eval_mode=False)
    TransferTrainer(model=model, args=a, train_dataset=image_data()).train()
    stem = dict(model.named_buffers())["resnet.embedder.embedder.normalization.running_mean"]
    assert not torch.equal(stem, buffers["resnet.embedder.embedder.normalization.running_mean"])


def test_frozen_modules_run_in_eval_mode(tmp_path):
    model = bert(dropout=0.5)
    seen = {}

    def hook(name):
        def fn(module, inputs, output):
            seen.setdefault(name, set()).add(module.training)

        return fn

    model.bert.encoder.layer[0].register_forward_hook(hook("block1"))
    model.bert.encoder.layer[2].register_forward_hook(hook("block3"))
    a = args(tmp_path, trainable_depths=["last", "head"], max_steps=2)
    TransferTrainer(model=model, args=a, train_dataset=text_data()).train()
    assert seen == {"block1": {False}, "block3": {True}}


def test_callback_with_stock_trainer(tmp_path):
    model = bert()
    lm = LayerMap.from_model(model)
    before = snapshot(model)
    cb = GradualUnfreezingCallback(every=3, unit="step", allow_partial=True)
    Trainer(
        model=model, args=args(tmp_path, TrainingArguments, max_steps=4), train_dataset=text_data(), callbacks=[cb]
    ).train()
    assert moved_depths(lm, before, model) == {0: False, 1: False, 2: False, 3: True, 4: True}
    # a model frozen before the Trainer is built: its optimizer lacks those parameters -> refused
    model = bert()
    model.bert.requires_grad_(False)
    cb = GradualUnfreezingCallback(every=3, unit="step", allow_partial=True)
    trainer = Trainer(
        model=model, args=args(tmp_path, TrainingArguments, max_steps=4), train_dataset=text_data(), callbacks=[cb]
    )
    with pytest.raises(RuntimeError, match="Use hf_transfer_meta.TransferTrainer"):
        trainer.train()


def test_every_group_lr_is_logged(tmp_path):
    a = args(tmp_path, layer_lr_decay=0.5, max_steps=3, weight_decay=0.0)
    trainer = TransferTrainer(model=bert(), args=a, train_dataset=text_data())
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert logged and all(f"lr/{d:02d}_{p}_no_decay" in logged[0] for d, p in
                          [(0, "embeddings"), (1, "block_1"), (4, "head")])  # fmt: skip
    assert logged[0]["lr/00_embeddings_no_decay"] == pytest.approx(logged[0]["lr/04_head_no_decay"] / 16)


def test_auto_rgn_scales_each_tensor(tmp_path):
    from hf_transfer_meta import AutoRGNCallback

    a = args(tmp_path, auto_rgn=True, max_steps=3, optim="sgd", weight_decay=0.0)
    trainer = TransferTrainer(model=bert(), args=a, train_dataset=text_data())
    trainer.train()
    assert all(len(g["params"]) == 1 for g in trainer.optimizer.param_groups)
    rgn = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, AutoRGNCallback))
    mults = list(rgn.last_multipliers.values())
    assert max(mults) == pytest.approx(1.0) and min(mults) >= 0 and len(set(mults)) > 3


def test_l2sp_pulls_toward_the_start(tmp_path):
    dist = {}
    for alpha in (0.0, 100.0):
        model = bert()
        before = snapshot(model)
        a = args(tmp_path / str(alpha), l2sp_alpha=alpha, max_steps=10, learning_rate=1e-2, weight_decay=0.0)
        TransferTrainer(model=model, args=a, train_dataset=text_data()).train()
        dist[alpha] = sum(
            (p - before[n]).pow(2).sum().item() for n, p in model.named_parameters() if "classifier" not in n
        )
    assert dist[100.0] < 0.5 * dist[0.0]


def test_hub_token_never_reaches_the_output_folder(tmp_path):
    token = "hf_PLANTEDsecretTOKEN123"
    a = args(tmp_path, max_steps=2, save_strategy="steps", save_steps=1, hub_token=token)
    trainer = TransferTrainer(model=bert(), args=a, train_dataset=text_data())
    trainer.train()
    trainer.save_model()
    hits = []
    for root, _, files in os.walk(a.output_dir):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                if token.encode() in fh.read():
                    hits.append(os.path.join(root, f))
    assert not hits


def test_conflicting_strategies_are_refused(tmp_path):
    with pytest.raises(ValueError, match="choose one"):
        args(tmp_path, gradual_unfreezing=True, lp_mode="epochs")
    with pytest.raises(ValueError, match="find_unused_parameters"):
        args(tmp_path, gradual_unfreezing=True, ddp_find_unused_parameters=False)


def test_freezing_strategy_forces_find_unused_parameters(tmp_path):
    trainer = TransferTrainer(model=bert(), args=args(tmp_path, surgical_blocks=["last"]), train_dataset=text_data())
    assert trainer.args.ddp_find_unused_parameters is True
    assert math.isfinite(trainer.train().training_loss)
