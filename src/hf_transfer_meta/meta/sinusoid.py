"""The sinusoid experiment of Finn et al. 2017 (MAML, section 5.1): meta-train with :class:`MetaTrainer` and report
the query MSE after adaptation with its 95% CI (the shared episode evaluation).

The paper's setting: K = 10 support points, MLP 1-40-40-1, one inner SGD step at lr 0.01, MSE loss, outer Adam at
lr 1e-3, meta-batch 25 tasks. The tasks are :class:`~hf_transfer_meta.meta.data.sinusoid.SinusoidTasks`, the model
:class:`~hf_transfer_meta.meta.models.SinusoidMLP`.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import PrinterCallback, TrainerCallback

from .._lazy import renamed
from .data.sinusoid import SinusoidTasks
from .evaluation import evaluate_episodes
from .models.sinusoid_mlp import SinusoidMLP

__all__ = ["SinusoidMLP", "SinusoidRun", "SinusoidTasks", "evaluate_sinusoid", "train_sinusoid"]


@dataclass
class SinusoidRun:
    """What :func:`train_sinusoid` returns."""

    model: nn.Module
    iterations: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    evaluations: list[dict] = field(default_factory=list)


def evaluate_sinusoid(
    algorithm,
    model: nn.Module,
    num_tasks: int = 600,
    steps: int | None = 1,
    lr: float | None = None,
    k_shot: int = 10,
    n_query: int = 100,
    seed: int = 10_000,
    *,
    k_query: int | None = None,
) -> dict[str, float]:
    """Mean query MSE over ``num_tasks`` test tasks before and after ``steps`` inner steps on ``k_shot`` points, with
    the 95% CI of :func:`~hf_transfer_meta.meta.evaluation.mean_ci95` (``k_query`` is the deprecated ``n_query``)."""
    if k_query is not None:
        renamed("evaluate_sinusoid(k_query=...)", "n_query=")
        n_query = k_query
    tasks = SinusoidTasks(num_tasks, k_shot=k_shot, n_query=n_query, seed=seed)
    result = evaluate_episodes(algorithm, model, ([tasks[i]] for i in range(num_tasks)), steps=steps, lr=lr)
    metrics = result.metrics("mse")
    pre = result.pre_adaptation_scores
    return {
        "mse_pre": pre.double().mean().item() if pre is not None else math.nan,
        "mse": metrics["mse_mse"],
        "mse_ci95": metrics["mse_mse_ci95"],
        "tasks": num_tasks,
        "steps": steps if steps is not None else algorithm.inner_steps,
    }


class _RecordSinusoidRun(TrainerCallback):
    """Fills a :class:`SinusoidRun` from the training logs; evaluates every ``eval_every`` steps (not timed)."""

    def __init__(self, run: SinusoidRun, algorithm, eval_every: int, eval_tasks: int, seed: int, callback):
        self.run, self.algorithm, self.callback = run, algorithm, callback
        self.eval_every, self.eval_tasks, self.seed = eval_every, eval_tasks, seed
        self.eval_seconds = 0.0

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.run.losses.append(logs["loss"])
            if self.callback is not None:
                self.callback(state.global_step - 1, logs["loss"])

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.eval_every and state.global_step % self.eval_every == 0:
            start = time.perf_counter()
            result = evaluate_sinusoid(self.algorithm, model, num_tasks=self.eval_tasks, seed=10_000 + self.seed)
            self.eval_seconds += time.perf_counter() - start
            seconds = time.perf_counter() - self.started - self.eval_seconds
            self.run.evaluations.append({"iteration": state.global_step, "seconds": seconds, **result})

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()


def train_sinusoid(
    algorithm=None,
    model: nn.Module | None = None,
    iterations: int = 20_000,
    meta_batch_size: int = 25,
    lr: float = 1e-3,
    seed: int = 0,
    k_shot: int = 10,
    eval_every: int = 0,
    eval_tasks: int = 200,
    callback: Callable[[int, float], None] | None = None,
    output_dir: str | None = None,
) -> SinusoidRun:
    """Meta-train ``algorithm`` (default: second-order MAML, inner lr 0.01, one step) on sinusoid tasks with
    :class:`MetaTrainer` (Adam, constant LR, no clipping), one logged meta-loss per iteration.

    Returns the trained model, the per-iteration meta-losses, the training time, and (every ``eval_every``
    iterations) the one-step evaluation on ``eval_tasks`` test tasks. ``output_dir``: the Trainer's folder (default:
    a temporary one; nothing is saved).
    """
    from .algorithms import MAML
    from .arguments import MetaTrainingArguments
    from .trainer import MetaTrainer

    torch.manual_seed(seed)
    algorithm = MAML(inner_lr=0.01, inner_steps=1) if algorithm is None else algorithm
    model = SinusoidMLP() if model is None else model
    run = SinusoidRun(model=model, iterations=iterations, seconds=0.0)
    record = _RecordSinusoidRun(run, algorithm, eval_every, eval_tasks, seed, callback)
    with tempfile.TemporaryDirectory() as tmp:
        args = MetaTrainingArguments(
            output_dir=output_dir or tmp, max_steps=iterations, per_device_train_batch_size=meta_batch_size,
            learning_rate=lr, optim="adamw_torch", weight_decay=0.0, max_grad_norm=0.0, logging_steps=1,
            save_strategy="no", report_to="none", seed=seed, disable_tqdm=True, dataloader_num_workers=0,
            dataloader_pin_memory=False,
        )  # fmt: skip
        train = SinusoidTasks(iterations * meta_batch_size, k_shot=k_shot, n_query=k_shot, seed=seed)
        trainer = MetaTrainer(model=model, args=args, train_dataset=train, algorithm=algorithm, callbacks=[record])
        trainer.remove_callback(PrinterCallback)  # one log line per iteration is for the SinusoidRun, not stdout
        start = time.perf_counter()
        trainer.train()
        run.seconds = time.perf_counter() - start - record.eval_seconds
    return run
