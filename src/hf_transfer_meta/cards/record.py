"""What a run records beside its weights, as plain JSON that the card (and `hf-transfer-meta card RUN_DIR`) reads
back without loading the model.

Files in the run's ``output_dir`` (all uploaded with the model; none holds a token):

* ``run_info.json``: the command line (tokens redacted), package versions, the git commit of the recipe, every
  hyper-parameter that differs from its default, the base model and what the card was asked to say;
* ``transfer_summary.json`` / ``meta_summary.json``: what the strategy or the meta-training did
  (`TransferMixin.transfer_summary`, `MetaTrainer.meta_summary`);
* ``depth_drift.json``: how far each depth moved from the weights the run started from (`cards.drift`);
* Trainer's own ``trainer_state.json`` (log history) and ``all_results.json`` (the recipes' ``save_metrics``).

Every file is written atomically (a ``_``-prefixed temporary file, then ``os.replace``): a crash or an upload in
progress never sees half a file, and a left-over temporary file is never uploaded.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

__all__ = [
    "RUN_INFO_FILE",
    "TRANSFER_SUMMARY_FILE",
    "META_SUMMARY_FILE",
    "DRIFT_FILE",
    "RunRecord",
    "atomic_write",
    "command_line",
    "git_commit",
    "jsonable",
    "load_run",
    "non_default_arguments",
    "package_versions",
    "redact",
    "secrets_of",
    "write_json",
]

RUN_INFO_FILE = "run_info.json"
TRANSFER_SUMMARY_FILE = "transfer_summary.json"
META_SUMMARY_FILE = "meta_summary.json"
DRIFT_FILE = "depth_drift.json"
REDACTED = "<redacted>"

PACKAGES = ("torch", "transformers", "accelerate", "peft", "datasets", "huggingface_hub", "hf_transfer_meta")
# A Hugging Face user access token: "hf_" and 16+ letters and digits (not a name such as hf_transfer_meta).
_TOKEN_PATTERN = re.compile(r"hf_[A-Za-z0-9]{16,}(?![A-Za-z0-9_])")
_TOKEN_FLAGS = ("--hub_token", "--hub-token", "--token", "--push_to_hub_token", "--hf_token")
_TOKEN_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


# ---------------------------------------------------------------------------------------------- redaction
def secrets_of(args=None) -> list[str]:
    """The token values a run may hold: ``args.hub_token`` and the token environment variables."""
    found = [getattr(args, "hub_token", None)] + [os.environ.get(name) for name in _TOKEN_ENV]
    return sorted({s for s in found if isinstance(s, str) and len(s) >= 4}, key=len, reverse=True)


def redact(value: Any, secrets: Sequence[str] = ()) -> Any:
    """``value`` (str, or nested dicts and lists of them) with every known secret and every ``hf_...`` token
    replaced by ``<redacted>``."""
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        return _TOKEN_PATTERN.sub(REDACTED, value)
    if isinstance(value, Mapping):
        return {redact(k, secrets): redact(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, secrets) for v in value]
    return value


def command_line(argv: Sequence[str] | None = None, secrets: Sequence[str] = ()) -> list[str]:
    """``sys.argv`` with the value of every token flag (``--hub_token X``, ``--hub_token=X``) and every token
    redacted."""
    argv = list(sys.argv if argv is None else argv)
    out: list[str] = []
    hide_next = False
    for token in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        flag, eq, _ = token.partition("=")
        if flag in _TOKEN_FLAGS:
            if eq:
                out.append(f"{flag}={REDACTED}")
            else:
                out.append(token)
                hide_next = True
            continue
        out.append(redact(token, secrets))
    return out


# ---------------------------------------------------------------------------------------------- environment
def package_versions(packages: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each package (None when it is not installed), and Python's."""
    versions: dict[str, str | None] = {"python": ".".join(map(str, sys.version_info[:3]))}
    for name in packages:
        try:
            versions[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _git_root(start: str) -> str | None:
    path = os.path.abspath(start)
    if os.path.isfile(path):
        path = os.path.dirname(path)
    while True:
        if os.path.exists(os.path.join(path, ".git")):
            return path
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent


def git_commit(starts: Sequence[str] | None = None) -> dict | None:
    """The git commit of the checkout that holds the running script (else the working directory): ``{"commit",
    "script"}`` with the script's path inside the checkout; None when neither is in a git checkout (or git is
    missing)."""
    script = sys.argv[0] if sys.argv and os.path.isfile(sys.argv[0]) else None
    starts = list(starts) if starts is not None else [p for p in (script, os.getcwd()) if p]
    for start in starts:
        root = _git_root(start)
        if root is None:
            continue
        try:
            out = subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        commit = out.stdout.strip()
        if not re.fullmatch(r"[0-9a-f]{40,64}", commit):
            return None
        inside = None
        if script is not None and _git_root(script) == root:
            inside = os.path.relpath(os.path.abspath(script), root)
        try:  # tracked files changed since the commit: the commit alone does not reproduce the run
            status = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True,
                timeout=10, check=True,
            )  # fmt: skip
            dirty = bool(status.stdout.strip())
        except (OSError, subprocess.SubprocessError):
            dirty = None
        return {"commit": commit, "script": inside, "dirty": dirty}
    return None


