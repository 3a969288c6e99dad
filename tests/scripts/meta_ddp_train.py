"""Meta-train a tiny Conv4 on digits episodes with second-order MAML and Meta-SGD, as one process or as every rank of a
CPU DDP run, with the same global meta-batch.

    torchrun --standalone --nproc_per_node 2 meta_ddp_train.py --result-dir OUT    # 2 episodes per rank and step
    python meta_ddp_train.py --result-dir OUT                                      # 4 episodes in one process

``meta_batch_size=4`` sets the per-device batch (4 / processes). For each algorithm, every rank writes to
OUT/<algorithm>/: `rank<r>_init` and `rank<r>_final` (.safetensors: the model's parameters, and Meta-SGD's learning
rates as `algorithm.*`), and `rank<r>.json`: the world size, the episode indices each optimizer step used on this
rank, the norm of this rank's own meta-gradient before the all-reduce at each step, and the logged losses.

Under torchrun (WORLD_SIZE > 1) the script fails unless training really ran as that many processes.
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from hf_transfer_meta.meta import (  # noqa: E402
    Conv4Config,
    Conv4ForImageClassification,
    EpisodeCollator,
    MetaTrainer,
    MetaTrainingArguments,
    load_digits_dataset,
)
from hf_transfer_meta.meta.functional import unwrap_model  # noqa: E402

torch.set_num_threads(1)

STEPS = 3
META_BATCH = 4
ALGORITHMS = ("maml", "metasgd")


class IndexedCollator(EpisodeCollator):
    """The default collation, keeping each episode's dataset index so that the run can say which episodes it used."""

    def collate_episode(self, episode):
        return {**super().collate_episode(episode), "index": int(episode["index"])}


class RecordingMetaTrainer(MetaTrainer):
    """Records the episodes of every micro-batch, and the norm of this rank's gradient before the all-reduce."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: list[list[int]] = []
        self.local_grad_norms: list[float] = []

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self.seen.append([t["index"] for t in inputs["tasks"]])
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def _all_reduce_gradients(self, model) -> None:
        params = [*unwrap_model(model).parameters(), *self.algorithm.parameters()]
        grads = [p.grad.reshape(-1) for p in params if p.grad is not None]
        self.local_grad_norms.append(torch.cat(grads).norm().item())
        super()._all_reduce_gradients(model)


def tiny_conv4(seed: int = 0) -> Conv4ForImageClassification:
    torch.manual_seed(seed)
    return Conv4ForImageClassification(
        Conv4Config(num_channels=1, image_size=8, hidden_size=8, num_blocks=2, num_labels=3)
    )


def weights(trainer: MetaTrainer) -> dict[str, torch.Tensor]:
    state = {n: p.detach().cpu().clone() for n, p in unwrap_model(trainer.model).named_parameters()}
    state.update({f"algorithm.{n}": p.detach().cpu().clone() for n, p in trainer.algorithm.named_parameters()})
    return state


def run(algorithm: str, result_dir: str) -> None:
    out = os.path.join(result_dir, algorithm)
    os.makedirs(out, exist_ok=True)
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    # accelerate fails when a backend is named in a plain single process, so the one-process reference names none.
    backend = {"ddp_backend": "gloo"} if launched > 1 else {}
    digits = load_digits_dataset()
    train = digits.select(np.flatnonzero(np.asarray(digits.with_format(None)["label"]) < 6))
    args = MetaTrainingArguments(
        output_dir=os.path.join(out, "trainer"), algorithm=algorithm, n_way=3, k_shot=1, n_query=2,
        meta_batch_size=META_BATCH, inner_lr=0.4, max_steps=STEPS, optim="sgd", learning_rate=0.1, max_grad_norm=0.0,
        weight_decay=0.0, save_strategy="no", logging_steps=1, report_to="none", use_cpu=True, seed=0,
        disable_tqdm=True, dataloader_num_workers=0, **backend,
    )  # fmt: skip
    rank = args.process_index
    trainer = RecordingMetaTrainer(model=tiny_conv4(), args=args, train_dataset=train, data_collator=IndexedCollator())
    save_file(weights(trainer), os.path.join(out, f"rank{rank}_init.safetensors"))
    trainer.train()

    dist_world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    if dist_world != launched or args.world_size != launched:
        raise SystemExit(
            f"Launched as {launched} processes, but MetaTrainingArguments.world_size is {args.world_size} "
            f"(torch.distributed world size {dist_world}): each process trained alone. Pass ddp_backend='gloo'."
        )
    record = {
        "world_size": dist_world,
        "args_world_size": args.world_size,
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "train_episodes": len(trainer.train_dataset),
        "wrapped_in_ddp": isinstance(trainer.model_wrapped, DistributedDataParallel),
        "second_order": bool(trainer.algorithm.second_order),
        "global_step": trainer.state.global_step,
        "seen": trainer.seen,
        "local_grad_norms": trainer.local_grad_norms,
        "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
    }
    save_file(weights(trainer), os.path.join(out, f"rank{rank}_final.safetensors"))
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(record, f)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--result-dir", required=True)
    opts = ap.parse_args()
    for algorithm in ALGORITHMS:
        run(algorithm, opts.result_dir)


if __name__ == "__main__":
    main()
