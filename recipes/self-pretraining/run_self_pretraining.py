#!/usr/bin/env python
"""Self-pretraining: masked-LM pretraining of a small BERT, built from a config, on the downstream training texts
only, then fine-tuning it with any strategy of `TransferTrainingArguments` (Krishna et al. 2023, "Downstream
Datasets Make Surprisingly Good Pretraining Corpora").

Stage 1 follows transformers' ``examples/pytorch/language-modeling/run_mlm.py`` and writes ``<output_dir>/pretrain``
(the MLM, a WordPiece tokenizer trained on the training texts unless ``--tokenizer_name`` is given, the results);
stage 2 is ``../text-classification/run_text_classification.py`` run from that folder into ``<output_dir>/finetune``.
Its flags (learning rate, epochs, strategies) come after a bare ``--``, or from a ``.json`` file named by
``--finetune_args``; the data flags, seed and device flags of this command reach it by themselves.

Examples (measured numbers: README.md beside this file)::

    python run_self_pretraining.py --train_file ../../../shared/data/agnews/test.tsv --column_names text topic \
        --text_column_names text --label_column_name topic --validation_split 500 --test_split 1000 \
        --do_train --do_eval --num_train_epochs 3 --learning_rate 5e-4 --output_dir runs/agnews-self \
        -- --num_train_epochs 2 --learning_rate 2e-4        # stage 2's own flags; add any strategy flag
    # stage 1 alone: --stage pretrain; then run_text_classification.py --model_name_or_path runs/agnews-self/pretrain
    # the paper's baseline (no MLM training): --random_init --tokenizer_name runs/agnews-self/pretrain, no --do_train

Pass a single ``.json`` file instead of flags to read the arguments from it (transformers' examples convention).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import transformers
from transformers import (
    CONFIG_MAPPING,
    AutoConfig,
    AutoModelForMaskedLM,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    HfArgumentParser,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

from hf_transfer_meta import TransferTrainer, TransferTrainingArguments
from hf_transfer_meta.data import (
    check_columns,
    infer_label_space,
    load_data_files,
    load_hub_dataset,
    resolve_data_files,
    split_by_rows,
)

logger = logging.getLogger(__name__)

TEXT_RECIPE = Path(__file__).resolve().parents[1] / "text-classification" / "run_text_classification.py"
STAGES = ("all", "pretrain", "finetune")
# A small BERT when the config is built from --model_type (keys the config lacks are skipped); --config_overrides
# is applied on top. BERT-base's widths (768, 12 layers) are far more than a downstream corpus pays for.
SMALL_MODEL = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024}
BERT_SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0..4, as BERT's vocabulary
# Stage 2 always starts from stage 1's folder and writes beside it: the user may not point it elsewhere.
RESERVED_FINETUNE_FLAGS = ("model_name_or_path", "output_dir")


@dataclass
class ModelArguments:
    model_type: str = field(
        default="bert",
        metadata={"help": "Architecture of the model built from scratch.", "choices": sorted(CONFIG_MAPPING.keys())},
    )
    config_name: str | None = field(
        default=None, metadata={"help": "An existing config (folder or Hub id) in place of --model_type's."}
    )
    config_overrides: str | None = field(
        default=None,
        metadata={
            "help": "Config fields to set, e.g. `hidden_size=128,num_hidden_layers=2,num_attention_heads=2,"
            "intermediate_size=512`; on top of the small default "
            + ",".join(f"{k}={v}" for k, v in SMALL_MODEL.items())
            + " when built from --model_type."
        },
    )
    tokenizer_name: str | None = field(
        default=None,
        metadata={
            "help": "An existing tokenizer (folder or Hub id). Default: a WordPiece tokenizer trained on the "
            "training texts (--vocab_size)."
        },
    )
    vocab_size: int = field(default=8000, metadata={"help": "Size of the WordPiece vocabulary trained here."})
    do_lower_case: bool = field(default=True, metadata={"help": "Lower-case text in the tokenizer trained here."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where downloaded models and data sets are kept."})
    token: str | None = field(default=None, metadata={"help": "Hub token for private models and data sets."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow configs defined by code on the Hub."})


@dataclass
class DataTrainingArguments:
    dataset_name: str | None = field(default=None, metadata={"help": "A data set on the Hub (needs network)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Its configuration name."})
    train_file: str | None = field(default=None, metadata={"help": "csv, tsv, json/jsonl or parquet file."})
    validation_file: str | None = field(default=None, metadata={"help": "Same formats."})
    test_file: str | None = field(default=None, metadata={"help": "Same formats (stage 2 only)."})
    column_names: list[str] | None = field(
        default=None, metadata={"help": "Column names of headerless csv/tsv files, in order (row 1 is then data)."}
    )
    text_column_names: list[str] = field(
        default_factory=lambda: ["sentence"],
        metadata={"help": "One text column, or two for sentence pairs (also accepted comma-separated)."},
    )
    label_column_name: str = field(default="label", metadata={"help": "The label column (stage 2)."})
    validation_split: float = field(
        default=0.1,
        metadata={"help": "With --train_file alone: rows held out for validation (a fraction < 1, or a count)."},
    )
    test_split: float = field(
        default=0.1, metadata={"help": "With --train_file alone: rows held out for test (a fraction < 1, or a count)."}
    )
    split_seed: int = field(default=0, metadata={"help": "Seed of the row split."})
    max_seq_length: int = field(default=128, metadata={"help": "Longer inputs are truncated (both stages)."})
    line_by_line: bool = field(
        default=True,
        metadata={
            "help": "One MLM example per row, as fine-tuning sees the text. False: concatenate the training texts "
            "and cut them into max_seq_length blocks (run_mlm.py's default)."
        },
    )
    mlm_probability: float = field(default=0.15, metadata={"help": "Fraction of tokens masked for the MLM loss."})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Keep the first N training rows (both stages)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Keep the first N validation rows (both stages)."}
    )
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenisation."})

    def __post_init__(self):
        if len(self.text_column_names) == 1 and "," in self.text_column_names[0]:
            self.text_column_names = [c.strip() for c in self.text_column_names[0].split(",")]
        if not 0 < self.mlm_probability < 1:
            raise ValueError(f"--mlm_probability {self.mlm_probability}: give a fraction in (0, 1), e.g. 0.15.")


@dataclass
class StageArguments:
    stage: str = field(
        default="all",
        metadata={
            "help": "all: pretrain into <output_dir>/pretrain, then fine-tune into <output_dir>/finetune; pretrain: "
            "stage 1 alone; finetune: stage 2 alone, from an existing <output_dir>/pretrain.",
            "choices": list(STAGES),
        },
    )
    random_init: bool = field(
        default=False,
        metadata={
            "help": "The paper's baseline: skip the MLM training and fine-tune the freshly initialised model (the "
            "same config; for exactly the same tokenizer pass the other run's pretrain folder as --tokenizer_name). "
            "Use in place of --do_train."
        },
    )
    finetune_args: str | None = field(
        default=None,
        metadata={
            "help": "A .json file of run_text_classification.py arguments for stage 2 (learning_rate, "
            "num_train_epochs, strategy flags ...). Its flags may also follow a bare `--`; those win."
        },
    )


# ---------------------------------------------------------------------------------------------------------- helpers
def load_text_recipe():
    """The text-classification recipe as a module (its `main` is stage 2)."""
    if "run_text_classification" in sys.modules:
        return sys.modules["run_text_classification"]
    spec = importlib.util.spec_from_file_location("run_text_classification", TEXT_RECIPE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_text_classification"] = module  # its dataclasses resolve their module while they are built
    spec.loader.exec_module(module)
    return module


def as_flags(values: dict) -> list[str]:
    """``{"learning_rate": 1e-4, "gradual_unfreezing": True, "wise_ft_alphas": [0, 1]}`` as command-line flags."""
    argv = []
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            items = [str(value).lower()]
        elif isinstance(value, (list, tuple)):
            items = [str(v) for v in value]
        elif isinstance(value, dict):
            items = [json.dumps(value)]
        else:
            items = [str(value)]
        argv += [f"--{key}", *items]
    return argv


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """This command's own flags, and stage 2's (after a bare ``--``)."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


