"""Strategies on any Trainer subclass through `TransferMixin` / `with_transfer`: `Seq2SeqTrainer` with a tiny T5
(gradual unfreezing over encoder and decoder blocks) and TRL's `SFTTrainer` with a tiny Llama (LLRD + LP-FT by
epochs). Frozen depths stay bit-identical, LRs follow the formulas, and a SIGKILLed run resumes to the same weights."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from hf_transfer_meta import LayerMap, TransferMixin, TransferTrainer, with_transfer

SCRIPTS = Path(__file__).parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import subclass_train as S  # noqa: E402

pytest.importorskip("trl")


class MovedDepths(TrainerCallback):
    """After each optimizer step: which depths differ from their weights before training (bit for bit)."""

    def __init__(self, model, layer_map):
        self.initial = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.layer_map = layer_map
        self.model = model
        self.moved: list[set[int]] = []

    def on_step_end(self, args, state, control, **kwargs):
        moved = set()
        for n, p in self.model.named_parameters():
            if not torch.equal(p.detach(), self.initial[n]):
                moved.add(self.layer_map.depth_of[n])
        self.moved.append(moved)


def _run(build, tmp_path):
    lr_log = S.LRLog()
    trainer = build(str(tmp_path / "out"), callbacks=[lr_log])
    lm = LayerMap.from_model(trainer.model)
    moved = MovedDepths(trainer.model, lm)
    trainer.add_callback(moved)
    trainer.train()
    return trainer, lm, lr_log.lrs, moved.moved


def _check_frozen_and_lrs(trainer, lm, lrs, moved, expected_lr):
    schedule = trainer.transfer_schedule
    assert len(lrs) == len(moved) == schedule.total_steps == 16
    held = {d for d in range(lm.num_depths) if lm.num_params(d) > 0}  # a tied head holds none
    trained_so_far: set[int] = set()
    for step in range(16):
        trainable = schedule.trainable_depths(step)
        trained_so_far |= set(trainable) & held
        # the depths that moved are exactly those that have trained: frozen depths are bit-identical
        assert moved[step] == trained_so_far, step
        for d in sorted(held):  # an empty depth has no group
            got = lrs[step][str(d)]
            want = expected_lr(step, d) if d in trainable else 0.0
            assert got == pytest.approx(want, rel=1e-9, abs=1e-15), (step, d)


def test_with_transfer_builds_a_subclass_once():
    from transformers import Seq2SeqTrainer

    cls = with_transfer(Seq2SeqTrainer)
    assert issubclass(cls, TransferMixin) and issubclass(cls, Seq2SeqTrainer)
    assert with_transfer(Seq2SeqTrainer) is cls
    assert with_transfer(TransferTrainer) is TransferTrainer
    with pytest.raises(TypeError, match="Trainer subclass"):
        with_transfer(dict)


def test_seq2seq_gradual_unfreezing_over_encoder_and_decoder_blocks(tmp_path):
    trainer, lm, lrs, moved = _run(S.seq2seq_trainer, tmp_path)
    # 0 shared embeddings, 1-2 encoder blocks, 3-4 decoder blocks, 5 lm_head: tied to `shared` in transformers 5's
    # T5, so the head holds no parameter and joins the top decoder block in the first phase
    assert lm.num_depths == 6 and lm.names_at(3)[0].startswith("decoder.block.0") and lm.num_params(5) == 0
    phases = trainer.transfer_schedule.phases
    assert [(p.start, sorted(p.depths)) for p in phases] == [
        (0, [4, 5]), (2, [3, 4, 5]), (4, [2, 3, 4, 5]), (6, [1, 2, 3, 4, 5]), (8, [0, 1, 2, 3, 4, 5])
    ]  # fmt: skip
    _check_frozen_and_lrs(trainer, lm, lrs, moved, lambda step, d: 1e-3 * (16 - step) / 16)
    assert moved[-1] == set(range(5))


def test_a_phase_with_nothing_to_train_is_refused(tmp_path):
    trainer = S.seq2seq_trainer(str(tmp_path / "out"), trainable_depths=["head"])  # the tied head: no parameter
    with pytest.raises(
        ValueError, match=r"hold no trainable parameter \(the head is tied: .*lm_head\.weight -> shared\.weight"
    ):
        trainer.train()


def test_sft_trainer_llrd_and_lp_ft_by_epochs(tmp_path):
    trainer, lm, lrs, moved = _run(S.sft_trainer, tmp_path)
    assert lm.num_depths == 4  # embeddings, 2 decoder layers, lm_head
    assert [(p.name, p.start) for p in trainer.transfer_schedule.phases] == [("linear_probe", 0), ("fine_tune", 8)]

    def expected(step, d):
        if step < 8:  # head alone at lp_learning_rate, linear over the 8 LP steps
            return 5e-3 * (8 - step) / 8
        return 1e-3 * 0.5 ** (3 - d) * (8 - (step - 8)) / 8  # LLRD, schedule restarted for fine-tuning

    _check_frozen_and_lrs(trainer, lm, lrs, moved, expected)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses[-1] < losses[0]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _start(kind, out, result, *extra):
    cmd = [sys.executable, str(SCRIPTS / "subclass_train.py"), "--trainer", kind, "--output-dir", str(out)]
    cmd += ["--result", str(result), *extra]
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["seq2seq", "sft"])
def test_subclass_killed_mid_phase_resumes_to_the_same_weights(tmp_path, kind):
    full = _start(kind, tmp_path / "full", tmp_path / "full")
    out_full, _ = full.communicate(timeout=300)
    assert full.returncode == 0, out_full[-3000:]
    # killed right after checkpoint-6: seq2seq at the start of its 4th unfreezing phase, SFT inside the LP stage
    killed = _start(kind, tmp_path / "run", tmp_path / "run", "--kill-after-step", "6")
    out_killed, _ = killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL, out_killed[-3000:]
    assert not (tmp_path / "run.safetensors").exists()
    resumed = _start(kind, tmp_path / "run", tmp_path / "run", "--resume")
    out_resumed, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out_resumed[-3000:]
    a, b = load_file(tmp_path / "full.safetensors"), load_file(tmp_path / "run.safetensors")
    assert a.keys() == b.keys()
    for n in a:
        assert torch.equal(a[n], b[n]), n
    full_log, resumed_log = (
        json.loads((tmp_path / "full.json").read_text()),
        json.loads((tmp_path / "run.json").read_text()),
    )
    assert resumed_log["global_step"] == full_log["global_step"] == 16
    assert resumed_log["lrs"] == full_log["lrs"][6:]  # the LRs of steps 6-15 re-derived from the global step
