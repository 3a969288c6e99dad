import pytest
import torch
import transformers as T
from peft import LoraConfig, get_peft_model
from torch import nn

from hf_transfer_meta import LayerMap, LayerMapError
from hf_transfer_meta.cli import main as cli_main

SMALL = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=37)


def _t5():
    cfg = T.T5Config(vocab_size=99, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_decoder_layers=3, num_heads=2)
    return T.T5ForConditionalGeneration(cfg)


def _bart():
    cfg = T.BartConfig(
        vocab_size=99, d_model=32, encoder_layers=2, decoder_layers=3, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=37, decoder_ffn_dim=37,
    )  # fmt: skip
    return T.BartForConditionalGeneration(cfg)


# name -> (builder, number of blocks, a parameter at depth 0, a parameter at depth 1, a parameter at the head or None
# when the head is tied, the module of the last block)
CASES = {
    "bert": (
        lambda: T.BertForSequenceClassification(T.BertConfig(vocab_size=99, **SMALL)),
        3,
        "bert.embeddings.word_embeddings.weight",
        "bert.encoder.layer.0.attention.self.query.weight",
        "classifier.weight",
        "bert.encoder.layer.2",
    ),
    "roberta": (
        lambda: T.RobertaForSequenceClassification(T.RobertaConfig(vocab_size=99, **SMALL)),
        3,
        "roberta.embeddings.word_embeddings.weight",
        "roberta.encoder.layer.0.output.dense.weight",
        "classifier.out_proj.weight",
        "roberta.encoder.layer.2",
    ),
    "distilbert": (
        lambda: T.DistilBertForSequenceClassification(
            T.DistilBertConfig(vocab_size=99, dim=32, n_layers=3, n_heads=2, hidden_dim=37)
        ),
        3,
        "distilbert.embeddings.word_embeddings.weight",
        "distilbert.transformer.layer.0.attention.q_lin.weight",
        "classifier.weight",
        "distilbert.transformer.layer.2",
    ),
    # ALBERT applies one shared layer num_hidden_layers times: its parameters exist once, one block per group.
    "albert": (
        lambda: T.AlbertForSequenceClassification(T.AlbertConfig(vocab_size=99, embedding_size=16, **SMALL)),
        1,
        "albert.embeddings.word_embeddings.weight",
        "albert.encoder.albert_layer_groups.0.albert_layers.0.ffn.weight",
        "classifier.weight",
        "albert.encoder.albert_layer_groups.0",
    ),
    "deberta-v2": (
        lambda: T.DebertaV2ForSequenceClassification(T.DebertaV2Config(vocab_size=99, **SMALL)),
        3,
        "deberta.embeddings.word_embeddings.weight",
        "deberta.encoder.layer.0.attention.self.query_proj.weight",
        "classifier.weight",
        "deberta.encoder.layer.2",
    ),
    "electra": (
        lambda: T.ElectraForSequenceClassification(T.ElectraConfig(vocab_size=99, embedding_size=16, **SMALL)),
        3,
        "electra.embeddings.word_embeddings.weight",
        "electra.encoder.layer.0.output.dense.weight",
        "classifier.out_proj.weight",
        "electra.encoder.layer.2",
    ),
    "vit": (
        lambda: T.ViTForImageClassification(T.ViTConfig(image_size=8, patch_size=4, num_channels=1, **SMALL)),
        3,
        "vit.embeddings.cls_token",
        "vit.layers.0.attention.q_proj.weight",
        "classifier.weight",
        "vit.layers.2",
    ),
    "swin": (
        lambda: T.SwinForImageClassification(
            T.SwinConfig(
                image_size=16, patch_size=2, embed_dim=8, depths=[1, 2, 1], num_heads=[1, 2, 2], window_size=2
            )
        ),
        3,
        "swin.embeddings.patch_embeddings.projection.weight",
        "swin.encoder.layers.0.blocks.0.attention.q_proj.weight",
        "classifier.weight",
        "swin.encoder.layers.2",
    ),
    "convnext": (
        lambda: T.ConvNextForImageClassification(
            T.ConvNextConfig(hidden_sizes=[8, 16, 16], depths=[1, 2, 1], num_stages=3)
        ),
        3,
        "convnext.embeddings.patch_embeddings.weight",
        "convnext.encoder.stages.0.layers.0.dwconv.weight",
        "classifier.weight",
        "convnext.encoder.stages.2",
    ),
    # ResNet: a block is a stage (not a single conv, which is what _no_split_modules names).
    "resnet": (
        lambda: T.ResNetForImageClassification(
            T.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16], depths=[1, 2, 1], layer_type="basic")
        ),
        3,
        "resnet.embedder.embedder.convolution.weight",
        "resnet.encoder.stages.0.layers.0.layer.0.convolution.weight",
        "classifier.1.weight",
        "resnet.encoder.stages.2",
    ),
    "llama": (
        lambda: T.LlamaForCausalLM(T.LlamaConfig(vocab_size=99, num_key_value_heads=1, **SMALL)),
        3,
        "model.embed_tokens.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "lm_head.weight",
        "model.layers.2",
    ),
    "mistral": (
        lambda: T.MistralForCausalLM(T.MistralConfig(vocab_size=99, num_key_value_heads=1, **SMALL)),
        3,
        "model.embed_tokens.weight",
        "model.layers.0.mlp.up_proj.weight",
        "lm_head.weight",
        "model.layers.2",
    ),
    # GPT-2: lm_head.weight *is* transformer.wte.weight; it is listed once, at the embeddings.
    "gpt2": (
        lambda: T.GPT2LMHeadModel(
            T.GPT2Config(vocab_size=99, n_embd=32, n_layer=3, n_head=2, bos_token_id=0, eos_token_id=0)
        ),
        3,
        "transformer.wte.weight",
        "transformer.h.0.attn.c_attn.weight",
        None,
        "transformer.h.2",
    ),
    # Encoder-decoder: encoder blocks 1..2, then decoder blocks 3..5.
    "t5": (_t5, 5, "shared.weight", "encoder.block.0.layer.0.SelfAttention.q.weight", None, "decoder.block.2"),
    "bart": (
        _bart,
        5,
        "model.shared.weight",
        "model.encoder.layers.0.self_attn.q_proj.weight",
        None,
        "model.decoder.layers.2",
    ),
    "clip-vision": (
        lambda: T.CLIPVisionModel(T.CLIPVisionConfig(image_size=8, patch_size=4, **SMALL)),
        3,
        "embeddings.patch_embedding.weight",
        "encoder.layers.0.mlp.fc1.weight",
        None,
        "encoder.layers.2",
    ),
}


