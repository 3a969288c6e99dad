"""Train a tiny BERT with a transfer strategy, checkpointing every 2 steps; optionally die or resume.

    python resume_train.py --strategy lpft --output-dir OUT --result RESULT [--kill-after-step 4 | --resume]

`--kill-after-step N` sends SIGKILL to this process right after checkpoint-N is written (no clean-up of any kind, as
a preempted job). `--resume` continues from the last checkpoint in OUT. RESULT.safetensors gets the final weights,
RESULT.json what the run saw: the step it started at, which depths were trainable at its first step, the logged
losses and which depths moved from their initial weights.
"""

from __future__ import annotations

import argparse
import json

from tiny import STRATEGIES, KillAfterSave, TinyData, save_weights, tiny_bert
from transformers import TrainerCallback

from hf_transfer_meta import TransferTrainer, TransferTrainingArguments


class FirstStep(TrainerCallback):
    """Records the global step and the trainable depths when the first step of this process begins."""

    def __init__(self, trainer_ref):
        self.trainer_ref = trainer_ref
        self.seen = None

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if self.seen is None:
            lm = self.trainer_ref[0].layer_map
            # The schedule callback runs after this one: what it applied at train begin is still in place.
            depths = sorted({lm.depth_of[n] for n, p in model.named_parameters() if p.requires_grad})
            self.seen = {"start_step": state.global_step, "trainable_depths": depths}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--strategy", choices=sorted(STRATEGIES), required=True)
    ap.add_argument("--output-dir", required=True)
    ap.add_argument("--result", required=True)
    ap.add_argument("--kill-after-step", type=int)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--dropout", type=float, default=0.1)
    opts = ap.parse_args()

    args = TransferTrainingArguments(
        output_dir=opts.output_dir, per_device_train_batch_size=4, num_train_epochs=2, learning_rate=1e-3,
        weight_decay=0.01, lr_scheduler_type="linear", warmup_steps=0.25, save_strategy="steps", save_steps=2,
        logging_steps=1, report_to="none", use_cpu=True, seed=0, disable_tqdm=True, dataloader_num_workers=0,
        **STRATEGIES[opts.strategy],
    )  # fmt: skip
    model = tiny_bert(seed=0, dropout=opts.dropout)
    ref: list = []
    first = FirstStep(ref)
    callbacks = [first] + ([KillAfterSave(opts.kill_after_step)] if opts.kill_after_step else [])
    trainer = TransferTrainer(model=model, args=args, train_dataset=TinyData(), callbacks=callbacks)
    ref.append(trainer)
    trainer.train(resume_from_checkpoint=True if opts.resume else None)

    save_weights(trainer.model, opts.result + ".safetensors")
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    initial = dict(tiny_bert(seed=0).named_parameters())
    lm = trainer.layer_map
    moved = sorted({lm.depth_of[n] for n, p in trainer.model.named_parameters() if not p.detach().equal(initial[n])})
    record = {**first.seen, "global_step": trainer.state.global_step, "losses": losses, "moved_depths": moved}
    with open(opts.result + ".json", "w") as f:
        json.dump(record, f)


if __name__ == "__main__":
    main()
