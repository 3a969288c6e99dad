#!/usr/bin/env python
"""Few-shot image classification on your own labelled images: meta-train an image model on some classes (ProtoNet,
MAML, FOMAML, ANIL, Meta-SGD, Reptile, or the fine-tuning baseline) with `MetaTrainer`, and test it on classes it
never saw: N-way K-shot episodes with a 95% CI, and (``--eval_all_classes``) every test class at once, as a user
with K photos of each of their classes would.

transformers' ``examples/pytorch/*/run_*.py`` conventions: `ModelArguments`, `DataTrainingArguments` and
`MetaTrainingArguments` through `HfArgumentParser` (or one ``.json`` file), ``--do_train --do_eval --do_predict``,
resume from the last checkpoint, the standard ending. Data: image folders (``--train_dir/--validation_dir/--test_dir``,
one sub-folder per class), files (``--train_file/--validation_file/--test_file``: csv, tsv, json/jsonl or parquet,
whose image column holds file paths or ``{bytes, path}`` structs), a Hub ``--dataset_name``, or ``--preset omniglot``
/ ``--preset digits``. The classes are split into meta-train / meta-validation / meta-test
(``split_classes_from_files``); bad input, an undecodable image included, is refused before anything is written.

Examples (measured numbers: README.md beside this file)::

    python run_few_shot_vision.py --preset omniglot --algorithm protonet --n_way 20 --k_shot 1 --n_query 5 \
        --eval_n_way 5 --k_shot_sweep 1 5 --do_train --max_steps 2000 --do_eval --output_dir runs/omniglot-protonet
    python run_few_shot_vision.py --train_dir photos/ --class_split 0.6,0.2,0.2 --image_size 84 \
        --algorithm protonet --n_way 5 --k_shot 5 --n_query 10 --do_train --max_steps 2000 \
        --eval_strategy steps --eval_steps 200 --save_strategy steps --save_steps 200 --load_best_model_at_end \
        --metric_for_best_model accuracy --do_eval --eval_all_classes --output_dir runs/photos-protonet

Pass a single ``.json`` file instead of flags to read the arguments from it (transformers' examples convention).
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
import transformers
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    HfArgumentParser,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

from hf_transfer_meta.data import infer_label_space, load_data_files, load_hub_dataset, resolve_data_files
from hf_transfer_meta.meta import (
    Conv4Config,
    Conv4ForImageClassification,
    Conv4Model,
    EpisodeCollator,
    EpisodeShape,
    ImageProcessorInputs,
    MetaTrainer,
    MetaTrainingArguments,
    PixelValues,
    RandomAffine,
    as_image_column,
    check_episode_sizes,
    check_images,
    evaluate_all_classes,
    fixed_eval_episodes,
    load_preset,
    meta_test_metrics,
    parse_class_split,
    split_classes_from_files,
)
from hf_transfer_meta.meta.data.images import image_mode

logger = logging.getLogger(__name__)

ENCODER_ALGORITHMS = ("protonet", "finetune")  # an encoder (AutoModel); the MAML family: an N-way classifier
SPLITS = ("train", "validation", "test")


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default="conv4",
        metadata={
            "help": "'conv4' (the 4-block CNN of Vinyals et al. 2016 / Snell et al. 2017, built from its config, "
            "random init), or a Hub id / local folder: any AutoModel (protonet, finetune) or image classifier."
        },
    )
    config_name: str | None = field(default=None, metadata={"help": "Config name or path, if not the model's."})
    image_processor_name: str | None = field(
        default=None, metadata={"help": "Image processor name or path, if not the model's."}
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Where downloaded models and data sets are kept."})
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the model."})
    token: str | None = field(default=None, metadata={"help": "Hub token for private models and data sets."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow models defined by code on the Hub."})
    ignore_mismatched_sizes: bool = field(
        default=False,
        metadata={"help": "MAML family: load a checkpoint whose head is not --n_way wide (re-initialised)."},
    )
    conv4_hidden_size: int = field(default=64, metadata={"help": "conv4: filters per block."})
    conv4_blocks: int | None = field(
        default=None, metadata={"help": "conv4: blocks (default 4, fewer for small images: 3 for 8x8)."}
    )
    conv4_downsample: str = field(
        default="maxpool",
        metadata={
            "help": "conv4: maxpool (ProtoNets) or stride (MAML's Omniglot net).",
            "choices": ["maxpool", "stride"],
        },
    )
    conv4_norm: str = field(
        default="batch",
        metadata={
            "help": "conv4: batch (nn.BatchNorm2d) or batch_ops (same maths; second-order MAML can vmap the tasks "
            "of a meta-batch: use it on a GPU).",
            "choices": ["batch", "batch_ops"],
        },
    )


@dataclass
class DataTrainingArguments:
    preset: str | None = field(
        default=None,
        metadata={
            "help": "omniglot (../shared/data/omniglot: small1 meta-train, small2's other alphabets meta-test, "
            "rotations x4) or digits (scikit-learn's digits: 0-5 meta-train, 6-9 meta-test)."
        },
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "Folder of the preset's data (default ../shared/data/<preset>)."}
    )
    validation_alphabets: list[str] = field(
        default_factory=lambda: [],
        metadata={"help": "--preset omniglot: small1 alphabets held out as meta-validation classes (e.g. Balinese)."},
    )
    dataset_name: str | None = field(default=None, metadata={"help": "A data set on the Hub (needs network)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Its configuration name."})
    train_dir: str | None = field(default=None, metadata={"help": "Image folder: one sub-folder per class."})
    validation_dir: str | None = field(default=None, metadata={"help": "Image folder: one sub-folder per class."})
    test_dir: str | None = field(default=None, metadata={"help": "Image folder: one sub-folder per class."})
    train_file: str | None = field(
        default=None,
        metadata={"help": "csv, tsv, json/jsonl or parquet; its image column holds paths or {bytes, path}."},
    )
    validation_file: str | None = field(default=None, metadata={"help": "Same formats."})
    test_file: str | None = field(default=None, metadata={"help": "Same formats."})
    image_column_name: str = field(default="image", metadata={"help": "The image column."})
    label_column_name: str = field(default="label", metadata={"help": "The class column (strings or integers)."})
    class_split: str | None = field(
        default=None,
        metadata={
            "help": "train,validation,test fractions of the classes, e.g. 0.6,0.2,0.2: sources that share classes "
            "are pooled and split by class (default 0.6,0.2,0.2); with a test source of other classes, carves "
            "validation classes from the train classes."
        },
    )
    class_split_seed: int | None = field(default=None, metadata={"help": "Seed of the class split (default --seed)."})
    class_group_column: str | None = field(
        default=None, metadata={"help": "Split whole groups of classes (e.g. an alphabet column), not single classes."}
    )
    image_size: int | None = field(
        default=None,
        metadata={"help": "Side the images are resized to (default: the model's; conv4: 28 grey, 84 colour)."},
    )
    image_mode: str = field(
        default="auto",
        metadata={
            "help": "Colour of the model input: L (grey) or RGB; auto: the first training image's (conv4), the "
            "model's channels otherwise.",
            "choices": ["auto", "L", "RGB"],
        },
    )
    augment: bool = field(
        default=False,
        metadata={"help": "Random affine warp (+-10 deg, +-10 pct shift, x0.9-1.1) of meta-training images."},
    )
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
            "help": "Also score C-way K-shot over every test class at once (protonet): K support images per class, "
            "every other image a query, --eval_all_classes_draws support draws (rotated copies are not added)."
        },
    )
    eval_all_classes_draws: int | None = field(
        default=None, metadata={"help": "Support draws of --eval_all_classes (default --eval_episodes)."}
    )
    eval_all_classes_n_query: int | None = field(
        default=None, metadata={"help": "Queries per class of --eval_all_classes (default: every other image)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "At most N meta-training episodes."})
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "At most N validation episodes (evaluation during training)."}
    )
    max_predict_samples: int | None = field(default=None, metadata={"help": "At most N test episodes (--do_eval)."})

    def __post_init__(self):
        if self.eval_k_shots:
            if self.k_shot_sweep and list(self.k_shot_sweep) != list(self.eval_k_shots):
                raise ValueError(
                    f"--k_shot_sweep {self.k_shot_sweep} and --eval_k_shots {self.eval_k_shots}: they are one "
                    "option; give one of them."
                )
            self.k_shot_sweep = list(self.eval_k_shots)


@dataclass
class LoadedSplit:
    """The class split and how to read it."""

    split: object  # ClassSplit
    image_column: str
    label_column: str
    name: str
    rotations: list[int] | None = None
    image_size: int | None = None


def _load_image_sources(data_args: DataTrainingArguments, model_args: ModelArguments) -> tuple[dict, dict, dict]:
    """({split: Dataset}, {split: flag naming it}, {split: folder relative image paths are read from})."""
    raw, flags, bases = {}, {}, {}
    if data_args.dataset_name is not None:
        hub = load_hub_dataset(
            data_args.dataset_name, data_args.dataset_config_name, cache_dir=model_args.cache_dir,
            token=model_args.token,
        )  # fmt: skip
        for s in SPLITS:
            if s in hub:
                raw[s], flags[s] = hub[s], f"{data_args.dataset_name} ({s})"
    for s in SPLITS:
        folder, file = getattr(data_args, f"{s}_dir"), getattr(data_args, f"{s}_file")
        if folder is not None and file is not None:
            raise ValueError(f"--{s}_dir {folder} and --{s}_file {file}: give one source per split.")
        if (folder is not None or file is not None) and s in raw:
            raise ValueError(f"--dataset_name {data_args.dataset_name} has a {s} split already: drop --{s}_dir/_file.")
        if folder is not None:
            path = Path(folder).expanduser()
            if not path.is_dir():
                raise ValueError(
                    f"--{s}_dir {folder}: no such folder (looked in {os.getcwd()} for relative paths). Give a folder "
                    "with one sub-folder of images per class."
                )
            try:
                raw[s] = datasets.load_dataset(
                    "imagefolder", data_dir=str(path), split="train", cache_dir=model_args.cache_dir
                )
            except Exception as err:  # noqa: BLE001 - datasets raises several types for unreadable folders
                raise ValueError(f"--{s}_dir {folder} could not be read as an image folder: {err}") from None
            flags[s] = f"--{s}_dir {folder}"
    files = {s: getattr(data_args, f"{s}_file") for s in SPLITS}
    if any(files.values()):
        paths = resolve_data_files(files["train"], files["validation"], files["test"])
        loaded = load_data_files(paths, cache_dir=model_args.cache_dir)
        for s, path in paths.items():
            raw[s], flags[s], bases[s] = loaded[s], f"--{s}_file {files[s]}", path.parent
    if not raw:
        raise ValueError(
            "No data: give image folders (--train_dir, --test_dir ...), files (--train_file ...), --dataset_name, or "
            "--preset omniglot / digits."
        )
    return raw, flags, bases


def load_class_split(data_args: DataTrainingArguments, model_args: ModelArguments, seed: int) -> LoadedSplit:
    """The class split, every check of the data (columns, labels, images) done here, before anything is built."""
    fractions = parse_class_split(data_args.class_split)
    seed = data_args.class_split_seed if data_args.class_split_seed is not None else seed
    sources = ("dataset_name", *(f"{s}_{kind}" for s in SPLITS for kind in ("dir", "file")))
    given = [f"--{n}" for n in sources if getattr(data_args, n) is not None]
    if data_args.preset is not None:
        if data_args.preset == "clinc150":
            raise ValueError("--preset clinc150 is text: use recipes/few-shot-text/run_few_shot_text.py.")
        if given:
            raise ValueError(f"--preset {data_args.preset} reads its own data: drop {' '.join(given)}.")
        if data_args.class_group_column is not None:
            raise ValueError(f"--class_group_column: --preset {data_args.preset}'s class split is fixed.")
        preset = load_preset(
            data_args.preset, data_args.data_dir, fractions, seed=seed, image_size=data_args.image_size or 28,
            validation_alphabets=data_args.validation_alphabets,
        )  # fmt: skip
        return LoadedSplit(preset.split, preset.input_column, preset.label_column, data_args.preset,
                           preset.rotations, preset.image_size)  # fmt: skip
    if data_args.validation_alphabets:
        raise ValueError("--validation_alphabets is for --preset omniglot; split your data with --class_split.")

    image, label, group = data_args.image_column_name, data_args.label_column_name, data_args.class_group_column
    if image == label:
        raise ValueError(f"--label_column_name {label!r} is the image column: give the label its own column.")
    raw, flags, bases = _load_image_sources(data_args, model_args)
    for s, ds in raw.items():
        for flag, column in (("--image_column_name", image), ("--label_column_name", label),
                             ("--class_group_column", group)):  # fmt: skip
            if column is not None and column not in ds.column_names:
                raise ValueError(
                    f"{flag} {column!r}: {flags[s]} has no column {column!r}; its columns are {ds.column_names}."
                )
    # Refuses float, list and missing labels (classes are strings or integers); classes may differ between sources.
    infer_label_space(
        {s: ds.select_columns([label]) for s, ds in raw.items()}, label, "single_label_classification",
        reference_split=None,
    )  # fmt: skip
    for s in list(raw):  # every image decoded once: a bad one is named by its file and row
        raw[s] = as_image_column(raw[s], image, flags[s], base_dir=bases.get(s))
        check_images(raw[s], image, flags[s])
    split = split_classes_from_files(raw, label, fractions, seed=seed, group_column=group, flags=flags)
    name = data_args.dataset_name or ", ".join(Path(flags[s].split(" ", 1)[1]).name for s in raw)
    return LoadedSplit(split, image, label, name)


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


def first_image(split) -> object:
    ds = split.train if split.train is not None else split.test
    return ds[0]


def build_model(model_args: ModelArguments, data_args: DataTrainingArguments, args: MetaTrainingArguments,
                loaded: LoadedSplit):  # fmt: skip
    """(model, processing_class to save or None, per-image transform of the collator or None)."""
    encoder_only = args.algorithm in ENCODER_ALGORITHMS
    mode = data_args.image_mode
    if model_args.model_name_or_path == "conv4":
        if mode == "auto":
            mode = image_mode(first_image(loaded.split)[loaded.image_column])
        size = data_args.image_size or loaded.image_size or (28 if mode == "L" else 84)
        blocks = model_args.conv4_blocks or max(1, min(4, int(math.log2(size))))
        config = Conv4Config(
            num_channels=1 if mode == "L" else 3, image_size=size, num_blocks=blocks,
            hidden_size=model_args.conv4_hidden_size, downsample=model_args.conv4_downsample,
            norm=model_args.conv4_norm, num_labels=args.n_way,
        )  # fmt: skip
        model = Conv4Model(config) if encoder_only else Conv4ForImageClassification(config)
        return model, None, PixelValues(mode, size)

    hub = {"cache_dir": model_args.cache_dir, "revision": model_args.model_revision, "token": model_args.token,
           "trust_remote_code": model_args.trust_remote_code}  # fmt: skip
    config = AutoConfig.from_pretrained(
        model_args.config_name or model_args.model_name_or_path, **({} if encoder_only else {"num_labels": args.n_way}),
        **hub,
    )  # fmt: skip
    if hasattr(config, "vocab_size") and not hasattr(config, "num_channels"):
        raise ValueError(f"{model_args.model_name_or_path} is a text model: use run_few_shot_text.py.")
    if encoder_only:
        model = AutoModel.from_pretrained(model_args.model_name_or_path, config=config, **hub)
    else:
        model = AutoModelForImageClassification.from_pretrained(
            model_args.model_name_or_path, config=config, ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
            **hub,
        )  # fmt: skip
    channels = getattr(config, "num_channels", 3)
    if mode == "auto":
        mode = "L" if channels == 1 else "RGB"
    try:
        processor = AutoImageProcessor.from_pretrained(model_args.image_processor_name or model_args.model_name_or_path,
                                                       **hub)  # fmt: skip
    except (OSError, ValueError):  # a model folder without preprocessor_config.json
        processor = None
    if processor is not None and data_args.image_size is None:
        return model, processor, ImageProcessorInputs(processor, mode)
    size = data_args.image_size or loaded.image_size or getattr(config, "image_size", None)
    if size is None:
        raise ValueError(
            f"{model_args.model_name_or_path} has no image processor and no config.image_size: pass --image_size."
        )
    return model, None, PixelValues(mode, size if isinstance(size, int) else int(size[0]))


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
    loaded = load_class_split(data_args, model_args, args.seed)
    split, image_column, label_column = loaded.split, loaded.image_column, loaded.label_column
    args.label_column, args.image_column = label_column, image_column
    if loaded.rotations is not None and args.rotations is None:
        args.rotations = loaded.rotations  # Omniglot: rotated characters are new classes (Santoro et al. 2016)
    for name, ds in split.items():
        logger.info(f"{name}: {len(ds)} rows, {len(split.keys[name])} {split.key} values ({split.sources.get(name)})")
    if args.do_train and args.eval_strategy != "no" and split.validation is None:
        raise ValueError(
            f"--eval_strategy {args.eval_strategy} evaluates during training on the meta-validation classes (on the "
            "test classes it would tune on test), and there are none: pass --class_split with a validation "
            "fraction (e.g. 0.6,0.2,0.2), a validation source of other classes"
            + (", --validation_alphabets" if data_args.preset == "omniglot" else "")
            + ", or --eval_strategy no."
        )
    if args.do_train and split.train is None:
        raise ValueError("--do_train needs meta-training classes: give --train_dir or --train_file (or a preset).")
    if data_args.eval_split == "validation" and (args.do_eval or args.do_predict) and split.validation is None:
        raise ValueError("--eval_split validation: there are no meta-validation classes (see --class_split).")
    check_episode_sizes(split, label_column, episode_shapes(data_args, args, k_shots), rotations=args.rotations)
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

    # ------------------------------------------------------------------ load the model (and its image processor)
    model, processor, transform = build_model(model_args, data_args, args, loaded)

    # ------------------------------------------------------------------ episodes
    collator = EpisodeCollator(
        processing_class=transform if isinstance(transform, ImageProcessorInputs) else None,
        input_column=image_column, transform=transform if isinstance(transform, PixelValues) else None,
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
        train_transform=RandomAffine(image_column=image_column, seed=args.seed) if data_args.augment else None,
        processing_class=processor,
        data_collator=collator,
    )
    results: dict = {"classes": {name: len(keys) for name, keys in split.keys.items()}}

    # ------------------------------------------------------------------ training
    if args.do_train:
        checkpoint = args.resume_from_checkpoint or last_checkpoint
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        metrics = dict(train_result.metrics, train_samples=len(trainer.train_dataset))
        trainer.save_model()  # saves the image processor too
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
        logger.info("*** Predict: every class from K support images each ***")
        run = all_classes[main_k]
        metrics = {"predict_accuracy": float(run.accuracies[0]), "predict_samples": run.queries_per_draw,
                   "predict_num_classes": run.num_classes, "predict_k_shot": main_k}  # fmt: skip
        trainer.log_metrics("predict", metrics)
        trainer.save_metrics("predict", metrics)
        results["predict"] = metrics
        if trainer.is_world_process_zero():
            labels = final.with_format(None)[label_column][:]
            with open(os.path.join(args.output_dir, "predict_results.txt"), "w", encoding="utf-8") as writer:
                writer.write("index\trole\tlabel\tprediction\n")
                for row in run.support_rows:
                    writer.write(f"{row}\tsupport\t{labels[int(row)]}\t{labels[int(row)]}\n")
                for row, y, p in zip(run.query_rows, run.query_labels, run.predictions):
                    writer.write(f"{row}\tquery\t{run.classes[y]}\t{run.classes[p]}\n")

    # ------------------------------------------------------------------ model card or Hub
    kwargs = {"tasks": "image-classification", "dataset": loaded.name,
              "tags": ["few-shot", "meta-learning", args.algorithm]}  # fmt: skip
    if model_args.model_name_or_path != "conv4":
        kwargs["finetuned_from"] = model_args.model_name_or_path
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
