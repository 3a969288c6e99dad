"""The strategy fields of the transfer-learning literature, as dataclass fields that `HfArgumentParser` reads.

Two ways to hold them:

* `TransferArguments`: the strategy fields alone. Parse it beside any `TrainingArguments` subclass
  (`HfArgumentParser((ModelArguments, TransferArguments, Seq2SeqTrainingArguments))`) and give it to a trainer as
  ``transfer_args=``.
* `TransferTrainingArguments`: `TrainingArguments` and the strategy fields in one object.

With no strategy field set, a trainer is exactly stock `Trainer`. Every field is checked when the object is built,
with the offending value and the fix in the message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from transformers import TrainingArguments
from transformers.trainer_utils import SchedulerType

__all__ = ["TransferArguments", "TransferTrainingArguments", "STLR"]

STLR = "slanted_triangular"
FREEZE_MODES = ("requires_grad", "mask")
LP_MODES = ("epochs", "logistic")
UNFREEZE_UNITS = ("epoch", "step")


class SchedulerName(str):
    """A scheduler name that transformers' `SchedulerType` enum lacks ("slanted_triangular").

    Trainer's model card and logs read ``args.lr_scheduler_type.value``; a plain string has no ``.value``.
    """

    @property
    def value(self) -> str:
        return str.__str__(self)

    def __reduce__(self):  # pickles (training_args.bin) as a plain str: loads without this package
        return (str, (str.__str__(self),))


@dataclass
class TransferArguments:
    """The fine-tuning strategies as fields; all defaults = no strategy (stock `Trainer`).

    Depths are those of `hf_transfer_meta.LayerMap` (0 = embeddings, 1..L = blocks, L+1 = head). Fields that name
    depths accept ints (negative from the head) and the words "embeddings", "first", "middle", "last", "head", "all",
    "blocks", "last-K".
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
    slanted_triangular_lr: bool = field(
        default=False,
        metadata={
            "help": "ULMFiT's slanted triangular LR (stlr_cut_frac, stlr_ratio) in place of lr_scheduler_type. "
            "TransferTrainingArguments also accepts lr_scheduler_type=slanted_triangular."
        },
    )
    stlr_cut_frac: float = field(default=0.1, metadata={"help": "Slanted triangular LR: fraction of steps rising."})
    stlr_ratio: float = field(default=32.0, metadata={"help": "Slanted triangular LR: max LR / min LR."})
    # --- what trains when
    trainable_depths: list[str] | None = field(
        default=None,
        metadata={"help": "Train only these depths for the whole run (e.g. `head` = linear probe by SGD)."},
    )
    gradual_unfreezing: bool = field(
        default=False, metadata={"help": "ULMFiT gradual unfreezing: head first, then one more depth from the top."}
    )
    unfreeze_every: float | None = field(
        default=None,
        metadata={
            "help": "Unfreeze one more depth every this many `unfreeze_unit`s. Unset: the unfreezing is spread evenly "
            "over the first `unfreeze_fraction` of the run, so every depth trains for the rest of it."
        },
    )
    unfreeze_unit: str = field(
        default="epoch", metadata={"help": "Unit of `unfreeze_every`: `epoch` or `step`.", "choices": UNFREEZE_UNITS}
    )
    unfreeze_fraction: float = field(
        default=0.5,
        metadata={"help": "With `unfreeze_every` unset: the fraction of the run over which depths are unfrozen."},
    )
    allow_partial_unfreezing: bool = field(
        default=False,
        metadata={
            "help": "Accept an `unfreeze_every` too long for the run (the bottom depths then never train). Without "
            "it such a run is refused before its first step."
        },
    )
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
            "help": "WiSE-FT: after training, interpolate pretrained (0) and fine-tuned (1) weights; the alpha in "
            "[0, 1] is chosen on eval_dataset."
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
    layer_map_blocks: list[str] | None = field(
        default=None, metadata={"help": "Override the layer map: module paths of the blocks, in order."}
    )
    layer_map_head: list[str] | None = field(
        default=None, metadata={"help": "Override the layer map: module paths of the task head."}
    )

    def __post_init__(self):
        self._check_strategy_fields()

    # ------------------------------------------------------------------ checks
    def _check_strategy_fields(self) -> None:
        def bad(name: str, value, want: str):
            raise ValueError(f"{name}={value!r} is invalid: {want}.")

        if self.freeze_mode not in FREEZE_MODES:
            bad("freeze_mode", self.freeze_mode, f"use one of {FREEZE_MODES}")
        if self.lp_mode is not None and self.lp_mode not in LP_MODES:
            bad("lp_mode", self.lp_mode, f"use one of {LP_MODES} or leave it unset")
        if self.unfreeze_unit not in UNFREEZE_UNITS:
            bad("unfreeze_unit", self.unfreeze_unit, f"use one of {UNFREEZE_UNITS}")
        if self.layer_lr_decay is not None and not 0 < self.layer_lr_decay <= 1:
            bad("layer_lr_decay", self.layer_lr_decay, "it must be in (0, 1] (ULMFiT: 1/2.6 = 0.3846; ELECTRA: 0.8)")
        if self.lr_slice is not None:
            values = list(self.lr_slice)
            if len(values) != 2 or not 0 < values[0] <= values[1]:
                bad("lr_slice", values, "give two learning rates (low, high) with 0 < low <= high, e.g. [1e-5, 1e-3]")
        if self.lr_slice is not None and self.layer_lr_decay is not None:
            raise ValueError(
                f"layer_lr_decay={self.layer_lr_decay!r} and lr_slice={list(self.lr_slice)!r} are two ways to space "
                "the per-depth LRs: set one of them."
            )
        if not self.head_lr_multiplier > 0:
            bad("head_lr_multiplier", self.head_lr_multiplier, "it must be > 0")
        if not 0 < self.stlr_cut_frac < 1:
            bad(
                "stlr_cut_frac",
                self.stlr_cut_frac,
                "it is the fraction of the run the LR rises, in (0, 1) (ULMFiT: 0.1)",
            )
        if not self.stlr_ratio >= 1:
            bad("stlr_ratio", self.stlr_ratio, "it is max LR / min LR, >= 1 (ULMFiT: 32)")
        if self.unfreeze_every is not None and not (self.unfreeze_every > 0 and math.isfinite(self.unfreeze_every)):
            bad(
                "unfreeze_every", self.unfreeze_every, "it must be > 0, or unset to spread the unfreezing over the run"
            )
        if not 0 < self.unfreeze_fraction <= 1:
            bad("unfreeze_fraction", self.unfreeze_fraction, "it must be in (0, 1]")
        if not self.lp_epochs > 0:
            bad("lp_epochs", self.lp_epochs, "the head-only stage must last > 0 epochs")
        if self.lp_learning_rate is not None and not self.lp_learning_rate > 0:
            bad("lp_learning_rate", self.lp_learning_rate, "it must be > 0, or unset to use learning_rate")
        if self.lp_c_grid is not None and (not self.lp_c_grid or any(not c > 0 for c in self.lp_c_grid)):
            bad("lp_c_grid", self.lp_c_grid, "give one or more inverse regularisation strengths C > 0")
        if self.reinit_top_blocks < 0:
            bad("reinit_top_blocks", self.reinit_top_blocks, "it is a number of blocks, >= 0")
        for name in ("l2sp_alpha", "l2sp_beta"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                bad(name, value, "a penalty weight must be >= 0")
        if self.wise_ft_alphas is not None:
            alphas = list(self.wise_ft_alphas)
            if not alphas or any(not 0 <= a <= 1 for a in alphas):
                bad(
                    "wise_ft_alphas",
                    alphas,
                    "each mixing weight must be in [0, 1] (0 = the weights before fine-tuning, 1 = after)",
                )
        for name in ("trainable_depths", "surgical_blocks"):
            value = getattr(self, name)
            if value is not None and len(value) == 0:
                bad(name, value, "name at least one depth (e.g. head, last, first, 2)")
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

    # ------------------------------------------------------------------ what the run does
    @property
    def has_strategy(self) -> bool:
        """True when any strategy field differs from its default: the trainer then builds a layer map and a plan."""
        defaults = TransferArguments.__dataclass_fields__
        passive = {"freeze_mode", "frozen_eval_mode", "layer_map_blocks", "layer_map_head", "stlr_cut_frac"}
        passive |= {"stlr_ratio", "unfreeze_unit", "unfreeze_fraction", "allow_partial_unfreezing", "lp_epochs"}
        passive |= {"lp_learning_rate", "lp_c_grid", "unfreeze_every", "unfreeze_restart_schedule"}
        for name, f in defaults.items():
            if name in passive:
                continue
            if getattr(self, name) != f.default:
                return True
        return False

    @property
    def strategy_freezes(self) -> bool:
        return bool(self.gradual_unfreezing or self.lp_mode or self.surgical_blocks or self.trainable_depths)

    @property
    def needs_depth_learning_rates(self) -> bool:
        """Whether depths get different LRs (then the trainer must build one optimizer group per depth)."""
        return (
            self.layer_lr_decay is not None
            or self.lr_slice is not None
            or self.head_lr_multiplier != 1.0
            or self.auto_rgn
            or (self.lp_mode == "epochs" and self.lp_learning_rate is not None)
        )

    @property
    def strategy_name(self) -> str:
        """A short name of what this run does, for logs and model cards."""
        parts = []
        if self.lp_mode:
            parts.append(f"LP-FT ({self.lp_mode} probe)")
        if self.gradual_unfreezing:
            if self.unfreeze_every is None:
                parts.append(f"gradual unfreezing (over the first {self.unfreeze_fraction:.0%} of the run)")
            else:
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
        if self.slanted_triangular_lr:
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

    def strategy_dict(self) -> dict:
        """The strategy fields as plain data (for logs, model cards and `transfer_args` of a separate dataclass)."""
        return {f.name: getattr(self, f.name) for f in fields(TransferArguments)}


@dataclass
class TransferTrainingArguments(TrainingArguments, TransferArguments):
    """`TrainingArguments` with the fine-tuning strategies of `TransferArguments` as fields.

    `lr_scheduler_type` additionally accepts `"slanted_triangular"` (ULMFiT's STLR, with `stlr_cut_frac` and
    `stlr_ratio`), the same as `slanted_triangular_lr=True`.
    """

    lr_scheduler_type: str = field(
        default="linear",
        metadata={
            "help": "The scheduler type to use; `slanted_triangular` is ULMFiT's STLR.",
            "choices": [s.value for s in SchedulerType] + [STLR],
        },
    )

    def __post_init__(self):
        # TrainingArguments turns lr_scheduler_type into transformers' SchedulerType enum, which has no STLR.
        stlr = (
            self.slanted_triangular_lr or str(getattr(self.lr_scheduler_type, "value", self.lr_scheduler_type)) == STLR
        )
        if stlr:
            self.lr_scheduler_type = "linear"
        TrainingArguments.__post_init__(self)
        if stlr:
            self.lr_scheduler_type = SchedulerName(STLR)
            self.slanted_triangular_lr = True
        self._check_strategy_fields()
        if self.strategy_freezes and self.ddp_find_unused_parameters is False and self.freeze_mode == "requires_grad":
            raise ValueError(
                "This strategy freezes parameters while DDP runs: ddp_find_unused_parameters=False would crash "
                "('Expected to have finished reduction'). Leave it unset or use freeze_mode='mask'."
            )