def _check(lm: LayerMap, model, n_blocks, emb, first, head, last_block, prefix=""):
    names = {n for n, _ in model.named_parameters()}
    assert lm.num_blocks == n_blocks
    assert lm.num_depths == n_blocks + 2
    assert set(lm.depth_of) == names  # every parameter, once
    assert lm.depth_of[prefix + emb] == 0
    assert lm.depth_of[prefix + first] == 1
    if head is not None:
        assert lm.depth_of[prefix + head] == lm.head_depth
    else:
        assert lm.names_at(lm.head_depth) == []  # tied head or no head
    last = [n for n in names if (n.startswith(prefix + last_block + "."))]
    assert last and all(lm.depth_of[n] == n_blocks for n in last)
    assert lm.block_names[-1].endswith(last_block)
    # depths are monotone with the blocks' order
    for i, block in enumerate(lm.block_names, start=1):
        in_block = [n for n in names if n.startswith(prefix + block + ".") or n.startswith(block + ".")]
        assert in_block and all(lm.depth_of[n] == i for n in in_block), block


@pytest.mark.parametrize("name", sorted(CASES))
def test_structural_layer_map(name):
    builder, n_blocks, emb, first, head, last_block = CASES[name]
    model = builder()
    lm = LayerMap.from_model(model)
    _check(lm, model, n_blocks, emb, first, head, last_block)
    table = lm.describe()
    assert f"{n_blocks + 2} depths" in table


def test_tied_heads_are_reported_not_duplicated():
    model = CASES["gpt2"][0]()
    lm = LayerMap.from_model(model)
    assert lm.tied == {"lm_head.weight": "transformer.wte.weight"}
    assert "lm_head.weight" not in lm.depth_of
    assert "(tied: lm_head.weight)" in lm.describe()
    assert sum(lm.num_params(d) for d in range(lm.num_depths)) == sum(p.numel() for p in model.parameters())


def test_albert_shared_layer_is_one_block():
    model = CASES["albert"][0]()
    assert model.config.num_hidden_layers == 3
    lm = LayerMap.from_model(model)
    assert lm.num_blocks == model.config.num_hidden_groups == 1


