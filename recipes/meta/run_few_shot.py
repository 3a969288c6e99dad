#!/usr/bin/env python
"""Few-shot meta-training (ProtoNet, MAML, FOMAML, ANIL, Meta-SGD, Reptile) with `MetaTrainer`.

Kept for the commands already published with it. The recipes for your own data are
``recipes/few-shot-text/run_few_shot_text.py`` (``--preset clinc150``) and
``recipes/few-shot-vision/run_few_shot_vision.py`` (``--preset omniglot``, ``--preset digits``): the same class splits,
plus files, image folders, Hub data sets, --class_split and the all-classes evaluation.

Data sets (class-disjoint meta-train / meta-test):
  omniglot  ../shared/data/omniglot: meta-train on images_background_small1 (5 alphabets), meta-test on the three
            alphabets of small2 that small1 lacks; rotations x4 as new classes (Santoro et al. 2016);
            --validation_alphabets Balinese holds a small1 alphabet out as validation classes (early stopping with
            --eval_strategy steps --load_best_model_at_end --metric_for_best_model accuracy).
  clinc150  ../shared/data/clinc150: the 150 intents split 60/20/20 by class (seeded), utterances as text.
  digits    scikit-learn's bundled digits: meta-train on 0-5, meta-test on 6-9 (works on any machine).

Examples (measured numbers: the README and benchmarks/README.md)::

    python recipes/meta/run_few_shot.py --dataset omniglot --algorithm protonet --n_way 20 --k_shot 1 --n_query 5 \
        --eval_n_way 5 --k_shot_sweep 1 5 --max_steps 2000 --output_dir runs/omniglot-protonet
    python recipes/meta/run_few_shot.py --dataset omniglot --algorithm maml --n_way 5 --k_shot 1 --inner_lr 0.4 \
        --eval_inner_steps 3 --meta_batch_size 32 --max_steps 3000 --output_dir runs/omniglot-maml
    python recipes/meta/run_few_shot.py --dataset clinc150 --model_name_or_path sentence-transformers/all-MiniLM-L6-v2 \
        --algorithm protonet --embedding mean --learning_rate 2e-5 --max_steps 500 --output_dir runs/clinc-protonet

Pass a single ``.json`` file instead of flags to read the arguments from it (transformers' examples convention).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from dataclasses import dataclass, field

import transformers
from transformers import AutoConfig, AutoModel, AutoTokenizer, HfArgumentParser, set_seed

from hf_transfer_meta.meta import (
    Conv4Config,
    Conv4ForImageClassification,
    Conv4Model,
    EpisodeCollator,
    MetaTrainer,
    MetaTrainingArguments,
    RandomAffine,
    fixed_eval_episodes,
    load_clinc150,
    load_digits_dataset,
    omniglot_meta_splits,
    split_classes,
)

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default="conv4",
        metadata={"help": "'conv4' (Vinyals et al. 2016's 4-block CNN, random init), or a Hub id / local folder."},
    )
    conv4_hidden_size: int = field(default=64, metadata={"help": "Filters per Conv4 block."})
    conv4_downsample: str = field(
        default="maxpool", metadata={"help": "Conv4 blocks: maxpool (ProtoNets) or stride (MAML's Omniglot net)."}
    )
    conv4_norm: str = field(
        default="batch",
        metadata={
            "help": "Conv4 normalisation: batch (nn.BatchNorm2d) or batch_ops (same maths; second-order MAML "
            "can vmap the tasks of a meta-batch: use it on a GPU)."
        },
    )
    attn_implementation: str | None = field(
        default=None, metadata={"help": "Attention kernel of a transformers model (second-order MAML: eager)."}
    )


@dataclass
class DataArguments:
    dataset: str = field(default="omniglot", metadata={"help": "omniglot, clinc150 or digits."})
    data_dir: str | None = field(
        default=None, metadata={"help": "Folder of the data set (default ../shared/data/<dataset>)."}
    )
    image_size: int = field(default=28, metadata={"help": "Omniglot image side."})
    max_length: int = field(default=64, metadata={"help": "Token limit for text."})
    k_shot_sweep: list[int] = field(
        default_factory=lambda: [],
        metadata={"help": "The final evaluation runs once per K in this list (default: eval_k_shot or k_shot)."},
    )
    eval_k_shots: list[int] | None = field(default=None, metadata={"help": "Deprecated name of --k_shot_sweep."})
    class_split_seed: int = field(default=0, metadata={"help": "Seed of the class split (clinc150)."})
    eval_split: str = field(
        default="test",
        metadata={"help": "Classes of the final evaluation: test, or validation to choose settings without test."},
    )
    validation_alphabets: list[str] = field(
        default_factory=lambda: [],
        metadata={"help": "Omniglot: small1 alphabets held out of meta-train as validation classes (e.g. Balinese)."},
    )
    augment: bool = field(
        default=False,
        metadata={"help": "Random affine warp (+-10 deg, +-10% shift, x0.9-1.1) of meta-training images."},
    )

    def __post_init__(self):
        if self.eval_k_shots:
            warnings.warn(
                "--eval_k_shots is deprecated and will be removed in the next release: use --k_shot_sweep.",
                FutureWarning,
                stacklevel=2,
            )
            self.k_shot_sweep = list(self.eval_k_shots)


def load_splits(data: DataArguments):
    """(meta-train, validation or None, meta-test, rotations, text column or None) for the chosen data set."""
    if data.eval_split not in ("test", "validation"):
        raise ValueError(f"--eval_split {data.eval_split!r}: use test or validation.")
    if data.validation_alphabets and data.dataset != "omniglot":
        raise ValueError("--validation_alphabets is for --dataset omniglot (clinc150 has validation intents already).")
    if data.dataset == "omniglot":
        split = omniglot_meta_splits(
            data.data_dir, image_size=data.image_size, validation_alphabets=data.validation_alphabets
        )
        train, validation, test, rotations, text = split.train, split.validation, split.test, [0, 90, 180, 270], None
    elif data.dataset == "clinc150":
        split = split_classes(load_clinc150(data.data_dir), "label", seed=data.class_split_seed)
        train, validation, test, rotations, text = split.train, split.validation, split.test, None, "text"
    elif data.dataset == "digits":
        digits = load_digits_dataset()
        train, test = digits.filter(lambda r: r["label"] < 6), digits.filter(lambda r: r["label"] >= 6)
        validation, rotations, text = None, None, None
    else:
        raise ValueError(f"--dataset {data.dataset!r}: choose omniglot, clinc150 or digits.")
    if data.eval_split == "validation" and validation is None:
        raise ValueError(
            f"--eval_split validation: {data.dataset} has no validation classes here"
            + (" (pass --validation_alphabets, e.g. Balinese)." if data.dataset == "omniglot" else ".")
        )
    return train, validation, test, rotations, text


def build_model(model_args: ModelArguments, data: DataArguments, args: MetaTrainingArguments):
    """(model, processing_class). ProtoNet takes an encoder; the MAML family an N-way classifier."""
    encoder_only = args.algorithm == "protonet"
    if model_args.model_name_or_path == "conv4":
        side = 8 if data.dataset == "digits" else data.image_size
        config = Conv4Config(
            num_channels=1,
            image_size=side,
            num_blocks=3 if data.dataset == "digits" else 4,  # 8x8 digits: 8 -> 4 -> 2 -> 1
            hidden_size=model_args.conv4_hidden_size,
            downsample=model_args.conv4_downsample,
            norm=model_args.conv4_norm,
            num_labels=args.n_way,
        )
        return (Conv4Model(config) if encoder_only else Conv4ForImageClassification(config)), None
    kwargs = {"attn_implementation": model_args.attn_implementation} if model_args.attn_implementation else {}
    if AutoConfig.from_pretrained(model_args.model_name_or_path).model_type == "conv4":  # a saved Conv4: no tokenizer
        cls = Conv4Model if encoder_only else Conv4ForImageClassification
        return cls.from_pretrained(model_args.model_name_or_path), None
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
    if encoder_only:
        return AutoModel.from_pretrained(model_args.model_name_or_path, **kwargs), tokenizer
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        model_args.model_name_or_path, num_labels=args.n_way, **kwargs
    )
    return model, tokenizer


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser((ModelArguments, DataArguments, MetaTrainingArguments))
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        model_args, data, args = parser.parse_json_file(json_file=os.path.abspath(argv[0]))
    else:
        model_args, data, args = parser.parse_args_into_dataclasses(args=argv)

    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
        level=args.get_process_log_level(),
    )
    transformers.utils.logging.set_verbosity(args.get_process_log_level())
    logger.info(f"Meta-training arguments {args}")
    set_seed(args.seed)

    train, validation, test, rotations, text_column = load_splits(data)
    if rotations is not None and args.rotations is None:
        args.rotations = rotations
    if args.eval_strategy != "no" and validation is None:
        raise ValueError(
            f"--eval_strategy {args.eval_strategy} evaluates during training, which needs validation classes (choosing "
            "checkpoints on the test classes would be tuning on test): "
            + ("pass --validation_alphabets." if data.dataset == "omniglot" else f"{data.dataset} has none.")
        )
    if data.augment and text_column is not None:
        raise ValueError("--augment warps images; it does not apply to text.")
    final = validation if data.eval_split == "validation" else test
    model, tokenizer = build_model(model_args, data, args)
    collator = EpisodeCollator(
        processing_class=tokenizer,
        input_column=text_column,
        max_length=data.max_length if tokenizer is not None else None,
    )
    trainer = MetaTrainer(
        model=model,
        args=args,
        train_dataset=train if args.do_train else None,
        eval_dataset=validation if validation is not None else test,  # during training: validation classes only
        train_transform=RandomAffine(seed=args.seed) if data.augment else None,
        processing_class=tokenizer,
        data_collator=collator,
    )
    results = {"meta": None, "eval": {}}
    if args.do_train:
        train_result = trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
        trainer.save_model()
        trainer.log_metrics("train", train_result.metrics)
        trainer.save_metrics("train", train_result.metrics)
        trainer.save_state()
    results["meta"] = trainer.meta_summary()

    k_shots = data.k_shot_sweep or [args.eval_k_shot or args.k_shot]
    for k in k_shots:
        n = args.eval_n_way or args.n_way
        prefix = f"{data.eval_split}_{n}way_{k}shot"
        metrics = trainer.evaluate(fixed_eval_episodes(final, args, k_shot=k), metric_key_prefix=prefix)
        trainer.log_metrics(prefix, metrics)
        trainer.save_metrics(prefix, metrics)
        results["eval"][prefix] = metrics
    if trainer.is_world_process_zero():
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, "few_shot_results.json"), "w") as f:
            json.dump({"dataset": data.dataset, "model": model_args.model_name_or_path, **results}, f, indent=2)
    if args.push_to_hub:
        trainer.push_to_hub(dataset=data.dataset, tags=["few-shot", args.algorithm])
    return results


if __name__ == "__main__":
    main()
