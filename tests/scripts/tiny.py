"""What the multi-process test scripts share: a tiny BERT classifier, tiny synthetic data, the two strategies.

Imported by the scripts beside it (a script's folder is on `sys.path`); the tests only read the files they write.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
import transformers as T  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

torch.set_num_threads(1)

NUM_EXAMPLES = 32
SEQ_LEN = 8
VOCAB = 50

# Depths of the 2-layer BERT: 0 embeddings, 1-2 blocks, 3 head.
STRATEGIES = {
    # LP for 6 steps (0.75 of an 8-step epoch at batch 4), then everything.
    "lpft": dict(lp_mode="epochs", lp_epochs=0.75),
    # head from step 0, + block 2 from step 3, + block 1 from step 6, + embeddings from step 9.
    "unfreeze": dict(gradual_unfreezing=True, unfreeze_every=3, unfreeze_unit="step"),
}


def tiny_bert(seed: int = 0, dropout: float = 0.0) -> T.BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = T.BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        num_labels=2, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
    )  # fmt: skip
    return T.BertForSequenceClassification(cfg)


class TinyData(torch.utils.data.Dataset):
    """Random token ids; the label is whether the first token is in the upper half of the vocabulary."""

    def __init__(self, n: int = NUM_EXAMPLES, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, VOCAB, (n, SEQ_LEN), generator=g)
        self.labels = (self.ids[:, 0] > VOCAB // 2).long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {
            "input_ids": self.ids[i],
            "attention_mask": torch.ones(SEQ_LEN, dtype=torch.long),
            "labels": self.labels[i],
        }


def save_weights(model: torch.nn.Module, path: str) -> None:
    save_file({n: p.detach().contiguous().cpu().clone() for n, p in model.named_parameters()}, path)
