"""The sinusoid task family (Finn et al. 2017) and a short MAML run on it."""

import math

import pytest
import torch

from hf_transfer_meta.meta.algorithms import MAML
from hf_transfer_meta.meta.sinusoid import SinusoidMLP, SinusoidTasks, evaluate_sinusoid, train_sinusoid
from hf_transfer_meta.transfer.layer_map import LayerMap


def test_episode_format_and_ranges():
    ds = SinusoidTasks(400, k_shot=10, n_query=7, seed=3)
    amps, phases = [], []
    for i in range(len(ds)):
        ep = ds[i]
        assert set(ep) == {"support", "support_labels", "query", "query_labels"}
        xs, xq = ep["support"]["x"], ep["query"]["x"]
        assert xs.shape == (10, 1) and xq.shape == (7, 1) and ep["query_labels"].shape == (7, 1)
        assert xs.dtype == torch.float32 and ep["support_labels"].dtype == torch.float32
        assert xs.min() >= -5 and xs.max() <= 5 and xq.min() >= -5 and xq.max() <= 5
        amp, phase = ds.task(i)
        assert 0.1 <= amp <= 5 and 0 <= phase <= math.pi
        torch.testing.assert_close(ep["support_labels"], amp * torch.sin(xs - phase))
        torch.testing.assert_close(ep["query_labels"], amp * torch.sin(xq - phase))
        amps.append(amp)
        phases.append(phase)
    # the ranges are covered, uniformly enough: not a stuck or mis-scaled sampler
    assert min(amps) < 0.4 and max(amps) > 4.7 and abs(sum(amps) / len(amps) - 2.55) < 0.3
    assert min(phases) < 0.1 and max(phases) > 3.0 and abs(sum(phases) / len(phases) - math.pi / 2) < 0.2


def test_tasks_are_deterministic_per_seed_and_index():
    a, b = SinusoidTasks(100, seed=0), SinusoidTasks(100, seed=0)
    later = b[7]
    _ = b[3], b[99]
    first = a[7]
    for key in ("support_labels", "query_labels"):
        assert torch.equal(first[key], later[key])
    assert torch.equal(first["support"]["x"], b[7]["support"]["x"])  # order of access does not matter
    assert not torch.equal(a[7]["support"]["x"], a[8]["support"]["x"])
    assert not torch.equal(a[7]["support"]["x"], SinusoidTasks(100, seed=1)[7]["support"]["x"])
    assert torch.equal(a[-1]["support"]["x"], a[99]["support"]["x"])
    with pytest.raises(IndexError):
        a[100]


def test_mlp_is_the_papers_and_has_a_layer_map():
    model = SinusoidMLP()
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert shapes == [(40, 1), (40,), (40, 40), (40,), (1, 40), (1,)]
    assert model(torch.zeros(3, 1)).shape == (3, 1)
    lm = LayerMap.from_model(model)
    assert lm.num_blocks == 2 and lm.names_at(lm.head_depth) == ["head.weight", "head.bias"]


def test_short_maml_run_learns_to_adapt():
    torch.manual_seed(0)
    untrained = evaluate_sinusoid(MAML(), SinusoidMLP(), num_tasks=100, n_query=20)
    # a shortened run (the paper: Adam 1e-3, meta-batch 25, tens of thousands of iterations); outer lr raised to fit
    # a test budget
    run = train_sinusoid(iterations=300, meta_batch_size=10, lr=1e-2, seed=0)
    assert len(run.losses) == 300 and run.seconds > 0
    assert sum(run.losses[-50:]) / 50 < 0.6 * sum(run.losses[:50]) / 50
    result = evaluate_sinusoid(MAML(), run.model, num_tasks=100, n_query=20)
    assert result["mse"] < 0.6 * result["mse_pre"]  # one inner step now helps a lot...
    assert untrained["mse"] > 0.85 * untrained["mse_pre"]  # ...which it did not before meta-training
    ten = evaluate_sinusoid(MAML(), run.model, num_tasks=100, n_query=20, steps=10)
    assert ten["mse"] < result["mse"]
