"""Do TransferTrainer's freezing strategies work under FSDP2 with bf16 mixed precision? A standalone check.

    torchrun --standalone --nproc_per_node 1 tests/scripts/fsdp2_check.py --out fsdp2_check.json
    PYTHONPATH=src torchrun --standalone --nproc_per_node 1 tests/scripts/fsdp2_check.py   # without installing

Runs a tiny BERT classifier (tests/scripts/tiny.py) through `TransferTrainer`, each run in its own Trainer. FSDP2
runs use fsdp="full_shard", fsdp_config={"version": 2, "transformer_layer_cls_to_wrap": ["BertLayer"]}, fp32 weights
and bf16=True (accelerate's MixedPrecisionPolicy: bf16 params and reductions); plain runs the same without FSDP.

History: on an H200 (torch 2.11) the plain fsdp2/unfreeze and fsdp2/lpft runs crashed at the first unfreeze (bf16
gradient assigned to an fp32 parameter: FSDP2 fixes dtypes at its lazy init from the parameters requiring grad then).
TransferScheduleCallback now runs that lazy init at train begin (callbacks._fsdp2_lazy_init), so they pass; with
--emulate-fsdp-on-cpu the same runs pass on CPU. The default wrap policy still fails inside accelerate.

  fsdp2/unfreeze, fsdp2/lpft   gradual unfreezing every 3 steps (+ layer-wise LR decay); LP-FT (lp_mode="epochs")
  fsdp2/unfreeze_mask          gradual unfreezing with freeze_mode="mask" (nothing ever has requires_grad=False)
  fsdp2/*+eager_init           the same with FSDP2's lazy init forced at train begin, while every managed parameter
                               is still trainable (see EagerFSDPInit: the workaround under test)
  plain/unfreeze, plain/lpft   no FSDP, same device, bf16 autocast: the reference
  fsdp2/unfreeze_bf16_loaded+eager_init, fsdp2/unfreeze_bf16_user_frozen+eager_init
                               design notes trap 6: the model loaded in bf16; and also with its embeddings frozen by
                               the user before the Trainer (accelerate upcasts only trainable parameters to fp32)
  fsdp2/lpft_default_wrap+eager_init
                               the default wrap policy (the model's _no_split_modules, BertEmbeddings included)

For every phase of the schedule it gathers the full state dict to CPU at the phase's first and last step and records
which parameters changed, whether every parameter of a frozen depth stayed bit-identical, whether frozen parameters
carried gradients at the optimizer step, and the mean loss; for every run whether the loss went down and any
exception (with the traceback's end). Prints a compact JSON summary and writes it to --out (default
$OUT/fsdp2_check.json when OUT is set, else ./fsdp2_check.json).

Without a GPU it runs on CPU with gloo (`--cpu` forces that). accelerate turns FSDP on only for accelerators, so on
CPU the "fsdp2" runs silently train without FSDP (recorded: fsdp_applied=false, ok=false) unless
`--emulate-fsdp-on-cpu` installs the FSDP plugin by hand (fully_shard over gloo: a development aid). Not a pytest
test: it needs a process group (torchrun).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import transformers  # noqa: E402
from tiny import VOCAB, TinyData, tiny_bert  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from hf_transfer_meta import TransferTrainer, TransferTrainingArguments  # noqa: E402

NUM_EXAMPLES = 64
BATCH = 8  # 8 steps an epoch
EPOCHS = 3  # 24 optimizer steps
LR = 3e-3

STRATEGIES = {
    # head from step 0, + block 2 from step 3, + block 1 from step 6, + embeddings from step 9
    "unfreeze": dict(gradual_unfreezing=True, unfreeze_every=3, unfreeze_unit="step", layer_lr_decay=0.8),
    # head alone for 4 steps (half an epoch), then everything
    "lpft": dict(lp_mode="epochs", lp_epochs=0.5),
    "unfreeze_mask": dict(gradual_unfreezing=True, unfreeze_every=3, unfreeze_unit="step", freeze_mode="mask"),
}

RUNS = [
    # (name, fsdp, strategy, model variant, eager FSDP2 lazy init while every managed parameter is trainable)
    # Expected to pass first, expected failures last (a failure inside FSDP's backward could leave state behind).
    ("plain/unfreeze", False, "unfreeze", "fp32", False),
    ("plain/lpft", False, "lpft", "fp32", False),
    ("fsdp2/unfreeze_mask", True, "unfreeze_mask", "fp32", False),
    ("fsdp2/unfreeze+eager_init", True, "unfreeze", "fp32", True),
    ("fsdp2/lpft+eager_init", True, "lpft", "fp32", True),
    ("fsdp2/unfreeze_bf16_loaded+eager_init", True, "unfreeze", "bf16", True),
    ("fsdp2/unfreeze_bf16_user_frozen+eager_init", True, "unfreeze", "bf16_user_frozen", True),
    ("fsdp2/unfreeze", True, "unfreeze", "fp32", False),
    ("fsdp2/lpft", True, "lpft", "fp32", False),
    ("fsdp2/lpft_default_wrap+eager_init", True, "lpft", "fp32_default_wrap", True),
]

FSDP_CONFIG = {"version": 2, "reshard_after_forward": True, "transformer_layer_cls_to_wrap": ["BertLayer"]}


def versions() -> dict:
    out = {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__}
    for mod in ("accelerate", "peft", "datasets", "safetensors"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception as e:  # noqa: BLE001 - only reporting
            out[mod] = f"not importable: {type(e).__name__}"
    out["cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        out["cuda"] = torch.version.cuda
        out["gpu"] = torch.cuda.get_device_name(0)
        out["bf16_supported"] = torch.cuda.is_bf16_supported()
    return out


def is_dtensor(t) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch < 2.5
        from torch.distributed._tensor import DTensor
    return isinstance(t, DTensor)


def full_params(model: torch.nn.Module, names: list[str]) -> tuple[dict[str, torch.Tensor], str]:
    """Every named parameter, unsharded, on CPU. A collective under FSDP: every rank must call it."""
    sharded = any(is_dtensor(p) for p in model.parameters())
    if sharded:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        how = "get_model_state_dict(full_state_dict, cpu_offload)"
        if not sd:  # non-zero ranks get nothing with cpu_offload; gather by hand there
            sd = {n: p.full_tensor() for n, p in model.named_parameters()}
            how = "DTensor.full_tensor"
    else:
        sd = dict(model.named_parameters())
        how = "named_parameters"
    missing = [n for n in names if n not in sd]
    if missing:
        raise KeyError(f"full state dict lacks {missing[:3]} (keys like {list(sd)[:3]})")
    return {n: sd[n].detach().to("cpu", copy=True) for n in names}, how


class Recorder(TrainerCallback):
    """Snapshots at phase boundaries, gradients of frozen parameters at each optimizer step, compute dtypes."""

    def __init__(self):
        self.trainer: TransferTrainer | None = None
        self.snapshots: dict[int, dict[str, torch.Tensor]] = {}
        self.gather_method = None
        self.frozen_with_grad: dict[int, int] = {}  # step -> number of frozen params holding a grad (pre-drop)
        self.frozen_with_nonzero_grad: dict[int, int] = {}
        self.boundaries: set[int] = set()
        self.wrapped_info: dict = {}

    def _snap(self, step: int) -> None:
        names = list(self.trainer.layer_map.depth_of)
        self.snapshots[step], self.gather_method = full_params(self.trainer.model, names)

    def on_train_begin(self, args, state, control, **kwargs):
        t = self.trainer
        sched = t.transfer_schedule
        self.boundaries = {p.start for p in sched.phases} | {sched.total_steps}
        m = t.model
        params = list(m.named_parameters())
        try:
            from torch.distributed.fsdp import FSDPModule

            fsdp_units = [n or "<root>" for n, mod in m.named_modules() if isinstance(mod, FSDPModule)]
        except ImportError:
            fsdp_units = []
        plugin = getattr(t.accelerator.state, "fsdp_plugin", None)
        self.wrapped_info = {
            "model_class": type(m).__name__,
            "model_wrapped_class": type(t.model_wrapped).__name__,
            "fsdp_units": fsdp_units,
            "params_are_dtensors": sum(is_dtensor(p) for _, p in params),
            "num_params": len(params),
            "param_dtypes": sorted({str(p.dtype) for _, p in params}),
            "fsdp_plugin_version": getattr(plugin, "fsdp_version", None) if plugin else None,
            "mixed_precision_policy": repr(getattr(plugin, "mixed_precision_policy", None)) if plugin else None,
            "accelerator_mixed_precision": t.accelerator.mixed_precision,
            "optimizer_groups": [
                {"name": g.get("name"), "depth": g.get("depth"), "n": len(g["params"]), "lr0": g.get("initial_lr")}
                for g in t.optimizer.param_groups
            ],
        }
        self._snap(0)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        t = self.trainer
        depths = t.transfer_schedule.trainable_depths(state.global_step)
        with_grad = nonzero = 0
        for n, p in t.model.named_parameters():
            if t.layer_map.depth_of[n] in depths or p.grad is None:
                continue
            with_grad += 1
            g = p.grad.full_tensor() if is_dtensor(p.grad) else p.grad
            nonzero += int(bool(g.abs().sum() > 0))
        self.frozen_with_grad[state.global_step] = with_grad
        self.frozen_with_nonzero_grad[state.global_step] = nonzero

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step in self.boundaries:
            self._snap(state.global_step)


class EagerFSDPInit(TrainerCallback):
    """Workaround under test: FSDP2 fixes each parameter group's original and reduce dtypes at its lazy init (the
    first forward) from the parameters that require grad *then*. A group whose parameters are all frozen at the first
    step gets None and later, once unfrozen, its bf16-reduced gradients are assigned to fp32 parameters unconverted.
    Running the lazy init at train begin, while TransferTrainer still has every managed parameter trainable (before
    the schedule callback freezes anything), fixes the dtypes for the whole run."""

    def __init__(self):
        self.trainer = None
        self.done = None

    def on_train_begin(self, args, state, control, **kwargs):
        from torch.distributed.fsdp import FSDPModule

        model = self.trainer.model
        if isinstance(model, FSDPModule):
            model._get_fsdp_state()._lazy_init()
            self.done = True


class DtypeProbe:
    """The dtype of the classifier's weight and output in the first training forward."""

    def __init__(self, module: torch.nn.Module):
        self.seen: dict | None = None
        self.handle = module.register_forward_hook(self)

    def __call__(self, module, inputs, output):
        if self.seen is None and module.training:
            self.seen = {
                "weight": str(module.weight.dtype),
                "input": str(inputs[0].dtype),
                "output": str(output.dtype),
            }


