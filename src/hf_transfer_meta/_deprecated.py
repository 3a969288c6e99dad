"""Module paths of release 0.1 that moved, kept importable for one release with a `FutureWarning`.

``import hf_transfer_meta.probe`` (say) returns the module ``hf_transfer_meta.transfer.strategies.linear_probe``
itself, so every name, private ones included, is where it was.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

MOVED_MODULES = {
    "hf_transfer_meta.arguments": "hf_transfer_meta.transfer.arguments",
    "hf_transfer_meta.callbacks": "hf_transfer_meta.transfer.callbacks",
    "hf_transfer_meta.hpo": "hf_transfer_meta.transfer.cross_validation",
    "hf_transfer_meta.layer_map": "hf_transfer_meta.transfer.layer_map",
    "hf_transfer_meta.param_groups": "hf_transfer_meta.transfer.param_groups",
    "hf_transfer_meta.probe": "hf_transfer_meta.transfer.strategies.linear_probe",
    # split in two: a module holding the names of both
    "hf_transfer_meta.regularizers": (
        "hf_transfer_meta.transfer.strategies.l2sp",
        "hf_transfer_meta.transfer.strategies.wise_ft",
    ),
    "hf_transfer_meta.reinit": "hf_transfer_meta.transfer.strategies.reinit",
    "hf_transfer_meta.schedules": "hf_transfer_meta.transfer.schedules",
    "hf_transfer_meta.trainer": "hf_transfer_meta.transfer.trainer",
    "hf_transfer_meta.meta.algorithms.finetune": "hf_transfer_meta.meta.algorithms.finetune_baseline",
    "hf_transfer_meta.meta.augment": "hf_transfer_meta.meta.data.augment",
    "hf_transfer_meta.meta.datasets": tuple(
        f"hf_transfer_meta.meta.data.{m}" for m in ("paths", "splits", "omniglot", "clinc150", "digits")
    ),
    "hf_transfer_meta.meta.episodes": ("hf_transfer_meta.meta.data.episodes", "hf_transfer_meta.meta.data.collator"),
    "hf_transfer_meta.meta.metrics": "hf_transfer_meta.meta.evaluation.few_shot",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED_MODULES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        new = MOVED_MODULES[spec.name]
        targets = (new,) if isinstance(new, str) else new
        warnings.warn(
            f"{spec.name} moved to {' and '.join(targets)}; the old path goes in the next release.",
            FutureWarning,
            stacklevel=2,
        )
        if len(targets) == 1:
            return importlib.import_module(targets[0])
        merged = types.ModuleType(spec.name)
        for target in targets:
            merged.__dict__.update(
                {k: v for k, v in vars(importlib.import_module(target)).items() if not k.startswith("__")}
            )
        return merged

    def exec_module(self, module):
        pass


def install() -> None:
    if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
