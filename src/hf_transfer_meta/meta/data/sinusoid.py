"""The sinusoid regression task family of Finn et al. 2017 (MAML, section 5.1), exactly as in the paper.

Task: ``y = A sin(x - phi)`` with amplitude ``A ~ U[0.1, 5]``, phase ``phi ~ U[0, pi]``, inputs ``x ~ U[-5, 5]``;
K = 10 support points (and K query points). Episodes follow the shared format: ``{"support": {"x": [K, 1]},
"support_labels": [K, 1], "query": {"x": ...}, "query_labels": ...}``, drawn from an RNG seeded by ``(seed, index)``
alone, so item ``i`` is the same task in every process, epoch and order.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..._lazy import renamed

__all__ = ["SinusoidTasks"]


class SinusoidTasks(Dataset):
    """Map-style dataset of sinusoid episodes; item ``i`` is one task, deterministic in ``(seed, i)``.

    Args:
        num_tasks: length of the dataset (the number of distinct tasks it serves).
        k_shot / n_query: support and query points per task (``k_query`` is the deprecated name of ``n_query``).
        seed: dataset seed; use different seeds for meta-training and meta-testing.
        amplitude / phase / x_range: the uniform ranges (defaults: the paper's).
    """

    def __init__(
        self,
        num_tasks: int = 100_000,
        k_shot: int = 10,
        n_query: int = 10,
        seed: int = 0,
        amplitude: tuple[float, float] = (0.1, 5.0),
        phase: tuple[float, float] = (0.0, math.pi),
        x_range: tuple[float, float] = (-5.0, 5.0),
        *,
        k_query: int | None = None,
    ):
        if k_query is not None:
            renamed("SinusoidTasks(k_query=...)", "n_query=")
            n_query = k_query
        if k_shot < 1 or n_query < 1:
            raise ValueError(f"k_shot={k_shot} and n_query={n_query} must be >= 1.")
        self.num_tasks = int(num_tasks)
        self.k_shot = int(k_shot)
        self.n_query = int(n_query)
        self.seed = int(seed)
        self.amplitude = amplitude
        self.phase = phase
        self.x_range = x_range

    @property
    def k_query(self) -> int:
        renamed("SinusoidTasks.k_query", "SinusoidTasks.n_query")
        return self.n_query

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
        xq = self._uniform(g, self.x_range, self.n_query, 1)
        return {
            "support": {"x": xs},
            "support_labels": amp * torch.sin(xs - phase),
            "query": {"x": xq},
            "query_labels": amp * torch.sin(xq - phase),
        }
