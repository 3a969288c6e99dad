"""Train a tiny BERT whose phases change at validation plateaus; optionally die after a checkpoint, or resume.

    python plateau_train.py --strategy lpft --result OUT/run [--kill-after-step 10 | --resume]
    torchrun --standalone --nproc_per_node 2 plateau_train.py --strategy lpft --result OUT/ddp --per-device-batch 4

The watched metric is scripted by the step of the evaluation (`SCORES`), so the test knows at which evaluation the
patience rule must fire. Under DDP rank 1 reads another script (always improving): only the broadcast of rank 0's
decision keeps the ranks together. `RESULT_rank<r>.json` records, for every optimizer step, the depths that required
grad and every group's LR when the step began, plus the schedule's phase starts and the recorded switches;
`RESULT_rank<r>.safetensors` holds the final weights.
"""

from __future__ import annotations

import argparse
import json
import os

import torch
from tiny import KillAfterSave, TinyData, save_weights, tiny_bert
from transformers import TrainerCallback

from hf_transfer_meta import TransferTrainer, TransferTrainingArguments

NUM_EXAMPLES = 64  # 8 optimizer steps per epoch at a global batch of 8; 16 in all
# Depths of the 2-layer BERT: 0 embeddings, 1-2 blocks, 3 head. Evaluations every 2 steps.
STRATEGIES = {
    # The head alone until the score stops improving for 2 evaluations (at most 1.5 epochs = 12 steps).
    "lpft": dict(lp_mode="epochs", lp_epochs=1.5, lp_until="plateau", phase_patience=2),
    # One more depth at each plateau (patience 1); at most 5 steps per phase.
    "unfreeze": dict(
        gradual_unfreezing=True, unfreeze_every=5, unfreeze_unit="step", unfreeze_on="plateau", phase_patience=1
    ),
}
SCORES = {
    # best 0.6 at step 4, not beaten at 6 and 8: fine-tuning begins at step 8.
    "lpft": {2: 0.5, 4: 0.6, 6: 0.6, 8: 0.55, 10: 0.7, 12: 0.8, 14: 0.9, 16: 1.0},
    # plateau at 4 (block 2 joins), best 0.7 at 6 then not beaten at 8 (block 1 joins); the embeddings join by the
    # cap, 5 steps later, at 13.
    "unfreeze": {2: 0.5, 4: 0.5, 6: 0.7, 8: 0.7, 10: 0.8, 12: 0.9, 14: 1.0, 16: 1.1},
}
EXPECTED_STARTS = {"lpft": [0, 8], "unfreeze": [0, 4, 8, 13]}


class Record(TrainerCallback):
    """Depths requiring grad and the LR of every group when each step begins (added after the schedule callback)."""

    def __init__(self, layer_map):
        self.layer_map, self.steps = layer_map, {}

    def on_step_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        depths = sorted({self.layer_map.depth_of[n] for n, p in model.named_parameters() if p.requires_grad})
        lrs = {str(g.get("depth")): g["lr"] for g in optimizer.param_groups}
        self.steps[state.global_step] = {"trainable_depths": depths, "lrs": lrs}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--strategy", choices=sorted(STRATEGIES), required=True)
    ap.add_argument("--result", required=True)
    ap.add_argument("--per-device-batch", type=int, default=8)
    ap.add_argument("--kill-after-step", type=int)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--dropout", type=float, default=0.1)
    opts = ap.parse_args()

    launched = int(os.environ.get("WORLD_SIZE", "1"))
    backend = {"ddp_backend": "gloo"} if launched > 1 else {}
    args = TransferTrainingArguments(
        output_dir=opts.result + "_out", per_device_train_batch_size=opts.per_device_batch,
        per_device_eval_batch_size=8, num_train_epochs=2, learning_rate=1e-3, weight_decay=0.01,
        lr_scheduler_type="linear", eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=2,
        logging_steps=1, report_to="none", use_cpu=True, seed=0, disable_tqdm=True, dataloader_num_workers=0,
        phase_metric="score", **backend, **STRATEGIES[opts.strategy],
    )  # fmt: skip
    rank = args.process_index
    ref: list = []

    def compute_metrics(prediction):
        step = ref[0].state.global_step
        scripted = SCORES[opts.strategy] if rank == 0 else {s: float(s) for s in SCORES[opts.strategy]}
        return {"score": scripted[step]}

    callbacks = [KillAfterSave(opts.kill_after_step)] if opts.kill_after_step else []
    trainer = TransferTrainer(
        model=tiny_bert(seed=0, dropout=opts.dropout), args=args, train_dataset=TinyData(NUM_EXAMPLES),
        eval_dataset=TinyData(16, seed=1), compute_metrics=compute_metrics, callbacks=callbacks,
    )  # fmt: skip
    ref.append(trainer)
    record = Record(trainer.get_layer_map())
    trainer.add_callback(record)
    trainer.train(resume_from_checkpoint=True if opts.resume else None)

    schedule = trainer.transfer_schedule
    dist_world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    if dist_world != launched:
        raise SystemExit(f"Launched as {launched} processes but trained as {dist_world}.")
    save_weights(trainer.model, f"{opts.result}_rank{rank}.safetensors")
    out = {
        "world_size": dist_world,
        "global_step": trainer.state.global_step,
        "starts": schedule.starts(),
        "switches": {str(k): v for k, v in schedule.switches.items()},
        "phases": schedule.describe(),
        "steps": record.steps,
        "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
        "stored": trainer.state.stateful_callbacks.get("PlateauPhaseCallback"),
    }
    with open(f"{opts.result}_rank{rank}.json", "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
