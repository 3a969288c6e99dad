#!/usr/bin/env python
"""Fine-tune any `AutoModelForImageClassification` with `TransferTrainer`'s strategies (linear probe, full FT, LP-FT,
surgical FT, LLRD, ...) and report in-distribution and corrupted (CIFAR-10-C style) accuracy side by side.

transformers' `examples/pytorch/image-classification/run_image_classification.py` conventions: `ModelArguments`,
`DataTrainingArguments` and `TransferTrainingArguments` through `HfArgumentParser` (or one `.json` file), the same
data options (`--dataset_name`, `--train_dir/--validation_dir` image folders, or `--train_file/--validation_file/
--test_file` in parquet/csv/json with an image column), `with_transform` + `remove_unused_columns=False`, and the
standard ending. Transforms use the model's image processor (no torchvision needed). Examples (measured numbers:
README.md beside this file)::

    python -m hf_transfer_meta.vision.convert --model efficientnet-lite0 --output_dir models/efficientnet-lite0
    python recipes/image-classification/run_image_classification.py \
        --model_name_or_path models/efficientnet-lite0 --ignore_mismatched_sizes \
        --train_file ../shared/data/cifar10/train.parquet --test_file ../shared/data/cifar10/test.parquet \
        --image_column_name img --max_train_samples 2000 --max_eval_samples 500 --max_predict_samples 1000 \
        --lp_mode logistic --learning_rate 1e-4 --num_train_epochs 2 \
        --do_train --do_eval --do_predict --eval_corruptions gaussian_noise contrast --corruption_severity 3 \
        --output_dir runs/effl0-cifar10-lpft
"""

from __future__ import annotations

import io
import logging
import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
import transformers
from datasets import load_dataset
from PIL import Image, ImageOps
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    HfArgumentParser,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

import hf_transfer_meta.vision  # noqa: F401  (registers EfficientNet-Lite and the CIFAR ResNets with the Auto classes)
from hf_transfer_meta import TransferTrainer, TransferTrainingArguments
from hf_transfer_meta.vision.corruptions import CORRUPTIONS, corrupt_dataset

logger = logging.getLogger(__name__)

