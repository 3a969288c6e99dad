"""What every benchmark records and prints: the environment, the git commit, peak memory, a markdown table.

Imported by the scripts beside it (``from common import environment, markdown_table``; a script's folder is on
``sys.path`` when it runs). Needs only the standard library and torch.
"""

from __future__ import annotations

import ctypes
import datetime
import os
import platform
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = [
    "environment",
    "git_commit",
    "markdown_table",
    "rss_bytes",
    "reset_peak_rss",
    "peak_rss_bytes",
    "malloc_trim",
]


def git_commit() -> str | None:
    """HEAD of the checkout this file is in, with ``+dirty`` when the working tree has changes."""
    root = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10
        )
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(threads: int | None = None, device=None, **extra) -> dict:
    """Versions, machine, load and commit: what a results JSON needs to be read later."""
    import torch

    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads": threads if threads is not None else torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "git_commit": git_commit(),
    }
    for name in ("transformers", "sklearn"):
        try:
            env[name if name != "sklearn" else "scikit-learn"] = __import__(name).__version__
        except ImportError:
            pass
    if device is not None:
        env["device"] = str(device)
        if getattr(device, "type", None) == "cuda":
            env["gpu"] = torch.cuda.get_device_name(device)
    env.update(extra)
    return env


def markdown_table(rows: Sequence[dict], columns: Sequence[tuple[str, str | Callable[[dict], object]]]) -> str:
    """``columns``: (header, key or function of the row). Numbers right-aligned, floats with 4 significant digits."""
    cells = []
    for row in rows:
        line = []
        for _, get in columns:
            value = get(row) if callable(get) else row.get(get)
            line.append("" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value))
        cells.append(line)
    numeric = [all(_is_number(r[i]) for r in cells if r[i]) and any(r[i] for r in cells) for i in range(len(columns))]
    out = ["| " + " | ".join(h for h, _ in columns) + " |"]
    out.append("|" + "|".join("---:" if n else "---" for n in numeric) + "|")
    out += ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(out)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


# ------------------------------------------------------------------------------------------------------------ memory
def malloc_trim() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise), so that RSS reflects live memory."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_bytes() -> int:
    kb = _status_kb("VmRSS")
    if kb is not None:
        return kb * 1024
    import psutil  # not Linux: psutil (a dependency of accelerate) reads RSS elsewhere

    return psutil.Process().memory_info().rss


def reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark of RSS (``VmHWM``; Linux >= 4.0: write 5 to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kb("VmHWM") is not None
    except OSError:
        return False


def peak_rss_bytes() -> int | None:
    kb = _status_kb("VmHWM")
    return kb * 1024 if kb is not None else None