# ---------------------------------------------------------------------------------------------- arguments
def jsonable(value: Any) -> Any:
    """Plain JSON data: enums as their value, dataclasses and mappings as dicts, numbers that are not finite as
    strings, anything else unknown as its ``repr``."""
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return str.__str__(value) if isinstance(value, str) else value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return jsonable(value.item())  # numpy / torch scalars
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else value
        return [jsonable(v) for v in items]
    return repr(value)


_NO_DEFAULT = object()


def _declared_default(f: dataclasses.Field) -> Any:
    """A field's declared default as JSON data, read from the class (never by building an instance: a new
    ``TrainingArguments`` resets accelerate's shared state, and the run's next ``evaluate()`` fails)."""
    if f.default is not dataclasses.MISSING:
        return jsonable(f.default)
    if f.default_factory is not dataclasses.MISSING:
        return jsonable(f.default_factory())
    return _NO_DEFAULT


def non_default_arguments(obj, secrets: Sequence[str] = ()) -> dict[str, Any]:
    """The init fields of a dataclass (``TrainingArguments`` and friends) whose value differs from the declared
    default, as JSON data; fields ending in ``_token`` are never recorded. A field that ``__post_init__`` fills in
    (``logging_dir``, a resolved enum) is listed with the value the run used."""
    out = {}
    for f in dataclasses.fields(obj):
        if not f.init or f.name.endswith("_token") or f.name.startswith("_"):
            continue
        raw = getattr(obj, f.name, None)
        value, default = jsonable(raw), _declared_default(f)
        if value == default or _normalised_default(raw, value, default):
            continue
        out[f.name] = redact(value, secrets)
    return out


def _normalised_default(raw: Any, value: Any, default: Any) -> bool:
    """Whether ``__post_init__`` only normalised an unset default: None or "" became False / [] / {}
    (``disable_tqdm``, ``report_to="none"``, ``debug``), or a nested config dataclass built with its own defaults
    (``accelerator_config``)."""
    if default in (None, "", "none", "no") and value in (False, [], {}, "", None):
        return True
    if default is None and dataclasses.is_dataclass(raw) and not hasattr(raw, "output_dir"):
        try:
            return value == jsonable(type(raw)())
        except Exception:  # noqa: BLE001 - a config class with required fields: keep the value
            return False
    return False


# ---------------------------------------------------------------------------------------------- files
def atomic_write(path: str, data: str | bytes) -> None:
    """Write ``path`` through a ``_``-prefixed temporary file in the same folder and ``os.replace``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"_{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make the card unreadable to others
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str, data: Any, secrets: Sequence[str] = ()) -> None:
    atomic_write(path, json.dumps(redact(jsonable(data), secrets), indent=2, sort_keys=True) + "\n")


def _read_json(path: str) -> Any:
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@dataclass
class RunRecord:
    """Everything a finished run folder says about itself (what the card is built from)."""

    run_dir: str
    run_info: dict = field(default_factory=dict)
    transfer: dict | None = None
    meta: dict | None = None
    drift: dict | None = None
    log_history: list[dict] = field(default_factory=list)
    global_step: int | None = None
    results: dict[str, Any] = field(default_factory=dict)
    results_source: str = "none"

    @property
    def card_inputs(self) -> dict:
        return self.run_info.get("card") or {}


def _last_metrics(log_history: list[dict]) -> dict[str, Any]:
    """The last logged value of every evaluation and training-summary metric (when there is no all_results.json)."""
    out: dict[str, Any] = {}
    for entry in log_history:
        for k, v in entry.items():
            if k.startswith(("eval_", "test_", "predict_")) or k in ("train_loss", "train_runtime"):
                out[k] = v
    return out


def _trainer_state(run_dir: str) -> dict | None:
    state = _read_json(os.path.join(run_dir, "trainer_state.json"))
    if state is not None:
        return state
    # Only checkpoints: the newest one's state.
    steps = []
    for name in os.listdir(run_dir) if os.path.isdir(run_dir) else []:
        m = re.fullmatch(r"checkpoint-(\d+)", name)
        if m and os.path.isfile(os.path.join(run_dir, name, "trainer_state.json")):
            steps.append((int(m.group(1)), name))
    return _read_json(os.path.join(run_dir, max(steps)[1], "trainer_state.json")) if steps else None


def load_run(run_dir: str) -> RunRecord:
    """Read a run folder's records. Missing files leave their part empty; no model weights are read."""
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"{run_dir} is not a folder: pass the output_dir of a finished run.")
    state = _trainer_state(run_dir) or {}
    record = RunRecord(
        run_dir=run_dir,
        run_info=_read_json(os.path.join(run_dir, RUN_INFO_FILE)) or {},
        transfer=_read_json(os.path.join(run_dir, TRANSFER_SUMMARY_FILE)),
        meta=_read_json(os.path.join(run_dir, META_SUMMARY_FILE)),
        drift=_read_json(os.path.join(run_dir, DRIFT_FILE)),
        log_history=list(state.get("log_history") or []),
        global_step=state.get("global_step"),
    )
    results = _read_json(os.path.join(run_dir, "all_results.json"))
    if results:
        record.results, record.results_source = results, "all_results.json"
    elif record.log_history:
        record.results, record.results_source = _last_metrics(record.log_history), "trainer_state.json"
    return record


def shell_join(argv: Sequence[str]) -> str:
    return shlex.join(argv)
