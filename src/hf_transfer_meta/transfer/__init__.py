"""The transfer half: a model's layer map -> per-depth LRs -> which depths train when -> the trainer.

`strategies/` holds one module per fine-tuning strategy and the registry that lists them. Names import lazily.
"""

from .._lazy import lazy_exports

EXPORTS = {
    **dict.fromkeys(["TransferArguments", "TransferTrainingArguments"], ".arguments"),
    **dict.fromkeys(
        ["GradualUnfreezingCallback", "LPFTCallback", "SurgicalFineTuningCallback", "TransferScheduleCallback"],
        ".callbacks",
    ),
    "cross_validated_search": ".cross_validation",
    **dict.fromkeys(["LayerMap", "LayerMapError"], ".layer_map"),
    **dict.fromkeys(["build_param_groups", "depth_learning_rates"], ".param_groups"),
    **dict.fromkeys(["TransferPlan", "build_plan"], ".plan"),
    **dict.fromkeys(["Phase", "TransferSchedule", "slanted_triangular"], ".schedules"),
    **dict.fromkeys(["STRATEGIES", "Strategy", "register_strategy"], ".strategies"),
    "L2SP": ".strategies.l2sp",
    **dict.fromkeys(["linear_probe", "extract_features", "fit_linear_probe"], ".strategies.linear_probe"),
    **dict.fromkeys(["reinit_head", "reinit_top_blocks"], ".strategies.reinit"),
    "AutoRGNCallback": ".strategies.surgical",
    **dict.fromkeys(["select_wise_alpha", "wise_ft_interpolate"], ".strategies.wise_ft"),
    **dict.fromkeys(["TransferMixin", "TransferTrainer", "with_transfer"], ".trainer"),
}
__all__ = sorted(EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
