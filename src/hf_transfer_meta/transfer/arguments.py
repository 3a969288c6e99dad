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

from dataclasses import dataclass, field, fields

from transformers import TrainingArguments
from transformers.trainer_utils import SchedulerType

from .schedules import STLR

__all__ = ["TransferArguments", "TransferTrainingArguments", "STLR"]

FREEZE_MODES = ("requires_grad", "mask")
LP_MODES = ("epochs", "logistic")  # as strategies.lp_ft.LP_MODES (not imported here: the field needs no torch)
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
    unfreeze_on: str = field(
        default="schedule",
        metadata={
            "help": "When gradual unfreezing moves on: by its `schedule` (unfreeze_every / unfreeze_fraction), or at "
            "each `plateau` of the validation metric (the scheduled interval is then the longest wait).",
            "choices": ["schedule", "plateau"],
        },
    )
    phase_patience: int = field(
        default=1, metadata={"help": "Plateau phases: evaluations without improvement before the next phase begins."}
    )
    phase_threshold: float = field(
        default=0.0, metadata={"help": "Plateau phases: the least change of phase_metric that counts as improvement."}
    )
    phase_metric: str | None = field(
        default=None,
        metadata={"help": "Plateau phases: the eval metric watched (default: metric_for_best_model, else the loss)."},
    )
    phase_reset_optimizer: bool = field(
        default=False, metadata={"help": "Clear the optimizer state (Adam moments) when a new phase begins."}
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
    lp_until: str = field(
        default="epochs",
        metadata={
            "help": "When the head-only stage of lp_mode=epochs ends: after `lp_epochs`, or at the first plateau of "
            "the validation metric (`plateau`: phase_metric has not improved by phase_threshold for phase_patience "
            "evaluations; lp_epochs is then the cap).",
            "choices": ["epochs", "plateau"],
        },
    )
    lp_restart_schedule: bool = field(
        default=True,
        metadata={"help": "LP-FT: restart the base LR schedule at the fine-tuning stage (two trainings)."},
    )
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

    # ------------------------------------------------------------------ checks and what the run does
    def _check_strategy_fields(self) -> None:
        from .strategies import STRATEGIES, check_field, phase_strategy

        check_field(self.freeze_mode in FREEZE_MODES, "freeze_mode", self.freeze_mode, f"use one of {FREEZE_MODES}")
        for strategy in STRATEGIES.values():
            if strategy.check is not None:
                strategy.check(self)
        phase_strategy(self)  # at most one strategy decides which depths train when

    @property
    def active_strategies(self) -> list:
        """The registered strategies these arguments turn on (`hf_transfer_meta.transfer.strategies.STRATEGIES`)."""
        from .strategies import active_strategies

        return active_strategies(self)

    @property
    def has_strategy(self) -> bool:
        """True when any strategy is on: the trainer then builds a layer map and a plan; otherwise it is Trainer."""
        return bool(self.active_strategies)

    @property
    def strategy_freezes(self) -> bool:
        return any(s.freezes for s in self.active_strategies)

    @property
    def needs_depth_learning_rates(self) -> bool:
        """Whether depths get different LRs (then the trainer must build one optimizer group per depth)."""
        return any(s.depth_groups is not None and s.depth_groups(self) for s in self.active_strategies)

    @property
    def needs_eval_dataset(self) -> list[str]:
        """The strategies that choose something on eval_dataset."""
        return [s.name for s in self.active_strategies if s.needs_eval_dataset and s.needs_eval_dataset(self)]

    @property
    def needs_reference_weights(self) -> bool:
        return any(s.reference_weights for s in self.active_strategies)

    @property
    def strategy_name(self) -> str:
        """A short name of what this run does, for logs and model cards."""
        parts = [s.describe(self) for s in self.active_strategies]
        return " + ".join(p for p in parts if p) or "full fine-tuning"

    def strategy_dict(self) -> dict:
        """The strategy fields as plain data (for logs and model cards)."""
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
