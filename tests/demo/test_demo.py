"""The demo: disjoint splits, `--quick` end to end (both tables, results.json, run folders, sane numbers), clean
errors, presets that declare what runs, progress bars only on a terminal."""

import json
import os
import sys

import numpy as np
import pytest
import torch

from hf_transfer_meta import demo


def test_splits_are_disjoint_and_balanced():
    s = demo.load_digit_tasks(seed=0)
    source = set(s.source.tolist())
    assert set(s.targets[s.source].tolist()) == set(demo.SOURCE_CLASSES)
    assert set(s.targets[s.target_test["new"]].tolist()) == set(demo.NEW_CLASSES)
    for pool_name in ("held_out", "new"):
        pool, test = set(s.target_pool[pool_name].tolist()), set(s.target_test[pool_name].tolist())
        assert not pool & test and not pool & source and not test & source
        draws = []
        for seed in range(3):
            train, val = demo.draw_few_shot(s.target_pool[pool_name], s.targets, shots=20, val_per_class=10, seed=seed)
            assert set(train.tolist()) <= pool and set(val.tolist()) <= pool and not set(train) & set(val)
            counts = np.unique(s.targets[train], return_counts=True)[1]
            assert counts.tolist() == [20] * len(counts)
            draws.append(set(train.tolist()))
        assert draws[0] != draws[1]  # every seed gets its own few-shot set
    with pytest.raises(ValueError, match="lower --shots"):
        demo.draw_few_shot(s.target_pool["new"], s.targets, shots=500, val_per_class=10, seed=0)


def test_task_labels():
    s = demo.load_digit_tasks(seed=0)
    args = demo.DemoArguments(output_dir="unused")
    sizes = {"shots": args.shots, "val_per_class": args.val_per_class, "draw_seed": 0}
    relabeled = demo.target_datasets(demo.TASKS["relabeled"], s, **sizes)
    plain = demo.target_datasets(demo.TASKS["inverted"], s, **sizes)
    # same images, every label moved to the next class; inverted images are 1 - clean
    assert torch.equal(relabeled["test_id"].labels, (plain["test_id"].labels + 1) % 6)
    assert torch.allclose(relabeled["test_id"].images, 1 - plain["test_id"].images, atol=1e-6)
    assert demo.TASKS["relabeled"].id2label()[1] == "0"


def test_quick_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    threads = torch.get_num_threads()
    results = demo.main(["--output_dir", str(out), "--quick", "--disable_tqdm"])
    assert torch.get_num_threads() == threads  # the study's settings are restored

    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["transfer"]["summary"] == json.loads(json.dumps(results["transfer"]["summary"]))
    assert (out / "source_model" / "config.json").is_file()
    assert (out / "source_model" / "model.safetensors").is_file()
    table = (out / "transfer" / "table.txt").read_text()
    for label in ("full fine-tuning", "linear probe (head only)", "LP-FT", "surgical: stem + block 1"):
        assert label in table
    for task in demo.TASKS:
        assert task in table

    study = results["transfer"]
    assert study["source"]["train_accuracy_clean"] > 0.95
    rows = {(r["task"], r["strategy"]): r for r in study["summary"]}
    assert len(rows) == 3 * 4
    for task, info in study["tasks"].items():
        full = rows[(task, "full_ft")]
        # far above chance (1/4 or 1/6) on held-out target images
        assert full["test_id_accuracy"] > info["chance"] + 0.6, (task, full)
        for (t, _), row in rows.items():
            if t == task:
                assert 0.0 <= row["test_ood_accuracy"] <= 1.0 and row["test_id_accuracy"] > info["chance"]
    # the input-level shift is fixed by the first block alone (Lee et al. 2022), with a fraction of the parameters
    inv_full, inv_first = rows[("inverted", "full_ft")], rows[("inverted", "surgical_first")]
    assert inv_first["test_id_accuracy"] > 0.9
    assert inv_first["trainable_params"] < 0.1 * inv_full["trainable_params"]
    # the linear probe trains the head only: 64 features -> 4 new classes
    assert rows[("new_classes", "linear_probe")]["trainable_params"] == 64 * 4 + 4
    assert rows[("new_classes", "full_ft")]["trainable_params"] == rows[("new_classes", "full_ft")]["total_params"]

    for run in study["runs"]:
        run_dir = run["run_dir"]
        assert os.path.isfile(os.path.join(run_dir, "trainer_state.json"))
        saved = json.loads(open(os.path.join(run_dir, "result.json")).read())
        assert saved["test_id_accuracy"] == run["test_id_accuracy"]
        assert os.path.isfile(os.path.join(run_dir, "model.safetensors")) == run["selected"]
        if run["strategy"] == "lp_ft":
            assert saved["transfer_summary"]["linear_probe"]["val_accuracy"] > 0.5  # the logistic probe ran
        if run["task"] == "new_classes":
            config = json.loads(open(os.path.join(run_dir, "config.json")).read())
            assert config["id2label"] == {"0": "6", "1": "7", "2": "8", "3": "9"}

    check_meta_study(out, results)


