"""Callbacks that make a `TransferSchedule` happen: which depths train at each step, frozen parts kept frozen.

They work on their own with a stock `transformers.Trainer` as long as the optimizer holds every parameter the
schedule will ever train (Trainer builds its optimizer from the parameters that require grad at the start, so a
model frozen beforehand would never unfreeze: the callback refuses that and says to use `TransferTrainer`).
`TransferTrainer` adds per-depth LRs, LR restarts per phase, the logistic probe of LP-FT and the rest.

Schedules are pure functions of `state.global_step`: a resumed run re-applies the right phase in `on_train_begin`
without stored callback state.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from torch import nn
from transformers import TrainerCallback

from ..model_utils import is_peft_model, unwrap_model
from .layer_map import LayerMap
from .schedules import Phase, TransferSchedule
from .strategies.gradual_unfreezing import plan_gradual_unfreezing
from .strategies.lp_ft import lp_ft_phases
from .strategies.surgical import AutoRGNCallback

logger = logging.getLogger(__name__)

__all__ = [
    "TransferScheduleCallback",
    "GradualUnfreezingCallback",
    "LPFTCallback",
    "SurgicalFineTuningCallback",
    "AutoRGNCallback",
]


class TransferScheduleCallback(TrainerCallback):
    """Freezes and unfreezes depths of the model by the global step, following a `TransferSchedule`.

    Args:
        schedule: the schedule; if None, `build_phases` is called at train begin (subclasses).
        layer_map: the model's layer map (default: `LayerMap.from_model(model)` at train begin).
        freeze_mode: "requires_grad" (frozen parameters get requires_grad=False: no backward through a frozen
            backbone) or "mask" (everything keeps requires_grad=True, frozen gradients are dropped before the step).
        frozen_eval_mode: keep modules whose parameters are all frozen in eval mode (no dropout, BatchNorm running
            statistics unchanged). Trainer calls `model.train()` every step, so this is re-applied by a forward
            pre-hook.
        managed: names of the parameters the schedule controls. Default: every parameter of the model (a PEFT
            model: those requiring grad at train begin, so that its frozen base weights stay frozen). The optimizer
            must hold them all; a stock Trainer's lacks those frozen before it was built, which is refused.
    """

    def __init__(
        self,
        schedule: TransferSchedule | None = None,
        *,
        layer_map: LayerMap | None = None,
        freeze_mode: str = "requires_grad",
        frozen_eval_mode: bool = True,
        managed: Sequence[str] | None = None,
    ):
        self.schedule = schedule
        self.layer_map = layer_map
        self.freeze_mode = freeze_mode
        self.frozen_eval_mode = frozen_eval_mode
        self.managed = set(managed) if managed is not None else None
        self._params: dict[str, nn.Parameter] = {}
        self._applied: frozenset[int] | None = None
        self._eval_modules: list[nn.Module] = []
        self._hook = None
        self._model: nn.Module | None = None
        self.description: str | None = None

    def set_plan(self, schedule: TransferSchedule, layer_map: LayerMap, managed: Sequence[str]) -> None:
        """Called by the trainer once, before the first step, with the run's plan (the callback builds none)."""
        self.schedule, self.layer_map, self.managed = schedule, layer_map, set(managed)

    # ------------------------------------------------------------------ schedule
    def build_phases(self, layer_map: LayerMap, max_steps: int, steps_per_epoch: int) -> list[Phase]:
        """Subclasses: the phases of the strategy (and may set `self.description`). Default: every depth trains."""
        return [Phase(0, frozenset(range(layer_map.num_depths)), name="all_depths")]

    def ensure_schedule(
        self, model: nn.Module, max_steps: int, steps_per_epoch: int, **schedule_kwargs
    ) -> TransferSchedule:
        if self.layer_map is None:
            self.layer_map = LayerMap.from_model(model)
        if self.schedule is None:
            phases = self.build_phases(self.layer_map, max_steps, max(1, steps_per_epoch))
            self.schedule = TransferSchedule(phases, max_steps, self.layer_map.num_depths, **schedule_kwargs)
        return self.schedule

    # ------------------------------------------------------------------ mechanics
    def _bind(self, model: nn.Module, optimizer) -> None:
        named = dict(model.named_parameters())
        if self.managed is None:
            is_peft = is_peft_model(model) or hasattr(unwrap_model(model), "peft_config")
            self.managed = {n for n, p in named.items() if p.requires_grad or not is_peft}
        self._params = {n: named[n] for n in self.managed}
        missing_depth = [n for n in self._params if n not in self.layer_map.depth_of]
        if missing_depth:
            raise KeyError(f"Parameters {missing_depth[:3]} have no depth in the layer map: build it on this model.")
        if optimizer is not None:
            in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
            lacking = [n for n, p in self._params.items() if id(p) not in in_optimizer]
            if lacking:
                raise RuntimeError(
                    f"The optimizer does not hold {len(lacking)} parameter(s) this schedule will train (e.g. "
                    f"{lacking[:3]}): layers unfrozen later would never train. A stock Trainer builds its optimizer "
                    "from the parameters that require grad when it starts, so a model frozen beforehand lacks them; "
                    "a user optimizer may hold only some. Use hf_transfer_meta.TransferTrainer (it puts every "
                    "parameter in the optimizer), unfreeze the model before creating the Trainer, give the optimizer "
                    "every parameter, or pass `managed=` with the parameters the schedule may train."
                )
        if self._hook is None or self._model is not model:
            if self._hook is not None:
                self._hook.remove()
            self._model = model
            self._hook = model.register_forward_pre_hook(self._keep_frozen_in_eval)

    def apply(self, step: int) -> frozenset[int]:
        """Make the parameters of the depths that train at `step` trainable and the others frozen."""
        depths = self.schedule.trainable_depths(step)
        if depths == self._applied:
            return depths
        for name, p in self._params.items():
            trains = self.layer_map.depth_of[name] in depths
            p.requires_grad_(trains or self.freeze_mode == "mask")
            if not trains:
                p.grad = None
        self._applied = depths
        self._eval_modules = self._frozen_modules(depths) if self.frozen_eval_mode else []
        frozen = sorted(set(range(self.layer_map.num_depths)) - depths)
        lm = self.layer_map
        logger.warning(
            f"step {step}: training {len(depths)} of {lm.num_depths} depths "
            f"({', '.join(lm.depth_label(d) for d in sorted(depths))})"
            + (f"; frozen: {', '.join(lm.depth_label(d) for d in frozen)}" if frozen else "")
        )
        return depths

    def _frozen_modules(self, depths: frozenset[int]) -> list[nn.Module]:
        """The outermost modules all of whose parameters are frozen (or never trained)."""
        root = self._model
        depth_by_id = {id(p): self.layer_map.depth_of.get(n) for n, p in root.named_parameters()}
        managed_ids = {id(p) for p in self._params.values()}
        out = []

        def frozen(module: nn.Module) -> bool | None:
            ids = [id(p) for p in module.parameters()]
            if not ids:
                return None
            return all(i not in managed_ids or depth_by_id.get(i) not in depths for i in ids)

        def visit(module: nn.Module) -> None:
            state = frozen(module)
            if state is True:
                out.append(module)
                return
            for child in module.children():
                visit(child)

        visit(root)
        return out

    def _keep_frozen_in_eval(self, module, args):
        if module.training:
            for m in self._eval_modules:
                m.eval()

    def drop_frozen_grads(self) -> None:
        if self._applied is None:
            return
        for name, p in self._params.items():
            if self.layer_map.depth_of[name] not in self._applied:
                p.grad = None

    def release(self) -> None:
        """Leave the model as found: everything managed trainable again, hook removed."""
        for p in self._params.values():
            p.requires_grad_(True)
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self._applied = None

    # ------------------------------------------------------------------ TrainerCallback hooks
    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        steps_per_epoch = math.ceil(state.max_steps / max(1e-9, args.num_train_epochs)) if args.max_steps <= 0 else 0
        if steps_per_epoch == 0:
            dl = kwargs.get("train_dataloader")
            steps_per_epoch = math.ceil(len(dl) / args.gradient_accumulation_steps) if dl is not None else 1
        built_here = self.schedule is None
        self.ensure_schedule(model, state.max_steps, steps_per_epoch)
        if built_here and self.description and state.is_world_process_zero:
            logger.warning(self.description)
        world = getattr(args, "world_size", 1)
        if (
            world > 1
            and self.freeze_mode == "requires_grad"
            and args.ddp_find_unused_parameters is not True
            and len(self.schedule.phases) + (0 if self._all(self.schedule.phases[0]) else 1) > 1
        ):
            raise RuntimeError(
                "Freezing parameters under DDP needs ddp_find_unused_parameters=True (otherwise DDP fails with "
                "'Expected to have finished reduction' or ranks silently diverge). Set it in TrainingArguments, use "
                "freeze_mode='mask', or use TransferTrainer, which sets it."
            )
        self._bind(model, optimizer)
        _fsdp2_lazy_init(model)
        self._applied = None
        self.apply(state.global_step)

    def _all(self, phase: Phase) -> bool:
        return len(phase.depths) == self.layer_map.num_depths

    def on_step_begin(self, args, state, control, **kwargs):
        self.apply(state.global_step)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.drop_frozen_grads()

    def on_train_end(self, args, state, control, **kwargs):
        self.release()


