"""Lazy exports and deprecated aliases for a package's ``__init__`` (PEP 562, as PEFT does).

A name's module is imported on first access, so ``import hf_transfer_meta.meta.algorithms`` pulls in torch and not
``datasets`` or PIL. A renamed name stays reachable for one release through a ``FutureWarning``.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports", "renamed"]


def renamed(old: str, new: str, stacklevel: int = 3) -> None:
    """Warn that ``old`` is a deprecated alias of ``new`` (removed in the next release)."""
    warnings.warn(
        f"{old} is deprecated and will be removed in the next release: use {new}.",
        FutureWarning,
        stacklevel=stacklevel,
    )


def lazy_exports(
    package: str,
    exports: Mapping[str, str],
    deprecated: Mapping[str, tuple[str, Callable[[], Any]]] | None = None,
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``.

    ``exports``: name -> the submodule that defines it (``".trainer"``). ``deprecated``: old name -> (what to use
    instead, a function returning the object).
    """
    deprecated = dict(deprecated or {})

    def __getattr__(name: str) -> Any:
        if name in exports:
            value = getattr(importlib.import_module(exports[name], package), name)
            setattr(sys.modules[package], name, value)  # the next access is a plain attribute
            return value
        if name in deprecated:
            new, get = deprecated[name]
            renamed(f"{package}.{name}", new)
            return get()
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*exports, *vars(sys.modules[package])})

    return __getattr__, __dir__
