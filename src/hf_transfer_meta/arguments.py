"""`TransferTrainingArguments`: TrainingArguments plus the knobs of the transfer-learning literature.

Every field is a CLI flag through `HfArgumentParser`. With none of them set, training is exactly stock Trainer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

__all__ = ["TransferTrainingArguments"]

_STLR = "slanted_triangular"
FREEZE_MODES = ("requires_grad", "mask")
LP_MODES = ("epochs", "logistic")


@dataclass
class TransferTrainingArguments(TrainingArguments):
    """TrainingArguments with fine-tuning strategies as fields.

    Depths are those of `hf_transfer_meta.LayerMap` (0 = embeddings, 1..L = blocks, L+1 = head). Fields that name
    depths accept ints (negative from the head) and the words "embeddings", "first", "middle", "last", "head", "all",
    "blocks", "last-K".

    `lr_scheduler_type` additionally accepts `"slanted_triangular"` (ULMFiT's STLR, with `stlr_cut_frac` and
    `stlr_ratio`).
    """

    # --- discriminative learning rates
    layer_lr_decay: float | None = field(
        default=None,
        metadata={"help": "Layer-wise LR decay (LLRD): lr_d = learning_rate * decay^(L+1-d). ULMFiT: 1/2.6 = 0.3846."},
    )
    lr_slice: list[float] | None = field(
        default=None,
        metadata={
            "help": "fastai-style (low high): LRs spaced geometrically from the embeddings to the head.",
            "nargs": 2,
        },
    )
    head_lr_multiplier: float = field(default=1.0, metadata={"help": "Multiplies the head's learning rate."})
    # --- what trains when
    trainable_depths: list[str] | None = field(
        default=None,
        metadata={"help": "Train only these depths for the whole run (e.g. `head` = linear probe by SGD)."},
    )
    gradual_unfreezing: bool = field(
        default=False, metadata={"help": "ULMFiT gradual unfreezing: head first, then one more depth from the top."}
    )
    unfreeze_every: float = field(
        default=1.0, metadata={"help": "Unfreeze one depth every this many `unfreeze_unit`s."}
    )
    unfreeze_unit: str = field(default="epoch", metadata={"help": "`epoch` or `step`.", "choices": ["epoch", "step"]})
    unfreeze_restart_schedule: bool = field(
        default=False, metadata={"help": "Restart the base LR schedule (warmup/decay) at every unfreezing (fastai)."}
    )
    lp_mode: str | None = field(
        default=None,
        metadata={
            "help": "LP-FT (Kumar et al. 2022). `logistic`: fit an L2 logistic-regression probe on cached features "
            "of the frozen backbone (C chosen on eval_dataset) and write it into the head, then fine-tune everything. "
            "`epochs`: train the head alone for `lp_epochs`, then fine-tune everything.",
            "choices": list(LP_MODES),
        },
    )
    lp_epochs: float = field(default=1.0, metadata={"help": "Length of the head-only stage for lp_mode=epochs."})
    lp_learning_rate: float | None = field(
        default=None, metadata={"help": "LR of the head-only stage (default: learning_rate)."}
    )
    lp_c_grid: list[float] | None = field(
        default=None,
        metadata={
            "help": "C values for the logistic probe (default: logspace(-7, 2, 100), the official LP-FT code's)."
        },
    )
    surgical_blocks: list[str] | None = field(
        default=None,
        metadata={"help": "Surgical fine-tuning (Lee et al. 2022): train only these depths, e.g. `first`, `last`, 2."},
    )
    auto_rgn: bool = field(
        default=False,
        metadata={"help": "Auto-RGN (Lee et al. 2022): per-tensor LR multiplier ||g||/||w|| normalised by its max."},
    )
    # --- initialisation
    reinit_head: bool = field(default=False, metadata={"help": "Re-initialise the task head before training."})
    reinit_top_blocks: int = field(
        default=0, metadata={"help": "Re-initialise the top k blocks before training (Zhang et al. 2021)."}
    )
    # --- regularisation and weight-space ensembling
    l2sp_alpha: float = field(
        default=0.0, metadata={"help": "L2-SP: alpha/2 * ||w - w_pretrained||^2 on the backbone."}
    )
    l2sp_beta: float = field(default=0.0, metadata={"help": "L2-SP: beta/2 * ||w_head||^2 on the head."})
    wise_ft_alphas: list[float] | None = field(
        default=None,
        metadata={
            "help": "WiSE-FT: after training, interpolate pretrained and fine-tuned weights; alpha chosen on eval."
        },
    )
    # --- mechanics
    freeze_mode: str = field(
        default="requires_grad",
        metadata={
            "help": "`requires_grad`: frozen depths get requires_grad=False (saves their backward; DDP runs with "
            "find_unused_parameters=True). `mask`: everything keeps requires_grad=True and gradients of frozen "
            "depths are dropped before the optimizer step.",
            "choices": list(FREEZE_MODES),
        },
    )
    frozen_eval_mode: bool = field(
        default=True, metadata={"help": "Keep frozen modules in eval mode: no dropout, BatchNorm statistics frozen."}
    )
    stlr_cut_frac: float = field(default=0.1, metadata={"help": "Slanted triangular LR: fraction of steps rising."})
    stlr_ratio: float = field(default=32.0, metadata={"help": "Slanted triangular LR: max LR / min LR."})
    layer_map_blocks: list[str] | None = field(
        default=None, metadata={"help": "Override the layer map: module paths of the blocks, in order."}
    )
    layer_map_head: list[str] | None = field(
        default=None, metadata={"help": "Override the layer map: module paths of the task head."}
    )

    def __post_init__(self):
        # TrainingArguments turns lr_scheduler_type into transformers' SchedulerType enum, which has no STLR.
        stlr = str(self.lr_scheduler_type) == _STLR
        if stlr:
            self.lr_scheduler_type = "linear"
        super().__post_init__()
        if stlr:
            self.lr_scheduler_type = _STLR
        if self.freeze_mode not in FREEZE_MODES:
            raise ValueError(f"freeze_mode must be one of {FREEZE_MODES}, got {self.freeze_mode!r}.")
        if self.lp_mode is not None and self.lp_mode not in LP_MODES:
            raise ValueError(f"lp_mode must be one of {LP_MODES} or None, got {self.lp_mode!r}.")
        if self.unfreeze_unit not in ("epoch", "step"):
            raise ValueError(f"unfreeze_unit must be 'epoch' or 'step', got {self.unfreeze_unit!r}.")
        exclusive = [
            n
            for n, on in [
                ("gradual_unfreezing", self.gradual_unfreezing),
                ("lp_mode", self.lp_mode is not None),
                ("surgical_blocks", self.surgical_blocks is not None),
                ("trainable_depths", self.trainable_depths is not None),
            ]
            if on
        ]
        if len(exclusive) > 1:
            raise ValueError(f"{' and '.join(exclusive)} each decide which depths train when; choose one of them.")
        if self.strategy_freezes and self.ddp_find_unused_parameters is False and self.freeze_mode == "requires_grad":
            raise ValueError(
                "This strategy freezes parameters while DDP runs: ddp_find_unused_parameters=False would crash "
                "('Expected to have finished reduction'). Leave it unset or use freeze_mode='mask'."
            )

    @property
    def strategy_freezes(self) -> bool:
        return bool(self.gradual_unfreezing or self.lp_mode or self.surgical_blocks or self.trainable_depths)

    @property
    def strategy_name(self) -> str:
        """A short name of what this run does, for logs and model cards."""
        parts = []
        if self.lp_mode:
            parts.append(f"LP-FT ({self.lp_mode} probe)")
        if self.gradual_unfreezing:
            parts.append(f"gradual unfreezing (every {self.unfreeze_every:g} {self.unfreeze_unit})")
        if self.surgical_blocks:
            parts.append(f"surgical fine-tuning ({', '.join(map(str, self.surgical_blocks))})")
        if self.trainable_depths:
            parts.append(f"training depths {', '.join(map(str, self.trainable_depths))}")
        if self.auto_rgn:
            parts.append("Auto-RGN")
        if self.layer_lr_decay is not None:
            parts.append(f"layer-wise LR decay {self.layer_lr_decay:g}")
        if self.lr_slice:
            parts.append(f"discriminative LRs {self.lr_slice[0]:g}..{self.lr_slice[1]:g}")
        if self.head_lr_multiplier != 1.0:
            parts.append(f"head LR x{self.head_lr_multiplier:g}")
        if str(self.lr_scheduler_type) == _STLR:
            parts.append("slanted triangular LR")
        if self.reinit_head or self.reinit_top_blocks:
            parts.append(
                "head re-initialised" + (f" + top {self.reinit_top_blocks} blocks" if self.reinit_top_blocks else "")
            )
        if self.l2sp_alpha or self.l2sp_beta:
            parts.append(f"L2-SP (alpha={self.l2sp_alpha:g}, beta={self.l2sp_beta:g})")
        if self.wise_ft_alphas:
            parts.append("WiSE-FT")
        return " + ".join(parts) if parts else "full fine-tuning"
