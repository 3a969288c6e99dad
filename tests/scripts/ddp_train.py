"""Train a tiny BERT with each transfer strategy, as one process or as every rank of a CPU DDP run.

    torchrun --standalone --nproc_per_node 2 ddp_train.py --result-dir OUT --per-device-batch 4
    python ddp_train.py --result-dir OUT --per-device-batch 8      # the same global batch in one process

For each strategy, every rank writes to OUT/<strategy>/: `rank<r>_init`, `rank<r>_step<k>` (after optimizer step k,
mid-phase) and `rank<r>_final` weights (.safetensors), and `rank<r>.json`: the world size it ran in, whether the
model was wrapped in DistributedDataParallel and with which find_unused_parameters, the losses it logged, the
depth of every parameter.

Under torchrun (WORLD_SIZE > 1) the script fails unless training really ran as that many processes: without
`use_cpu=True, ddp_backend="gloo"` every process silently trains alone.
"""

from __future__ import annotations

import argparse
import json
import os

import torch
from tiny import STRATEGIES, TinyData, save_weights, tiny_bert
from torch.nn.parallel import DistributedDataParallel
from transformers import TrainerCallback

from hf_transfer_meta import TransferTrainer, TransferTrainingArguments

NUM_EXAMPLES = 64  # 16 optimizer steps over 2 epochs at a global batch of 8
SNAPSHOT_STEP = {"lpft": 4, "unfreeze": 4}  # mid-phase: LP (steps 0-5), head + block 2 (steps 3-5)


class Snapshot(TrainerCallback):
    def __init__(self, step: int, path: str):
        self.step, self.path = step, path

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            save_weights(model, self.path)


def run(strategy: str, result_dir: str, batch: int) -> None:
    out = os.path.join(result_dir, strategy)
    os.makedirs(out, exist_ok=True)
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    # accelerate 1.15 fails ("Default process group has not been initialized") when a backend is named in a plain
    # single process, so the one-process reference names none.
    backend = {"ddp_backend": "gloo"} if launched > 1 else {}
    args = TransferTrainingArguments(
        output_dir=os.path.join(out, "trainer"), per_device_train_batch_size=batch, num_train_epochs=2,
        learning_rate=1e-3, weight_decay=0.01, warmup_steps=0.25, save_strategy="no", logging_steps=1,
        report_to="none", use_cpu=True, seed=0, disable_tqdm=True, dataloader_num_workers=0,
        **backend, **STRATEGIES[strategy],
    )  # fmt: skip
    rank = args.process_index
    model = tiny_bert(seed=0)
    save_weights(model, os.path.join(out, f"rank{rank}_init.safetensors"))
    snap = Snapshot(
        SNAPSHOT_STEP[strategy], os.path.join(out, f"rank{rank}_step{SNAPSHOT_STEP[strategy]}.safetensors")
    )
    trainer = TransferTrainer(model=model, args=args, train_dataset=TinyData(NUM_EXAMPLES), callbacks=[snap])
    trainer.train()

    dist_world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    if dist_world != launched or args.world_size != launched:
        raise SystemExit(
            f"Launched as {launched} processes, but TrainingArguments.world_size is {args.world_size} (torch.distributed"
            f" world size {dist_world}): each process trained alone. Pass use_cpu=True, ddp_backend='gloo'."
        )
    wrapped = trainer.model_wrapped
    record = {
        "world_size": dist_world,
        "args_world_size": args.world_size,
        "ddp_backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
        "ddp_find_unused_parameters_arg": args.ddp_find_unused_parameters,
        "wrapped_in_ddp": isinstance(wrapped, DistributedDataParallel),
        "ddp_find_unused_parameters": getattr(wrapped, "find_unused_parameters", None),
        "global_step": trainer.state.global_step,
        "depth_of": trainer.layer_map.depth_of,
        "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
    }
    save_weights(trainer.model, os.path.join(out, f"rank{rank}_final.safetensors"))
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(record, f)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--result-dir", required=True)
    ap.add_argument("--per-device-batch", type=int, required=True)
    ap.add_argument("--strategy", action="append", choices=sorted(STRATEGIES))
    opts = ap.parse_args()
    torch.set_num_threads(1)
    for strategy in opts.strategy or sorted(STRATEGIES):
        run(strategy, opts.result_dir, opts.per_device_batch)


if __name__ == "__main__":
    main()
