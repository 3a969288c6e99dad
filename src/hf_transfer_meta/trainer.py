"""`TransferMixin` gives any `transformers.Trainer` subclass the strategies of `TransferArguments`;
`TransferTrainer` is `Trainer` with it.

With no strategy set the trainer is stock `Trainer`: no layer map, no added callback or log key, Trainer's own
optimizer, param groups and scheduler, and the arguments object the user passed. With a strategy, for every strategy
alike:
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
import functools
import inspect
import logging
import os
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from transformers import Trainer, TrainingArguments

from .arguments import STLR, TransferArguments
from .callbacks import AutoRGNCallback, TransferScheduleCallback
from .layer_map import LayerMap, _unwrap
from .param_groups import build_param_groups, depth_learning_rates
from .schedules import (
    BASE_SCHEDULES,
    Phase,
    TransferSchedule,
    fixed_phase,
    lp_ft_phases,
    plan_gradual_unfreezing,
)

logger = logging.getLogger(__name__)

__all__ = ["TransferMixin", "TransferTrainer", "TransferPlan", "with_transfer"]

REFERENCE_FILE = "_transfer_reference.safetensors"  # leading "_": never uploaded by push_to_hub
_OWN_PARAMS_KEYS = ("params", "model", "optimizer_dict")  # Trainer's optimizer paths that bring their own groups


@dataclass
class TransferPlan:
    """What a run does, built once before its first step: the layer map, the parameters the schedule controls, the
    phases over the run's optimizer steps, and each depth's LR."""

    layer_map: LayerMap
    managed: list[str]
    schedule: TransferSchedule
    depth_lrs: dict[int, float]
    steps_per_epoch: int
    description: str


def _resolve_transfer_args(args, transfer_args: TransferArguments | None) -> TransferArguments:
    if transfer_args is not None:
        if not isinstance(transfer_args, TransferArguments):
            raise TypeError(
                f"transfer_args must be a hf_transfer_meta.TransferArguments, got {type(transfer_args).__name__}."
            )
        if isinstance(args, TransferArguments) and args.has_strategy:
            raise ValueError(
                f"Both args ({type(args).__name__}, strategy: {args.strategy_name}) and transfer_args (strategy: "
                f"{transfer_args.strategy_name}) set a strategy: give it in one place."
            )
        return transfer_args
    if isinstance(args, TransferArguments):
        return args
    return TransferArguments()


class TransferMixin:
    """The transfer-learning strategies on any `Trainer` subclass: ``class MyTrainer(TransferMixin, Seq2SeqTrainer)``
    (or ``with_transfer(Seq2SeqTrainer)``).

    Extra keyword arguments:
        transfer_args: a `TransferArguments` (parsed beside any `TrainingArguments` subclass). Default: ``args``
            itself when it is a `TransferTrainingArguments`, else no strategy.
        layer_map: a `LayerMap` (or None: found structurally, with ``layer_map_blocks/head`` as overrides).
    """

    def __init__(
        self, *pargs, transfer_args: TransferArguments | None = None, layer_map: LayerMap | None = None, **kwargs
    ):
        training_args = kwargs.get("args", pargs[1] if len(pargs) > 1 else None)
        self.transfer_args = t = _resolve_transfer_args(training_args, transfer_args)
        self.strategy_active = t.has_strategy
        self._user_layer_map = layer_map
        self.layer_map: LayerMap | None = layer_map
        self.transfer_plan: TransferPlan | None = None
        self.probe_result = None
        self.wise_ft_result: dict | None = None
        self._reference: dict[str, torch.Tensor] | None = None
        self.schedule_callback: TransferScheduleCallback | None = None
        self._pending_logs: dict[str, float] = {}
        if self.strategy_active:
            if training_args is not None:
                _prepare_args(training_args, t)
            self.schedule_callback = TransferScheduleCallback(
                freeze_mode=t.freeze_mode, frozen_eval_mode=t.frozen_eval_mode
            )
            callbacks = list(kwargs.pop("callbacks", None) or []) + [self.schedule_callback]
            if t.auto_rgn:
                callbacks.append(AutoRGNCallback())
            kwargs["callbacks"] = callbacks
        super().__init__(*pargs, **kwargs)
        if getattr(type(self), "loss_is_scaled_for_ga", None) is None:
            self.loss_is_scaled_for_ga = self._model_normalises_loss_by_items()
        if not self.loss_is_scaled_for_ga:
            # Per-batch-mean losses: make Trainer divide by the GA steps. Without loss kwargs Trainer counts no
            # num_items_in_batch and divides, in every transformers 5 release (5.17 has no loss_is_scaled_for_ga).
            self.model_accepts_loss_kwargs = False
        if self.strategy_active:
            if training_args is None:
                _prepare_args(self.args, t)
            self._check_strategy_at_init()
            if self.model is not None:
                self.get_layer_map()  # an unmappable model fails here, with the override in the message

    # ------------------------------------------------------------------ checks before anything runs
    def _check_strategy_at_init(self) -> None:
        t = self.transfer_args
        if t.strategy_freezes and getattr(self.args, "deepspeed", None):
            raise ValueError(
                "DeepSpeed ZeRO drops parameters that are frozen at init and keeps its own optimizer, so freezing "
                "strategies cannot run under it: use DDP or FSDP2 (accelerate launch without a DeepSpeed config)."
            )
        if t.lp_mode == "logistic":
            if self.eval_dataset is None:
                raise ValueError("lp_mode='logistic' chooses the probe's C on eval_dataset: pass an eval_dataset.")
            from .probe import check_probe_dataset

            label_names = tuple(self.args.label_names or ("labels",))
            check_probe_dataset(self.train_dataset, "train_dataset", label_names)
            check_probe_dataset(self.eval_dataset, "eval_dataset", label_names)
        if t.wise_ft_alphas and self.eval_dataset is None:
            raise ValueError(
                f"wise_ft_alphas={list(t.wise_ft_alphas)} chooses the mixing weight on eval_dataset: pass an "
                "eval_dataset (or drop wise_ft_alphas)."
            )
        if t.needs_depth_learning_rates and self.optimizer is not None:
            raise ValueError(
                f"The strategy ({t.strategy_name}) gives depths different learning rates, which needs the trainer to "
                "build the optimizer's param groups, but optimizers=(optimizer, scheduler) was passed. Drop "
                "`optimizers` and choose the optimizer with `optim` / `optimizer_cls_and_kwargs` (without 'params')."
            )
        if self.optimizer is not None and self.lr_scheduler is not None and _schedule_needed(t):
            raise ValueError(
                f"The strategy ({t.strategy_name}) sets the LR schedule (per-phase restarts or slanted triangular), "
                "but a scheduler was passed in optimizers=(optimizer, scheduler): pass (optimizer, None)."
            )

    @property
    def transfer_schedule(self) -> TransferSchedule | None:
        """The phases of the last (or current) run."""
        return self.transfer_plan.schedule if self.transfer_plan is not None else None

    @property
    def _managed(self) -> list[str] | None:
        return self.transfer_plan.managed if self.transfer_plan is not None else None

    # ------------------------------------------------------------------ layer map
    def get_layer_map(self, model: nn.Module | None = None) -> LayerMap:
        model = model if model is not None else self.model
        if self.layer_map is None or set(self.layer_map.depth_of) != {n for n, _ in model.named_parameters()}:
            t = self.transfer_args
            self.layer_map = self._user_layer_map or LayerMap.from_model(
                model, blocks=t.layer_map_blocks, head=t.layer_map_head
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

    # ------------------------------------------------------------------ the plan
    def depth_learning_rates(self) -> dict[int, float]:
        t = self.transfer_args
        return depth_learning_rates(
            self.get_layer_map(),
            self.args.learning_rate,
            layer_lr_decay=t.layer_lr_decay,
            head_lr_multiplier=t.head_lr_multiplier,
            lr_slice=t.lr_slice,
        )

    def _base_schedule_kind(self) -> str:
        if self.transfer_args.slanted_triangular_lr:
            return STLR
        return str(getattr(self.args.lr_scheduler_type, "value", self.args.lr_scheduler_type))

    def build_transfer_schedule(
        self, num_training_steps: int, steps_per_epoch: int = 1
    ) -> tuple[TransferSchedule, str]:
        """The phases of the configured strategy over `num_training_steps` optimizer steps, and what they do."""
        t, lm = self.transfer_args, self.get_layer_map()
        n = lm.num_depths
        phases: list[Phase]
        if t.gradual_unfreezing:
            # Unfreeze the depths that hold parameters: a tied head (T5, GPT-2) is empty and joins the top block.
            held = [d for d in range(n) if lm.num_params(d) > 0] or list(range(n))
            slots, description = plan_gradual_unfreezing(
                len(held),
                num_training_steps,
                steps_per_epoch,
                every=t.unfreeze_every,
                unit=t.unfreeze_unit,
                fraction=t.unfreeze_fraction,
                allow_partial=t.allow_partial_unfreezing,
                restart=t.unfreeze_restart_schedule,
            )
            phases = [dataclasses.replace(p, depths=frozenset(range(held[min(p.depths)], n))) for p in slots]
        elif t.lp_mode == "epochs":
            head_lr = self.depth_learning_rates()[lm.head_depth]
            mult = (t.lp_learning_rate / head_lr) if t.lp_learning_rate else 1.0
            lp_steps = round(t.lp_epochs * steps_per_epoch)
            phases = lp_ft_phases(n, lp_steps, lp_lr_multiplier=mult)
            description = f"LP-FT: the head alone for {lp_steps} steps ({t.lp_epochs:g} epochs), then every depth"
            if lp_steps >= num_training_steps:
                description += f"; the run ends at step {num_training_steps}, inside the head-only stage"
                logger.warning(
                    f"lp_epochs={t.lp_epochs:g} is {lp_steps} optimizer steps but the run has {num_training_steps}: "
                    "only the head trains. Lower lp_epochs or train longer to fine-tune the whole model."
                )
        elif t.lp_mode == "logistic":
            phases = lp_ft_phases(n, 0)  # the probe is fitted before the first step
            description = "LP-FT: a logistic-regression probe initialises the head, then every depth trains"
        elif t.surgical_blocks:
            depths = lm.resolve(t.surgical_blocks)
            phases = fixed_phase(depths, "surgical")
            description = f"surgical fine-tuning: only {[lm.depth_label(d) for d in depths]} train"
        elif t.trainable_depths:
            depths = lm.resolve(t.trainable_depths)
            phases = fixed_phase(depths, "fixed")
            description = f"only {[lm.depth_label(d) for d in depths]} train"
        else:
            phases = fixed_phase(range(n), "all_depths")
            description = "every depth trains"
        kind = self._base_schedule_kind()
        kwargs = {"cut_frac": t.stlr_cut_frac, "ratio": t.stlr_ratio} if kind == STLR else {}
        lr_kwargs = getattr(self.args, "lr_scheduler_kwargs", None)
        if kind == "cosine" and lr_kwargs:
            kwargs = {k: v for k, v in lr_kwargs.items() if k == "num_cycles"}
        schedule = TransferSchedule(
            phases, num_training_steps, n, base=kind, warmup=self.args.warmup_steps, base_kwargs=kwargs
        )
        if not _is_trivial(schedule) and kind not in BASE_SCHEDULES:
            raise ValueError(
                f"lr_scheduler_type={kind!r} cannot follow the phases of {t.strategy_name}; use one of "
                f"{sorted(BASE_SCHEDULES)}."
            )
        return schedule, description

    def _build_plan(self, model: nn.Module, args: TrainingArguments) -> TransferPlan:
        self.layer_map = self._user_layer_map
        lm = self.get_layer_map(model)
        managed = [n for n, p in model.named_parameters() if p.requires_grad]
        if not managed:
            raise ValueError("No parameter of the model requires grad: nothing to fine-tune.")
        values = self.set_initial_training_values(args, self.get_train_dataloader())
        steps_per_epoch, max_steps = max(1, values[1]), values[-1]
        schedule, description = self.build_transfer_schedule(max_steps, steps_per_epoch)
        managed_depths = {lm.depth_of[name] for name in managed}
        for i, phase in enumerate(schedule.phases):
            if not phase.depths & managed_depths:
                start, end = schedule.phase_bounds(i)
                raise ValueError(
                    f"Phase {phase.name!r} (steps {start}-{end}) trains {[lm.depth_label(d) for d in sorted(phase.depths)]}"
                    f" of {lm.model_class}, which hold no trainable parameter"
                    + (
                        f" (the head is tied: {', '.join(f'{a} -> {b}' for a, b in lm.tied.items())})"
                        if lm.tied
                        else ""
                    )
                    + ". Choose depths that hold parameters (see `hf-transfer-meta layers`), or untie the head."
                )
        return TransferPlan(lm, managed, schedule, self.depth_learning_rates(), steps_per_epoch, description)

    # ------------------------------------------------------------------ optimizer and scheduler
    def create_optimizer(self, model=None):
        if not self.strategy_active or self.optimizer is not None:
            return super().create_optimizer(model)
        t = self.transfer_args
        opt_model = self.model if model is None else model
        from transformers.trainer_optimizer import has_mixed_dtensor, is_optimizer_factory

        if self.optimizer_cls_and_kwargs is not None:
            optimizer_cls, optimizer_kwargs = self.optimizer_cls_and_kwargs
        else:
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        own_groups = is_optimizer_factory(optimizer_cls) or any(k in optimizer_kwargs for k in _OWN_PARAMS_KEYS)
        if own_groups:
            # Factories (Muon, Dion), GaLore/APOLLO target modules, LOMO, layer-wise optimizers: Trainer's own path
            # builds them, over every managed parameter (all require grad now). Freezing works on any optimizer that
            # holds the parameters; per-depth LRs need our groups.
            if t.needs_depth_learning_rates:
                raise ValueError(
                    f"optim={str(getattr(self.args.optim, 'value', self.args.optim))!r} builds its own parameter "
                    f"groups ({getattr(optimizer_cls, '__name__', optimizer_cls)}), so "
                    f"the per-depth learning rates of {t.strategy_name} cannot be applied. Use a standard optimizer "
                    "(adamw_torch, sgd, ...) or drop layer_lr_decay / lr_slice / head_lr_multiplier / auto_rgn / "
                    "lp_learning_rate."
                )
            return super().create_optimizer(model)
        plan = self.transfer_plan
        if plan is not None:
            layer_map, depth_lrs, managed = plan.layer_map, plan.depth_lrs, plan.managed
        else:  # called outside train(): the groups need no schedule
            layer_map, depth_lrs = self.get_layer_map(opt_model), self.depth_learning_rates()
            managed = [n for n, p in opt_model.named_parameters() if p.requires_grad]
        groups = build_param_groups(
            opt_model,
            layer_map,
            depth_lrs,
            weight_decay=self.args.weight_decay,
            decay_parameter_names=self.get_decay_parameter_names(opt_model),
            include=managed,
        )
        if t.auto_rgn:
            groups = [
                {**g, "name": f"{g['name']}/{n}", "params": [p], "param_names": [n]}
                for g in groups
                for n, p in zip(g["param_names"], g["params"])
            ]
        if has_mixed_dtensor(p for g in groups for p in g["params"]):
            groups = _split_groups_by_mesh(groups)
        kwargs = {k: v for k, v in optimizer_kwargs.items() if k not in _OWN_PARAMS_KEYS}
        self.optimizer = optimizer_cls(groups, **kwargs)
        if "bitsandbytes" in str(optimizer_cls) and kwargs.get("optim_bits", None) == 8:
            _bnb_embeddings_in_fp32(opt_model)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if not self.strategy_active or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        plan = self.transfer_plan
        if plan.schedule.total_steps != num_training_steps:  # auto_find_batch_size changed the batch size
            plan.schedule, plan.description = self.build_transfer_schedule(num_training_steps, plan.steps_per_epoch)
            self.schedule_callback.set_plan(plan.schedule, plan.layer_map, plan.managed)
        schedule = plan.schedule
        if _is_trivial(schedule) and schedule.base != STLR:
            return super().create_scheduler(num_training_steps, optimizer)  # stock schedule, per-group LRs kept
        optimizer = optimizer if optimizer is not None else self.optimizer
        lambdas = [_group_lambda(schedule, g.get("depth")) for g in optimizer.param_groups]
        self.lr_scheduler = LambdaLR(optimizer, lambdas)
        self._created_lr_scheduler = True
        return self.lr_scheduler

    def _get_learning_rate(self) -> float:
        """The head's LR (the base LR of the run): group 0 is the embeddings, whose LR is 0 while they are frozen."""
        if self.strategy_active and self.optimizer is not None and self.transfer_plan is not None:
            head = self.transfer_plan.layer_map.head_depth
            for g in self.optimizer.param_groups:
                if g.get("depth") == head:
                    return g["lr"]
        return super()._get_learning_rate()

    # ------------------------------------------------------------------ training
    def _inner_training_loop(self, batch_size=None, args=None, resume_from_checkpoint=None, trial=None, **kwargs):
        if not self.strategy_active:
            return super()._inner_training_loop(
                batch_size=batch_size, args=args, resume_from_checkpoint=resume_from_checkpoint, trial=trial, **kwargs
            )
        # Here the model is final: `model_init` has run and a checkpoint being resumed has been loaded.
        model = self.model
        plan = self.transfer_plan = self._build_plan(model, args)
        if self.is_world_process_zero():
            logger.warning(f"Strategy: {self.transfer_args.strategy_name}; {plan.description}.")
            logger.info(plan.layer_map.describe(lrs=plan.depth_lrs))
        if resume_from_checkpoint is None:
            self._prepare_fresh_start(model, plan.layer_map)
        self._load_or_save_reference(model, resume_from_checkpoint)
        # Every managed parameter trainable when the model is wrapped (DDP must register them all).
        named = dict(model.named_parameters())
        for n in plan.managed:
            named[n].requires_grad_(True)
        self.schedule_callback.set_plan(plan.schedule, plan.layer_map, plan.managed)
        probe_metrics = dict(self._pending_logs)
        output = super()._inner_training_loop(
            batch_size=batch_size, args=args, resume_from_checkpoint=resume_from_checkpoint, trial=trial, **kwargs
        )
        if probe_metrics and output.metrics is not None:
            output.metrics.update(probe_metrics)
        if self.transfer_args.wise_ft_alphas:
            self._apply_wise_ft()
        return output

    def _prepare_fresh_start(self, model: nn.Module, lm: LayerMap) -> None:
        t = self.transfer_args
        if t.reinit_head or t.reinit_top_blocks:
            from .reinit import reinit_head, reinit_top_blocks

            if t.reinit_head:
                reinit_head(model, lm, seed=self.args.seed)
            if t.reinit_top_blocks:
                reinit_top_blocks(model, t.reinit_top_blocks, lm, seed=self.args.seed)
        if t.lp_mode == "logistic":
            self._fit_linear_probe(model, lm)

    def _probe_dataloader(self, dataset, description: str):
        """Batches as the trainer's own loaders build them (unused columns removed as Trainer does, its collator,
        the data set's transforms), in order and unsharded: every rank fits the same probe on all examples."""
        from torch.utils.data import DataLoader

        collator = self.data_collator
        try:
            import datasets

            is_hf = isinstance(dataset, datasets.Dataset)
        except ImportError:  # pragma: no cover
            is_hf = False
        if is_hf:
            dataset = self._remove_unused_columns(dataset, description=description)
        else:
            collator = self._get_collator_with_removed_columns(collator, description=description)
        return DataLoader(
            dataset,
            batch_size=self.args.eval_batch_size,
            collate_fn=collator,
            num_workers=self.args.dataloader_num_workers,
            shuffle=False,
        )

    def _fit_linear_probe(self, model: nn.Module, lm: LayerMap) -> None:
        from .probe import check_probe_dataset, linear_probe

        label_names = tuple(self.args.label_names or ("labels",))
        check_probe_dataset(self.train_dataset, "train_dataset", label_names)
        check_probe_dataset(self.eval_dataset, "eval_dataset", label_names)
        progress = not self.args.disable_tqdm and self.is_local_process_zero()
        logger.warning("LP-FT: fitting the linear probe on frozen features (train_dataset, C chosen on eval_dataset)")
        self.probe_result = linear_probe(
            model,
            self._probe_dataloader(self.train_dataset, "LP probe train"),
            self._probe_dataloader(self.eval_dataset, "LP probe eval"),
            layer_map=lm,
            Cs=self.transfer_args.lp_c_grid,
            label_names=label_names,
            progress=progress,
        )
        r = self.probe_result
        logger.warning(
            f"LP-FT probe: C={r.C:g}, train accuracy {r.train_accuracy:.4f}, validation accuracy {r.val_accuracy:.4f}; "
            f"{r.extract_seconds:.1f}s feature extraction + {r.seconds:.1f}s C sweep"
        )
        # Trainer makes a new TrainerState when the loop starts: these go into the first log and the train metrics.
        self._pending_logs.update(
            {
                "lp_probe_C": float(r.C),
                "lp_probe_train_accuracy": float(r.train_accuracy),
                "lp_probe_val_accuracy": float(r.val_accuracy),
                "lp_probe_seconds": float(r.seconds + r.extract_seconds),
            }
        )

    def _load_or_save_reference(self, model: nn.Module, resume_from_checkpoint) -> None:
        """The weights at the start of fine-tuning, for L2-SP and WiSE-FT. Saved beside the checkpoints so that a
        resumed run pulls toward the same weights."""
        self._reference = None
        t = self.transfer_args
        if not (t.l2sp_alpha or t.l2sp_beta or t.wise_ft_alphas):
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
        t = self.transfer_args
        if self.strategy_active and (t.l2sp_alpha or t.l2sp_beta) and model.training:
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
        alpha, beta = self.transfer_args.l2sp_alpha, self.transfer_args.l2sp_beta
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

        theta_1 = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        metric = self.args.metric_for_best_model or "loss"
        key = metric if metric.startswith("eval_") else f"eval_{metric}"
        greater = self.args.greater_is_better if self.args.greater_is_better is not None else not key.endswith("loss")

        def score(model):
            value = self.evaluate(metric_key_prefix="eval")[key]
            return value if greater else -value

        alpha, scores = select_wise_alpha(
            self.model, self._reference, theta_1, score, alphas=self.transfer_args.wise_ft_alphas
        )
        self.wise_ft_result = {"alpha": alpha, "metric": key, "scores": scores}
        self.log({"wise_ft_alpha": alpha})

    def transfer_summary(self) -> dict:
        """What was done, as plain data: what a model card records (strategy, depths, LRs, phases, probe, WiSE-FT)."""
        t = self.transfer_args
        summary = {"strategy": t.strategy_name, "strategy_fields": t.strategy_dict()}
        if not self.strategy_active:
            return summary
        lm = self.get_layer_map()
        plan = self.transfer_plan
        summary.update(
            {
                "layer_map": lm.to_dict(),
                "depth_learning_rates": {lm.depth_label(d): lr for d, lr in self.depth_learning_rates().items()},
                "lr_scheduler_type": self._base_schedule_kind(),
                "phases": plan.schedule.describe() if plan is not None else None,
                "plan": plan.description if plan is not None else None,
                "freeze_mode": t.freeze_mode,
            }
        )
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
    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if self._pending_logs:
            logs, self._pending_logs = {**self._pending_logs, **logs}, {}
        if self.strategy_active and "learning_rate" in logs and self.optimizer is not None:
            lrs: dict[str, float] = {}
            for g in self.optimizer.param_groups:
                if "name" in g:
                    lrs.setdefault(f"lr/{str(g['name']).split('/')[0]}", g["lr"])
            logs = {**logs, **lrs}
        super().log(logs, *args, **kwargs)

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        super()._save(output_dir, state_dict)
        _redact_saved_args(self.args, output_dir or self.args.output_dir)


