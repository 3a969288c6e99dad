"""`hf-transfer-meta select`: rank candidate checkpoints on a labelled file or image folder, best first."""

from __future__ import annotations

import argparse
import sys

HELP = "Rank pretrained checkpoints on your data (cross-validated linear probe and LogME), best first."


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hf-transfer-meta select",
        description=HELP + " Writes selection.json and selection.md into --output_dir.",
    )
    p.add_argument("--candidates", nargs="+", required=True, help="Hub ids or local model folders to compare.")
    p.add_argument("--train_file", help="csv / tsv / json(l) / parquet file of labelled examples.")
    p.add_argument("--train_dir", help="Image folder (class/image files) instead of --train_file.")
    p.add_argument("--validation_file", help="Labelled file that scores the fine-tuned candidates (--finetune_top).")
    p.add_argument("--validation_dir", help="Image folder that scores the fine-tuned candidates.")
    p.add_argument("--column_names", nargs="+", help="Column names of a headerless csv/tsv file, in order.")
    p.add_argument("--text_column_names", nargs="+", help="One text column, or two for sentence pairs.")
    p.add_argument("--image_column_name", help="Image column (vision candidates); 'image' for --train_dir.")
    p.add_argument("--label_column_name", default="label", help="Label column (strings or integers).")
    p.add_argument("--folds", type=int, default=5, help="k of the cross-validated linear probe.")
    p.add_argument("--rank_by", default="cv_accuracy", choices=["cv_accuracy", "logme"])
    p.add_argument("--max_samples", type=int, default=None, help="Score on a seeded random subset of this many rows.")
    p.add_argument("--max_eval_samples", type=int, default=None, help="Rows of the validation data used.")
    p.add_argument("--max_length", type=int, default=128, help="Token limit of text inputs.")
    p.add_argument("--batch_size", type=int, default=32, help="Examples per forward pass of feature extraction.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--finetune_top", type=int, default=0, help="Fine-tune the best K briefly to confirm the ranking.")
    p.add_argument("--finetune_epochs", type=float, default=1.0)
    p.add_argument("--finetune_learning_rate", type=float, default=5e-5)
    p.add_argument("--finetune_batch_size", type=int, default=16)
    p.add_argument("--output_dir", required=True, help="Where selection.json and selection.md are written.")
    p.add_argument("--trust_remote_code", action="store_true")
    return p


def _load(file: str | None, folder: str | None, column_names, what: str):
    from datasets import load_dataset

    from ..data.files import load_data_files, resolve_data_files

    if folder is not None:
        from pathlib import Path

        if not Path(folder).is_dir():
            raise ValueError(f"--{what}_dir {folder}: no such folder.")
        return load_dataset("imagefolder", data_dir=folder, split="train")
    files = resolve_data_files(**{f"{what}_file": file})
    return load_data_files(files, column_names=column_names)[what]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if (args.train_file is None) == (args.train_dir is None):
        print("error: give --train_file or --train_dir (one of the two).", file=sys.stderr)
        return 2
    image_column = args.image_column_name or ("image" if args.train_dir else None)
    if (args.text_column_names is None) == (image_column is None):
        print("error: give --text_column_names (text candidates) or --image_column_name (images).", file=sys.stderr)
        return 2
    if args.finetune_top and args.validation_file is None and args.validation_dir is None:
        print(
            f"error: --finetune_top {args.finetune_top} scores the fine-tuned candidates on held-out data: give "
            "--validation_file or --validation_dir.",
            file=sys.stderr,
        )
        return 2
    try:
        train = _load(args.train_file, args.train_dir, args.column_names, "train")
        validation = None
        if args.finetune_top:
            validation = _load(args.validation_file, args.validation_dir, args.column_names, "validation")
            if args.max_eval_samples is not None and args.max_eval_samples < len(validation):
                validation = validation.select(range(args.max_eval_samples))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    import tempfile

    from transformers import TrainingArguments

    from .select import select_pretrained

    finetune_args = None
    if args.finetune_top:
        finetune_args = TrainingArguments(
            output_dir=tempfile.mkdtemp(prefix="select-finetune-"), num_train_epochs=args.finetune_epochs,
            learning_rate=args.finetune_learning_rate, per_device_train_batch_size=args.finetune_batch_size,
            save_strategy="no", report_to="none", seed=args.seed, remove_unused_columns=False,
        )  # fmt: skip
    try:
        result = select_pretrained(
            args.candidates, train, label_column=args.label_column_name, text_column_names=args.text_column_names,
            image_column=image_column if args.text_column_names is None else None, folds=args.folds,
            rank_by=args.rank_by, max_samples=args.max_samples, max_length=args.max_length,
            batch_size=args.batch_size, seed=args.seed, output_dir=args.output_dir, finetune_top=args.finetune_top,
            eval_dataset=validation, finetune_args=finetune_args, trust_remote_code=args.trust_remote_code,
        )  # fmt: skip
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(result.table())
    print(f"\nwrote {args.output_dir}/selection.json and selection.md")
    return 0 if result.best is not None else 1
