import logging

import pytest
import torch
import transformers as T
from torch import nn

from hf_transfer_meta import LayerMap
from hf_transfer_meta.transfer.strategies.reinit import reinit_head, reinit_top_blocks

FILL = 0.37  # every saved tensor holds this value, so that any re-initialised value stands out


@pytest.fixture
def loaded_bert(tmp_path):
    """A tiny BERT saved with save_pretrained and loaded back: its tensors carry `_is_hf_initialized`."""
    cfg = T.BertConfig(
        vocab_size=99, hidden_size=64, num_hidden_layers=3, num_attention_heads=2, intermediate_size=37,
        num_labels=40, initializer_range=0.05,
    )  # fmt: skip
    model = T.BertForSequenceClassification(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(FILL)
    model.save_pretrained(tmp_path)
    return T.BertForSequenceClassification.from_pretrained(tmp_path)


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_naive_init_weights_is_a_no_op_after_from_pretrained(loaded_bert):
    # The trap this module exists for: the obvious call leaves the loaded head as it was.
    before = loaded_bert.classifier.weight.detach().clone()
    loaded_bert._init_weights(loaded_bert.classifier)
    assert torch.equal(loaded_bert.classifier.weight, before)


def test_reinit_head_after_from_pretrained(loaded_bert):
    before = _snapshot(loaded_bert)
    names = reinit_head(loaded_bert, seed=0)
    assert names == ["classifier.weight", "classifier.bias"]
    w, b = loaded_bert.classifier.weight, loaded_bert.classifier.bias
    assert w.shape == (40, 64)
    # the statistics of a fresh init: N(0, initializer_range) weights, zero bias
    assert abs(w.std().item() - 0.05) < 0.005 and abs(w.mean().item()) < 0.005
    assert torch.count_nonzero(b) == 0
    for n, p in loaded_bert.named_parameters():
        if not n.startswith("classifier."):
            assert torch.equal(p, before[n]), n
    # the loaded flag is back, so a later `initialize_weights` does not redo it
    assert loaded_bert.classifier.weight._is_hf_initialized


def test_reinit_is_seeded_and_leaves_the_global_rng_alone(loaded_bert):
    reinit_head(loaded_bert, seed=1)
    first = loaded_bert.classifier.weight.detach().clone()
    state = torch.get_rng_state()
    reinit_head(loaded_bert, seed=1)
    assert torch.equal(loaded_bert.classifier.weight, first)
    assert torch.equal(torch.get_rng_state(), state)
    reinit_head(loaded_bert, seed=2)
    assert not torch.equal(loaded_bert.classifier.weight, first)


def test_reinit_top_blocks_with_the_pooler(loaded_bert):
    before = _snapshot(loaded_bert)
    names = reinit_top_blocks(loaded_bert, 2, seed=0)
    changed = {n for n in before if n.startswith(("bert.encoder.layer.1.", "bert.encoder.layer.2.", "bert.pooler."))}
    assert set(names) == changed
    for n, p in loaded_bert.named_parameters():
        if n not in changed:
            assert torch.equal(p, before[n]), n  # embeddings, block 1 and the head are bit-identical
    block = loaded_bert.bert.encoder.layer[2]
    assert torch.all(block.output.LayerNorm.weight == 1) and torch.all(block.output.LayerNorm.bias == 0)
    q = block.attention.self.query.weight
    assert abs(q.std().item() - 0.05) < 0.01 and torch.count_nonzero(block.attention.self.query.bias) == 0
    assert abs(loaded_bert.bert.pooler.dense.weight.std().item() - 0.05) < 0.01
    assert reinit_top_blocks(loaded_bert, 0) == []
    with pytest.raises(ValueError, match="has 3 blocks"):
        reinit_top_blocks(loaded_bert, 4)


def test_tied_head_is_refused():
    model = T.GPT2LMHeadModel(T.GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=2, bos_token_id=0,
                                            eos_token_id=0))  # fmt: skip
    assert model.lm_head.weight is model.transformer.wte.weight
    before = model.transformer.wte.weight.detach().clone()
    with pytest.raises(ValueError, match=r"'lm_head.weight' .* tied to 'transformer.wte.weight'"):
        reinit_head(model)
    assert torch.equal(model.transformer.wte.weight, before)


def test_peft_model_is_refused():
    from peft import LoraConfig, get_peft_model

    model = T.BertForSequenceClassification(
        T.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
    )
    peft_model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", target_modules=["query"], r=2))
    with pytest.raises(ValueError, match="before `get_peft_model`"):
        reinit_head(peft_model)


def test_plain_module_uses_reset_parameters(caplog):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Embedding(10, 8), nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8)), nn.Sequential(nn.Linear(8, 8)),
        nn.Linear(8, 3),
    )  # fmt: skip
    model.extra = nn.Module()
    lm = LayerMap.from_model(model, blocks=["1", "2"], head=["3"])
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(FILL)
    before = _snapshot(model)
    assert reinit_head(model, lm, seed=0) == ["3.weight", "3.bias"]
    assert not torch.equal(model[3].weight, before["3.weight"])
    assert model[3].weight.abs().max() <= 8**-0.5  # nn.Linear's kaiming-uniform bound 1/sqrt(fan_in)
    for n in ("0.weight", "1.0.weight", "2.0.weight"):
        assert torch.equal(dict(model.named_parameters())[n], before[n])
    reinit_top_blocks(model, 1, lm)
    assert not torch.equal(model[2][0].weight, before["2.0.weight"])
    assert torch.equal(model[1][0].weight, before["1.0.weight"])

    class Scaled(nn.Module):  # a parameter no reset_parameters() knows about
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(3))

    model2 = nn.Sequential(nn.Embedding(10, 8), nn.Sequential(nn.Linear(8, 8), nn.ReLU()), Scaled())
    lm2 = LayerMap.from_model(model2, blocks=["1"], head=["2"])
    with caplog.at_level(logging.WARNING, logger="hf_transfer_meta.transfer.strategies.reinit"):
        reinit_head(model2, lm2)
    assert "2.scale" in caplog.text
