"""`TransferTrainer`: a drop-in `transformers.Trainer` whose fine-tuning strategy is set by `TransferTrainingArguments`.

How a strategy is made, for every strategy alike:
  layer map (depth of each parameter) -> per-depth LRs (`param_groups`) -> phases (`schedules`: which depths train
  at step t, LR multipliers) -> one optimizer holding *all* parameters in fixed per-depth groups, created once before
  the scheduler, and a callback that toggles `requires_grad` by the global step.

Traps of transformers 5 this avoids (see the project's design notes): frozen parameters missing from Trainer's
optimizer, param groups added after the scheduler exists, DDP divergence or crashes when `requires_grad` changes,
dropout/BatchNorm live in a "frozen" backbone, only group 0's LR logged, gradient-accumulation loss scaling of
`*ForSequenceClassification` models.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import logging
import os

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from transformers import Trainer, TrainerCallback, TrainingArguments

from .arguments import TransferTrainingArguments
from .callbacks import AutoRGNCallback, TransferScheduleCallback
from .layer_map import LayerMap, _unwrap
from .param_groups import build_param_groups, depth_learning_rates
from .schedules import BASE_SCHEDULES, Phase, TransferSchedule, fixed_phase, gradual_unfreezing_phases, lp_ft_phases

logger = logging.getLogger(__name__)

__all__ = ["TransferTrainer"]

REFERENCE_FILE = "_transfer_reference.safetensors"  # leading "_": never uploaded by push_to_hub


def _as_transfer_args(args: TrainingArguments | None) -> TransferTrainingArguments:
    if args is None:
        return TransferTrainingArguments(output_dir="trainer_output")
    if isinstance(args, TransferTrainingArguments):
        return args
    # A plain TrainingArguments: same values, no strategy (stock behaviour).
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.init}
    return TransferTrainingArguments(**values)


class TransferTrainer(Trainer):
    """`Trainer` with the transfer-learning strategies of `TransferTrainingArguments`.

    Extra keyword arguments:
        layer_map: a `LayerMap` (or None: found structurally, with `args.layer_map_blocks/head` as overrides).

    With no strategy field set, training is exactly stock `Trainer` (same groups' LRs, same schedule, same weights).
    """

    def __init__(self, model=None, args=None, *pargs, layer_map: LayerMap | None = None, **kwargs):
        args = _as_transfer_args(args)
        if args.strategy_freezes and args.freeze_mode == "requires_grad" and args.ddp_find_unused_parameters is None:
            # DDP must see every parameter at wrap time and tolerate the frozen ones afterwards (design notes, trap 4).
            args.ddp_find_unused_parameters = True
        if args.strategy_freezes and args.deepspeed:
            raise ValueError(
                "DeepSpeed ZeRO drops parameters that are frozen at init and keeps its own optimizer, so freezing "
                "strategies cannot run under it: use DDP or FSDP2 (accelerate launch without a DeepSpeed config)."
            )
        self._user_layer_map = layer_map
        self.layer_map: LayerMap | None = layer_map
        self.transfer_schedule: TransferSchedule | None = None
        self.probe_result = None
        self.wise_ft_result: dict | None = None
        self._steps_per_epoch = 1
        self._managed: list[str] | None = None
        self._reference: dict[str, torch.Tensor] | None = None
        self._last_group_lrs: dict[str, float] = {}
        self.schedule_callback = TransferScheduleCallback(
            freeze_mode=args.freeze_mode, frozen_eval_mode=args.frozen_eval_mode
        )
        callbacks = list(kwargs.pop("callbacks", None) or []) + [self.schedule_callback, _GroupLRRecorder(self)]
        if args.auto_rgn:
            callbacks.append(AutoRGNCallback())
        super().__init__(model, args, *pargs, callbacks=callbacks, **kwargs)
        if getattr(type(self), "loss_is_scaled_for_ga", None) is None:
            self.loss_is_scaled_for_ga = self._model_normalises_loss_by_items()
        if not self.loss_is_scaled_for_ga:
            # Per-batch-mean losses: make Trainer divide by the GA steps. Without loss kwargs Trainer counts no
            # num_items_in_batch and divides, in every transformers 5 release (5.17 has no loss_is_scaled_for_ga).
            self.model_accepts_loss_kwargs = False

    # ------------------------------------------------------------------ layer map
    def get_layer_map(self, model: nn.Module | None = None) -> LayerMap:
        model = model if model is not None else self.model
        if self.layer_map is None or set(self.layer_map.depth_of) != {n for n, _ in model.named_parameters()}:
            self.layer_map = self._user_layer_map or LayerMap.from_model(
                model, blocks=self.args.layer_map_blocks, head=self.args.layer_map_head
            )
        return self.layer_map

    def _model_normalises_loss_by_items(self) -> bool:
        """Causal/masked LM losses of transformers divide by `num_items_in_batch` (correct under gradient
        accumulation); classification losses are per-batch means and ignore it, so Trainer must divide by the
        accumulation steps itself (transformers#37766)."""
        if not self.model_accepts_loss_kwargs or self.model is None:
            return False
        model = _unwrap(self.model)
        loss_type = getattr(model, "loss_type", None)
        if loss_type is None:
            # A class whose name names no loss (GPT2LMHeadModel) gets `loss_function` = ForCausalLM by default; it
            # normalises by items only if its forward really calls it.
            try:
                return "self.loss_function(" in inspect.getsource(type(model).forward)
            except (OSError, TypeError):
                return False
        return loss_type in {"ForCausalLM", "ForMaskedLM"}

    # ------------------------------------------------------------------ optimizer and scheduler
    def depth_learning_rates(self) -> dict[int, float]:
        a = self.args
        return depth_learning_rates(
            self.get_layer_map(),
            a.learning_rate,
            layer_lr_decay=a.layer_lr_decay,
            head_lr_multiplier=a.head_lr_multiplier,
            lr_slice=a.lr_slice,
        )

    def create_optimizer(self, model=None):
        if self.optimizer is not None:
            return self.optimizer
        if self.optimizer_cls_and_kwargs is not None and "params" in self.optimizer_cls_and_kwargs[1]:
            raise ValueError(
                "TransferTrainer builds its own per-depth param groups; pass the optimizer class and kwargs without "
                "'params' in optimizer_cls_and_kwargs."
            )
        opt_model = self.model if model is None else model
        layer_map = self.get_layer_map(opt_model)
        managed = self._managed_names(opt_model)
        groups = build_param_groups(
            opt_model,
            layer_map,
            self.depth_learning_rates(),
            weight_decay=self.args.weight_decay,
            decay_parameter_names=self.get_decay_parameter_names(opt_model),
            include=managed,
        )
        if self.args.auto_rgn:
            groups = [
                {**g, "name": f"{g['name']}/{n}", "params": [p], "param_names": [n]}
                for g in groups
                for n, p in zip(g["param_names"], g["params"])
            ]
        if self.optimizer_cls_and_kwargs is not None:
            optimizer_cls, optimizer_kwargs = self.optimizer_cls_and_kwargs
        else:
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        optimizer_kwargs = {
            k: v for k, v in optimizer_kwargs.items() if k not in ("params", "model", "optimizer_dict")
        }
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def _managed_names(self, model: nn.Module) -> list[str]:
        if self._managed is None:
            self._managed = [n for n, p in model.named_parameters() if p.requires_grad]
            if not self._managed:
                raise ValueError("No parameter of the model requires grad: nothing to fine-tune.")
        return self._managed

    def set_initial_training_values(self, args, dataloader):
        values = super().set_initial_training_values(args, dataloader)
        self._steps_per_epoch = max(1, values[1])  # num_update_steps_per_epoch
        return values

    def build_transfer_schedule(self, num_training_steps: int) -> TransferSchedule:
        """The phases of the configured strategy over `num_training_steps` optimizer steps."""
        a, lm = self.args, self.get_layer_map()
        n = lm.num_depths

        def steps(x: float, unit: str) -> int:
            return round(x * self._steps_per_epoch) if unit == "epoch" else int(x)

        phases: list[Phase]
        if a.gradual_unfreezing:
            phases = gradual_unfreezing_phases(
                n, max(1, steps(a.unfreeze_every, a.unfreeze_unit)), restart=a.unfreeze_restart_schedule
            )
        elif a.lp_mode == "epochs":
            head_lr = self.depth_learning_rates()[lm.head_depth]
            mult = (a.lp_learning_rate / head_lr) if a.lp_learning_rate else 1.0
            phases = lp_ft_phases(n, steps(a.lp_epochs, "epoch"), lp_lr_multiplier=mult)
        elif a.lp_mode == "logistic":
            phases = lp_ft_phases(n, 0)  # the probe is fitted before the first step
        elif a.surgical_blocks:
            phases = fixed_phase(lm.resolve(a.surgical_blocks), "surgical")
        elif a.trainable_depths:
            phases = fixed_phase(lm.resolve(a.trainable_depths), "fixed")
        else:
            phases = fixed_phase(range(n), "all_depths")
        kind = str(getattr(a.lr_scheduler_type, "value", a.lr_scheduler_type))
        kwargs = {"cut_frac": a.stlr_cut_frac, "ratio": a.stlr_ratio} if kind == "slanted_triangular" else {}
        if kind == "cosine" and a.lr_scheduler_kwargs:
            kwargs = {k: v for k, v in a.lr_scheduler_kwargs.items() if k == "num_cycles"}
        return TransferSchedule(phases, num_training_steps, n, base=kind, warmup=a.warmup_steps, base_kwargs=kwargs)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is not None:
            return self.lr_scheduler
        schedule = self.build_transfer_schedule(num_training_steps)
        self.transfer_schedule = schedule
        cb = self.schedule_callback
        cb.schedule, cb.layer_map, cb.managed = schedule, self.get_layer_map(), set(self._managed_names(self.model))
        trivial = len(schedule.phases) == 1 and len(schedule.phases[0].depths) == schedule.num_depths
        if trivial and schedule.base != "slanted_triangular":
            return super().create_scheduler(num_training_steps, optimizer)  # stock schedule, per-group LRs kept
        if schedule.base not in BASE_SCHEDULES:
            raise ValueError(
                f"lr_scheduler_type={schedule.base!r} cannot follow phases; use one of {sorted(BASE_SCHEDULES)}."
            )
        optimizer = optimizer if optimizer is not None else self.optimizer
        lambdas = [_depth_lambda(schedule, g["depth"]) for g in optimizer.param_groups]
        self.lr_scheduler = LambdaLR(optimizer, lambdas)
        self._created_lr_scheduler = True
        return self.lr_scheduler

    # ------------------------------------------------------------------ training
    def _inner_training_loop(self, batch_size=None, args=None, resume_from_checkpoint=None, trial=None, **kwargs):
        # Here the model is final: `model_init` has run and a checkpoint being resumed has been loaded.
        model = self.model
        self._managed = None
        self.layer_map = self._user_layer_map
        lm = self.get_layer_map(model)
        managed = self._managed_names(model)
        if self.is_world_process_zero():
            logger.info(f"Strategy: {self.args.strategy_name}\n{lm.describe(lrs=self.depth_learning_rates())}")
        if resume_from_checkpoint is None:
            self._prepare_fresh_start(model, lm)
        self._load_or_save_reference(model, resume_from_checkpoint)
        # Every managed parameter trainable when the model is wrapped (DDP must register them all).
        named = dict(model.named_parameters())
        for n in managed:
            named[n].requires_grad_(True)
        output = super()._inner_training_loop(
            batch_size=batch_size, args=args, resume_from_checkpoint=resume_from_checkpoint, trial=trial, **kwargs
        )
        if self.args.wise_ft_alphas:
            self._apply_wise_ft()
        return output

    def _prepare_fresh_start(self, model: nn.Module, lm: LayerMap) -> None:
        a = self.args
        if a.reinit_head or a.reinit_top_blocks:
            from .reinit import reinit_head, reinit_top_blocks

            if a.reinit_head:
                reinit_head(model, lm, seed=a.seed)
            if a.reinit_top_blocks:
                reinit_top_blocks(model, a.reinit_top_blocks, lm, seed=a.seed)
        if a.lp_mode == "logistic":
            from .probe import linear_probe

            if self.eval_dataset is None:
                raise ValueError("lp_mode='logistic' chooses the probe's C on eval_dataset: pass an eval_dataset.")
            self.probe_result = linear_probe(
                model,
                self.train_dataset,
                self.eval_dataset,
                self.data_collator,
                layer_map=lm,
                Cs=a.lp_c_grid,
                batch_size=a.per_device_eval_batch_size,
                label_names=tuple(a.label_names or ("labels",)),
            )
            logger.info(
                f"Linear probe: C={self.probe_result.C:g}, validation accuracy {self.probe_result.val_accuracy:.4f}, "
                f"{self.probe_result.extract_seconds:.1f}s feature extraction + {self.probe_result.seconds:.1f}s C sweep"
            )

    def _needs_reference(self) -> bool:
        a = self.args
        return bool(a.l2sp_alpha or a.wise_ft_alphas)

    def _load_or_save_reference(self, model: nn.Module, resume_from_checkpoint) -> None:
        """The weights at the start of fine-tuning, for L2-SP and WiSE-FT. Saved beside the checkpoints so that a
        resumed run pulls toward the same weights."""
        self._reference = None
        if not self._needs_reference():
            return
        from safetensors.torch import load_file, save_file

        path = os.path.join(self.args.output_dir, REFERENCE_FILE)
        if resume_from_checkpoint is not None and os.path.isfile(path):
            ref = load_file(path)
        else:
            ref = {n: p.detach().clone() for n, p in model.named_parameters()}
            if self.is_world_process_zero():
                os.makedirs(self.args.output_dir, exist_ok=True)
                save_file({n: t.contiguous().cpu() for n, t in ref.items()}, path)
        device = next(model.parameters()).device
        self._reference = {n: t.to(device) for n, t in ref.items()}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.loss_is_scaled_for_ga:
            num_items_in_batch = None  # the model's loss is a per-batch mean; Trainer divides by the GA steps
        out = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        if (self.args.l2sp_alpha or self.args.l2sp_beta) and model.training:
            penalty = self.l2sp_penalty()
            if self.loss_is_scaled_for_ga and num_items_in_batch is not None:
                # Trainer will not divide this micro-batch's loss by the GA steps: the penalty, added once per
                # micro-batch, must be, so that it counts once per optimizer step.
                penalty = penalty / getattr(self, "current_gradient_accumulation_steps", 1)
            if return_outputs:
                return out[0] + penalty, out[1]
            return out + penalty
        return out

    def l2sp_penalty(self) -> torch.Tensor:
        """L2-SP (Li et al. 2018): alpha/2 ||w - w0||^2 over the backbone, beta/2 ||w||^2 over the head."""
        lm = self.get_layer_map()
        alpha, beta = self.args.l2sp_alpha, self.args.l2sp_beta
        total = None
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            if lm.depth_of[name] == lm.head_depth:
                term = 0.5 * beta * p.pow(2).sum() if beta else None
            else:
                term = 0.5 * alpha * (p - self._reference[name]).pow(2).sum() if alpha else None
            if term is not None:
                total = term if total is None else total + term
        return total if total is not None else torch.zeros((), device=self.args.device)

    def _apply_wise_ft(self) -> None:
        from .regularizers import select_wise_alpha

        if self.eval_dataset is None:
            raise ValueError("wise_ft_alphas chooses the mixing weight on eval_dataset: pass an eval_dataset.")
        theta_1 = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        metric = self.args.metric_for_best_model or "loss"
        key = metric if metric.startswith("eval_") else f"eval_{metric}"
        greater = self.args.greater_is_better if self.args.greater_is_better is not None else not key.endswith("loss")

        def score(model):
            value = self.evaluate(metric_key_prefix="eval")[key]
            return value if greater else -value

        alpha, scores = select_wise_alpha(self.model, self._reference, theta_1, score, alphas=self.args.wise_ft_alphas)
        self.wise_ft_result = {"alpha": alpha, "metric": key, "scores": scores}
        self.log({"wise_ft_alpha": alpha})

    def transfer_summary(self) -> dict:
        """What was done, as plain data: what a model card records (strategy, depths, LRs, phases, probe, WiSE-FT)."""
        lm = self.get_layer_map()
        summary = {
            "strategy": self.args.strategy_name,
            "layer_map": lm.to_dict(),
            "depth_learning_rates": {lm.depth_label(d): lr for d, lr in self.depth_learning_rates().items()},
            "lr_scheduler_type": str(getattr(self.args.lr_scheduler_type, "value", self.args.lr_scheduler_type)),
            "phases": self.transfer_schedule.describe() if self.transfer_schedule is not None else None,
            "freeze_mode": self.args.freeze_mode,
        }
        if self.probe_result is not None:
            summary["linear_probe"] = {
                "C": float(self.probe_result.C),
                "val_accuracy": float(self.probe_result.val_accuracy),
                "sweep_seconds": float(self.probe_result.seconds),
                "extract_seconds": float(self.probe_result.extract_seconds),
            }
        if self.wise_ft_result is not None:
            summary["wise_ft"] = self.wise_ft_result
        return summary

    # ------------------------------------------------------------------ logging and saving
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "learning_rate" in logs and self._last_group_lrs:
            logs = {**logs, **{f"lr/{name}": lr for name, lr in self._last_group_lrs.items()}}
        super().log(logs, start_time)

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        super()._save(output_dir, state_dict)
        _redact_saved_args(self.args, output_dir or self.args.output_dir)


def _depth_lambda(schedule: TransferSchedule, depth: int):
    # A plain function: LambdaLR stores no state for functions, so checkpoints hold no custom classes (they load
    # with weights_only=True) and the schedule is always the one rebuilt from the arguments.
    def lr_lambda(step: int) -> float:
        return schedule.lr_multiplier(depth, step)

    return lr_lambda


class _GroupLRRecorder(TrainerCallback):
    """Records every group's LR as used by the optimizer step (before the scheduler moves it)."""

    def __init__(self, trainer: TransferTrainer):
        self.trainer = trainer

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is None:
            return
        lrs: dict[str, float] = {}
        for g in optimizer.param_groups:
            name = str(g.get("name", len(lrs))).split("/")[0]
            lrs.setdefault(name, g["lr"])
        self.trainer._last_group_lrs = lrs


def _redact_saved_args(args: TrainingArguments, output_dir: str) -> None:
    """Stock Trainer pickles the whole TrainingArguments, `hub_token` included, into training_args.bin."""
    path = os.path.join(output_dir, "training_args.bin")
    if getattr(args, "hub_token", None) and os.path.isfile(path):
        redacted = copy.copy(args)
        redacted.hub_token = "<redacted>"
        torch.save(redacted, path)