class TransferTrainer(TransferMixin, Trainer):
    """`Trainer` with the transfer-learning strategies of `TransferArguments` (or `TransferTrainingArguments`).

    With no strategy field set it is stock `Trainer`: same optimizer and groups, same schedule, same weights.
    """


@functools.cache
def with_transfer(trainer_cls: type) -> type:
    """``trainer_cls`` (a `Trainer` subclass: `Seq2SeqTrainer`, TRL's `SFTTrainer`, your own) with the strategies:
    ``with_transfer(SFTTrainer)(model=..., args=SFTConfig(...), transfer_args=TransferArguments(...))``."""
    if not (isinstance(trainer_cls, type) and issubclass(trainer_cls, Trainer)):
        raise TypeError(f"with_transfer needs a transformers.Trainer subclass, got {trainer_cls!r}.")
    if issubclass(trainer_cls, TransferMixin):
        return trainer_cls
    return type(
        f"Transfer{trainer_cls.__name__}",
        (TransferMixin, trainer_cls),
        {"__module__": trainer_cls.__module__, "__doc__": f"{trainer_cls.__name__} with hf_transfer_meta strategies."},
    )


def _prepare_args(args: TrainingArguments, t: TransferArguments) -> None:
    if t.strategy_freezes and t.freeze_mode == "requires_grad":
        if args.ddp_find_unused_parameters is False:
            raise ValueError(
                "This strategy freezes parameters while DDP runs: ddp_find_unused_parameters=False would crash "
                "('Expected to have finished reduction'). Leave it unset or use freeze_mode='mask'."
            )
        if args.ddp_find_unused_parameters is None:
            # DDP must see every parameter at wrap time and tolerate the frozen ones afterwards (design notes, trap 4).
            args.ddp_find_unused_parameters = True


