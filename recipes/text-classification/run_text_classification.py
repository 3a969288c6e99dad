#!/usr/bin/env python
"""Fine-tune any `AutoModelForSequenceClassification` on your own csv/tsv/json/parquet files (or a Hub data set)
with `TransferTrainer`: every strategy of `TransferTrainingArguments` is a flag.

Single-label, multi-label (list labels) and regression (float labels), as transformers'
``examples/pytorch/text-classification/run_classification.py``. Bad input (a missing file, a column that is not
there, float labels for a classification) is refused before anything is written.

Examples (measured numbers: README.md beside this file)::

    python run_text_classification.py --model_name_or_path sentence-transformers/all-MiniLM-L6-v2 \
        --train_file ../../../shared/data/agnews/test.tsv --column_names text topic --text_column_names text \
        --label_column_name topic --validation_split 500 --test_split 1000 --max_train_samples 2000 \
        --do_train --do_eval --do_predict --output_dir runs/agnews-ft
    # ULMFiT: add  --gradual_unfreezing --layer_lr_decay 0.3846 --lr_scheduler_type slanted_triangular
    # LP-FT:  add  --lp_mode logistic          LoRA: add  --use_lora --lora_r 8 --lora_alpha 16

Pass a single ``.json`` file instead of flags to read the arguments from it (transformers' examples convention).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import transformers
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    HfArgumentParser,
    default_data_collator,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

from hf_transfer_meta import TransferTrainer, TransferTrainingArguments
from hf_transfer_meta.data import (
    PROBLEM_TYPES,
    check_columns,
    encode_labels,
    infer_label_space,
    load_data_files,
    load_hub_dataset,
    resolve_data_files,
    split_by_rows,
)

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    model_name_or_path: str = field(metadata={"help": "A Hub model id or a local folder (any sequence classifier)."})
    config_name: str | None = field(default=None, metadata={"help": "Config name or path, if not the model's."})
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer name or path, if not the model's."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where downloaded models and data sets are kept."})
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the model."})
    token: str | None = field(default=None, metadata={"help": "Hub token for private models and data sets."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow models defined by code on the Hub."})
    ignore_mismatched_sizes: bool = field(
        default=False,
        metadata={"help": "Load a checkpoint whose head has another number of labels (the head is re-initialised)."},
    )
    use_lora: bool = field(default=False, metadata={"help": "Train LoRA adapters (peft) and the head."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling (alpha / r)."})
    lora_dropout: float = field(default=0.1, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Modules that get adapters (default: peft's choice for the architecture)."}
    )


@dataclass
class DataTrainingArguments:
    dataset_name: str | None = field(default=None, metadata={"help": "A data set on the Hub (needs network)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Its configuration name."})
    train_file: str | None = field(default=None, metadata={"help": "csv, tsv, json/jsonl or parquet file."})
    validation_file: str | None = field(default=None, metadata={"help": "Same formats."})
    test_file: str | None = field(default=None, metadata={"help": "Same formats; may lack the label column."})
    column_names: list[str] | None = field(
        default=None, metadata={"help": "Column names of headerless csv/tsv files, in order (row 1 is then data)."}
    )
    text_column_names: list[str] = field(
        default_factory=lambda: ["sentence"],
        metadata={"help": "One text column, or two for sentence pairs (also accepted comma-separated)."},
    )
    label_column_name: str = field(default="label", metadata={"help": "The label column."})
    problem_type: str | None = field(
        default=None,
        metadata={
            "help": "Default: from the labels (lists: multi-label, floats: regression, else single-label).",
            "choices": list(PROBLEM_TYPES),
        },
    )
    validation_split: float = field(
        default=0.1,
        metadata={"help": "With --train_file alone: rows held out for validation (a fraction < 1, or a count)."},
    )
    test_split: float = field(
        default=0.1, metadata={"help": "With --train_file alone: rows held out for test (a fraction < 1, or a count)."}
    )
    split_seed: int = field(default=0, metadata={"help": "Seed of the row split."})
    max_seq_length: int = field(default=128, metadata={"help": "Longer inputs are truncated."})
    pad_to_max_length: bool = field(
        default=False, metadata={"help": "Pad every input to max_seq_length (default: pad each batch to its longest)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N validation rows."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Keep the first N test rows."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenisation."})
    cv_folds: int = field(
        default=0, metadata={"help": "K > 1: choose learning_rate by K-fold cross-validation on the training set."}
    )
    cv_trials: int = field(default=8, metadata={"help": "Trials of the cross-validated search."})
    cv_learning_rates: list[float] = field(
        default_factory=lambda: [1e-5, 1e-3], metadata={"help": "Log-uniform range of the searched learning_rate."}
    )

    def __post_init__(self):
        if len(self.text_column_names) == 1 and "," in self.text_column_names[0]:
            self.text_column_names = [c.strip() for c in self.text_column_names[0].split(",")]


def compute_metrics_for(problem_type: str):
    """Metrics computed here (no `evaluate.load` from the Hub): accuracy and macro-F1; multi-label: subset
    accuracy, micro- and macro-F1 at logit 0; regression: MSE."""
    from sklearn.metrics import accuracy_score, f1_score

    def compute_metrics(eval_pred):
        preds = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
        labels = eval_pred.label_ids
        if problem_type == "regression":
            return {"mse": float(np.mean((np.squeeze(preds, -1) - labels) ** 2))}
        if problem_type == "multi_label_classification":
            hot, labels = (preds > 0).astype(int), labels.astype(int)
            return {
                "accuracy": float(accuracy_score(labels, hot)),
                "f1_micro": float(f1_score(labels, hot, average="micro", zero_division=0)),
                "f1_macro": float(f1_score(labels, hot, average="macro", zero_division=0)),
            }
        pred = preds.argmax(-1)
        return {
            "accuracy": float(accuracy_score(labels, pred)),
            "f1_macro": float(f1_score(labels, pred, average="macro")),
        }

    return compute_metrics


def main(argv: list[str] | None = None) -> dict:
    # ------------------------------------------------------------------ arguments
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, TransferTrainingArguments))
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        model_args, data_args, training_args = parser.parse_json_file(json_file=os.path.abspath(argv[0]))
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)

    # ------------------------------------------------------------------ setup logging
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
        level=training_args.get_process_log_level(),
    )
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    logger.warning(
        f"Process rank: {training_args.process_index}, world size: {training_args.world_size}, device: "
        f"{training_args.device}; strategy: {training_args.strategy_name}"
    )
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and training_args.world_size == 1:
        raise ValueError(
            f"Launched as {launched} processes (WORLD_SIZE={launched}), but each would train alone (world size 1). "
            "On CPU pass --use_cpu --ddp_backend gloo; with GPUs check that each process sees one."
        )
    logger.info(f"Training/evaluation parameters {training_args}")
    set_seed(training_args.seed)

    # ------------------------------------------------------------------ get the datasets (checked before anything is written)
    if data_args.dataset_name is not None:
        raw = load_hub_dataset(
            data_args.dataset_name,
            data_args.dataset_config_name,
            cache_dir=model_args.cache_dir,
            token=model_args.token,
        )
    else:
        files = resolve_data_files(data_args.train_file, data_args.validation_file, data_args.test_file)
        raw = load_data_files(files, column_names=data_args.column_names, cache_dir=model_args.cache_dir)
        if list(files) == ["train"]:  # one file: train / validation / test by rows
            raw = split_by_rows(raw["train"], data_args.validation_split, data_args.test_split, data_args.split_seed)
    check_columns(raw, data_args.text_column_names, data_args.label_column_name)
    for flag, split in (("--do_train", "train"), ("--do_eval", "validation"), ("--do_predict", "test")):
        if getattr(training_args, flag[2:]) and split not in raw:
            raise ValueError(f"{flag} needs a {split} split; the data has {list(raw)}. Give --{split}_file.")
    labels = infer_label_space(raw, data_args.label_column_name, data_args.problem_type)
    logger.info(f"Task: {labels.problem_type}, {labels.num_labels} label(s): {list(labels.names)[:20]}")
    if training_args.lp_mode == "logistic" and labels.problem_type != "single_label_classification":
        raise ValueError(f"--lp_mode logistic fits a single-label probe; this task is {labels.problem_type}.")
    raw = encode_labels(raw, labels, data_args.label_column_name)
    for split, limit in (
        ("train", data_args.max_train_samples),
        ("validation", data_args.max_eval_samples),
        ("test", data_args.max_predict_samples),
    ):
        if limit is not None and split in raw:
            raw[split] = raw[split].select(range(min(limit, len(raw[split]))))

    # ------------------------------------------------------------------ detecting last checkpoint
    last_checkpoint = None
    if training_args.do_train and os.path.isdir(training_args.output_dir):
        last_checkpoint = get_last_checkpoint(training_args.output_dir)
        if last_checkpoint is not None and training_args.resume_from_checkpoint is None:
            logger.info(
                f"Checkpoint detected, resuming training at {last_checkpoint}. Use a new --output_dir to start over."
            )

    # ------------------------------------------------------------------ load pretrained model and tokenizer
    hub = {"cache_dir": model_args.cache_dir, "revision": model_args.model_revision, "token": model_args.token,
           "trust_remote_code": model_args.trust_remote_code}  # fmt: skip
    config = AutoConfig.from_pretrained(
        model_args.config_name or model_args.model_name_or_path, finetuning_task="text-classification",
        **labels.config_kwargs(), **hub,
    )  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer_name or model_args.model_name_or_path, **hub)

    def model_init():
        model = AutoModelForSequenceClassification.from_pretrained(
            model_args.model_name_or_path, config=config, ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
            **hub,
        )  # fmt: skip
        if model_args.use_lora:
            from peft import LoraConfig, TaskType, get_peft_model

            lora = LoraConfig(
                task_type=TaskType.SEQ_CLS, r=model_args.lora_r, lora_alpha=model_args.lora_alpha,
                lora_dropout=model_args.lora_dropout, target_modules=model_args.lora_target_modules,
            )  # fmt: skip
            model = get_peft_model(model, lora)
            model.print_trainable_parameters()
        return model

    model = model_init()

    # ------------------------------------------------------------------ preprocessing the datasets
    padding = "max_length" if data_args.pad_to_max_length else False
    max_length = min(data_args.max_seq_length, tokenizer.model_max_length)
    columns = data_args.text_column_names

    def tokenize(batch):
        texts = [batch[c] for c in columns]
        return tokenizer(*texts, padding=padding, max_length=max_length, truncation=True)

    with training_args.main_process_first(desc="dataset map tokenization"):
        raw = raw.map(
            tokenize, batched=True, num_proc=data_args.preprocessing_num_workers, desc="Tokenizing",
            remove_columns=[c for c in raw["train" if "train" in raw else next(iter(raw))].column_names if c != "labels"],
        )  # fmt: skip
    train_dataset = raw.get("train") if training_args.do_train else None
    eval_dataset = raw.get("validation")
    predict_dataset = raw.get("test") if training_args.do_predict else None
    data_collator = default_data_collator if data_args.pad_to_max_length else DataCollatorWithPadding(tokenizer)
    compute_metrics = compute_metrics_for(labels.problem_type)

    # ------------------------------------------------------------------ cross-validated search (optional)
    results: dict = {}
    if data_args.cv_folds > 1 and training_args.do_train:
        from hf_transfer_meta import cross_validated_search

        low, high = data_args.cv_learning_rates
        best = cross_validated_search(
            TransferTrainer, model_init, training_args, train_dataset,
            hp_space=lambda trial: {"learning_rate": trial.suggest_float("learning_rate", low, high, log=True)},
            n_folds=data_args.cv_folds, n_trials=data_args.cv_trials, compute_metrics=compute_metrics,
            metric_name="eval_mse" if labels.problem_type == "regression" else "eval_accuracy",
            direction="minimize" if labels.problem_type == "regression" else "maximize",
            stratify_column="labels" if labels.problem_type == "single_label_classification" else None,
            data_collator=data_collator, processing_class=tokenizer,
        )  # fmt: skip
        logger.warning(f"Cross-validated search: best {best.hyperparameters} (mean {best.objective:.4f} over folds)")
        training_args.learning_rate = best.hyperparameters["learning_rate"]
        results["cv"] = {"hyperparameters": best.hyperparameters, "objective": best.objective,
                         "fold_scores": best.fold_scores, "folds": data_args.cv_folds,
                         "trials": [{k: t[k] for k in ("hyperparameters", "fold_scores", "objective", "state")}
                                    for t in best.trials]}  # fmt: skip
        model = model_init()

    # ------------------------------------------------------------------ initialize our Trainer
    trainer = TransferTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=data_collator,
        compute_metrics=compute_metrics,
    )

    # ------------------------------------------------------------------ training
    if training_args.do_train:
        checkpoint = training_args.resume_from_checkpoint or last_checkpoint
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        metrics = dict(train_result.metrics, train_samples=len(train_dataset))
        if results.get("cv"):
            metrics["cv_learning_rate"] = training_args.learning_rate
        trainer.save_model()  # saves the tokenizer too
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        results["train"] = metrics

    # ------------------------------------------------------------------ evaluation
    if training_args.do_eval:
        logger.info("*** Evaluate ***")
        metrics = dict(trainer.evaluate(eval_dataset=eval_dataset), eval_samples=len(eval_dataset))
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        results["eval"] = metrics

    # ------------------------------------------------------------------ predict
    if training_args.do_predict:
        logger.info("*** Predict ***")
        has_labels = "labels" in predict_dataset.column_names
        output = trainer.predict(predict_dataset, metric_key_prefix="test")
        if has_labels:
            metrics = dict(output.metrics, test_samples=len(predict_dataset))
            trainer.log_metrics("test", metrics)
            trainer.save_metrics("test", metrics)
            results["test"] = metrics
        preds = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
        if trainer.is_world_process_zero():
            with open(os.path.join(training_args.output_dir, "predict_results.txt"), "w") as writer:
                writer.write("index\tprediction\n")
                for i, row in enumerate(preds):
                    if labels.problem_type == "regression":
                        item = f"{float(np.squeeze(row)):.6g}"
                    elif labels.problem_type == "multi_label_classification":
                        item = ",".join(labels.names[j] for j in np.flatnonzero(row > 0))
                    else:
                        item = labels.names[int(np.argmax(row))]
                    writer.write(f"{i}\t{item}\n")

    # ------------------------------------------------------------------ model card or Hub
    kwargs = {"finetuned_from": model_args.model_name_or_path, "tasks": "text-classification"}
    if data_args.dataset_name is not None:
        kwargs["dataset_tags"] = data_args.dataset_name
        kwargs["dataset"] = data_args.dataset_name + (
            f" {data_args.dataset_config_name}" if data_args.dataset_config_name else ""
        )
    else:  # local files: the card names them (folder and file), not a Hub data set
        names = [data_args.train_file, data_args.validation_file, data_args.test_file]
        kwargs["dataset"] = ", ".join(os.path.join(*Path(f).parts[-2:]) for f in names if f)
    if training_args.push_to_hub:
        trainer.push_to_hub(**kwargs)
    else:
        trainer.create_model_card(**kwargs)
    return results


def _mp_fn(index):  # for xla_spawn (TPUs), as transformers' examples
    main()


if __name__ == "__main__":
    main()