def build_config(model_args: ModelArguments, max_seq_length: int):
    """The model config: --config_name or --model_type (small by default), then --config_overrides, each key checked.

    The vocabulary size and the padding id are the tokenizer's, set once it exists."""
    hub = {
        "cache_dir": model_args.cache_dir,
        "token": model_args.token,
        "trust_remote_code": model_args.trust_remote_code,
    }
    if model_args.config_name:
        config = AutoConfig.from_pretrained(model_args.config_name, **hub)
        overrides = {}
    else:
        config = CONFIG_MAPPING[model_args.model_type]()
        overrides = {k: str(v) for k, v in SMALL_MODEL.items() if hasattr(config, k)}
    for item in (model_args.config_overrides or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--config_overrides {item!r}: write key=value pairs separated by commas.")
        if not hasattr(config, key):
            known = sorted(k for k in config.to_dict() if not k.startswith("_"))
            raise ValueError(
                f"--config_overrides: {key!r} is not a field of {type(config).__name__}; its fields are {known}."
            )
        overrides[key] = value.strip()
    for key, value in overrides.items():
        try:
            config.update_from_string(f"{key}={value}")
        except (ValueError, TypeError) as e:
            raise ValueError(f"--config_overrides {key}={value}: {e}") from e
    positions = getattr(config, "max_position_embeddings", None)
    if positions is not None and max_seq_length > positions:
        raise ValueError(
            f"--max_seq_length {max_seq_length} exceeds the model's max_position_embeddings {positions}: lower it, "
            f"or add max_position_embeddings={max_seq_length} to --config_overrides."
        )
    return config


def train_wordpiece(texts, vocab_size: int, lowercase: bool, model_max_length: int):
    """A BERT WordPiece tokenizer trained with `tokenizers` on ``texts`` (an iterable of strings)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertTokenizer

    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=BERT_SPECIAL_TOKENS, show_progress=False)
    backend.train_from_iterator(texts, trainer)
    # The trainer numbers tokens of equal frequency in hash order, which changes from one process to the next (and
    # with it the model's init per token): ids in a fixed order make runs repeatable. WordPiece reads no ids. (Ties
    # at the vocab_size cap can still change which tokens are kept: --tokenizer_name reuses a tokenizer exactly.)
    learned = sorted(set(backend.get_vocab()) - set(BERT_SPECIAL_TOKENS))
    vocab = {token: i for i, token in enumerate(BERT_SPECIAL_TOKENS + learned)}
    # BertTokenizer adds BERT's [CLS] a [SEP] b [SEP] template and saves as a folder `from_pretrained` reads
    return BertTokenizer(vocab=vocab, do_lower_case=lowercase, model_max_length=model_max_length)


def mlm_metrics(eval_pred):
    """Accuracy on the masked tokens (logits are reduced to their argmax by `argmax_logits` first)."""
    preds, labels = eval_pred.predictions, eval_pred.label_ids
    masked = labels != -100
    return {"mlm_accuracy": float((preds[masked] == labels[masked]).mean()) if masked.any() else 0.0}


def argmax_logits(logits, labels):
    return (logits[0] if isinstance(logits, tuple) else logits).argmax(dim=-1)


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=4, sort_keys=True) + "\n")


# ------------------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    # ------------------------------------------------------------------ arguments
    argv = sys.argv[1:] if argv is None else list(argv)
    own, finetune_flags = split_argv(argv)
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, StageArguments, TrainingArguments))
    if len(own) == 1 and own[0].endswith(".json"):
        model_args, data_args, stage_args, training_args = parser.parse_json_file(json_file=os.path.abspath(own[0]))
    else:
        model_args, data_args, stage_args, training_args = parser.parse_args_into_dataclasses(args=own)
    root = Path(training_args.output_dir)
    pretrain_dir, finetune_dir = root / "pretrain", root / "finetune"
    training_args.output_dir = str(pretrain_dir)  # stage 1 writes into its own folder
    do_pretrain = stage_args.stage in ("all", "pretrain")
    do_finetune = stage_args.stage in ("all", "finetune")

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
        f"{training_args.device}; stage: {stage_args.stage}"
    )
    if do_pretrain and stage_args.random_init == training_args.do_train:
        raise ValueError(
            "Stage 1 either trains the MLM (--do_train) or keeps the random init (--random_init, the baseline): give "
            "exactly one of them"
            + (
                ", or --stage finetune to fine-tune an existing pretrain folder."
                if not training_args.do_train
                else "."
            )  # fmt: skip
        )
    if stage_args.stage == "finetune" and not (pretrain_dir / "config.json").is_file():
        raise ValueError(
            f"--stage finetune starts from {pretrain_dir}, which holds no model: run --stage pretrain (or all) first."
        )
    set_seed(training_args.seed)

    # ------------------------------------------------------------------ get the datasets (checked before anything is written)
    if data_args.dataset_name is not None:
        raw = load_hub_dataset(
            data_args.dataset_name, data_args.dataset_config_name, cache_dir=model_args.cache_dir,
            token=model_args.token,
        )  # fmt: skip
    else:
        files = resolve_data_files(data_args.train_file, data_args.validation_file, data_args.test_file)
        raw = load_data_files(files, column_names=data_args.column_names, cache_dir=model_args.cache_dir)
        if list(files) == ["train"]:  # one file: train / validation / test by rows, as stage 2 splits it
            raw = split_by_rows(raw["train"], data_args.validation_split, data_args.test_split, data_args.split_seed)
    if "train" not in raw:
        raise ValueError(f"Self-pretraining needs a train split (its texts are the corpus); the data has {list(raw)}.")
    if do_pretrain and training_args.do_eval and "validation" not in raw:
        raise ValueError(f"--do_eval needs a validation split; the data has {list(raw)}. Give --validation_file.")
    # stage 1 reads only texts; the labels are checked here too when stage 2 follows
    unlabelled = ("test",) if do_finetune else tuple(raw)
    check_columns(raw, data_args.text_column_names, data_args.label_column_name, unlabelled_splits=unlabelled)
    for split, limit in (("train", data_args.max_train_samples), ("validation", data_args.max_eval_samples)):
        if limit is not None and split in raw:
            raw[split] = raw[split].select(range(min(limit, len(raw[split]))))

    # ------------------------------------------------------------------ stage 2's arguments (checked now, used later)
    finetune_argv = None
    if do_finetune:
        finetune_argv = build_finetune_argv(
            model_args, data_args, stage_args, training_args, finetune_flags, pretrain_dir, finetune_dir, raw
        )
        text_recipe = load_text_recipe()
        ft_parser = HfArgumentParser(
            (text_recipe.ModelArguments, text_recipe.DataTrainingArguments, TransferTrainingArguments)
        )
        _, ft_data_args, _ = ft_parser.parse_args_into_dataclasses(args=finetune_argv)
        infer_label_space(raw, ft_data_args.label_column_name, ft_data_args.problem_type)  # float labels, one class...
    elif finetune_flags or stage_args.finetune_args:
        raise ValueError(
            "--stage pretrain runs no fine-tuning: drop the flags after `--` and --finetune_args (or use --stage all)."
        )

    pretrain_results: dict = {}
    if do_pretrain:
        pretrain_results = pretrain(model_args, data_args, stage_args, training_args, raw)
    elif (pretrain_dir / "all_results.json").is_file():
        pretrain_results = json.loads((pretrain_dir / "all_results.json").read_text())

    # ------------------------------------------------------------------ stage 2: the text-classification recipe
    finetune_results: dict = {}
    if do_finetune:
        logger.warning(f"*** Stage 2: fine-tuning {pretrain_dir} into {finetune_dir} ***")
        finetune_results = load_text_recipe().main(finetune_argv)

    # ------------------------------------------------------------------ the numbers of both stages
    combined = {f"pretrain_{k}": v for k, v in pretrain_results.items()}
    for split in ("train", "eval", "test"):
        combined.update({f"finetune_{k}": v for k, v in finetune_results.get(split, {}).items()})
    if training_args.should_save:
        write_json(root / "all_results.json", combined)
    return {"pretrain": pretrain_results, "finetune": finetune_results, "all": combined}


def build_finetune_argv(
    model_args, data_args, stage_args, training_args, finetune_flags, pretrain_dir, finetune_dir, raw
) -> list[str]:
    """run_text_classification.py's flags: this command's data, seed and device flags, then --finetune_args, then the
    flags after ``--`` (later flags win)."""
    from_json = {}
    if isinstance(stage_args.finetune_args, dict):  # a .json config may hold the object itself
        from_json = stage_args.finetune_args
    elif stage_args.finetune_args:
        path = Path(stage_args.finetune_args)
        if not path.is_file() or path.suffix != ".json":
            raise ValueError(f"--finetune_args {path}: give an existing .json file of run_text_classification.py arguments.")  # fmt: skip
        from_json = json.loads(path.read_text())
        if not isinstance(from_json, dict):
            raise ValueError(f"--finetune_args {path}: the file must hold one object of argument names and values.")
    given = set(from_json) | {f.split("=")[0][2:] for f in finetune_flags if f.startswith("--")}
    for name in RESERVED_FINETUNE_FLAGS:
        if name in given:
            raise ValueError(
                f"Stage 2 takes --{name} from this command ({pretrain_dir} -> {finetune_dir}): drop it from the "
                "fine-tuning arguments (to fine-tune another model, run run_text_classification.py itself)."
            )
    data = {k: getattr(data_args, k) for k in (
        "dataset_name", "dataset_config_name", "train_file", "validation_file", "test_file", "column_names",
        "text_column_names", "label_column_name", "validation_split", "test_split", "split_seed", "max_seq_length",
        "max_train_samples", "max_eval_samples", "preprocessing_num_workers")}  # fmt: skip
    report_to = training_args.report_to or ["none"]
    derived = {
        "model_name_or_path": str(pretrain_dir), "output_dir": str(finetune_dir), **data,
        "cache_dir": model_args.cache_dir, "token": model_args.token,
        "do_train": True, "do_eval": "validation" in raw, "do_predict": "test" in raw,
        "seed": training_args.seed, "use_cpu": training_args.use_cpu, "report_to": report_to,
        "disable_tqdm": training_args.disable_tqdm, "log_level": training_args.log_level,
    }  # fmt: skip
    return as_flags(derived) + as_flags(from_json) + list(finetune_flags)


def pretrain(model_args, data_args, stage_args, training_args, raw) -> dict:
    """Stage 1 (run_mlm.py): tokenizer, model from its config, MLM on the training texts; returns all_results."""
    columns = data_args.text_column_names
    config = build_config(model_args, data_args.max_seq_length)  # first: a bad key is refused in a second

    # ------------------------------------------------------------------ detecting last checkpoint
    last_checkpoint = None
    if training_args.do_train and os.path.isdir(training_args.output_dir):
        last_checkpoint = get_last_checkpoint(training_args.output_dir)
        if last_checkpoint is not None and training_args.resume_from_checkpoint is None:
            logger.info(f"Checkpoint detected, resuming training at {last_checkpoint}. Use a new --output_dir to start over.")  # fmt: skip
    checkpoint = (training_args.resume_from_checkpoint or last_checkpoint) if training_args.do_train else None

    # ------------------------------------------------------------------ tokenizer: given, or trained on the training texts only
    # (a resumed run reads the one its checkpoint was trained with)
    tokenizer_name = model_args.tokenizer_name or (checkpoint if isinstance(checkpoint, str) else None)
    if tokenizer_name:
        tokenizer = AutoTokenizer.from_pretrained(
            tokenizer_name, cache_dir=model_args.cache_dir, token=model_args.token,
            trust_remote_code=model_args.trust_remote_code,
        )  # fmt: skip
        if tokenizer.mask_token is None or tokenizer.pad_token is None:
            raise ValueError(f"--tokenizer_name {tokenizer_name}: a masked LM needs a mask and a pad token.")
    else:
        train = raw["train"]

        def corpus(batch_size: int = 1000):
            for start in range(0, len(train), batch_size):
                rows = train[start : start + batch_size]
                for column in columns:
                    yield from (str(t) for t in rows[column])

        tokenizer = train_wordpiece(
            corpus(), model_args.vocab_size, model_args.do_lower_case, data_args.max_seq_length
        )
        logger.info(f"WordPiece tokenizer trained on {len(train)} training rows: {len(tokenizer)} tokens")

    # ------------------------------------------------------------------ model from its config
    config.vocab_size = len(tokenizer)  # the tokenizer decides the vocabulary and the padding id
    if hasattr(config, "pad_token_id"):
        config.pad_token_id = tokenizer.pad_token_id
    model = AutoModelForMaskedLM.from_config(config, trust_remote_code=model_args.trust_remote_code)
    n_params = sum(p.numel() for p in model.parameters())
    logger.warning(f"Training a new {config.model_type} from scratch: {n_params / 1e6:.2f}M parameters")

    # ------------------------------------------------------------------ preprocessing the datasets
    max_length = min(data_args.max_seq_length, tokenizer.model_max_length)
    splits = [s for s in ("train", "validation") if s in raw]
    texts = type(raw)({s: raw[s] for s in splits})

    def tokenize(batch):
        inputs = [[str(t) for t in batch[c]] for c in columns]
        truncation = data_args.line_by_line
        return tokenizer(*inputs, truncation=truncation, max_length=max_length if truncation else None,
                         return_special_tokens_mask=True)  # fmt: skip

    def group_texts(batch):  # run_mlm.py: concatenate, then cut into max_length blocks (the remainder is dropped)
        joined = {k: sum(batch[k], []) for k in batch}
        total = (len(joined["input_ids"]) // max_length) * max_length
        return {k: [v[i : i + max_length] for i in range(0, total, max_length)] for k, v in joined.items()}

    with training_args.main_process_first(desc="dataset map tokenization"):
        tokenized = texts.map(
            tokenize, batched=True, num_proc=data_args.preprocessing_num_workers, desc="Tokenizing",
            remove_columns=texts["train"].column_names,
        )  # fmt: skip
        if not data_args.line_by_line:
            tokenized = tokenized.map(group_texts, batched=True, num_proc=data_args.preprocessing_num_workers,
                                      desc=f"Grouping texts in blocks of {max_length}")  # fmt: skip
    train_dataset = tokenized["train"] if training_args.do_train else None
    eval_dataset = tokenized["validation"] if training_args.do_eval else None
    data_collator = DataCollatorForLanguageModeling(
        tokenizer, mlm_probability=data_args.mlm_probability, pad_to_multiple_of=8, seed=training_args.seed
    )

    # ------------------------------------------------------------------ initialize our Trainer
    trainer = TransferTrainer(  # stock Trainer (no strategy), plus the records of the model card
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=data_collator,
        compute_metrics=mlm_metrics if training_args.do_eval else None,
        preprocess_logits_for_metrics=argmax_logits if training_args.do_eval else None,
    )
    results: dict = {}

    # ------------------------------------------------------------------ training
    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        metrics = dict(train_result.metrics, train_samples=len(train_dataset))
        trainer.save_model()  # saves the tokenizer too
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        results.update(metrics)
    else:  # --random_init: the baseline starts from this untrained model
        trainer.save_model()

    # ------------------------------------------------------------------ evaluation: MLM loss on the validation texts
    if training_args.do_eval:
        logger.info("*** Evaluate ***")
        metrics = dict(trainer.evaluate(), eval_samples=len(eval_dataset))
        try:
            metrics["perplexity"] = math.exp(metrics["eval_loss"])
        except OverflowError:
            metrics["perplexity"] = float("inf")
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        results.update(metrics)

    # ------------------------------------------------------------------ model card or Hub
    kwargs = {"tasks": "fill-mask", "model_name": Path(training_args.output_dir).parent.name + "-self-pretrained"}
    if data_args.dataset_name is not None:
        kwargs["dataset_tags"] = data_args.dataset_name
        kwargs["dataset"] = data_args.dataset_name
    if training_args.push_to_hub:
        trainer.push_to_hub(**kwargs)
    else:
        trainer.create_model_card(**kwargs)
    return results


def _mp_fn(index):  # for xla_spawn (TPUs), as transformers' examples
    main()


if __name__ == "__main__":
    main()