def _schedule_needed(t: TransferArguments) -> bool:
    return bool(t.slanted_triangular_lr or t.unfreeze_restart_schedule or t.lp_mode)


def _is_trivial(schedule: TransferSchedule) -> bool:
    return len(schedule.phases) == 1 and len(schedule.phases[0].depths) == schedule.num_depths


def _group_lambda(schedule: TransferSchedule, depth: int | None):
    # A plain function: LambdaLR stores no state for functions, so checkpoints hold no custom classes (they load
    # with weights_only=True) and the schedule is always the one rebuilt from the arguments. A group without a depth
    # (an optimizer Trainer built) follows the phase's multiplier; its frozen parameters get no gradient.
    if depth is None:

        def lr_lambda(step: int) -> float:
            return schedule.phase_at(step).lr_multiplier * schedule.base_multiplier(step)

    else:

        def lr_lambda(step: int) -> float:
            return schedule.lr_multiplier(depth, step)

    return lr_lambda


def _split_groups_by_mesh(groups: list[dict]) -> list[dict]:
    """Parameters on different device meshes cannot share one fused/foreach call (as Trainer splits its groups)."""
    from collections import defaultdict

    from torch.distributed.tensor import DTensor

    out = []
    for g in groups:
        by_mesh = defaultdict(list)
        for n, p in zip(g["param_names"], g["params"]):
            by_mesh[p.device_mesh if isinstance(p, DTensor) else None].append((n, p))
        for items in by_mesh.values():
            out.append({**g, "params": [p for _, p in items], "param_names": [n for n, _ in items]})
    return out


def _bnb_embeddings_in_fp32(model: nn.Module) -> None:
    """Trainer's override for 8-bit bitsandbytes optimizers: embeddings keep 32-bit optimizer state."""
    import bitsandbytes

    manager = bitsandbytes.optim.GlobalOptimManager.get_instance()
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            manager.register_module_override(module, "weight", {"optim_bits": 32})


def _redact_saved_args(args: TrainingArguments, output_dir: str) -> None:
    """Stock Trainer pickles the whole TrainingArguments, `hub_token` included, into training_args.bin."""
    path = os.path.join(output_dir, "training_args.bin")
    if getattr(args, "hub_token", None) and os.path.isfile(path):
        redacted = copy.copy(args)
        redacted.hub_token = "<redacted>"
        torch.save(redacted, path)
