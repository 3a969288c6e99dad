"""A run killed with SIGKILL in the middle of a phase and resumed from its last checkpoint ends where the uninterrupted
run ends (trap 12 of the design notes: schedules are pure functions of the global step, re-applied on resume).

Each run is its own process (`scripts/resume_train.py`): the uninterrupted one, one that SIGKILLs itself right after
writing checkpoint-4, and one that resumes from it. Dropout is on (0.1), so the RNG state is restored too.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

SCRIPT = Path(__file__).parents[1] / "scripts" / "resume_train.py"
KILL_STEP = 4


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _start(strategy, out, result, *extra):
    cmd = [sys.executable, str(SCRIPT), "--strategy", strategy, "--output-dir", str(out), "--result", str(result)]
    cmd += list(extra)
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc, timeout=120):
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


@pytest.mark.slow
@pytest.mark.parametrize(
    "strategy, depths_at_kill",
    [
        # LP is steps 0-5 (head only): killed after step 4, resumed in LP, crosses into full fine-tuning at step 6.
        ("lpft", [3]),
        # head from step 0, + block 2 from step 3, + block 1 from step 6: killed in the second phase.
        ("unfreeze", [2, 3]),
    ],
)
def test_killed_run_resumes_to_the_same_weights(tmp_path, strategy, depths_at_kill):
    # The uninterrupted run and the run that gets killed, side by side.
    full = _start(strategy, tmp_path / "full", tmp_path / "full")
    killed = _start(strategy, tmp_path / "run", tmp_path / "run", "--kill-after-step", str(KILL_STEP))
    rc_killed, log_killed = _finish(killed)
    rc_full, log_full = _finish(full)
    assert rc_full == 0, log_full[-3000:]
    assert rc_killed == -signal.SIGKILL, log_killed[-3000:]
    # It died right after checkpoint-4: nothing later was written, no final weights.
    checkpoints = sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-2", f"checkpoint-{KILL_STEP}"]
    assert not (tmp_path / "run.safetensors").exists()

    resumed = _start(strategy, tmp_path / "run", tmp_path / "run", "--resume")
    rc, log = _finish(resumed)
    assert rc == 0, log[-3000:]

    seen = json.loads((tmp_path / "run.json").read_text())
    reference = json.loads((tmp_path / "full.json").read_text())
    # The resumed process started mid-phase, with the phase's depths (and only those) trainable.
    assert seen["start_step"] == KILL_STEP and reference["start_step"] == 0
    assert seen["trainable_depths"] == depths_at_kill
    assert seen["global_step"] == reference["global_step"] == 16

    a = load_file(str(tmp_path / "full.safetensors"))
    b = load_file(str(tmp_path / "run.safetensors"))
    assert a.keys() == b.keys()
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"{strategy}: max |resumed - uninterrupted| = {diff:.3g}")
    assert diff <= 1e-6
    # The logged losses (16 steps; the resumed history holds those before the kill) agree step by step.
    assert len(seen["losses"]) == 16
    assert seen["losses"] == pytest.approx(reference["losses"], abs=1e-6)
    # Both runs reached the last phase: every depth moved.
    assert seen["moved_depths"] == reference["moved_depths"] == [0, 1, 2, 3]


FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints_0_1"


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["lpft", "unfreeze"])
def test_checkpoint_of_release_0_1_resumes_to_the_same_weights(tmp_path, strategy):
    """checkpoint-4 was written by release 0.1 (before the transfer/ package existed, module paths
    `hf_transfer_meta.trainer` / `.arguments` pickled in training_args.bin) with this same script and
    `--kill-after-step 4`; today's code resumes it to the weights of today's uninterrupted run."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(FIXTURES / strategy, run)
    full = _start(strategy, tmp_path / "full", tmp_path / "full")
    resumed = _start(strategy, run, tmp_path / "run", "--resume")
    rc, log = _finish(resumed)
    assert rc == 0, log[-3000:]
    rc_full, log_full = _finish(full)
    assert rc_full == 0, log_full[-3000:]
    seen = json.loads((tmp_path / "run.json").read_text())
    assert seen["start_step"] == KILL_STEP and seen["global_step"] == 16
    a, b = load_file(str(tmp_path / "full.safetensors")), load_file(str(tmp_path / "run.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    # the old training_args.bin still loads (its class moved to hf_transfer_meta.transfer.arguments)
    import torch

    old_args = torch.load(FIXTURES / strategy / "checkpoint-4" / "training_args.bin", weights_only=False)
    assert type(old_args).__module__ == "hf_transfer_meta.transfer.arguments"
    assert old_args.strategy_name in ("LP-FT (epochs probe)", "gradual unfreezing (every 3 steps)")
