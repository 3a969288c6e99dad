"""Gradient accumulation is invisible: GA=4 at batch 2 trains exactly as GA=1 at batch 8 (design notes, trap 8).

Stock Trainer gets this wrong for `*ForSequenceClassification` models: their loss is a per-batch mean that ignores
`num_items_in_batch`, yet Trainer, seeing a model that accepts loss kwargs, no longer divides by the accumulation
steps, so loss and gradients grow with GA (transformers#37766). The first test shows that failure, so that the
others prove the fix. SGD without dropout makes the comparison exact: any scaling error moves the weights.
"""

import pytest
import torch
import transformers as T
from tiny_models import TokenTensors, tiny_bert
from transformers import Trainer, TrainingArguments

from hf_transfer_meta import TransferTrainer, TransferTrainingArguments

VOCAB, SEQ_LEN, N = 50, 8, 32


def bert(seed=0):
    return tiny_bert(layers=2, seed=seed, vocab_size=VOCAB)


class Data(TokenTensors):
    """tiny_models' token task without the attention mask (all ones: the same outputs)."""

    def __init__(self, n=N, seed=0):
        super().__init__(n=n, seq_len=SEQ_LEN, seed=seed, vocab_size=VOCAB)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def train(tmp_path, trainer_cls, args_cls, batch, ga, **kw):
    base = dict(
        output_dir=str(tmp_path / f"out_{batch}_{ga}"), per_device_train_batch_size=batch,
        gradient_accumulation_steps=ga, num_train_epochs=2, learning_rate=0.1, optim="sgd", weight_decay=0.01,
        lr_scheduler_type="linear", logging_steps=1, report_to="none", use_cpu=True, save_strategy="no", seed=0,
        disable_tqdm=True, dataloader_num_workers=0,
    )  # fmt: skip
    base.update(kw)
    model = bert()
    trainer = trainer_cls(model=model, args=args_cls(**base), train_dataset=Data())
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert trainer.state.global_step == 8 and len(losses) == 8
    return {n: p.detach().clone() for n, p in model.named_parameters()}, losses


def max_diff(a, b):
    return max((a[n] - b[n]).abs().max().item() for n in a)


def test_stock_trainer_scales_the_loss_with_accumulation(tmp_path):
    """The failure the fix is for: with stock Trainer, GA=4 reports (and back-propagates) 4x the loss."""
    w1, loss1 = train(tmp_path, Trainer, TrainingArguments, batch=8, ga=1)
    w4, loss4 = train(tmp_path, Trainer, TrainingArguments, batch=2, ga=4)
    # Same weights at step 1: the logged loss is exactly the GA factor too large.
    assert loss4[0] / loss1[0] == pytest.approx(4.0, rel=1e-5)
    print(
        f"stock Trainer: first loss {loss1[0]:.4f} at GA=1, {loss4[0]:.4f} at GA=4; weights differ by {max_diff(w1, w4):.3g}"
    )
    assert max_diff(w1, w4) > 1e-2


def test_transfer_trainer_is_invariant_to_accumulation(tmp_path):
    w1, loss1 = train(tmp_path, TransferTrainer, TransferTrainingArguments, batch=8, ga=1)
    w4, loss4 = train(tmp_path, TransferTrainer, TransferTrainingArguments, batch=2, ga=4)
    diff = max_diff(w1, w4)
    print(f"TransferTrainer, no strategy: max |GA=4 - GA=1| = {diff:.3g}")
    assert diff <= 1e-6
    assert loss4 == pytest.approx(loss1, abs=1e-6)
    assert max_diff(w1, {n: p.detach() for n, p in bert().named_parameters()}) > 1e-2  # it did train


@pytest.mark.parametrize(
    "strategy",
    [
        # per-depth LRs + depths unfrozen by optimizer step: GA must not change which micro-batches see which phase
        dict(layer_lr_decay=0.5, gradual_unfreezing=True, unfreeze_every=2, unfreeze_unit="step"),
        # an LP stage measured in epochs (half of the 4 optimizer steps of an epoch) must count optimizer steps
        dict(lp_mode="epochs", lp_epochs=0.5, optim="adamw_torch", learning_rate=1e-3),
    ],
    ids=["llrd+unfreezing", "lp-ft"],
)
def test_strategies_are_invariant_to_accumulation(tmp_path, strategy):
    w1, loss1 = train(tmp_path, TransferTrainer, TransferTrainingArguments, batch=8, ga=1, **strategy)
    w4, loss4 = train(tmp_path, TransferTrainer, TransferTrainingArguments, batch=2, ga=4, **strategy)
    diff = max_diff(w1, w4)
    print(f"{sorted(strategy)}: max |GA=4 - GA=1| = {diff:.3g}")
    assert diff <= 1e-6
    assert loss4 == pytest.approx(loss1, abs=1e-6)
    # Every depth moved, so each phase ran in both and the comparison covers them all.
    init = dict(bert().named_parameters())
    assert not torch.equal(
        w4["bert.embeddings.word_embeddings.weight"], init["bert.embeddings.word_embeddings.weight"]
    )


class LMData(Data):
    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def gpt2(seed=0):
    torch.manual_seed(seed)
    cfg = T.GPT2Config(
        vocab_size=VOCAB, n_positions=SEQ_LEN, n_embd=16, n_layer=2, n_head=2,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    return T.GPT2LMHeadModel(cfg)


def test_l2sp_counts_once_per_step_when_the_model_normalises_by_tokens(tmp_path):
    """A causal LM's loss is divided by the tokens of the whole accumulated batch, so Trainer does not divide it by
    the GA steps; the L2-SP penalty, added to every micro-batch's loss, must then be divided by them itself."""
    weights = {}
    for batch, ga in ((8, 1), (2, 4)):
        args = TransferTrainingArguments(
            output_dir=str(tmp_path / f"lm_{ga}"), per_device_train_batch_size=batch, gradient_accumulation_steps=ga,
            num_train_epochs=2, learning_rate=0.5, optim="sgd", weight_decay=0.0, l2sp_alpha=1.0, l2sp_beta=0.1,
            report_to="none", use_cpu=True, save_strategy="no", seed=0, disable_tqdm=True,
        )  # fmt: skip
        model = gpt2()
        trainer = TransferTrainer(model=model, args=args, train_dataset=LMData())
        assert trainer.loss_is_scaled_for_ga  # the case this test is about
        trainer.train()
        weights[ga] = {n: p.detach().clone() for n, p in model.named_parameters()}
    diff = max_diff(weights[1], weights[4])
    print(f"L2-SP causal LM: max |GA=4 - GA=1| = {diff:.3g}")
    assert diff <= 1e-5
    assert max_diff(weights[1], dict(gpt2().named_parameters())) > 1e-2
