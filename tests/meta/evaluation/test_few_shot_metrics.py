"""Few-shot accuracy: the 95% CI formula on known numbers, and the bundled evaluate metric loading offline."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import hf_transfer_meta
from hf_transfer_meta.meta import (
    episode_accuracies,
    few_shot_accuracy,
    few_shot_accuracy_metric_path,
    load_few_shot_accuracy,
    mean_ci95,
)


def test_mean_ci95_on_known_numbers():
    # Values 0 and 1: mean 0.5, population std 0.5, sample std sqrt(1/2).
    assert mean_ci95([0.0, 1.0]) == pytest.approx((0.5, 1.96 * 0.5 / math.sqrt(2)), abs=1e-12)
    assert mean_ci95([0.0, 1.0], ddof=1) == pytest.approx((0.5, 0.98), abs=1e-12)
    # Four episodes: mean 0.8125, population variance 0.04296875.
    mean, ci = mean_ci95([0.5, 0.75, 1.0, 1.0])
    assert mean == pytest.approx(0.8125) and ci == pytest.approx(1.96 * math.sqrt(0.04296875) / 2)
    assert mean_ci95([0.7] * 600) == pytest.approx((0.7, 0.0), abs=1e-12)
    assert math.isnan(mean_ci95([0.3], ddof=1)[1])
    with pytest.raises(ValueError, match="at least one value"):
        mean_ci95([])


def test_episode_accuracies_group_by_episode_id():
    # Episode 7: 2/4 right; episode 3: 3/3 right (ids need not be sorted or contiguous).
    predictions = [0, 1, 1, 0, 2, 2, 2]
    references = [0, 1, 0, 1, 2, 2, 2]
    episode_ids = [7, 7, 7, 7, 3, 3, 3]
    np.testing.assert_allclose(episode_accuracies(predictions, references, episode_ids), [1.0, 0.5])
    result = few_shot_accuracy(predictions, references, episode_ids)
    assert result["num_episodes"] == 2
    assert result["accuracy"] == pytest.approx(0.75)  # the mean over episodes, not over the 7 queries (5/7)
    assert result["accuracy_ci95"] == pytest.approx(1.96 * 0.25 / math.sqrt(2))
    with pytest.raises(ValueError, match="one entry per query"):
        episode_accuracies([0, 1], [0], [0, 0])


def test_metric_script_is_package_data():
    # pyproject: [tool.setuptools.package-data] hf_transfer_meta = ["meta/evaluation/*/*.py"]
    package = Path(hf_transfer_meta.__file__).parent
    script = Path(few_shot_accuracy_metric_path()) / "few_shot_accuracy.py"
    assert script in list(package.glob("meta/evaluation/*/*.py"))


def test_evaluate_load_in_process():
    metric = load_few_shot_accuracy(keep_in_memory=True)
    result = metric.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0], episode_ids=[0, 0, 1, 1])
    assert result == pytest.approx({"accuracy": 0.75, "accuracy_ci95": 1.96 * 0.25 / math.sqrt(2), "num_episodes": 2})
    # Added batch by batch (as an evaluation loop would), then computed with the sample std.
    metric = load_few_shot_accuracy(keep_in_memory=True)
    metric.add_batch(predictions=[0, 1], references=[0, 1], episode_ids=[0, 0])
    metric.add_batch(predictions=[1, 0], references=[0, 0], episode_ids=[1, 1])
    assert metric.compute(ddof=1)["accuracy_ci95"] == pytest.approx(1.96 * math.sqrt(0.125) / math.sqrt(2))


def test_evaluate_load_works_offline(tmp_path):
    """A fresh process with the Hub disabled, every proxy pointing nowhere and empty caches."""
    code = (
        "import json, evaluate\n"
        f"metric = evaluate.load({few_shot_accuracy_metric_path()!r})\n"
        "print(json.dumps(metric.compute(predictions=[1, 1, 2, 0, 0, 1], references=[1, 1, 2, 0, 1, 2],"
        " episode_ids=[0, 0, 0, 1, 1, 1])))\n"
    )
    nowhere = "http://127.0.0.1:9"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_EVALUATE_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "HTTP_PROXY": nowhere,
        "HTTPS_PROXY": nowhere,
        "http_proxy": nowhere,
        "https_proxy": nowhere,
        "OMP_NUM_THREADS": "1",
    }
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    expected_mean, expected_ci = mean_ci95([1.0, 1 / 3])
    assert result["num_episodes"] == 2
    assert result["accuracy"] == pytest.approx(expected_mean)
    assert result["accuracy_ci95"] == pytest.approx(expected_ci)
    assert (tmp_path / "modules").exists()  # the script was copied into the fresh module cache, not fetched
