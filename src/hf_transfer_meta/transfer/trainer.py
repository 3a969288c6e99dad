"""`TransferMixin` gives any `transformers.Trainer` subclass the strategies of `TransferArguments`;
`TransferTrainer` is `Trainer` with it.

With no strategy set the trainer is stock `Trainer`: no layer map, no added callback or log key, Trainer's own
optimizer, param groups and scheduler, and the arguments object the user passed. With a strategy: one `TransferPlan`
(layer map -> per-depth LRs -> phases) built before the first step, one optimizer holding *all* managed parameters
in fixed per-depth groups created before the scheduler, and a callback that toggles `requires_grad` by the step.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from transformers import Trainer, TrainingArguments

from ..cards.hooks import RunCardMixin
from ..cards.record import TRANSFER_SUMMARY_FILE
from ..model_utils import unwrap_model
from .arguments import TransferArguments
from .callbacks import AutoRGNCallback, TransferScheduleCallback
from .layer_map import LayerMap
from .optimizer import build_strategy_optimizer, group_lr_lambda, schedule_needed
from .plan import TransferPlan, build_plan, plan_depth_lrs
from .plateau import PlateauPhaseCallback, monitored_metric
from .schedules import STLR, TransferSchedule
from .strategies import STRATEGIES, StartInputs
from .strategies.plateau_phases import check_evaluations, uses_plateau

logger = logging.getLogger(__name__)

__all__ = ["TransferMixin", "TransferTrainer", "TransferPlan", "with_transfer"]

REFERENCE_FILE = "_transfer_reference.safetensors"  # leading "_": never uploaded by push_to_hub


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


class TransferMixin(RunCardMixin):
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
        self._l2sp = None
        self._reference: dict[str, torch.Tensor] | None = None
        self._pending_logs: dict[str, float] = {}
        self.schedule_callback: TransferScheduleCallback | None = None
        self.plateau_callback: PlateauPhaseCallback | None = None
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
            # Per-batch-mean losses: make Trainer divide by the GA steps (trap 8 of the design notes). Without loss
            # kwargs Trainer counts no num_items_in_batch and divides, whether or not it has loss_is_scaled_for_ga.
            self.model_accepts_loss_kwargs = False
        if self.strategy_active:
            if training_args is None:
                _prepare_args(self.args, t)
            self._check_strategy_at_init()
            if uses_plateau(t):
                key, higher = monitored_metric(
                    t.phase_metric, self.args.metric_for_best_model, self.args.greater_is_better
                )
                self.plateau_callback = PlateauPhaseCallback(
                    metric=key,
                    greater_is_better=higher,
                    patience=t.phase_patience,
                    threshold=t.phase_threshold,
                    reset_optimizer=t.phase_reset_optimizer,
                )
                self.add_callback(self.plateau_callback)
            if self.model is not None:
                self.get_layer_map()  # an unmappable model fails here, with the override in the message

    @property
    def transfer_schedule(self) -> TransferSchedule | None:
        """The phases of the last (or current) run."""
        return self.transfer_plan.schedule if self.transfer_plan is not None else None

    @property
    def _managed(self) -> list[str] | None:
        return self.transfer_plan.managed if self.transfer_plan is not None else None

    # ------------------------------------------------------------------ checks before anything runs
    def _check_strategy_at_init(self) -> None:
        t = self.transfer_args
        if t.strategy_freezes and getattr(self.args, "deepspeed", None):
            raise ValueError(
                "DeepSpeed ZeRO drops parameters that are frozen at init and keeps its own optimizer, so freezing "
                "strategies cannot run under it: use DDP or FSDP2 (accelerate launch without a DeepSpeed config)."
            )
        needing = t.needs_eval_dataset
        if needing and self.eval_dataset is None:
            fields = ", ".join(f"{STRATEGIES[n].fields[0]}={getattr(t, STRATEGIES[n].fields[0])!r}" for n in needing)
            raise ValueError(f"{fields} chooses on eval_dataset: pass an eval_dataset (or drop it).")
        check_evaluations(t, self.args.eval_strategy)
        if t.lp_mode == "logistic":
            from .strategies.linear_probe import check_probe_dataset

            check_probe_dataset(self.train_dataset, "train_dataset", self._label_names())
            check_probe_dataset(self.eval_dataset, "eval_dataset", self._label_names())
        if t.needs_depth_learning_rates and self.optimizer is not None:
            raise ValueError(
                f"The strategy ({t.strategy_name}) gives depths different learning rates, which needs the trainer to "
                "build the optimizer's param groups, but optimizers=(optimizer, scheduler) was passed. Drop "
                "`optimizers` and choose the optimizer with `optim` / `optimizer_cls_and_kwargs` (without 'params')."
            )
        if self.optimizer is not None and self.lr_scheduler is not None and schedule_needed(t):
            raise ValueError(
                f"The strategy ({t.strategy_name}) sets the LR schedule (per-phase restarts or slanted triangular), "
                "but a scheduler was passed in optimizers=(optimizer, scheduler): pass (optimizer, None)."
            )

    def _label_names(self) -> tuple[str, ...]:
        return tuple(self.args.label_names or ("labels",))

    # ------------------------------------------------------------------ layer map and plan
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
        model = unwrap_model(self.model)
        loss_type = getattr(model, "loss_type", None)
        if loss_type is None:
            # A class whose name names no loss (GPT2LMHeadModel) gets `loss_function` = ForCausalLM by default; it
            # normalises by items only if its forward really calls it.
            try:
                return "self.loss_function(" in inspect.getsource(type(model).forward)
            except (OSError, TypeError):
                return False
        return loss_type in {"ForCausalLM", "ForMaskedLM"}

    def depth_learning_rates(self) -> dict[int, float]:
        return plan_depth_lrs(self.get_layer_map(), self.transfer_args, self.args.learning_rate)

    def _base_schedule(self) -> tuple[str, dict]:
        if self.transfer_args.slanted_triangular_lr:
            return STLR, {}
        kind = str(getattr(self.args.lr_scheduler_type, "value", self.args.lr_scheduler_type))
        lr_kwargs = getattr(self.args, "lr_scheduler_kwargs", None) or {}
        return kind, ({k: v for k, v in lr_kwargs.items() if k == "num_cycles"} if kind == "cosine" else {})

    def _build_plan(self, model: nn.Module, total_steps: int, steps_per_epoch: int) -> TransferPlan:
        self.layer_map = self._user_layer_map
        managed = [n for n, p in model.named_parameters() if p.requires_grad]
        if not managed:
            raise ValueError("No parameter of the model requires grad: nothing to fine-tune.")
        base, base_kwargs = self._base_schedule()
        return build_plan(
            self.get_layer_map(model),
            self.transfer_args,
            managed=managed,
            total_steps=total_steps,
            steps_per_epoch=steps_per_epoch,
            learning_rate=self.args.learning_rate,
            base=base,
            warmup=self.args.warmup_steps,
            base_kwargs=base_kwargs,
        )

    # ------------------------------------------------------------------ optimizer and scheduler
    def create_optimizer(self, model=None):
        """Every managed parameter in fixed per-depth groups, frozen ones included: Trainer's own optimizer keeps
        only those requiring grad when it is built, so layers unfrozen later would never train (design notes, trap 1);
        groups are never added after the scheduler exists (trap 2) nor passed through `optimizer_cls_and_kwargs`
        (trap 11)."""
        if not self.strategy_active or self.optimizer is not None:
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        if self.optimizer_cls_and_kwargs is not None:
            optimizer_cls, optimizer_kwargs = self.optimizer_cls_and_kwargs
        else:
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        plan = self.transfer_plan
        if plan is not None:
            layer_map, depth_lrs, managed = plan.layer_map, plan.depth_lrs, plan.managed
        else:  # called outside train(): the groups need no schedule
            layer_map, depth_lrs = self.get_layer_map(opt_model), self.depth_learning_rates()
            managed = [n for n, p in opt_model.named_parameters() if p.requires_grad]
        optimizer = build_strategy_optimizer(
            opt_model,
            self.transfer_args,
            optimizer_cls,
            optimizer_kwargs,
            layer_map=layer_map,
            depth_lrs=depth_lrs,
            managed=managed,
            weight_decay=self.args.weight_decay,
            decay_parameter_names=self.get_decay_parameter_names(opt_model),
            optim_name=str(getattr(self.args.optim, "value", self.args.optim)),
        )
        if optimizer is None:  # an optimizer that builds its own groups: Trainer's path, every managed param in it
            return super().create_optimizer(model)
        self.optimizer = optimizer
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """One LR lambda per group, a pure function of the global step (resume and DDP ranks agree, trap 12)."""
        if not self.strategy_active or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        plan = self.transfer_plan
        if plan.schedule.total_steps != num_training_steps:  # auto_find_batch_size changed the batch size
            plan = self.transfer_plan = self._build_plan(self.model, num_training_steps, plan.steps_per_epoch)
            self.schedule_callback.set_plan(plan.schedule, plan.layer_map, plan.managed)
            self._bind_plateau(plan.schedule, fresh=False)
        schedule = plan.schedule
        if schedule.is_trivial and schedule.base != STLR:
            return super().create_scheduler(num_training_steps, optimizer)  # stock schedule, per-group LRs kept
        optimizer = optimizer if optimizer is not None else self.optimizer
        self.lr_scheduler = LambdaLR(
            optimizer, [group_lr_lambda(schedule, g.get("depth")) for g in optimizer.param_groups]
        )
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
        """Build the plan and run the strategies' steps before Trainer's loop; WiSE-FT after it. Every managed
        parameter requires grad when DDP wraps the model (it must register them all, trap 4); the callback freezes
        by the step from then on."""
        if not self.strategy_active:
            return super()._inner_training_loop(
                batch_size=batch_size, args=args, resume_from_checkpoint=resume_from_checkpoint, trial=trial, **kwargs
            )
        # Here the model is final: `model_init` has run and a checkpoint being resumed has been loaded.
        model = self.model
        values = self.set_initial_training_values(args, self.get_train_dataloader())
        plan = self.transfer_plan = self._build_plan(model, values[-1], max(1, values[1]))
        if self.is_world_process_zero():
            logger.warning(f"Strategy: {self.transfer_args.strategy_name}; {plan.description}.")
            logger.info(plan.layer_map.describe(lrs=plan.depth_lrs))
        # theta_0 of the model card's depth drift: the model before any strategy's own step (re-init, the probe).
        self._drift_start(model, resume_from_checkpoint)
        if resume_from_checkpoint is None:
            self._before_training(model, plan.layer_map)
        self._load_or_save_reference(model, plan.layer_map, resume_from_checkpoint)
        # Every managed parameter trainable when the model is wrapped (DDP must register them all).
        named = dict(model.named_parameters())
        for n in plan.managed:
            named[n].requires_grad_(True)
        self.schedule_callback.set_plan(plan.schedule, plan.layer_map, plan.managed)
        self._bind_plateau(plan.schedule, fresh=True)  # a resumed run's switches are restored with the state
        probe_metrics = dict(self._pending_logs)
        output = super()._inner_training_loop(
            batch_size=batch_size, args=args, resume_from_checkpoint=resume_from_checkpoint, trial=trial, **kwargs
        )
        if self.plateau_callback is not None:  # the final trainer_state.json records the switches too
            self.state.stateful_callbacks[type(self.plateau_callback).__name__] = self.plateau_callback.state()
        if probe_metrics and output.metrics is not None:
            output.metrics.update(probe_metrics)
        if self.transfer_args.wise_ft_alphas:
            self._apply_wise_ft()
        steps = [s.name for s in self.transfer_args.active_strategies if s.before_training is not None]
        note = f"theta_0 is the model before the steps of {', '.join(steps)}." if steps else None
        self._drift_end(model, plan.layer_map, note)
        return output

    def _bind_plateau(self, schedule: TransferSchedule, fresh: bool) -> None:
        if self.plateau_callback is None:
            return
        if fresh:  # a new run (or trial) starts with no recorded switch
            self.plateau_callback.reset()
        self.plateau_callback.set_schedule(schedule)

    def _load_callback_state(self) -> None:
        """Trainer's restore, and always the plateau switches: the phases of a resumed run depend on them, whatever
        ``restore_callback_states_from_checkpoint`` says (Trainer may also have replaced the callback by a copy)."""
        super()._load_callback_state()
        if self.plateau_callback is None:
            return
        callback = next(cb for cb in self.callback_handler.callbacks if isinstance(cb, PlateauPhaseCallback))
        self.plateau_callback = callback
        stored = self.state.stateful_callbacks.get(type(callback).__name__)
        if isinstance(stored, list):
            stored = stored[0] if stored else None
        if not stored:
            raise ValueError(
                "This run's phases wait for validation plateaus, but the checkpoint records no plateau switches "
                "(it was saved by a run without lp_until/unfreeze_on='plateau'): resume it with the same strategy."
            )
        callback.restore(stored)
        callback.set_schedule(self.transfer_plan.schedule)

    def _before_training(self, model: nn.Module, lm: LayerMap) -> None:
        """The strategies' steps before the first step of a fresh run (re-initialisation, the LP-FT probe)."""
        start = StartInputs(
            model=model,
            layer_map=lm,
            args=self.transfer_args,
            seed=self.args.seed,
            train_batches=lambda: self._ordered_dataloader(self.train_dataset, "train"),
            eval_batches=(lambda: self._ordered_dataloader(self.eval_dataset, "eval")) if self.eval_dataset else None,
            label_names=self._label_names(),
            progress=not self.args.disable_tqdm and self.is_local_process_zero(),
        )
        for strategy in self.transfer_args.active_strategies:
            if strategy.before_training is not None:
                strategy.before_training(start)
        probe = start.results.get("linear_probe")
        if probe is not None:
            self.probe_result = probe
            # Trainer makes a new TrainerState when the loop starts: these go into the first log and the metrics.
            self._pending_logs.update(
                {
                    "lp_probe_C": float(probe.C),
                    "lp_probe_train_accuracy": float(probe.train_accuracy),
                    "lp_probe_val_accuracy": float(probe.val_accuracy),
                    "lp_probe_seconds": float(probe.seconds + probe.extract_seconds),
                }
            )

    def _ordered_dataloader(self, dataset, description: str):
        """Batches as the trainer's own loaders build them (unused columns removed as Trainer does, its collator,
        the data set's transforms), in order and unsharded: every rank sees all examples."""
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

    def _load_or_save_reference(self, model: nn.Module, lm: LayerMap, resume_from_checkpoint) -> None:
        """The weights at the start of fine-tuning, for L2-SP and WiSE-FT. Saved beside the checkpoints so that a
        resumed run pulls toward the same weights."""
        self._reference, self._l2sp = None, None
        t = self.transfer_args
        if not t.needs_reference_weights:
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
        if t.l2sp_alpha or t.l2sp_beta:
            from .strategies.l2sp import L2SP

            self._l2sp = L2SP(
                model, lm, alpha=t.l2sp_alpha, beta=t.l2sp_beta, only_trainable=True, reference=self._reference
            )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Trainer's loss, exact under gradient accumulation for per-batch-mean losses (trap 8), plus L2-SP."""
        if not self.loss_is_scaled_for_ga:
            num_items_in_batch = None  # the model's loss is a per-batch mean; Trainer divides by the GA steps
        out = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        if self._l2sp is not None and model.training:
            penalty = self._l2sp.penalty(self.model)
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
        if self._l2sp is None:
            return torch.zeros((), device=self.args.device)
        return self._l2sp.penalty(self.model)

    def _apply_wise_ft(self) -> None:
        from .strategies.wise_ft import select_wise_alpha

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
        summary = {
            "strategy": t.strategy_name,
            "strategies": [s.name for s in t.active_strategies],
            "strategy_fields": t.strategy_dict(),
        }
        if not self.strategy_active:
            return summary
        lm = self.get_layer_map()
        plan = self.transfer_plan
        summary.update(
            {
                "layer_map": lm.to_dict(),
                "depth_learning_rates": {lm.depth_label(d): lr for d, lr in self.depth_learning_rates().items()},
                "lr_scheduler_type": self._base_schedule()[0],
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
        if self.plateau_callback is not None:
            state = self.plateau_callback.state()
            summary["plateau"] = {**state["args"], "switches": state["attributes"]["switches"],
                                  "evaluations": state["attributes"]["history"]}  # fmt: skip
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

    def run_summary(self) -> tuple[str, dict]:
        """For the model card's records: `transfer_summary` and the label of every depth."""
        summary = self.transfer_summary()
        if self.strategy_active:
            lm = self.get_layer_map()
            summary["depth_labels"] = [lm.depth_label(d) for d in range(lm.num_depths)]
        return TRANSFER_SUMMARY_FILE, summary


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
