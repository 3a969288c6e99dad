"""Where the project's data sets live: ``$HF_TRANSFER_META_DATA``, else ``../shared/data`` beside the checkout.

Nothing is downloaded: a missing file raises ``FileNotFoundError`` naming the path and where the file comes from.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["CACHE_ENV_VAR", "DATA_ENV_VAR", "cache_folder", "resolve_data_dir", "sha256", "shared_data_dir"]

DATA_ENV_VAR = "HF_TRANSFER_META_DATA"
CACHE_ENV_VAR = "HF_TRANSFER_META_CACHE"


def _repo_root() -> Path | None:
    # src/hf_transfer_meta/meta/data/paths.py -> the checkout's root, when running from a source checkout.
    root = Path(__file__).resolve().parents[4]
    return root if (root / "pyproject.toml").is_file() else None


def shared_data_dir() -> Path | None:
    """The folder holding the project's data sets, or ``None`` when there is none.

    In order: ``$HF_TRANSFER_META_DATA``; ``<repo root>/../shared/data`` (a checkout with ``shared/`` beside it, as
    on developer machines and in CI); ``./../shared/data`` from the working directory. The environment variable is
    returned even when it does not exist, so that errors name the folder the user asked for.
    """
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        return Path(env).expanduser()
    candidates = [Path.cwd().parent / "shared" / "data"]
    root = _repo_root()
    if root is not None:
        candidates.insert(0, root.parent / "shared" / "data")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return None


def resolve_data_dir(data_dir: str | os.PathLike | None, name: str, required: str, source: str) -> Path:
    """``data_dir`` or ``shared_data_dir()/name``; a FileNotFoundError naming the path and the source if absent."""
    if data_dir is None:
        root = shared_data_dir()
        folder = root / name if root is not None else None
    else:
        folder = Path(data_dir).expanduser()
    if folder is None or not (folder / required).exists():
        where = (
            str(folder / required)
            if folder is not None
            else f"../shared/data/{name}/{required} (no shared data folder found, and ${DATA_ENV_VAR} is not set)"
        )
        raise FileNotFoundError(
            f"{where} not found. It comes from {source}. Put the file in a folder and pass data_dir=<that folder>, "
            f"or set {DATA_ENV_VAR} to the folder that holds {name}/ (the project's ../shared/data)."
        )
    return folder


def cache_folder(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where decoded arrays are cached: ``cache_dir``, ``$HF_TRANSFER_META_CACHE`` or ``~/.cache/hf_transfer_meta``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hf_transfer_meta"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
