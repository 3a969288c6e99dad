"""Phases that end at a validation plateau (`lp_until="plateau"`, `unfreeze_on="plateau"`).

The watched metric is scripted by the evaluation's step (tests/scripts/plateau_train.py), so each test knows at which
evaluation the patience rule must fire. Training tests run the script as its own process: one run in place, a run
SIGKILLed after a checkpoint that follows a plateau switch and then resumed, and two-process CPU DDP.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_models import TokenTensors, tiny_bert
from transformers import TrainingArguments

from hf_transfer_meta import TransferArguments, TransferTrainer, TransferTrainingArguments
from hf_transfer_meta.transfer.plateau import PlateauPhaseCallback, monitored_metric
from hf_transfer_meta.transfer.schedules import Phase, TransferSchedule

SCRIPTS = Path(__file__).parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))
from plateau_train import EXPECTED_STARTS  # noqa: E402

TORCHRUN = Path(sys.executable).with_name("torchrun")
LR = 1e-3
TOTAL = 16


# ---------------------------------------------------------------------------------------------------- the rule
def _schedule(on_plateau=True):
    phases = [Phase(0, frozenset({1}), name="probe"), Phase(10, frozenset({0, 1}), name="all", on_plateau=on_plateau)]
    return TransferSchedule(phases, total_steps=20, num_depths=2)


class _State:
    is_world_process_zero = True

    def __init__(self, step):
        self.global_step = step


def _feed(callback, values, higher_steps=2):
    """Evaluations every `higher_steps` steps with these values; the step of the switch, if any."""
    for i, value in enumerate(values, start=1):
        callback.on_evaluate(None, _State(i * higher_steps), None, metrics={callback.metric: value})
    return callback.schedule.switches.get(1)


@pytest.mark.parametrize(
    "values, patience, threshold, higher, expected",
    [
        ([1.0, 0.9, 0.9, 0.95], 2, 0.0, False, 8),  # loss: best 0.9 at step 4, not beaten at 6 and 8
        ([1.0, 0.9, 0.9, 0.95], 3, 0.0, False, None),  # one evaluation short of the patience
        ([1.0, 0.9, 0.89, 0.885], 2, 0.02, False, 8),  # 0.89 and 0.885 improve by less than the threshold
        ([1.0, 0.9, 0.89, 0.885], 2, 0.0, False, None),  # ... which without a threshold are improvements
        ([0.5, 0.6, 0.6], 1, 0.0, True, 6),  # accuracy: higher is better
        ([0.5, 0.4, 0.6, 0.3], 1, 0.0, True, 4),
    ],
)
def test_patience_rule_fires_at_the_expected_evaluation(values, patience, threshold, higher, expected):
    cb = PlateauPhaseCallback("eval_m", greater_is_better=higher, patience=patience, threshold=threshold)
    cb.set_schedule(_schedule())
    assert _feed(cb, values) == expected
    starts = cb.schedule.starts()
    assert starts == [0, expected if expected is not None else 10]


def test_schedule_is_a_function_of_step_and_switches():
    s = _schedule()
    assert s.starts() == [0, 10] and s.phase_index(9) == 0 and s.phase_index(10) == 1  # the cap
    s.record_switch(1, 4)
    assert s.starts() == [0, 4] and s.trainable_depths(3) == {1} and s.trainable_depths(4) == {0, 1}
    assert s.describe()[1]["began"] == "plateau"
    s.record_switch(1, 15)  # a switch after the cap changes nothing: the cap began the phase
    assert s.starts() == [0, 10] and s.describe()[1]["began"] == "cap"
    with pytest.raises(ValueError, match="does not wait for a plateau"):
        _schedule(on_plateau=False).record_switch(1, 4)
    with pytest.raises(ValueError, match="first phase cannot wait"):
        TransferSchedule([Phase(0, frozenset({0}), on_plateau=True)], total_steps=4, num_depths=1)


def test_state_round_trips_through_json():
    cb = PlateauPhaseCallback("eval_m", patience=1)
    cb.set_schedule(_schedule())
    _feed(cb, [1.0, 1.0])
    stored = json.loads(json.dumps(cb.state()))
    fresh = PlateauPhaseCallback(**stored["args"])
    fresh.set_schedule(_schedule())
    fresh.restore(stored)
    assert fresh.schedule.switches == {1: 4} and fresh.schedule.starts() == [0, 4]
    assert fresh.history == cb.history


def test_monitored_metric_follows_trainer_conventions():
    assert monitored_metric(None, None, None) == ("eval_loss", False)
    assert monitored_metric(None, "accuracy", True) == ("eval_accuracy", True)
    assert monitored_metric(None, "eval_error", False) == ("eval_error", False)
    assert monitored_metric("f1", "loss", False) == ("eval_f1", True)


# ---------------------------------------------------------------------------------------------------- refusals
def _tiny_trainer(args, **kwargs):
    data = TokenTensors(n=16)
    return TransferTrainer(model=tiny_bert(layers=2), args=args, train_dataset=data, **kwargs)


def test_plateau_without_evaluations_is_refused_when_arguments_are_built(tmp_path):
    with pytest.raises(ValueError, match=r"lp_until.*eval_strategy='no'"):
        TransferTrainingArguments(output_dir=str(tmp_path), lp_mode="epochs", lp_until="plateau", report_to="none")
    with pytest.raises(ValueError, match=r"unfreeze_on.*eval_strategy='no'"):
        TransferTrainingArguments(
            output_dir=str(tmp_path), gradual_unfreezing=True, unfreeze_on="plateau", report_to="none"
        )
    # Split arguments (TransferArguments beside any TrainingArguments): refused when the trainer is built.
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    with pytest.raises(ValueError, match=r"lp_until='plateau'.*eval_strategy='no'"):
        _tiny_trainer(
            args, eval_dataset=TokenTensors(n=8), transfer_args=TransferArguments(lp_mode="epochs", lp_until="plateau")
        )
    assert not any(tmp_path.iterdir())


def test_plateau_without_eval_dataset_is_refused(tmp_path):
    args = TransferTrainingArguments(
        output_dir=str(tmp_path), lp_mode="epochs", lp_until="plateau", eval_strategy="steps", eval_steps=2,
        report_to="none", use_cpu=True,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"pass an `?eval_dataset"):
        _tiny_trainer(args)
    assert not any(tmp_path.iterdir())


def test_inconsistent_plateau_fields_are_refused(tmp_path):
    common = dict(output_dir=str(tmp_path), eval_strategy="epoch", report_to="none")
    with pytest.raises(ValueError, match="lp_mode='epochs'"):
        TransferTrainingArguments(lp_mode="logistic", lp_until="plateau", **common)
    with pytest.raises(ValueError, match="gradual_unfreezing=True"):
        TransferTrainingArguments(unfreeze_on="plateau", **common)
    with pytest.raises(ValueError, match="phase_patience"):
        TransferTrainingArguments(lp_mode="epochs", lp_until="plateau", phase_patience=0, **common)


def test_a_metric_the_evaluation_lacks_is_named(tmp_path):
    args = TransferTrainingArguments(
        output_dir=str(tmp_path), lp_mode="epochs", lp_until="plateau", phase_metric="f1", eval_strategy="steps",
        eval_steps=2, max_steps=4, per_device_train_batch_size=4, report_to="none", use_cpu=True, save_strategy="no",
    )  # fmt: skip
    trainer = _tiny_trainer(args, eval_dataset=TokenTensors(n=8))
    with pytest.raises(KeyError, match=r"'eval_f1'.*eval_loss"):
        trainer.train()


# ---------------------------------------------------------------------------------------------------- training
def _env():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("WORLD_SIZE", None)
    return env


def _start(strategy, result, *extra, launcher=()):
    cmd = [*launcher, str(SCRIPTS / "plateau_train.py"), "--strategy", strategy, "--result", str(result), *extra]
    if not launcher:
        cmd = [sys.executable, *cmd]
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc, timeout=240):
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def _record(result, rank=0):
    return json.loads(Path(f"{result}_rank{rank}.json").read_text())


def _max_diff(a, b):
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def plain_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("plateau")
    procs = {s: _start(s, root / s) for s in EXPECTED_STARTS}
    for proc in procs.values():
        rc, log = _finish(proc)
        assert rc == 0, log[-4000:]
    return root


@pytest.mark.parametrize("strategy", sorted(EXPECTED_STARTS))
def test_phases_begin_at_the_plateaus_and_depths_and_lrs_follow(plain_runs, strategy):
    record = _record(plain_runs / strategy)
    starts = EXPECTED_STARTS[strategy]
    assert record["starts"] == starts and record["global_step"] == TOTAL
    phases = record["phases"]
    steps = {int(k): v for k, v in record["steps"].items()}
    assert sorted(steps) == list(range(TOTAL))
    for i, phase in enumerate(phases):
        begin, end = phase["steps"]
        assert [begin, end] == [starts[i], starts[i + 1] if i + 1 < len(starts) else TOTAL]
        for step in range(begin, end):  # exactly the phase's depths require grad, and only they get an LR
            assert steps[step]["trainable_depths"] == phase["trainable_depths"], step
            for depth, lr in steps[step]["lrs"].items():
                assert (lr > 0) == (int(depth) in phase["trainable_depths"]), (step, depth)
    if strategy == "lpft":
        # Both stages restart the linear schedule: the probe decays over its cap (12 steps), fine-tuning over the 8
        # steps left from the switch at 8.
        assert phases[1]["began"] == "plateau"
        for step in range(8):
            assert steps[step]["lrs"]["3"] == pytest.approx(LR * (12 - step) / 12, rel=1e-12)
        for step in range(8, TOTAL):
            assert steps[step]["lrs"]["0"] == pytest.approx(LR * (TOTAL - step) / 8, rel=1e-12)
    else:
        assert [p.get("began") for p in phases] == [None, "plateau", "plateau", "cap"]
        for step in range(TOTAL):  # no restart: one linear decay over the run for every trained depth
            assert steps[step]["lrs"]["3"] == pytest.approx(LR * (TOTAL - step) / TOTAL, rel=1e-12)
    # The decision history saved in the checkpoint states names the evaluation that fired.
    history = record["stored"]["attributes"]["history"]
    fired = [h["step"] for h in history if h["switch"]]
    assert fired == [p["steps"][0] for p in phases if p.get("began") == "plateau"]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", sorted(EXPECTED_STARTS))
def test_killed_after_a_plateau_switch_resumes_bit_identical(plain_runs, tmp_path, strategy):
    kill = 10  # after the switches at 8 (LP-FT) and at 4 and 8 (unfreezing)
    proc = _start(strategy, tmp_path / "run", "--kill-after-step", str(kill))
    rc, log = _finish(proc)
    assert rc == -signal.SIGKILL, log[-3000:]
    assert not Path(f"{tmp_path / 'run'}_rank0.json").exists()
    rc, log = _finish(_start(strategy, tmp_path / "run", "--resume"))
    assert rc == 0, log[-3000:]
    resumed, reference = _record(tmp_path / "run"), _record(plain_runs / strategy)
    assert resumed["starts"] == reference["starts"] == EXPECTED_STARTS[strategy]
    assert min(int(k) for k in resumed["steps"]) == kill
    for step, seen in resumed["steps"].items():
        assert seen == reference["steps"][step], step
    assert resumed["losses"] == reference["losses"]
    diff = _max_diff(
        load_file(f"{tmp_path / 'run'}_rank0.safetensors"), load_file(f"{plain_runs / strategy}_rank0.safetensors")
    )
    assert diff == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("strategy", sorted(EXPECTED_STARTS))
def test_two_process_ddp_switches_together_and_equals_one_process(plain_runs, tmp_path, strategy):
    # Rank 1's scripted metric never plateaus: only rank 0's decision, broadcast, keeps the ranks together.
    launcher = (str(TORCHRUN), "--standalone", "--nproc_per_node", "2")
    # Without dropout, so that one process (same global batch of 8) draws no random numbers the ranks draw apart.
    ddp = _start(strategy, tmp_path / "ddp", "--per-device-batch", "4", "--dropout", "0", launcher=launcher)
    single = _start(strategy, tmp_path / "one", "--dropout", "0")
    for proc in (ddp, single):
        rc, log = _finish(proc)
        assert rc == 0, log[-4000:]
    ranks = [_record(tmp_path / "ddp", r) for r in (0, 1)]
    one = _record(tmp_path / "one")
    assert [r["world_size"] for r in ranks] == [2, 2] and one["world_size"] == 1
    assert ranks[0]["starts"] == ranks[1]["starts"] == one["starts"] == EXPECTED_STARTS[strategy]
    assert ranks[0]["steps"] == ranks[1]["steps"]
    w0, w1 = (load_file(f"{tmp_path / 'ddp'}_rank{r}.safetensors") for r in (0, 1))
    assert _max_diff(w0, w1) == 0.0
    # The same weights and losses as one process, up to float summation order.
    diff = _max_diff(w0, load_file(f"{tmp_path / 'one'}_rank0.safetensors"))
    print(f"max |DDP - one process| = {diff:.3g}")
    assert diff < 1e-5
    torch.testing.assert_close(torch.tensor(ranks[0]["losses"]), torch.tensor(one["losses"]), atol=1e-5, rtol=0)


def test_optimizer_state_is_cleared_when_a_phase_begins_if_asked():
    weight = torch.nn.Parameter(torch.ones(3))
    for reset, kept in ((True, False), (False, True)):
        optimizer = torch.optim.AdamW([weight], lr=0.1)
        weight.grad = torch.ones(3)
        optimizer.step()
        cb = PlateauPhaseCallback("eval_m", patience=1, reset_optimizer=reset)
        cb.set_schedule(_schedule())
        _feed(cb, [1.0, 1.0])  # the plateau begins phase 1 at step 4
        cb.on_step_begin(None, _State(3), None, optimizer=optimizer)
        assert len(optimizer.state) == 1  # not at another step
        cb.on_step_begin(None, _State(4), None, optimizer=optimizer)
        assert (len(optimizer.state) == 1) == kept


def test_summary_and_final_state_record_the_switches(plain_runs):
    record = _record(plain_runs / "lpft")
    stored = record["stored"]  # trainer.state after train(): what save_state writes
    assert stored["attributes"]["switches"] == {"1": 8}
    assert [h["step"] for h in stored["attributes"]["history"]] == [2, 4, 6, 8]  # then fine-tuning: no more watching
