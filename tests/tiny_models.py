"""Tiny models and data built from configs, shared by the tests and `tests/scripts/` (no download, seconds on CPU).

Tests import it by name (`from tiny_models import tiny_bert`): pytest puts `tests/` on `sys.path` through the root
`conftest.py`; the scripts put it there themselves.
"""

from __future__ import annotations

import numpy as np
import torch
import transformers as T
from torch import nn

VOCAB = 50


def tiny_bert(
    layers: int = 2, num_labels: int = 2, dropout: float = 0.0, seed: int = 0, vocab_size: int = VOCAB, **config
) -> T.BertForSequenceClassification:
    """A BERT classifier of ``layers`` blocks, hidden size 16: depths 0 (embeddings) .. layers + 1 (head)."""
    torch.manual_seed(seed)
    cfg = T.BertConfig(
        vocab_size=vocab_size, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=32,
        num_labels=num_labels, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, **config,
    )  # fmt: skip
    return T.BertForSequenceClassification(cfg)


def tiny_resnet(num_labels: int = 3, seed: int = 0) -> T.ResNetForImageClassification:
    """A 3-stage basic-block ResNet on 1-channel images, with BatchNorm (for the frozen-statistics checks)."""
    torch.manual_seed(seed)
    cfg = T.ResNetConfig(
        num_channels=1, embedding_size=8, hidden_sizes=[8, 8, 8], depths=[1, 1, 1], layer_type="basic",
        num_labels=num_labels,
    )  # fmt: skip
    return T.ResNetForImageClassification(cfg)


def token_dataset(n: int = 64, seq_len: int = 8, seed: int = 0, vocab_size: int = VOCAB):
    """A `datasets.Dataset` of random token ids; the label is whether the first token is in the upper half."""
    from datasets import Dataset

    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab_size, size=(n, seq_len))
    return Dataset.from_dict({"input_ids": ids.tolist(), "labels": (ids[:, 0] > vocab_size // 2).astype(int).tolist()})


class TokenTensors(torch.utils.data.Dataset):
    """The same task as `token_dataset` as a plain torch Dataset of tensors (what the multi-process scripts use)."""

    def __init__(self, n: int = 32, seq_len: int = 8, seed: int = 0, vocab_size: int = VOCAB):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, vocab_size, (n, seq_len), generator=g)
        self.labels = (self.ids[:, 0] > vocab_size // 2).long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]), "labels": self.labels[i]}


def image_dataset(n: int = 48, size: int = 16, num_labels: int = 3, seed: int = 0):
    """Random 1-channel images with random labels, as a torch-formatted `datasets.Dataset`."""
    from datasets import Dataset

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 1, size, size)).astype("float32")
    data = Dataset.from_dict({"pixel_values": x.tolist(), "labels": rng.integers(0, num_labels, n).tolist()})
    return data.with_format("torch")


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def moved_depths(layer_map, before: dict[str, torch.Tensor], model: nn.Module) -> dict[int, bool]:
    """Depth -> whether any of its parameters differs (bit for bit) from ``before``."""
    moved: dict[int, bool] = {}
    for n, p in model.named_parameters():
        d = layer_map.depth_of[n]
        moved[d] = moved.get(d, False) or not torch.equal(before[n], p.detach())
    return moved
