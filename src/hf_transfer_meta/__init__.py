"""hf-transfer-meta: transfer-learning and meta-learning strategies as one-line switches on any transformers model."""

from .arguments import TransferArguments, TransferTrainingArguments
from .callbacks import (
    AutoRGNCallback,
    GradualUnfreezingCallback,
    LPFTCallback,
    SurgicalFineTuningCallback,
    TransferScheduleCallback,
)
from .hpo import cross_validated_search
from .layer_map import LayerMap, LayerMapError
from .param_groups import build_param_groups, depth_learning_rates
from .probe import linear_probe
from .regularizers import L2SP, select_wise_alpha, wise_ft_interpolate
from .reinit import reinit_head, reinit_top_blocks
from .schedules import Phase, TransferSchedule, slanted_triangular
from .trainer import TransferMixin, TransferPlan, TransferTrainer, with_transfer

__version__ = "0.1.0.dev0"

__all__ = [
    "AutoRGNCallback",
    "GradualUnfreezingCallback",
    "LPFTCallback",
    "LayerMap",
    "LayerMapError",
    "Phase",
    "SurgicalFineTuningCallback",
    "TransferSchedule",
    "TransferScheduleCallback",
    "TransferArguments",
    "TransferMixin",
    "TransferPlan",
    "TransferTrainer",
    "TransferTrainingArguments",
    "with_transfer",
    "L2SP",
    "build_param_groups",
    "cross_validated_search",
    "linear_probe",
    "reinit_head",
    "reinit_top_blocks",
    "select_wise_alpha",
    "wise_ft_interpolate",
    "depth_learning_rates",
    "slanted_triangular",
    "__version__",
]