class GradualUnfreezingCallback(TransferScheduleCallback):
    """ULMFiT's gradual unfreezing (Howard & Ruder 2018): the head alone, then one more depth from the top every
    `every` steps (or epochs, with `unit="epoch"`). With ``every=None`` the unfreezing is spread over the first
    ``fraction`` of the run; an ``every`` too long for the run is refused unless ``allow_partial``."""

    def __init__(
        self,
        every: float | None = None,
        unit: str = "epoch",
        fraction: float = 0.5,
        allow_partial: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if unit not in ("epoch", "step"):
            raise ValueError(f"unit={unit!r} is invalid: use 'epoch' or 'step'.")
        if every is not None and not every > 0:
            raise ValueError(f"every={every!r} is invalid: it must be > 0, or None to spread the unfreezing.")
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction={fraction!r} is invalid: it must be in (0, 1].")
        self.every, self.unit, self.fraction, self.allow_partial = every, unit, fraction, allow_partial

    def build_phases(self, layer_map, max_steps, steps_per_epoch):
        phases, self.description = plan_gradual_unfreezing(
            layer_map.num_depths,
            max_steps,
            steps_per_epoch,
            every=self.every,
            unit=self.unit,
            fraction=self.fraction,
            allow_partial=self.allow_partial,
        )
        return phases


class LPFTCallback(TransferScheduleCallback):
    """LP-FT (Kumar et al. 2022) by epochs: the head alone for `lp_epochs` (or `lp_steps`), then everything."""

    def __init__(self, lp_epochs: float = 1.0, lp_steps: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.lp_epochs, self.lp_steps = lp_epochs, lp_steps

    def build_phases(self, layer_map, max_steps, steps_per_epoch):
        lp = self.lp_steps if self.lp_steps is not None else round(self.lp_epochs * steps_per_epoch)
        return lp_ft_phases(layer_map.num_depths, lp)


class SurgicalFineTuningCallback(TransferScheduleCallback):
    """Surgical fine-tuning (Lee et al. 2022): only the chosen depths train ("first", "middle", "last", ints)."""

    def __init__(self, blocks: Sequence[str | int] = ("first",), **kwargs):
        super().__init__(**kwargs)
        self.blocks = list(blocks)

    def build_phases(self, layer_map, max_steps, steps_per_epoch):
        return [Phase(0, frozenset(layer_map.resolve(self.blocks)), name="surgical")]


def _fsdp2_lazy_init(model) -> None:
    """Run FSDP2's lazy initialisation now, while every managed parameter still requires grad.

    FSDP2 fixes each parameter group's original/reduce dtypes at its first forward from the parameters requiring grad
    *then*; a group frozen at that moment keeps none, and once unfrozen its bf16-reduced gradients are assigned to the
    fp32 parameters unconverted ("attempting to assign a gradient with dtype BFloat16 to a tensor with grad_dtype
    Float"): gradual unfreezing and LP-FT would crash at their first unfreeze (tests/integration/test_fsdp2.py).
    """
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - torch without FSDP2
        return
    if isinstance(model, FSDPModule):
        model._get_fsdp_state()._lazy_init()
