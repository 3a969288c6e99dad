"""One episode evaluation and one CI convention: MetaTrainer.evaluate and evaluate_sinusoid agree on the same tasks."""

import math

import numpy as np
import pytest
import torch

from hf_transfer_meta.meta import MAML, MetaTrainer, MetaTrainingArguments, SinusoidMLP, SinusoidTasks, mean_ci95
from hf_transfer_meta.meta.evaluation import evaluate_episodes
from hf_transfer_meta.meta.sinusoid import evaluate_sinusoid


def test_trainer_and_sinusoid_evaluation_report_the_same_numbers(tmp_path):
    torch.manual_seed(0)
    model = SinusoidMLP()
    sinusoid = evaluate_sinusoid(MAML(inner_lr=0.01), model, num_tasks=30, n_query=20, seed=7)
    args = MetaTrainingArguments(
        output_dir=str(tmp_path), algorithm="maml", inner_lr=0.01, eval_inner_steps=1, report_to="none",
        use_cpu=True, per_device_eval_batch_size=7, eval_episodes=600,
    )  # fmt: skip
    trainer = MetaTrainer(model=model, args=args)
    metrics = trainer.evaluate(SinusoidTasks(30, n_query=20, seed=7))
    assert metrics["eval_mse"] == pytest.approx(sinusoid["mse"], rel=1e-6)
    assert metrics["eval_mse_ci95"] == pytest.approx(sinusoid["mse_ci95"], rel=1e-6)
    assert metrics["eval_pre_adaptation_mse"] == pytest.approx(sinusoid["mse_pre"], rel=1e-6)


def test_ci_is_the_population_std_formula():
    torch.manual_seed(0)
    model, tasks = SinusoidMLP(), SinusoidTasks(12, seed=3)
    result = evaluate_episodes(
        MAML(inner_lr=0.01), model, [[tasks[i] for i in range(6)], [tasks[i] for i in range(6, 12)]]
    )
    mse = result.scores.double().numpy()
    assert len(result) == 12 and result.regression and len(set(mse.tolist())) == 12
    metrics = result.metrics("x")
    assert metrics["x_mse_ci95"] == pytest.approx(1.96 * np.std(mse) / math.sqrt(12))  # ddof=0
    assert (metrics["x_mse"], metrics["x_mse_ci95"]) == pytest.approx(mean_ci95(mse))
    assert metrics["x_loss"] == pytest.approx(metrics["x_mse"])