def check_meta_study(out, results):
    """The meta-learning part of the quick demo: its table, files and numbers a broken study cannot produce."""
    study = results["meta"]
    on_disk = json.loads((out / "meta" / "results.json").read_text())
    assert on_disk["summary"] == json.loads(json.dumps(study["summary"]))
    assert json.loads((out / "results.json").read_text())["meta"]["summary"] == on_disk["summary"]
    table = (out / "meta" / "table.txt").read_text()
    for label in ("ProtoNet", "MAML (2nd order)", "4-way 1-shot", "4-way 5-shot", "K=10, 1 step", "no meta-training"):
        assert label in table
    assert study["digits"]["meta_train_classes"] == [0, 1, 2, 3, 4, 5]
    assert study["digits"]["meta_test_classes"] == [6, 7, 8, 9]

    rows = {(r["task"], r["method"], r["setting"]): r for r in study["summary"]}
    assert len(rows) == 2 * 2 + 1
    for row in rows.values():
        assert row["ci95"] > 0 and row["no_meta_training_ci95"] > 0 and row["train_seconds"] > 0, row
        if row["task"] == "digits":
            assert row["episodes"] == 50 and row["chance"] == 0.25
            assert 0.0 <= row["value"] <= 1.0 and 0.0 <= row["no_meta_training"] <= 1.0
            assert row["value"] > row["chance"] + 0.25, row  # clearly above chance on digits never meta-trained on
    for method in ("protonet", "maml"):
        one, five = rows[("digits", method, "4-way 1-shot")], rows[("digits", method, "4-way 5-shot")]
        assert five["value"] > one["value"] + 0.05  # more support images per class help
    assert rows[("digits", "protonet", "4-way 1-shot")]["pre_adaptation"] is None  # nothing to adapt
    for k in (1, 5):
        maml = rows[("digits", "maml", f"4-way {k}-shot")]
        # labels are shuffled per episode: the meta-learned init is at chance before its inner steps, far above after
        assert abs(maml["pre_adaptation"] - 0.25) < 0.08 and maml["value"] > maml["pre_adaptation"] + 0.3, maml
    sine = rows[("sinusoid", "maml", "K=10, 1 step")]
    assert sine["metric"] == "mse" and sine["episodes"] == 50
    # one step from the meta-learned init beats the init itself and one step from a random init
    assert sine["value"] < sine["pre_adaptation"] and sine["value"] < sine["no_meta_training"], sine

    for row in rows.values():
        run_dir = row["run_dir"]
        assert os.path.isfile(os.path.join(run_dir, "model.safetensors"))
        state = json.loads(open(os.path.join(run_dir, "trainer_state.json")).read())
        assert state["global_step"] == row["meta_steps"]
        saved = json.loads(open(os.path.join(run_dir, "result.json")).read())
        assert saved["after"]["value"] == row["value"]
        if row["task"] == "digits":
            config = json.loads(open(os.path.join(run_dir, "config.json")).read())
            assert config["model_type"] == "conv4" and config["num_blocks"] == 3


def test_meta_digits_are_class_disjoint():
    train, test = demo.load_meta_digits()
    assert set(train["label"]) == set(demo.META_TRAIN_CLASSES) == {0, 1, 2, 3, 4, 5}
    assert set(test["label"]) == set(demo.META_TEST_CLASSES) == {6, 7, 8, 9}
    assert len(train) + len(test) == 1797


def test_unwritable_output_dir_is_a_clean_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    target = blocker / "demo"
    with pytest.raises(SystemExit) as err:
        demo.main(["--output_dir", str(target), "--quick"])
    message = str(err.value.code)
    assert message.startswith("error: cannot write to --output_dir") and str(target) in message


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_dir_is_a_clean_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(SystemExit, match="cannot write to --output_dir"):
            demo.main(["--output_dir", str(ro), "--quick"])
    finally:
        ro.chmod(0o700)


def test_unknown_names_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        demo.main(["--output_dir", str(tmp_path), "--strategies", "full_ft", "fancy_ft"])
    assert err.value.code == 2
    assert "Unknown strategy ['fancy_ft']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        demo.main(["--output_dir", str(tmp_path), "--tasks", "cifar"])
    assert "Unknown task ['cifar']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        demo.main(["--output_dir", str(tmp_path), "--meta_methods", "maml", "matching_net"])
    assert "Unknown meta-learning method ['matching_net']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        demo.main(["--output_dir", str(tmp_path), "--meta_way", "5"])
    assert "meta_way=5" in capsys.readouterr().err


def test_presets_declare_what_runs():
    default, full = demo.DemoArguments(output_dir="x"), demo.DemoArguments(output_dir="x", full=True)
    assert (default.num_seeds, default.lr_multipliers, default.meta_eval_episodes, default.sinusoid_steps) == (
        1,
        [1.0],
        200,
        1000,
    )
    assert (full.num_seeds, full.lr_multipliers, full.meta_eval_episodes, full.sinusoid_steps) == (
        3,
        [0.3, 1.0, 3.0],
        600,
        3000,
    )
    # the lighter default runs the same strategies, methods and training lengths as --full, fewer of them
    for name in ("strategies", "meta_methods", "meta_steps", "source_epochs", "target_epochs"):
        assert getattr(default, name) == getattr(full, name), name
    assert demo.DemoArguments(output_dir="x", full=True, num_seeds=2).num_seeds == 2  # a flag beats its preset
    assert demo.PRESETS["full"]["num_seeds"] == 3  # ... and leaves the preset alone
    with pytest.raises(ValueError, match="--full and --quick"):
        demo.DemoArguments(output_dir="x", full=True, quick=True)
    # LP-FT declares the probe that runs
    lp_ft = demo.STRATEGIES["lp_ft"].fields
    assert lp_ft(demo.TASKS["inverted"], 20, "logistic") == {"lp_mode": "logistic", "learning_rate": 2e-3}
    assert lp_ft(demo.TASKS["inverted"], 21, "epochs")["lp_epochs"] == 7


def test_progress_bars_only_on_a_terminal(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert demo.DemoArguments(output_dir="x").disable_tqdm  # a log file gets plain lines, no bars
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert not demo.DemoArguments(output_dir="x").disable_tqdm
    assert demo.DemoArguments(output_dir="x", disable_tqdm=True).disable_tqdm
