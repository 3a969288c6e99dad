"""Strategies on LoRA models (peft): the layer map is built on the PEFT model itself, the schedule moves the LoRA
parameters and the `modules_to_save` head depth by depth, and the frozen base weights never change nor enter the
optimizer."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from tiny_models import TokenTensors, tiny_bert
from transformers import TrainerCallback

from hf_transfer_meta import LayerMap, TransferTrainer, TransferTrainingArguments

VOCAB, SEQ_LEN, N = 50, 8, 32
HEAD = 3  # 2 blocks: depths 0 embeddings, 1-2 blocks, 3 head


def bert(seed=0):
    return tiny_bert(layers=2, seed=seed, vocab_size=VOCAB)


def lora(model):
    # init_lora_weights=False: B is not zero, so A gets a gradient from its first trained step on and "first moved at
    # step k" is exact for every LoRA tensor.
    config = LoraConfig(
        task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query", "value"], init_lora_weights=False
    )
    torch.manual_seed(1)
    return get_peft_model(model, config)


class Data(TokenTensors):
    """tiny_models' token task without the attention mask (all ones: the same outputs)."""

    def __init__(self, n=N, seed=0):
        super().__init__(n=n, seq_len=SEQ_LEN, seed=seed, vocab_size=VOCAB)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


class Snapshots(TrainerCallback):
    """The model's parameters after every optimizer step: `steps[k]` after step k, `steps[0]` at train begin."""

    def __init__(self):
        self.steps = []

    def _take(self, model):
        self.steps.append({n: p.detach().clone() for n, p in model.named_parameters()})

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._take(model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self._take(model)


def train(tmp_path, model, **strategy):
    args = TransferTrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, num_train_epochs=2, learning_rate=1e-2,
        weight_decay=0.01, logging_steps=1, report_to="none", use_cpu=True, save_strategy="no", seed=0,
        disable_tqdm=True, dataloader_num_workers=0, **strategy,
    )  # fmt: skip
    snaps = Snapshots()
    trainer = TransferTrainer(model=model, args=args, train_dataset=Data(), callbacks=[snaps])
    trainer.train()
    assert trainer.state.global_step == 8 and len(snaps.steps) == 9
    return trainer, snaps.steps


def first_moved(steps, name):
    """The first optimizer step after which `name` differs from its initial value (None: never)."""
    return next((k for k in range(1, len(steps)) if not torch.equal(steps[k][name], steps[0][name])), None)


def check_base_untouched(trainer, model, steps, trainable):
    base = [n for n, p in model.named_parameters() if n not in trainable]
    assert base and all(not dict(model.named_parameters())[n].requires_grad for n in base)  # peft's freeze kept
    for n in base:
        assert all(torch.equal(s[n], steps[0][n]) for s in steps), n
    # The optimizer holds exactly the LoRA parameters and the head copy, nothing of the frozen base.
    named = dict(model.named_parameters())
    in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(named[n]) for n in trainable}
    assert {id(p) for p in trainer.optimizer.state} <= in_optimizer


def test_layer_map_of_a_peft_model_keeps_the_depths_of_the_plain_model():
    plain = bert()
    plain_map = LayerMap.from_model(plain)
    plain_depth = {id(p): plain_map.depth_of[n] for n, p in plain.named_parameters()}
    model = lora(plain)
    lm = LayerMap.from_model(model)
    assert set(lm.depth_of) == {n for n, _ in model.named_parameters()}
    assert lm.num_blocks == 2 and lm.head_depth == HEAD and lm.model_class == "BertForSequenceClassification"
    assert lm.block_names == ["bert.encoder.layer.0", "bert.encoder.layer.1"]
    for name, p in model.named_parameters():
        if id(p) in plain_depth:  # base weights are the plain model's tensors: same depth as there
            assert lm.depth_of[name] == plain_depth[id(p)], name
        elif ".lora_" in name:
            layer = int(name.split("encoder.layer.")[1].split(".")[0])
            assert lm.depth_of[name] == layer + 1, name
        else:  # the trainable copy of the classifier (modules_to_save)
            assert "classifier.modules_to_save" in name and lm.depth_of[name] == HEAD, name
    assert lm.depth_of["base_model.model.classifier.original_module.weight"] == HEAD
    assert lm.depth_of["base_model.model.bert.embeddings.word_embeddings.weight"] == 0
    assert lm.depth_of["base_model.model.bert.pooler.dense.weight"] == 2  # joins the last block


def test_lp_ft_on_lora_trains_the_head_then_lora(tmp_path):
    model = lora(bert())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    lora_names = [n for n in trainable if ".lora_" in n]
    head_names = [n for n in trainable if "classifier.modules_to_save" in n]
    assert len(lora_names) == 8 and len(head_names) == 2 and trainable == set(lora_names) | set(head_names)
    # LP for half an epoch: optimizer steps 1-2 (4 steps per epoch), then LoRA + head for steps 3-8.
    trainer, steps = train(tmp_path, model, lp_mode="epochs", lp_epochs=0.5)
    assert trainer.transfer_schedule.describe()[1]["steps"] == [2, 8]
    for n in head_names:
        assert first_moved(steps, n) == 1, n
    for n in lora_names:
        # bit-identical through LP, moving from the first fine-tuning step on
        assert torch.equal(steps[2][n], steps[0][n]), n
        assert first_moved(steps, n) == 3, n
    check_base_untouched(trainer, model, steps, trainable)
    # the schedule released its freezing: trainable parameters are trainable again, and only those
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable


def test_gradual_unfreezing_on_lora_moves_lora_depth_by_depth(tmp_path):
    model = lora(bert())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    lm = LayerMap.from_model(model)
    # head from step 0, + block 2 from step 2, + block 1 from step 4 (+ embeddings, holding no LoRA, from step 6);
    # optimizer step k+1 is the first one taken at global step k.
    trainer, steps = train(tmp_path, model, gradual_unfreezing=True, unfreeze_every=2, unfreeze_unit="step")
    first_step = {HEAD: 1, 2: 3, 1: 5}
    for n in trainable:
        assert first_moved(steps, n) == first_step[lm.depth_of[n]], n
    assert {lm.depth_of[n] for n in trainable} == {1, 2, HEAD}
    check_base_untouched(trainer, model, steps, trainable)


@pytest.mark.parametrize("strategy", [dict(layer_lr_decay=0.5), dict(surgical_blocks=["last"])])
def test_other_strategies_leave_the_base_frozen(tmp_path, strategy):
    model = lora(bert())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    trainer, steps = train(tmp_path, model, **strategy)
    check_base_untouched(trainer, model, steps, trainable)
    assert any(first_moved(steps, n) == 1 for n in trainable)
