"""Device run (the lent GPU has no `datasets`/pyarrow, so no MetaTrainer there): the library's Conv4 + MAML / ProtoNet
objects in a plain Adam loop, on the project's Omniglot protocol exported by export_omniglot.py (same pixels, same 600
fixed test episodes as recipes/meta/run_few_shot.py), scored by the library's episode evaluation. Training episodes:
5 (or N) classes from small1's 136 characters x 4 rotations, rows drawn without replacement, labels 0..N-1 class by
class (as EpisodeDataset). It imports only the torch-only parts of the library (algorithms, models, evaluation).

The runs of benchmarks/README.md:

    python omniglot_gpu.py --export omniglot_export.npz --algorithm maml --seconds 420 --schedule linear_time \
        --meta_batch_size 32 --n_query 15 --inner_lr 0.4 --eval_inner_steps 3 --k_shot_sweep 1 5 --out maml
    python omniglot_gpu.py --export omniglot_export.npz --algorithm protonet --seconds 420 --schedule linear_time \
        --n_way 60 --n_query 5 --k_shot_sweep 1 5 --out protonet
    # early stopping on a held-out small1 alphabet (140 s, 30- and 60-way side by side)
    python omniglot_gpu.py --export omniglot_export.npz --algorithm protonet --seconds 140 --schedule linear_time \
        --n_way 30 --n_query 5 --val_alphabet Balinese --val_every 1000 --k_shot_sweep 1 5 --out p30
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hf_transfer_meta.meta.algorithms import MAML, ProtoNet
from hf_transfer_meta.meta.evaluation import evaluate_episodes
from hf_transfer_meta.meta.models import Conv4, Conv4Backbone

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import environment  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--algorithm", choices=["maml", "protonet"], required=True)
p.add_argument("--n_way", type=int, default=5)
p.add_argument("--k_shot", type=int, default=1)
p.add_argument("--n_query", type=int, default=15)
p.add_argument("--meta_batch_size", type=int, default=32)
p.add_argument("--max_steps", type=int, default=100000)
p.add_argument("--seconds", type=float, default=300)
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--schedule", choices=["constant", "linear", "linear_time"], default="constant")
p.add_argument("--inner_lr", type=float, default=0.4)
p.add_argument("--inner_steps", type=int, default=1)
p.add_argument("--eval_inner_steps", type=int, default=3)
p.add_argument("--k_shot_sweep", "--eval_k_shots", type=int, nargs="+", default=[1], help="K of the test episodes")
p.add_argument("--eval_episodes", type=int, default=600)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--val_alphabet", default=None, help="hold this small1 alphabet out of training; early-stop on it")
p.add_argument("--val_every", type=int, default=1000)
p.add_argument("--val_episodes", type=int, default=300)
p.add_argument("--out", required=True)
p.add_argument("--export", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "omniglot_export.npz"))
a = p.parse_args()
os.makedirs(a.out, exist_ok=True)
dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
torch.manual_seed(a.seed)
data = np.load(a.export)


def rotations(x):  # [4, n, 1, 28, 28]: the four quarter turns of every image
    x = torch.from_numpy(x).to(dev)
    return torch.stack([torch.rot90(x, k, dims=(-2, -1)) for k in range(4)])


train_rot, test_rot = rotations(data["train_x"]), rotations(data["test_x"])
labels = data["train_y"]
train_mask = np.ones(len(labels), bool) if a.val_alphabet is None else data["train_alphabet"] != a.val_alphabet
assert a.val_alphabet is None or (~train_mask).any(), f"no alphabet {a.val_alphabet}"
classes = np.unique(labels[train_mask])
rows_of = [np.flatnonzero(labels == c) for c in classes]
rng = np.random.default_rng(a.seed)


def episode(images, support_rows, query_rows, rots):
    n, k, q = len(support_rows), len(support_rows[0]), len(query_rows[0])
    r = torch.as_tensor(np.repeat(rots, k), device=dev)
    s = images[r, torch.as_tensor(np.concatenate(support_rows), device=dev)]
    r = torch.as_tensor(np.repeat(rots, q), device=dev)
    qx = images[r, torch.as_tensor(np.concatenate(query_rows), device=dev)]
    return {
        "support": {"pixel_values": s},
        "support_labels": torch.arange(n, device=dev).repeat_interleave(k),
        "query": {"pixel_values": qx},
        "query_labels": torch.arange(n, device=dev).repeat_interleave(q),
    }


def train_episode():
    pool = rng.choice(len(classes) * 4, size=a.n_way, replace=False)
    cls, rot = pool // 4, pool % 4
    rows = [rng.choice(rows_of[c], size=a.k_shot + a.n_query, replace=False) for c in cls]
    return episode(train_rot, [r[: a.k_shot] for r in rows], [r[a.k_shot :] for r in rows], rot)


val_plans = []
if a.val_alphabet is not None:  # fixed validation episodes: 5-way 1-shot 15-query, rotations x4, seeded
    vrng = np.random.default_rng(12345)
    vclasses = np.unique(labels[~train_mask])
    vrows = [np.flatnonzero(labels == c) for c in vclasses]
    for _ in range(a.val_episodes):
        pool = vrng.choice(len(vclasses) * 4, size=5, replace=False)
        rows = [vrng.choice(vrows[c], size=16, replace=False) for c in pool // 4]
        val_plans.append(([r[:1] for r in rows], [r[1:] for r in rows], pool % 4))


def evaluate(images, plans):
    """The library's episode evaluation over ``(support rows, query rows, rotations)`` plans."""
    return evaluate_episodes(algo, model, ([episode(images, *plan)] for plan in plans), steps=a.eval_inner_steps)


