"""The sinusoid regression task family of Finn et al. 2017 (MAML, section 5.1), exactly as in the paper.

Task: ``y = A sin(x - phi)`` with amplitude ``A ~ U[0.1, 5]``, phase ``phi ~ U[0, pi]``, inputs ``x ~ U[-5, 5]``;
K = 10 support points (and K query points); model: MLP 1-40-40-1 with ReLU; one inner SGD step at lr 0.01, MSE
loss; outer Adam lr 1e-3, meta-batch 25 tasks.

Episodes follow the shared format: ``{"support": {"x": [K, 1]}, "support_labels": [K, 1], "query": {"x": ...},
"query_labels": ...}``, drawn from an RNG seeded by ``(seed, index)`` alone: item ``i`` is the same task in every
process, epoch and order.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

__all__ = ["SinusoidMLP", "SinusoidRun", "SinusoidTasks", "evaluate_sinusoid", "train_sinusoid"]


class SinusoidTasks(Dataset):
    """Map-style dataset of sinusoid episodes; item ``i`` is one task, deterministic in ``(seed, i)``.

    Args:
        num_tasks: length of the dataset (the number of distinct tasks it serves).
        k_shot / k_query: support and query points per task.
        seed: dataset seed; use different seeds for meta-training and meta-testing.
        amplitude / phase / x_range: the uniform ranges (defaults: the paper's).
    """

    def __init__(
        self,
        num_tasks: int = 100_000,
        k_shot: int = 10,
        k_query: int = 10,
        seed: int = 0,
        amplitude: tuple[float, float] = (0.1, 5.0),
        phase: tuple[float, float] = (0.0, math.pi),
        x_range: tuple[float, float] = (-5.0, 5.0),
    ):
        if k_shot < 1 or k_query < 1:
            raise ValueError(f"k_shot={k_shot} and k_query={k_query} must be >= 1.")
        self.num_tasks = int(num_tasks)
        self.k_shot = int(k_shot)
        self.k_query = int(k_query)
        self.seed = int(seed)
        self.amplitude = amplitude
        self.phase = phase
        self.x_range = x_range

    def __len__(self) -> int:
        return self.num_tasks

    def _generator(self, index: int) -> torch.Generator:
        state = np.random.SeedSequence([self.seed, int(index)]).generate_state(2, np.uint32)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    @staticmethod
    def _uniform(g: torch.Generator, lo_hi: tuple[float, float], *shape: int) -> Tensor:
        lo, hi = lo_hi
        return lo + (hi - lo) * torch.rand(*shape, generator=g)

    def task(self, index: int) -> tuple[float, float]:
        """(amplitude, phase) of task ``index``."""
        g = self._generator(index)
        return self._uniform(g, self.amplitude, 1).item(), self._uniform(g, self.phase, 1).item()

    def __getitem__(self, index: int) -> dict:
        if not -self.num_tasks <= index < self.num_tasks:
            raise IndexError(f"Task {index} is out of range for {self.num_tasks} tasks.")
        index = index % self.num_tasks
        g = self._generator(index)
        amp = self._uniform(g, self.amplitude, 1)
        phase = self._uniform(g, self.phase, 1)
        xs = self._uniform(g, self.x_range, self.k_shot, 1)
        xq = self._uniform(g, self.x_range, self.k_query, 1)
        return {
            "support": {"x": xs},
            "support_labels": amp * torch.sin(xs - phase),
            "query": {"x": xq},
            "query_labels": amp * torch.sin(xq - phase),
        }


class _Hidden(nn.Module):
    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.linear(x))


class SinusoidMLP(nn.Module):
    """The MAML sinusoid regressor: ``1 -> 40 -> 40 -> 1`` with ReLU. ``forward(x)`` takes ``[B, 1]``.

    ``body`` (the hidden blocks, exposed as ``base_model``) and ``head`` make the layer map structural, so
    ``adapt="head"`` (ANIL) and ``"last-K"`` work without an override.
    """

    supports_task_vmap = True

    def __init__(self, hidden: Sequence[int] = (40, 40), n_in: int = 1, n_out: int = 1):
        super().__init__()
        sizes = [n_in, *hidden]
        self.body = nn.Sequential(*(_Hidden(a, b) for a, b in zip(sizes[:-1], sizes[1:])))
        self.head = nn.Linear(sizes[-1], n_out)

    @property
    def base_model(self) -> nn.Module:
        return self.body

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


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
    k_query: int = 100,
    seed: int = 10_000,
) -> dict[str, float]:
    """Mean query MSE over ``num_tasks`` test tasks before and after ``steps`` inner steps on ``k_shot`` points,
    with the 95% confidence half-width ``1.96 * std / sqrt(n)``."""
    tasks = SinusoidTasks(num_tasks, k_shot=k_shot, k_query=k_query, seed=seed)
    pre, post = [], []
    for i in range(num_tasks):
        ep = tasks[i]
        with torch.no_grad():
            pre.append(torch.mean((model(**ep["query"]) - ep["query_labels"]) ** 2).item())
        pred = algorithm.adapt_and_predict(model, ep, steps=steps, lr=lr)
        post.append(torch.mean((pred - ep["query_labels"]) ** 2).item())
    post_t = torch.tensor(post)
    return {
        "mse_pre": float(np.mean(pre)),
        "mse": post_t.mean().item(),
        "mse_ci95": 1.96 * post_t.std().item() / math.sqrt(num_tasks),
        "tasks": num_tasks,
        "steps": steps if steps is not None else algorithm.inner_steps,
    }


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
) -> SinusoidRun:
    """Meta-train ``algorithm`` (default: second-order MAML, inner lr 0.01, one step) on sinusoid tasks with Adam.

    Returns the trained model, the per-iteration meta-losses, wall time, and (every ``eval_every`` iterations) the
    one-step evaluation on ``eval_tasks`` test tasks.
    """
    from .algorithms import MAML

    torch.manual_seed(seed)
    algorithm = MAML(inner_lr=0.01, inner_steps=1) if algorithm is None else algorithm
    model = SinusoidMLP() if model is None else model
    if hasattr(algorithm, "setup") and not list(algorithm.parameters()):
        algorithm.setup(model)  # Meta-SGD's learning rates
    train = SinusoidTasks(iterations * meta_batch_size, k_shot=k_shot, k_query=k_shot, seed=seed)
    optimizer = torch.optim.Adam([*model.parameters(), *algorithm.parameters()], lr=lr)
    run = SinusoidRun(model=model, iterations=iterations, seconds=0.0)
    start = time.perf_counter()
    for it in range(iterations):
        tasks = [train[it * meta_batch_size + j] for j in range(meta_batch_size)]
        out = algorithm.meta_loss(model, tasks)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        run.losses.append(out.loss.item())
        if callback is not None:
            callback(it, run.losses[-1])
        if eval_every and (it + 1) % eval_every == 0:
            run.seconds = time.perf_counter() - start
            result = evaluate_sinusoid(algorithm, model, num_tasks=eval_tasks, seed=10_000 + seed)
            run.evaluations.append({"iteration": it + 1, "seconds": run.seconds, **result})
            start = time.perf_counter() - run.seconds  # evaluation time is not training time
    run.seconds = time.perf_counter() - start
    return run
