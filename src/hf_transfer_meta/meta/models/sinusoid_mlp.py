"""The sinusoid regressor of Finn et al. 2017 (MAML, section 5.1): an MLP 1-40-40-1 with ReLU."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

__all__ = ["SinusoidMLP"]


class _Hidden(nn.Module):
    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.linear(x))


class SinusoidMLP(nn.Module):
    """``1 -> 40 -> 40 -> 1`` with ReLU. ``forward(x)`` takes ``[B, 1]``.

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