@pytest.mark.parametrize("name", ["bert", "roberta", "vit", "llama", "t5"])
def test_layer_map_of_lora_wrapped_models(name):
    builder, n_blocks, emb, first, head, last_block = CASES[name]
    model = builder()
    targets = {"bert": ["query", "value"], "roberta": ["query", "value"], "vit": ["q_proj", "v_proj"],
               "llama": ["q_proj", "v_proj"], "t5": ["q", "v"]}[name]  # fmt: skip
    task = {"bert": "SEQ_CLS", "roberta": "SEQ_CLS", "llama": "CAUSAL_LM", "t5": "SEQ_2_SEQ_LM"}.get(name)
    config = LoraConfig(
        r=2, target_modules=targets, task_type=task, modules_to_save=["classifier"] if name == "vit" else None
    )
    peft_model = get_peft_model(model, config)
    lm = LayerMap.from_model(peft_model)
    prefix = "base_model.model."
    names = {n for n, _ in peft_model.named_parameters()}
    assert set(lm.depth_of) == names
    assert lm.num_blocks == n_blocks
    assert lm.depth_of[prefix + emb] == 0
    lora_first = [n for n in names if "lora_" in n and n.startswith(prefix + lm.block_names[0] + ".")]
    assert lora_first and all(lm.depth_of[n] == 1 for n in lora_first)
    lora = [n for n in names if "lora_" in n]
    assert all(1 <= lm.depth_of[n] <= n_blocks for n in lora)
    if head is not None:
        heads = [n for n in names if n.startswith(prefix + head.split(".")[0])]
        assert heads and all(lm.depth_of[n] == lm.head_depth for n in heads)


class Plain(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3)
        self.body = nn.ModuleList([nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU()) for _ in range(3)])
        self.norm = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)


def test_plain_module_needs_and_takes_an_override():
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(LayerMapError, match=r"Sequential.*\n.*override|Pass an override"):
        LayerMap.from_model(model)
    lm = LayerMap.from_model(model, blocks=["0"])
    assert lm.depth_of == {"0.weight": 1, "0.bias": 1, "2.weight": 2, "2.bias": 2}


def test_overrides_blocks_head_regex_callable():
    model = Plain()
    # the repeated body is found structurally; what follows it joins the last block unless a head is named
    lm = LayerMap.from_model(model, head=["fc"])
    assert lm.num_blocks == 3 and lm.depth_of["stem.weight"] == 0 and lm.depth_of["body.2.0.weight"] == 3
    assert lm.depth_of["norm.weight"] == 3 and lm.depth_of["fc.weight"] == 4
    lm = LayerMap.from_model(model, blocks=["body.0", "body.1", "body.2"])
    assert lm.depth_of["norm.weight"] == 4 and lm.depth_of["fc.weight"] == 4  # after the last block: head
    lm = LayerMap.from_model(model, depths={r"^stem\.": 0, r"^body\.(\d+)\.": lambda m: int(m.group(1)) + 1, r".*": 4})
    assert lm.num_blocks == 3 and lm.depth_of["body.1.0.bias"] == 2 and lm.depth_of["fc.bias"] == 4
    lm = LayerMap.from_model(model, depths=lambda n: 0 if n.startswith("stem") else 1 if n.startswith("body") else 2)
    assert lm.num_blocks == 1
    with pytest.raises(LayerMapError, match="no depth to"):
        LayerMap.from_model(model, depths={r"^stem": 0})
    with pytest.raises(LayerMapError, match="'bodyy.0' is not in Plain"):
        LayerMap.from_model(model, blocks=["bodyy.0"])


def test_resolve_depth_specs():
    lm = LayerMap.from_model(CASES["bert"][0]())  # 3 blocks: depths 0..4
    assert lm.resolve("first") == [1] and lm.resolve("middle") == [2] and lm.resolve("last") == [3]
    assert lm.resolve("head") == [4] and lm.resolve(-1) == [4] and lm.resolve("last-2") == [3, 4]
    assert lm.resolve(["embeddings", "2", "head"]) == [0, 2, 4]
    with pytest.raises(LayerMapError, match="out of range"):
        lm.resolve(7)


def test_cli_layers_minilm(minilm_path, capsys):
    assert cli_main(["layers", "--model", str(minilm_path), "--task", "text-classification", "--num_labels", "3"]) == 0
    out = capsys.readouterr().out
    assert "BertForSequenceClassification: 8 depths (6 blocks)" in out
    rows = [line.split()[0] for line in out.splitlines() if line[:1].isdigit()]
    assert rows == [str(d) for d in range(8)]
    assert "bert.pooler.dense follows block 6" in out


def test_cli_layers_missing_model(tmp_path, capsys):
    assert cli_main(["layers", "--model", str(tmp_path / "nope"), "--task", "text-classification"]) == 2
    assert "cannot load" in capsys.readouterr().err


def test_layer_map_matches_on_the_same_model_twice():
    torch.manual_seed(0)
    model = CASES["convnext"][0]()
    assert LayerMap.from_model(model).depth_of == LayerMap.from_model(model).depth_of
