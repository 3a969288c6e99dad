"""The one list of meta-learning algorithms: ``MetaTrainingArguments.algorithm``'s choices and ``build_algorithm``
read it (as PEFT's ``register_peft_method``). A new algorithm is a module whose class is decorated with
``@register_algorithm("name")`` and implements ``from_args``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from torch import nn

    from ..arguments import MetaTrainingArguments
    from .base import MetaAlgorithm

__all__ = ["ALGORITHMS", "build_algorithm", "register_algorithm"]

ALGORITHMS: dict[str, type[MetaAlgorithm]] = {}
A = TypeVar("A")


def register_algorithm(name: str) -> Callable[[A], A]:
    """Class decorator: ``algorithm=name`` selects the class, built by its ``from_args(args, model)``."""
    key = name.lower()

    def register(cls: A) -> A:
        if key in ALGORITHMS and ALGORITHMS[key] is not cls:
            raise ValueError(f"algorithm {key!r} is already registered to {ALGORITHMS[key].__name__}.")
        ALGORITHMS[key] = cls
        return cls

    return register


def build_algorithm(args: MetaTrainingArguments, model: nn.Module | None = None) -> MetaAlgorithm:
    """The algorithm named by ``args.algorithm``, configured from the arguments (Meta-SGD's rates made for ``model``)."""
    cls = ALGORITHMS.get(args.algorithm)
    if cls is None:
        raise ValueError(f"Unknown algorithm {args.algorithm!r}: choose one of {sorted(ALGORITHMS)}.")
    return cls.from_args(args, model)
