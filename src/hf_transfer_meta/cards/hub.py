"""Pushing to the Hub through Trainer's own path, with the failures a user can fix said before the first step.

`Trainer.__init__` creates the repository (``init_hf_repo``) when ``push_to_hub=True``, before it writes anything.
The trainers check there that a token exists and that the Hub is reachable (``HF_HUB_OFFLINE`` unset), and turn the
Hub's own errors into one message that names the fix. What Trainer uploads is every file of ``output_dir`` but
``_*`` and ``checkpoint-*`` (and, with ``hub_strategy="checkpoint"``, the whole last checkpoint folder): private
files of this library live at the top of ``output_dir`` under a ``_`` name, never inside a checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

__all__ = ["PushToHubError", "TRAINER_IGNORE_PATTERNS", "check_push_ready", "explain_hub_error", "uploaded_files"]

# What Trainer.push_to_hub / _push_from_checkpoint pass to upload_folder (transformers 5.x), and huggingface_hub's own.
TRAINER_IGNORE_PATTERNS = ["_*", "checkpoint-*"]

_FIXES = (
    "log in with `hf auth login` (or `huggingface-cli login`), or set the HF_TOKEN environment variable, or pass "
    "--hub_token; or run with --push_to_hub False (the card, weights and results are still written to output_dir, "
    "and `hf upload` can push them later)"
)


class PushToHubError(RuntimeError):
    """``push_to_hub=True`` cannot work (no token, offline, no network, no write access): raised before training."""


def _repo_name(args) -> str:
    return args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir))


def check_push_ready(args, token: str | None = None) -> None:
    """Raise `PushToHubError` when a push could not succeed: no token anywhere, or the Hub in offline mode."""
    from huggingface_hub import get_token, is_offline_mode

    repo = _repo_name(args)
    if is_offline_mode():
        raise PushToHubError(
            f"push_to_hub=True (repo {repo!r}) but HF_HUB_OFFLINE is set, so nothing can reach the Hub: unset "
            "HF_HUB_OFFLINE on a machine with network access, or run with --push_to_hub False (the card, weights "
            "and results are still written to output_dir). Nothing was trained or written."
        )
    if not (token or getattr(args, "hub_token", None) or get_token()):
        raise PushToHubError(
            f"push_to_hub=True (repo {repo!r}) but no Hugging Face token was found: {_FIXES}. Nothing was trained "
            "or written."
        )


def explain_hub_error(err: Exception, args) -> PushToHubError | None:
    """The Hub's error at repository creation as a `PushToHubError` naming the fix; None for other errors."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    repo = _repo_name(args)
    if isinstance(err, OfflineModeIsEnabled):
        return PushToHubError(f"push_to_hub=True (repo {repo!r}) but the Hub is in offline mode: {err}")
    status = getattr(getattr(err, "response", None), "status_code", None)
    if isinstance(err, HfHubHTTPError) and status in (401, 403):
        return PushToHubError(
            f"push_to_hub=True: the Hub refused to create {repo!r} (HTTP {status}): the token is invalid or cannot "
            f"write there. Use a token with write access ({_FIXES}), or set --hub_model_id to a namespace you own."
        )
    if isinstance(err, (ConnectionError, TimeoutError)) or isinstance(err, _transport_errors()):
        return PushToHubError(
            f"push_to_hub=True but the Hub could not be reached to create {repo!r} ({type(err).__name__}: {err}). "
            "Check the network (or a proxy), or run with --push_to_hub False. Nothing was trained or written."
        )
    return None


def _transport_errors() -> tuple[type, ...]:
    """The HTTP client's "could not connect / timed out" errors (huggingface_hub 2.x uses httpx2, 1.x httpx)."""
    import importlib

    found = []
    for name in ("httpx2", "httpx"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if isinstance(getattr(module, "TransportError", None), type):
            found.append(module.TransportError)
    return tuple(found)


def uploaded_files(folder: str, ignore_patterns: Iterable[str] | None = None) -> list[str]:
    """The files (relative paths) that ``upload_folder(folder_path=folder, ignore_patterns=...)`` would send, with
    huggingface_hub's own filter and default ignores."""
    from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

    paths = []
    for root, _, files in os.walk(folder):
        for name in files:
            paths.append(os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/"))
    patterns = list(ignore_patterns or []) + list(DEFAULT_IGNORE_PATTERNS)
    return sorted(filter_repo_objects(paths, ignore_patterns=patterns))
