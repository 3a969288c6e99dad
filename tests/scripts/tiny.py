"""What the multi-process test scripts share: the two strategies they run, on `tests/tiny_models.py`'s tiny BERT.

Imported by the scripts beside it (a script's folder is on `sys.path`); the tests only read the files they write.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: tiny_models

import signal  # noqa: E402

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tiny_models import VOCAB, TokenTensors  # noqa: E402, F401
from tiny_models import tiny_bert as _tiny_bert  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

torch.set_num_threads(1)

NUM_EXAMPLES = 32

# Depths of the 2-layer BERT: 0 embeddings, 1-2 blocks, 3 head.
STRATEGIES = {
    # LP for 6 steps (0.75 of an 8-step epoch at batch 4), then everything.
    "lpft": dict(lp_mode="epochs", lp_epochs=0.75),
    # head from step 0, + block 2 from step 3, + block 1 from step 6, + embeddings from step 9.
    "unfreeze": dict(gradual_unfreezing=True, unfreeze_every=3, unfreeze_unit="step"),
}


def tiny_bert(seed: int = 0, dropout: float = 0.0):
    return _tiny_bert(layers=2, dropout=dropout, seed=seed)


def TinyData(n: int = NUM_EXAMPLES, seed: int = 0) -> TokenTensors:  # noqa: N802 - the scripts' name for it
    return TokenTensors(n=n, seed=seed)


def save_weights(model: torch.nn.Module, path: str) -> None:
    save_file({n: p.detach().contiguous().cpu().clone() for n, p in model.named_parameters()}, path)


class KillAfterSave(TrainerCallback):
    """SIGKILL this process right after checkpoint-`step` is written: no clean-up of any kind, as a preempted job."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
