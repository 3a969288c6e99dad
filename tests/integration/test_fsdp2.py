"""FSDP2 with bf16 mixed precision and freezing strategies (design notes, trap 6), emulated on CPU.

accelerate enables FSDP only on accelerators, so `scripts/fsdp2_check.py --emulate-fsdp-on-cpu` installs the same
FSDP2 plugin (fully_shard over gloo, bf16 MixedPrecisionPolicy) by hand. On an H200 and in this emulation alike,
gradual unfreezing and LP-FT crashed at the first unfreeze until TransferScheduleCallback ran FSDP2's lazy init at
train begin; this test keeps that fixed: every phase trains only its depths, frozen weights stay bit-identical and
the loss goes down.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "scripts" / "fsdp2_check.py"
TORCHRUN = Path(sys.executable).with_name("torchrun")

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("run", ["fsdp2/unfreeze", "fsdp2/lpft"])
def test_freezing_strategies_under_fsdp2_bf16(tmp_path, run):
    out = tmp_path / "result.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", "1", str(SCRIPT), "--cpu", "--emulate-fsdp-on-cpu",
           "--only", run, "--out", str(out), "--tmp", str(tmp_path / "runs")]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [result] = [r for r in json.loads(out.read_text())["runs"] if r["run"] == run]
    assert result.get("fsdp_applied") is True, result
    assert result.get("exception") is None, result.get("exception")
    assert result["all_phases_ok"] is True, result
    assert result["loss_last3"] < result["loss_first3"]
    assert result["ok"] is True