FILE_BUILDERS = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json"}


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default="google/vit-base-patch16-224-in21k",
        metadata={
            "help": "Hub id or local folder of an image-classification model (e.g. one written by "
            "`python -m hf_transfer_meta.vision.convert`)."
        },
    )
    config_name: str | None = field(default=None, metadata={"help": "Config name or path, if not the model's."})
    config_overrides: str | None = field(
        default=None,
        metadata={
            "help": "Override config fields of the loaded model, e.g. 'batch_norm_momentum=0.1' (TF-ported "
            "EfficientNets keep BatchNorm statistics with momentum 0.01, too slow for a short fine-tune)."
        },
    )
    image_processor_name: str | None = field(default=None, metadata={"help": "Image processor, if not the model's."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where to store Hub downloads."})
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the model."})
    token: str | None = field(default=None, metadata={"help": "Hub token (or `hf auth login`)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run a model's own code from the Hub."})
    ignore_mismatched_sizes: bool = field(
        default=False, metadata={"help": "Replace a head of another size (e.g. an ImageNet head) by a new one."}
    )


@dataclass
class DataTrainingArguments:
    dataset_name: str | None = field(default=None, metadata={"help": "A Hub data set (needs network access)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Its configuration."})
    train_dir: str | None = field(default=None, metadata={"help": "Image folder of the training data (class/img)."})
    validation_dir: str | None = field(default=None, metadata={"help": "Image folder of the validation data."})
    test_dir: str | None = field(default=None, metadata={"help": "Image folder of the test data."})
    train_file: str | None = field(default=None, metadata={"help": "parquet/csv/json file of the training data."})
    validation_file: str | None = field(default=None, metadata={"help": "parquet/csv/json file, validation."})
    test_file: str | None = field(default=None, metadata={"help": "parquet/csv/json file, test (--do_predict)."})
    train_val_split: float = field(
        default=0.15, metadata={"help": "Fraction of the training data held out as validation when none is given."}
    )
    image_column_name: str = field(default="image", metadata={"help": "Column of the images."})
    label_column_name: str = field(default="label", metadata={"help": "Column of the labels."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use a seeded random subset this large."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use a seeded random subset this large."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Use a seeded random subset this large."})
    subset_seed: int = field(
        default=0,
        metadata={
            "help": "Seed of the --max_*_samples subsets and of the validation split (files may be sorted by "
            "class, so subsets are random, not the first rows); fixed apart from --seed so that runs with "
            "different seeds see the same data."
        },
    )
    random_flip: bool = field(default=True, metadata={"help": "Random horizontal flips of training images."})
    eval_corruptions: list[str] | None = field(
        default=None,
        metadata={
            "help": f"Also evaluate on corrupted copies (Hendrycks & Dietterich 2019): {', '.join(CORRUPTIONS)}."
        },
    )
    corruption_severity: int = field(default=3, metadata={"help": "Severity 1..5 of --eval_corruptions."})
    corruption_seed: int = field(default=0, metadata={"help": "Seed of the corruption noise (row i: [seed, i])."})
    corruption_splits: list[str] = field(
        default_factory=lambda: ["eval", "predict"],
        metadata={"help": "Which evaluations also run corrupted: eval (validation set), predict (test set)."},
    )

    def __post_init__(self):
        for c in self.eval_corruptions or []:
            if c not in CORRUPTIONS:
                raise ValueError(f"--eval_corruptions {c}: choose from {', '.join(CORRUPTIONS)}.")
        if self.corruption_severity not in (1, 2, 3, 4, 5):
            raise ValueError(f"--corruption_severity {self.corruption_severity}: use 1, 2, 3, 4 or 5.")
        for s in self.corruption_splits:
            if s not in ("eval", "predict"):
                raise ValueError(f"--corruption_splits {s}: use eval and/or predict.")
        if (
            self.dataset_name is None
            and self.train_dir is None
            and self.train_file is None
            and self.validation_dir is None
            and self.validation_file is None
            and self.test_file is None
            and self.test_dir is None
        ):
            raise ValueError(
                "No data: pass --dataset_name, image folders (--train_dir/--validation_dir) or files "
                "(--train_file/--validation_file/--test_file)."
            )


# ---------------------------------------------------------------------------------------------------- data helpers
def load_splits(data_args: DataTrainingArguments, model_args: ModelArguments) -> tuple[dict, dict]:
    """{split: Dataset} and {split: where it came from}; every named file or folder is checked first."""
    sources: dict[str, tuple[str, str]] = {}  # split -> (kind, path)
    for split, folder, file in (
        ("train", data_args.train_dir, data_args.train_file),
        ("validation", data_args.validation_dir, data_args.validation_file),
        ("test", data_args.test_dir, data_args.test_file),
    ):
        if folder is not None and file is not None:
            raise ValueError(f"Give either a {split} folder or a {split} file, not both ({folder}, {file}).")
        if folder is not None:
            if not Path(folder).is_dir():
                raise FileNotFoundError(f"The {split} image folder {folder} does not exist.")
            sources[split] = ("imagefolder", folder)
        elif file is not None:
            if not Path(file).is_file():
                raise FileNotFoundError(f"The {split} file {file} does not exist.")
            suffix = Path(file).suffix.lower()
            if suffix not in FILE_BUILDERS:
                raise ValueError(f"{file}: use a .parquet, .csv, .json or .jsonl file (got {suffix!r}).")
            sources[split] = (FILE_BUILDERS[suffix], file)

    splits: dict[str, datasets.Dataset] = {}
    where: dict[str, str] = {}
    if data_args.dataset_name is not None:
        hub = load_dataset(
            data_args.dataset_name,
            data_args.dataset_config_name,
            cache_dir=model_args.cache_dir,
            token=model_args.token,
        )
        splits.update(hub)
        where.update({s: f"{data_args.dataset_name} ({s})" for s in hub})
    for split, (builder, path) in sources.items():
        if builder == "imagefolder":
            splits[split] = load_dataset("imagefolder", data_dir=path, split="train", cache_dir=model_args.cache_dir)
        else:
            splits[split] = load_dataset(builder, data_files=path, split="train", cache_dir=model_args.cache_dir)
        where[split] = path
    return splits, where


def check_columns(ds: datasets.Dataset, where: str, data_args: DataTrainingArguments) -> None:
    for what, column in (("image", data_args.image_column_name), ("label", data_args.label_column_name)):
        if column not in ds.column_names:
            flag = f"--{what}_column_name"
            raise ValueError(
                f"{where} has no {what} column {column!r}; its columns are {ds.column_names}. Pass {flag}."
            )


def seeded_subset(ds: datasets.Dataset, n: int | None, seed: int) -> tuple[datasets.Dataset, list[int]]:
    """A seeded random subset of ``n`` rows (all rows, in order, when ``n`` is None) and their row numbers."""
    if n is None or n >= len(ds):
        return ds, list(range(len(ds)))
    rows = np.random.default_rng(seed).permutation(len(ds))[:n].tolist()
    return ds.select(rows), rows


def check_images(ds: datasets.Dataset, rows: list[int], where: str, column: str) -> None:
    """Decode every image before training, so a bad one stops the run with its file and row named."""
    raw = ds.cast_column(column, datasets.Image(decode=False))
    for i, value in enumerate(raw[column]):
        path = value.get("path") if isinstance(value, dict) else None
        try:
            data = value.get("bytes") if isinstance(value, dict) else None
            with Image.open(io.BytesIO(data) if data is not None else path) as im:
                im.load()
        except Exception as err:  # PIL raises several types for bad data
            name = f" ({path})" if path else ""
            raise ValueError(f"{where}, row {rows[i]}{name}: the image cannot be decoded ({err}).") from None


def label_names(splits: dict, column: str) -> list[str]:
    feature = next(iter(splits.values())).features[column]
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    values = sorted({v for ds in splits.values() for v in ds[column]})
    if all(isinstance(v, (int, np.integer)) for v in values) and min(values) >= 0:
        return [str(i) for i in range(max(values) + 1)]  # integer labels keep their values as ids
    return [str(v) for v in values]


def prepare_data(data_args, model_args, training_args) -> tuple[dict, dict]:
    """The splits the run needs, subsets taken, columns and every image checked."""
    splits, where = load_splits(data_args, model_args)
    file_rows: dict[str, list[int]] = {}  # rows of a split in the file it came from (a held-out split: a subset)
    if training_args.do_train and "train" not in splits:
        raise ValueError("--do_train needs training data: --train_dir, --train_file or --dataset_name.")
    if training_args.do_eval and "validation" not in splits:
        if "train" in splits and data_args.train_val_split > 0:
            order = np.random.default_rng(data_args.subset_seed).permutation(len(splits["train"]))
            n_val = max(1, int(round(data_args.train_val_split * len(order))))
            file_rows["validation"], file_rows["train"] = (
                sorted(order[:n_val].tolist()),
                sorted(order[n_val:].tolist()),
            )
            splits["validation"] = splits["train"].select(file_rows["validation"])
            splits["train"] = splits["train"].select(file_rows["train"])
            where["validation"] = f"{where['train']} (held-out {data_args.train_val_split:.0%})"
            where["train"] = f"{where['train']} (the other {1 - data_args.train_val_split:.0%})"
        else:
            raise ValueError(
                "--do_eval needs validation data: --validation_dir, --validation_file or --train_val_split."
            )
    if training_args.do_predict and "test" not in splits:
        raise ValueError("--do_predict needs test data: --test_dir, --test_file or a dataset with a test split.")
    wanted = {
        "train": (training_args.do_train, data_args.max_train_samples),
        "validation": (training_args.do_eval, data_args.max_eval_samples),
        "test": (training_args.do_predict, data_args.max_predict_samples),
    }
    for split in list(splits):
        if split not in wanted or not wanted[split][0]:
            del splits[split]
            continue
        check_columns(splits[split], where[split], data_args)
        column = data_args.image_column_name
        if not isinstance(splits[split].features[column], datasets.Image):
            try:
                splits[split] = splits[split].cast_column(column, datasets.Image())
            except Exception as err:
                raise ValueError(f"{where[split]}: column {column!r} does not hold images ({err}).") from None
        splits[split], rows = seeded_subset(splits[split], wanted[split][1], data_args.subset_seed)
        if split in file_rows:
            rows = [file_rows[split][r] for r in rows]
        check_images(splits[split], rows, where[split], column)
    if not splits:
        raise ValueError("Nothing to do: pass --do_train, --do_eval and/or --do_predict.")

    return splits, where


def main():
    # ------------------------------------------------------------------------------------------ parse arguments
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, TransferTrainingArguments))
    if len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        model_args, data_args, training_args = parser.parse_json_file(json_file=os.path.abspath(sys.argv[1]))
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses()

    # ------------------------------------------------------------------------------------------ setup logging
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    if training_args.should_log:
        transformers.utils.logging.set_verbosity_info()
    log_level = training_args.get_process_log_level()
    logger.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()
    logger.info(f"Training/evaluation parameters {training_args}")
    logger.info(f"Strategy: {training_args.strategy_name or 'none (stock Trainer)'}")

    # ------------------------------------------------------------------------------------------ last checkpoint
    last_checkpoint = None
    if os.path.isdir(training_args.output_dir) and training_args.do_train and not training_args.resume_from_checkpoint:
        last_checkpoint = get_last_checkpoint(training_args.output_dir)
        if last_checkpoint is not None:
            logger.info(f"Checkpoint detected, resuming training at {last_checkpoint}.")
    set_seed(training_args.seed)

    # ------------------------------------------------------------------------------------------ get the datasets
    # Everything about the data is checked here, before the model loads and before anything is written.
    try:
        splits, where = prepare_data(data_args, model_args, training_args)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None

    labels = label_names(splits, data_args.label_column_name)
    label2id, id2label = {name: i for i, name in enumerate(labels)}, dict(enumerate(labels))
    feature = next(iter(splits.values())).features[data_args.label_column_name]
    ids_are_values = isinstance(feature, datasets.ClassLabel) or labels == [str(i) for i in range(len(labels))]

    def label_id(value) -> int:
        return int(value) if ids_are_values else label2id[str(value)]

    # ------------------------------------------------------------------------------------------ model & processor
    config = AutoConfig.from_pretrained(
        model_args.config_name or model_args.model_name_or_path,
        num_labels=len(labels),
        label2id=label2id,
        id2label=id2label,
        finetuning_task="image-classification",
        cache_dir=model_args.cache_dir,
        revision=model_args.model_revision,
        token=model_args.token,
        trust_remote_code=model_args.trust_remote_code,
    )
    if model_args.config_overrides:
        try:
            config.update_from_string(model_args.config_overrides)
        except ValueError as err:
            raise SystemExit(f"error: --config_overrides {model_args.config_overrides!r}: {err}") from None
        logger.info(f"Config overrides {model_args.config_overrides}: {config}")
    model = AutoModelForImageClassification.from_pretrained(
        model_args.model_name_or_path,
        config=config,
        cache_dir=model_args.cache_dir,
        revision=model_args.model_revision,
        token=model_args.token,
        trust_remote_code=model_args.trust_remote_code,
        ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
    )
    image_processor = AutoImageProcessor.from_pretrained(
        model_args.image_processor_name or model_args.model_name_or_path,
        cache_dir=model_args.cache_dir,
        revision=model_args.model_revision,
        token=model_args.token,
        trust_remote_code=model_args.trust_remote_code,
    )

    # ------------------------------------------------------------------------------------------ transforms
    image_column, label_column = data_args.image_column_name, data_args.label_column_name

    def make_transform(train: bool):
        def transform(batch):
            images = [im.convert("RGB") for im in batch[image_column]]
            if train and data_args.random_flip:
                images = [ImageOps.mirror(im) if random.random() < 0.5 else im for im in images]
            out = image_processor(images, return_tensors="pt")
            return {"pixel_values": out["pixel_values"], "labels": [label_id(v) for v in batch[label_column]]}

        return transform

    def collate_fn(examples):
        return {
            "pixel_values": torch.stack([e["pixel_values"] for e in examples]),
            "labels": torch.tensor([e["labels"] for e in examples], dtype=torch.long),
        }

    raw = dict(splits)
    prepared = {s: ds.with_transform(make_transform(s == "train")) for s, ds in splits.items()}

    def accuracy(eval_pred):
        return {"accuracy": float((np.argmax(eval_pred.predictions, -1) == eval_pred.label_ids).mean())}

    # ------------------------------------------------------------------------------------------ initialize Trainer
    training_args.remove_unused_columns = False  # the transform needs the image column
    trainer = TransferTrainer(
        model=model,
        args=training_args,
        train_dataset=prepared.get("train"),
        eval_dataset=prepared.get("validation"),
        compute_metrics=accuracy,
        processing_class=image_processor,
        data_collator=collate_fn,
    )

    # ------------------------------------------------------------------------------------------ training
    if training_args.do_train:
        checkpoint = training_args.resume_from_checkpoint or last_checkpoint
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model()
        metrics = train_result.metrics
        metrics["train_samples"] = len(prepared["train"])
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()

    def corrupted(split: str, name: str):
        ds = corrupt_dataset(
            raw[split], name, data_args.corruption_severity, seed=data_args.corruption_seed, image_column=image_column
        )
        return ds.with_transform(make_transform(False))

    def side_by_side(prefix: str, metrics: dict) -> None:
        cells = [f"clean {metrics[f'{prefix}_accuracy']:.4f}"]
        cells += [f"{c} {metrics[f'{prefix}_{c}_accuracy']:.4f}" for c in data_args.eval_corruptions or []]
        logger.info(f"{prefix} accuracy (severity {data_args.corruption_severity}): " + " | ".join(cells))

    # ------------------------------------------------------------------------------------------ evaluation
    if training_args.do_eval:
        metrics = trainer.evaluate()
        if "eval" in data_args.corruption_splits:
            for name in data_args.eval_corruptions or []:
                metrics.update(
                    trainer.evaluate(eval_dataset=corrupted("validation", name), metric_key_prefix=f"eval_{name}")
                )
        metrics["eval_samples"] = len(prepared["validation"])
        if data_args.eval_corruptions and "eval" in data_args.corruption_splits:
            metrics["eval_corruption_severity"] = data_args.corruption_severity
            side_by_side("eval", metrics)
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)

    # ------------------------------------------------------------------------------------------ predict
    if training_args.do_predict:
        result = trainer.predict(prepared["test"], metric_key_prefix="predict")
        metrics = result.metrics
        if "predict" in data_args.corruption_splits:
            for name in data_args.eval_corruptions or []:
                out = trainer.predict(corrupted("test", name), metric_key_prefix=f"predict_{name}")
                metrics.update(out.metrics)
        metrics["predict_samples"] = len(prepared["test"])
        if data_args.eval_corruptions and "predict" in data_args.corruption_splits:
            metrics["predict_corruption_severity"] = data_args.corruption_severity
            side_by_side("predict", metrics)
        trainer.log_metrics("predict", metrics)
        trainer.save_metrics("predict", metrics)
        if trainer.is_world_process_zero():
            predictions = np.argmax(result.predictions, axis=-1)
            with open(os.path.join(training_args.output_dir, "predict_results.txt"), "w") as f:
                f.write("index\tprediction\n")
                for i, p in enumerate(predictions):
                    f.write(f"{i}\t{id2label[int(p)]}\n")

    # ------------------------------------------------------------------------------------------ model card / Hub
    kwargs = {
        "finetuned_from": model_args.model_name_or_path,
        "tasks": "image-classification",
        "dataset": data_args.dataset_name or ", ".join(sorted(set(where.values()))),
        "tags": ["image-classification", "vision", "hf-transfer-meta"],
    }
    if training_args.push_to_hub:
        trainer.push_to_hub(**kwargs)
    else:
        trainer.create_model_card(**kwargs)


def _mp_fn(index):
    # For xla_spawn (TPUs)
    main()


if __name__ == "__main__":
    main()
