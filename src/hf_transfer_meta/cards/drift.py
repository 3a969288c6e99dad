"""How far each depth moved from the weights the run started from: ``||theta_end - theta_0|| / ||theta_0||`` per
depth of the layer map (the feature distortion of Kumar et al. 2022, Fine-Tuning can Distort Pretrained Features
and Underperform Out-of-Distribution).

``theta_0`` is the model as the trainer got it, before any strategy's own step (re-initialisation, the LP-FT
probe). It is saved once, at the start of a fresh run, to ``_transfer_start_weights.safetensors`` in the output
folder (the leading ``_`` keeps it out of every upload), so a resumed run measures from the same weights. At the end
it is read back one tensor at a time: the only extra memory is one tensor.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable

import torch
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["START_WEIGHTS_FILE", "measure_drift", "save_start_weights", "start_weights_for"]

START_WEIGHTS_FILE = "_transfer_start_weights.safetensors"  # leading "_": never uploaded by push_to_hub
DEFINITION = "||theta_end - theta_0|| / ||theta_0|| over the parameters of each depth (Kumar et al. 2022)"


def save_start_weights(model: nn.Module, output_dir: str) -> str:
    """Save ``model``'s parameters (on CPU) as the run's ``theta_0``; returns the file's path."""
    from safetensors.torch import save_file

    path = os.path.join(output_dir, START_WEIGHTS_FILE)
    os.makedirs(output_dir, exist_ok=True)
    tmp = os.path.join(output_dir, f"_{START_WEIGHTS_FILE}.tmp")
    save_file({n: p.detach().to("cpu").contiguous() for n, p in model.named_parameters()}, tmp)
    os.replace(tmp, path)
    return path


def start_weights_for(output_dir: str, resume_from_checkpoint: str | None) -> str | None:
    """The ``theta_0`` file of a resumed run: in its output folder, else beside the checkpoint it resumes from."""
    for folder in (output_dir, os.path.dirname(os.path.abspath(resume_from_checkpoint or output_dir))):
        path = os.path.join(folder, START_WEIGHTS_FILE)
        if os.path.isfile(path):
            return path
    logger.warning(
        f"{START_WEIGHTS_FILE} is in neither {output_dir} nor beside {resume_from_checkpoint}: the weights this run "
        "started from are unknown, so the model card will not say how far each depth moved."
    )
    return None


def measure_drift(
    model: nn.Module,
    start_path: str,
    depth_of: dict[str, int],
    label: Callable[[int], str],
    num_depths: int,
    *,
    global_step: int | None = None,
    note: str | None = None,
) -> dict:
    """Per depth: the norm of its starting weights, the L2 distance the run moved them and their ratio.

    Sums are in float64 on CPU; a depth whose weights did not change reports exactly 0.
    """
    from safetensors import safe_open

    sq_start = [0.0] * num_depths
    sq_moved = [0.0] * num_depths
    counts = [0] * num_depths
    missing: list[str] = []
    with safe_open(start_path, framework="pt", device="cpu") as f:
        saved = set(f.keys())
        for name, p in model.named_parameters():
            depth = depth_of.get(name)
            if depth is None or name not in saved:
                missing.append(name)
                continue
            start = f.get_tensor(name).to(torch.float64)
            end = p.detach().to("cpu", torch.float64)
            if start.shape != end.shape:
                missing.append(name)
                continue
            sq_start[depth] += float(start.pow(2).sum())
            sq_moved[depth] += float((end - start).pow(2).sum())
            counts[depth] += end.numel()
    depths = []
    for d in range(num_depths):
        norm, distance = math.sqrt(sq_start[d]), math.sqrt(sq_moved[d])
        depths.append(
            {
                "depth": d,
                "label": label(d),
                "num_params": counts[d],
                "norm_start": norm,
                "distance": distance,
                "relative_change": (distance / norm) if norm > 0 else (0.0 if distance == 0 else None),
            }
        )
    out = {"definition": DEFINITION, "global_step": global_step, "depths": depths}
    if note:
        out["note"] = note
    if missing:
        out["not_measured"] = sorted(missing)
    return out