if a.algorithm == "maml":
    model = Conv4(num_labels=a.n_way, downsample="stride", norm="batch_ops").to(dev)
    algo = MAML(inner_lr=a.inner_lr, inner_steps=a.inner_steps, eval_steps=a.eval_inner_steps)
    per_step = a.meta_batch_size
else:
    model = Conv4Backbone().to(dev)
    algo = ProtoNet()
    per_step = 1
opt = torch.optim.Adam(model.parameters(), lr=a.lr)
sched = torch.optim.lr_scheduler.LambdaLR(
    opt, (lambda s: max(0.0, 1 - s / a.max_steps)) if a.schedule == "linear" else (lambda s: 1.0)
)
tasks = [train_episode() for _ in range(per_step)]
if a.algorithm == "maml":
    print("vmap over tasks:", algo.use_vmap(model, tasks), flush=True)
log, start, step, acc_sum, loss_sum = [], time.time(), 0, 0.0, 0.0
val_log, best = [], (-1.0, 0, None)
while step < a.max_steps and time.time() - start < a.seconds:
    if a.schedule == "linear_time":  # linear decay to 0 over the wall-clock budget
        for g in opt.param_groups:
            g["lr"] = a.lr * max(0.0, 1 - (time.time() - start) / a.seconds)
    tasks = [train_episode() for _ in range(per_step)]
    out = algo.meta_loss(model, tasks)
    opt.zero_grad(set_to_none=True)
    out.loss.backward()
    opt.step()
    sched.step()
    step += 1
    loss_sum += out.loss.item()
    acc_sum += float(out.metrics.get("query_accuracy", float("nan")))
    if step % 250 == 0:
        rec = {"step": step, "s": round(time.time() - start, 1), "loss": loss_sum / 250, "acc": acc_sum / 250}
        log.append(rec)
        print(json.dumps(rec), flush=True)
        loss_sum = acc_sum = 0.0
    if val_plans and step % a.val_every == 0:
        v = evaluate(train_rot, val_plans).scores.mean().item()
        val_log.append({"step": step, "val_accuracy": v})
        if v > best[0]:
            best = (v, step, {k: t.detach().clone() for k, t in model.state_dict().items()})
        print(json.dumps(val_log[-1]), flush=True)
train_s = time.time() - start
if val_plans:
    v = evaluate(train_rot, val_plans).scores.mean().item()
    val_log.append({"step": step, "val_accuracy": v})
    if v > best[0]:
        best = (v, step, None)
    if best[2] is not None:
        model.load_state_dict(best[2])
    print(f"best validation {100 * best[0]:.2f} at step {best[1]} of {step}", flush=True)
results = {
    "args": vars(a),
    "steps": step,
    "train_seconds": train_s,
    "device": str(torch.cuda.get_device_name()) if dev.type == "cuda" else "cpu",
    "environment": environment(device=dev),
    "log": log,
    "val_log": val_log,
    "best_val": {"accuracy": best[0], "step": best[1]} if val_plans else None,
}
for k in a.k_shot_sweep:
    t0 = time.time()
    plans = [tuple(data[f"eval{k}_{part}"][i] for part in ("support", "query", "rot")) for i in range(a.eval_episodes)]
    metrics = evaluate(test_rot, plans).metrics("test")
    m, ci = metrics["test_accuracy"], metrics["test_accuracy_ci95"]
    results[f"test_5way_{k}shot"] = {"accuracy": m, "ci95": ci, "episodes": metrics["test_episodes"]}
    results[f"test_5way_{k}shot"]["seconds"] = time.time() - t0
    if "test_pre_adaptation_accuracy" in metrics:
        results[f"test_5way_{k}shot"]["pre_adaptation_accuracy"] = metrics["test_pre_adaptation_accuracy"]
    print(f"test 5-way {k}-shot: {100 * m:.2f} +- {100 * ci:.2f} ({metrics['test_episodes']} episodes)", flush=True)
torch.save(model.state_dict(), os.path.join(a.out, "model.pt"))
with open(os.path.join(a.out, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
print(json.dumps({k: v for k, v in results.items() if k != "log"}), flush=True)
