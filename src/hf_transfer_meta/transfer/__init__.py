"""The transfer half: a model's layer map -> per-depth LRs -> which depths train when -> the trainer.

`strategies/` holds one module per fine-tuning strategy and the registry that lists them.
"""

from .arguments import TransferArguments, TransferTrainingArguments
from .callbacks import (
    GradualUnfreezingCallback,
    LPFTCallback,
    SurgicalFineTuningCallback,
    TransferScheduleCallback,
)
from .cross_validation import cross_validated_search
from .layer_map import LayerMap, LayerMapError
from .param_groups import build_param_groups, depth_learning_rates
from .plan import TransferPlan, build_plan
from .schedules import Phase, TransferSchedule, slanted_triangular
from .strategies import STRATEGIES, Strategy, register_strategy
from .strategies.l2sp import L2SP
from .strategies.linear_probe import linear_probe
from .strategies.reinit import reinit_head, reinit_top_blocks
from .strategies.surgical import AutoRGNCallback
from .strategies.wise_ft import select_wise_alpha, wise_ft_interpolate
from .trainer import TransferMixin, TransferTrainer, with_transfer

__all__ = [
    "STRATEGIES",
    "AutoRGNCallback",
    "GradualUnfreezingCallback",
    "L2SP",
    "LPFTCallback",
    "LayerMap",
    "LayerMapError",
    "Phase",
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