def make_args(
    out_dir: str, fsdp: bool, strategy: str, cpu: bool, default_wrap: bool = False
) -> TransferTrainingArguments:
    extra = {}
    if cpu:
        extra.update(use_cpu=True, ddp_backend="gloo")
    if fsdp:
        cfg = dict(FSDP_CONFIG)
        if default_wrap:  # the model's _no_split_modules: BertEmbeddings and BertLayer
            cfg.pop("transformer_layer_cls_to_wrap")
        extra.update(fsdp="full_shard", fsdp_config=cfg)
    return TransferTrainingArguments(
        output_dir=out_dir, per_device_train_batch_size=BATCH, num_train_epochs=EPOCHS, learning_rate=LR,
        weight_decay=0.01, warmup_steps=0, lr_scheduler_type="linear", save_strategy="no", logging_steps=1,
        report_to="none", seed=0, disable_tqdm=True, dataloader_num_workers=0, bf16=True,
        **extra, **STRATEGIES[strategy],
    )  # fmt: skip


def reset_accelerate_state() -> None:
    """Trainer builds a new Accelerator per run, but AcceleratorState is a process-wide singleton that keeps the
    first run's FSDP plugin; clear it (not the process group) so every run gets its own configuration."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


def phase_report(trainer: TransferTrainer, rec: Recorder, losses: list[float]) -> list[dict]:
    lm, sched = trainer.layer_map, trainer.transfer_schedule
    out = []
    for i, phase in enumerate(sched.phases):
        start, end = sched.phase_bounds(i)
        end = min(end, sched.total_steps)
        entry = {"phase": phase.name, "steps": [start, end], "trainable_depths": sorted(phase.depths)}
        if start not in rec.snapshots or end not in rec.snapshots:
            entry["error"] = f"no snapshot at {start} or {end} (have {sorted(rec.snapshots)})"
            out.append(entry)
            continue
        a, b = rec.snapshots[start], rec.snapshots[end]
        changed = [n for n in a if not torch.equal(a[n], b[n])]
        managed = set(trainer._managed or a)  # user-frozen parameters are not managed: they never train
        trainable = {n for n in a if lm.depth_of[n] in phase.depths and n in managed}
        frozen = [n for n in a if n not in trainable]
        steps = range(start, end)
        entry.update(
            {
                "n_params": len(a),
                "n_trainable": len(trainable),
                "n_changed": len(changed),
                "depths_changed": sorted({lm.depth_of[n] for n in changed}),
                "frozen_bit_identical": all(torch.equal(a[n], b[n]) for n in frozen),
                "frozen_changed": [n for n in changed if n not in trainable][:5],
                "trainable_unchanged": sorted(trainable - set(changed))[:5],
                "max_abs_change_frozen": max((float((a[n] - b[n]).abs().max()) for n in frozen), default=0.0),
                "frozen_with_grad_max": max((rec.frozen_with_grad.get(s, 0) for s in steps), default=0),
                "frozen_with_nonzero_grad_max": max(
                    (rec.frozen_with_nonzero_grad.get(s, 0) for s in steps), default=0
                ),
                "mean_loss": _mean(losses[start:end]),
            }
        )
        # Every trainable depth moved (single tensors may not: bf16 weights round small updates away) and nothing
        # frozen moved by a single bit.
        expected = sorted({lm.depth_of[n] for n in trainable})
        entry["ok"] = entry["frozen_bit_identical"] and entry["depths_changed"] == expected
        out.append(entry)
    return out


def _mean(xs):
    return round(sum(xs) / len(xs), 5) if xs else None


def force_fsdp_on_cpu(trainer: TransferTrainer) -> bool:
    """Development aid only: accelerate never turns FSDP on for MULTI_CPU, so to exercise this script's FSDP2 path
    without a GPU, install the FSDP plugin the arguments describe by hand (gloo + fully_shard on CPU)."""
    from accelerate import FullyShardedDataParallelPlugin
    from accelerate.utils import DistributedType

    state = trainer.accelerator.state
    plugin = FullyShardedDataParallelPlugin(**trainer.args.fsdp_plugin_args)
    if state.mixed_precision != "no":
        plugin.set_mixed_precision(state.mixed_precision)
    state.fsdp_plugin = plugin
    state.distributed_type = DistributedType.FSDP
    trainer.is_fsdp_enabled = True
    return True


def run_one(
    name: str,
    fsdp: bool,
    strategy: str,
    variant: str,
    eager: bool,
    cpu: bool,
    tmp: str,
    emulate_cpu_fsdp: bool = False,
) -> tuple[dict, dict | None]:
    t0 = time.time()
    result: dict = {"run": name, "fsdp2": fsdp, "strategy": strategy, "model_dtype": variant}
    final = None
    trainer = None
    try:
        reset_accelerate_state()
        args = make_args(
            os.path.join(tmp, name.replace("/", "_").replace("+", "_")),
            fsdp,
            strategy,
            cpu,
            default_wrap=variant.endswith("default_wrap"),
        )
        result["fsdp_plugin_args"] = (
            {k: str(v) for k, v in (getattr(args, "fsdp_plugin_args", None) or {}).items()} if fsdp else None
        )
        model = tiny_bert(seed=0)
        if variant.startswith("bf16"):
            model = model.to(torch.bfloat16)
        if variant == "bf16_user_frozen":
            for p in model.bert.embeddings.parameters():
                p.requires_grad_(False)
        probe = DtypeProbe(model.classifier)
        rec, eager_cb = Recorder(), EagerFSDPInit()
        callbacks = ([eager_cb] if eager else []) + [rec]  # both before TransferTrainer's schedule callback
        trainer = TransferTrainer(model=model, args=args, train_dataset=TinyData(NUM_EXAMPLES), callbacks=callbacks)
        rec.trainer = eager_cb.trainer = trainer
        result["eager_fsdp_init"] = eager
        if fsdp and emulate_cpu_fsdp:
            result["emulated_fsdp_on_cpu"] = force_fsdp_on_cpu(trainer)
        trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        result.update(rec.wrapped_info)
        result["eager_fsdp_init_done"] = eager_cb.done
        result["gather"] = rec.gather_method
        result["compute_dtypes_first_forward"] = probe.seen
        result["world_size"] = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        result["device"] = str(args.device)
        result["global_step"] = trainer.state.global_step
        result["losses"] = [round(x, 4) for x in losses]
        result["loss_first3"], result["loss_last3"] = _mean(losses[:3]), _mean(losses[-3:])
        result["loss_went_down"] = bool(losses) and _mean(losses[-3:]) < _mean(losses[:3])
        result["phases"] = phase_report(trainer, rec, losses)
        result["all_phases_ok"] = all(p.get("ok") for p in result["phases"])
        final = rec.snapshots.get(trainer.state.global_step)
        result["fsdp_applied"] = bool(rec.wrapped_info.get("params_are_dtensors"))
        result["ok"] = result["all_phases_ok"] and result["loss_went_down"] and result["fsdp_applied"] == fsdp
        probe.handle.remove()
    except Exception as e:  # noqa: BLE001 - the check records failures and goes on
        result["ok"] = False
        result["exception"] = f"{type(e).__name__}: {e}"[:2000]
        result["traceback_tail"] = traceback.format_exc()[-3000:]
        result["failed_at_global_step"] = trainer.state.global_step if trainer is not None else None
    finally:
        del trainer
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
    result["seconds"] = round(time.time() - t0, 2)
    return result, final


def check_arguments() -> dict:
    """What the FSDP2 arguments turn into, and the argument checks that must hold with or without a GPU."""
    out = {}
    a = TransferTrainingArguments(
        output_dir="/tmp/fsdp2_check_args", fsdp="full_shard", fsdp_config=dict(FSDP_CONFIG), bf16=True,
        report_to="none", use_cpu=not torch.cuda.is_available(), **STRATEGIES["unfreeze"],
    )  # fmt: skip
    out["fsdp_plugin_args"] = {k: str(v) for k, v in (getattr(a, "fsdp_plugin_args", None) or {}).items()}
    out["fsdp_version_is_2"] = (getattr(a, "fsdp_plugin_args", None) or {}).get("fsdp_version") == 2
    out["strategy_name"] = a.strategy_name
    for label, kwargs in {
        "gradual_unfreezing+lp_mode rejected": dict(gradual_unfreezing=True, lp_mode="epochs"),
        "freeze_mode=bogus rejected": dict(freeze_mode="bogus"),
        "find_unused=False with freezing rejected": dict(lp_mode="epochs", ddp_find_unused_parameters=False),
    }.items():
        try:
            TransferTrainingArguments(output_dir="/tmp/fsdp2_check_args", report_to="none", **kwargs)
            out[label] = False
        except ValueError:
            out[label] = True
    return out


def weight_diff(a: dict | None, b: dict | None) -> float | None:
    if a is None or b is None:
        return None
    return max(float((a[n].float() - b[n].float()).abs().max()) for n in a)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_out = os.path.join(os.environ["OUT"], "fsdp2_check.json") if os.environ.get("OUT") else "fsdp2_check.json"
    ap.add_argument("--out", default=default_out)
    ap.add_argument("--cpu", action="store_true", help="run on CPU with gloo even if a GPU is there")
    ap.add_argument("--only", action="append", help="run only these runs (names as in RUNS, repeatable)")
    ap.add_argument("--tmp", default="/tmp/fsdp2_check")
    ap.add_argument(
        "--emulate-fsdp-on-cpu", action="store_true",
        help="on CPU, install accelerate's FSDP plugin by hand (accelerate enables FSDP only on accelerators)",
    )  # fmt: skip
    opts = ap.parse_args()
    if "WORLD_SIZE" not in os.environ:
        raise SystemExit(
            "Launch under torchrun (FSDP needs a process group): torchrun --standalone --nproc_per_node 1 ..."
        )
    cpu = opts.cpu or not torch.cuda.is_available()
    shim = not hasattr(TransferTrainer, "loss_is_scaled_for_ga")
    if shim:  # older transformers (5.17) lack the class attribute that TransferTrainer.__init__ reads
        TransferTrainer.loss_is_scaled_for_ga = None
    rank = int(os.environ.get("RANK", "0"))
    t0 = time.time()
    summary: dict = {"versions": versions(), "on_cpu": cpu, "vocab": VOCAB, "loss_is_scaled_for_ga_shim": shim}
    if rank == 0:
        print(json.dumps({"versions": summary["versions"]}), flush=True)
    try:
        summary["arguments"] = check_arguments()
    except Exception as e:  # noqa: BLE001
        summary["arguments"] = {"exception": f"{type(e).__name__}: {e}"[:2000]}
    runs, finals = [], {}
    for name, fsdp, strategy, variant, eager in RUNS:
        if opts.only and name not in opts.only:
            continue
        res, final = run_one(
            name, fsdp, strategy, variant, eager, cpu, opts.tmp, emulate_cpu_fsdp=cpu and opts.emulate_fsdp_on_cpu
        )
        runs.append(res)
        finals[name] = final
        if rank == 0:
            brief = {k: res.get(k) for k in ("run", "ok", "loss_first3", "loss_last3", "all_phases_ok", "seconds")}
            if "exception" in res:
                brief["exception"] = res["exception"][:300]
                brief["failed_at_global_step"] = res.get("failed_at_global_step")
            print(json.dumps(brief), flush=True)
    summary["runs"] = runs
    summary["fsdp2_vs_plain_max_abs_weight_diff"] = {
        f"{f} vs {p}": weight_diff(finals.get(f), finals.get(p))
        for f, p in [
            ("fsdp2/unfreeze", "plain/unfreeze"),
            ("fsdp2/unfreeze+eager_init", "plain/unfreeze"),
            ("fsdp2/lpft", "plain/lpft"),
            ("fsdp2/lpft+eager_init", "plain/lpft"),
        ]
    }
    summary["seconds"] = round(time.time() - t0, 1)
    if rank == 0:
        compact = {
            "versions": summary["versions"],
            "on_cpu": cpu,
            "loss_is_scaled_for_ga_shim": shim,
            "fsdp_version_is_2": summary["arguments"].get("fsdp_version_is_2"),
            "runs": {
                r["run"]: {
                    "ok": r.get("ok"),
                    "fsdp_applied": r.get("fsdp_applied"),
                    "exception": r.get("exception", "")[:300] or None,
                    "failed_at_global_step": r.get("failed_at_global_step"),
                    "fsdp_units": len(r.get("fsdp_units") or []) or None,
                    "dtensor_params": r.get("params_are_dtensors"),
                    "compute": r.get("compute_dtypes_first_forward"),
                    "loss": [r.get("loss_first3"), r.get("loss_last3")],
                    "phases": [
                        [
                            p["phase"],
                            p.get("depths_changed"),
                            p.get("frozen_bit_identical"),
                            p.get("frozen_with_grad_max"),
                        ]
                        for p in r.get("phases", [])
                    ],
                }
                for r in runs
            },
            "fsdp2_vs_plain_max_abs_weight_diff": summary["fsdp2_vs_plain_max_abs_weight_diff"],
            "seconds": summary["seconds"],
        }
        print("SUMMARY " + json.dumps(compact), flush=True)
        os.makedirs(os.path.dirname(os.path.abspath(opts.out)), exist_ok=True)
        with open(opts.out, "w") as f:
            json.dump(summary, f, indent=1)
        print(f"wrote {opts.out}", flush=True)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
