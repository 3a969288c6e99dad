"""hf-transfer-meta: transfer-learning and meta-learning strategies as one-line switches on any transformers model.

Names are imported when first used (PEP 562), so `import hf_transfer_meta.meta.algorithms` needs torch alone.
"""

from __future__ import annotations

import importlib
import warnings

from . import _deprecated

__version__ = "0.1.0.dev0"

_TRANSFER = "hf_transfer_meta.transfer"
_EXPORTS = {
    name: _TRANSFER
    for name in [
        "AutoRGNCallback",
        "GradualUnfreezingCallback",
        "L2SP",
        "LPFTCallback",
        "LayerMap",
        "LayerMapError",
        "Phase",
        "STRATEGIES",
        "Strategy",
        "SurgicalFineTuningCallback",
        "TransferArguments",
        "TransferMixin",
        "TransferPlan",
        "TransferSchedule",
        "TransferScheduleCallback",
        "TransferTrainer",
        "TransferTrainingArguments",
        "build_param_groups",
        "build_plan",
        "cross_validated_search",
        "depth_learning_rates",
        "linear_probe",
        "register_strategy",
        "reinit_head",
        "reinit_top_blocks",
        "select_wise_alpha",
        "slanted_triangular",
        "wise_ft_interpolate",
        "with_transfer",
    ]
}
_DEPRECATED: dict[str, tuple[str, str]] = {}  # old name -> (module, new name)

__all__ = sorted(_EXPORTS) + ["__version__"]

_deprecated.install()


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in _DEPRECATED:
        module, new = _DEPRECATED[name]
        warnings.warn(f"hf_transfer_meta.{name} is now {module}.{new}.", FutureWarning, stacklevel=2)
        return getattr(importlib.import_module(module), new)
    raise AttributeError(f"module 'hf_transfer_meta' has no attribute {name!r}")


def __dir__():
    return __all__
