"""`hf-transfer-meta` command line: `layers` prints a model's layer map, `demo` runs the end-to-end study, `select`
ranks pretrained checkpoints on the user's data, `card` writes a finished run's model card again."""

from __future__ import annotations

import argparse
import sys

AUTO_CLASS_BY_TASK = {
    "text-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "question-answering": "AutoModelForQuestionAnswering",
    "image-classification": "AutoModelForImageClassification",
    "causal-lm": "AutoModelForCausalLM",
    "masked-lm": "AutoModelForMaskedLM",
    "seq2seq-lm": "AutoModelForSeq2SeqLM",
    "feature-extraction": "AutoModel",
}


def _layers(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="hf-transfer-meta layers",
        description="Load a model with the Auto class of --task and print its layer map (depth, modules, params, LR).",
    )
    parser.add_argument("--model", required=True, help="Local folder or Hub id (Hub ids need network access).")
    parser.add_argument("--task", default="feature-extraction", choices=sorted(AUTO_CLASS_BY_TASK))
    parser.add_argument("--num_labels", type=int, default=None, help="Number of labels of a new classification head.")
    parser.add_argument("--learning_rate", type=float, default=None, help="Show per-depth LRs for this base LR.")
    parser.add_argument("--layer_lr_decay", type=float, default=None, help="Show LLRD LRs (needs --learning_rate).")
    parser.add_argument("--blocks", nargs="+", default=None, help="Override: module paths of the blocks.")
    parser.add_argument("--head", nargs="+", default=None, help="Override: module paths of the head.")
    parser.add_argument("--trust_remote_code", action="store_true")
    args = parser.parse_args(argv)

    import transformers

    from . import vision  # noqa: F401  (registers EfficientNet-Lite and the CIFAR ResNets with the Auto classes)
    from .transfer.layer_map import LayerMap, LayerMapError
    from .transfer.param_groups import depth_learning_rates

    auto_cls = getattr(transformers, AUTO_CLASS_BY_TASK[args.task])
    kwargs = {"trust_remote_code": args.trust_remote_code}
    if args.num_labels is not None:
        kwargs["num_labels"] = args.num_labels
    try:
        model = auto_cls.from_pretrained(args.model, **kwargs)
    except OSError as err:
        print(
            f"error: cannot load {args.model!r} as {AUTO_CLASS_BY_TASK[args.task]}: {err}\n"
            "Pass a local model folder (with config.json), or a Hub id when the Hub is reachable.",
            file=sys.stderr,
        )
        return 2
    try:
        layer_map = LayerMap.from_model(model, blocks=args.blocks, head=args.head)
    except LayerMapError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    lrs = None
    if args.learning_rate is not None:
        lrs = depth_learning_rates(layer_map, args.learning_rate, layer_lr_decay=args.layer_lr_decay)
    print(layer_map.describe(lrs=lrs))
    return 0


def _demo(argv: list[str]) -> int:
    from .demo import main as demo_main

    demo_main(argv)
    return 0


def _select(argv: list[str]) -> int:
    from .selection.cli import main as select_main

    return select_main(argv)


def _card(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="hf-transfer-meta card",
        description="Write the model card (README.md) and its plots of a finished run folder again, from its "
        "records (run_info.json, trainer_state.json, all_results.json, the strategy or meta-training summary, "
        "depth_drift.json). No model is loaded.",
    )
    parser.add_argument("run_dir", help="The output_dir of a run made by TransferTrainer or MetaTrainer.")
    parser.add_argument("--no_plots", action="store_true", help="Write the card without its figures.")
    args = parser.parse_args(argv)

    import os

    from .cards.card import write_card
    from .cards.record import RUN_INFO_FILE

    if not os.path.isdir(args.run_dir):
        print(f"error: {args.run_dir!r} is not a folder: pass the output_dir of a finished run.", file=sys.stderr)
        return 2
    has_state = os.path.isfile(os.path.join(args.run_dir, "trainer_state.json")) or any(
        n.startswith("checkpoint-") for n in os.listdir(args.run_dir)
    )
    if not os.path.isfile(os.path.join(args.run_dir, RUN_INFO_FILE)) and not has_state:
        print(
            f"error: {args.run_dir!r} has neither {RUN_INFO_FILE} nor trainer_state.json: it is not the output_dir "
            "of a run (TransferTrainer / MetaTrainer write both when training ends, and create_model_card).",
            file=sys.stderr,
        )
        return 2
    path = write_card(args.run_dir, plots=not args.no_plots)
    print(path)
    return 0


COMMANDS = {"layers": _layers, "demo": _demo, "select": _select, "card": _card}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(
            "usage: hf-transfer-meta {" + ",".join(COMMANDS) + "} [options]\n"
            "  layers  print the layer map of a model (depth -> modules, parameter count, LR)\n"
            "  demo    run the transfer study and the meta-learning study (digits, sinusoid)\n"
            "  select  rank pretrained checkpoints on your data (CV linear probe, LogME), best first\n"
            "  card    write the model card and plots of a finished run folder again (RUN_DIR)\n"
            "Run `hf-transfer-meta COMMAND --help` for a command's options.",
            file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout,
        )
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
