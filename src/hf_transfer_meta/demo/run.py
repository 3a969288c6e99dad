"""`hf-transfer-meta demo`: its options (`DemoArguments`), its presets, and `main`, which runs the studies.

A new user's first command must end in minutes, and a reader of the table must see what ran: so the default is a
lighter study than `--full` (fewer seeds, no LR search, fewer test episodes and sinusoid meta-updates), every
number is a real run, and the tables say how many seeds and episodes made them. A flag given explicitly overrides
the preset.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from transformers import HfArgumentParser
from transformers.utils import logging as hf_logging

from .data import META_TEST_CLASSES, TASKS
from .meta_study import DEFAULT_META_METHODS, META_METHODS, run_meta_study
from .report import log, stderr_is_terminal
from .transfer import STRATEGIES, run_transfer_study

__all__ = ["PRESETS", "STUDIES", "DemoArguments", "main"]

# A study is a function of the demo arguments that prints its own table and returns a JSON-able dict (with its
# "table"), stored under its name in results.json. Every study listed here runs by default, in this order.
STUDIES: dict[str, Callable[[DemoArguments], dict]] = {"transfer": run_transfer_study, "meta": run_meta_study}

# Values of the fields left unset (None), per preset. `meta_steps=None`: each method's own `max_steps`.
_FULL = {
    "num_seeds": 3,
    "lr_multipliers": [0.3, 1.0, 3.0],
    "source_epochs": 30,
    "target_epochs": 20,
    "strategies": list(STRATEGIES),
    "meta_steps": None,
    "meta_eval_episodes": 600,
    "sinusoid_steps": 3000,
}
PRESETS: dict[str, dict] = {
    # --full's training runs, fewer of them (seed 0 at each strategy's own LR), a third of the test episodes and of
    # the sinusoid meta-updates, so that a new user's first command ends in minutes (benchmarks/README.md, "demo")
    "default": {**_FULL, "num_seeds": 1, "lr_multipliers": [1.0], "meta_eval_episodes": 200, "sinusoid_steps": 1000},
    "full": _FULL,
    "quick": {
        "num_seeds": 1,
        "lr_multipliers": [1.0],
        "source_epochs": 12,
        "target_epochs": 10,
        "strategies": ["full_ft", "linear_probe", "lp_ft", "surgical_first"],
        "meta_steps": 20,
        "meta_eval_episodes": 50,
        "sinusoid_steps": 200,
    },
}


def _preset_help(name: str) -> str:
    def show(value):
        return "each method's own" if value is None else "all" if value == list(STRATEGIES) else value

    return " (None: the preset's: " + ", ".join(f"{p} {show(values[name])}" for p, values in PRESETS.items()) + ")"


def _help(text: str, preset_field: str | None = None) -> dict:
    return {"help": text + (_preset_help(preset_field) if preset_field else "")}


@dataclass
class DemoArguments:
    """Options of `hf-transfer-meta demo` (every field is a CLI flag)."""

    output_dir: str = field(default="outputs/demo", metadata=_help("Where the source model, runs and results go."))
    seed: int = field(default=0, metadata=_help("Seed of the data splits and the source model."))
    full: bool = field(
        default=False,
        metadata=_help(
            f"The full study: {_FULL['num_seeds']} seeds, each run's LR chosen per seed on validation among "
            f"{_FULL['lr_multipliers']} x the strategy's, {_FULL['meta_eval_episodes']} test episodes, "
            f"{_FULL['sinusoid_steps']} sinusoid meta-updates."
        ),
    )
    quick: bool = field(
        default=False,
        metadata=_help(
            "A smoke test: one seed, short training, four strategies, "
            f"{PRESETS['quick']['meta_steps']} meta-updates, {PRESETS['quick']['meta_eval_episodes']} test episodes."
        ),
    )
    studies: list[str] = field(
        default_factory=lambda: list(STUDIES),
        metadata=_help("Studies to run, in order (`--studies meta` runs the meta-learning study alone)."),
    )
    tasks: list[str] = field(
        default_factory=lambda: list(TASKS), metadata=_help("Target tasks of the transfer study.")
    )
    strategies: list[str] | None = field(
        default=None, metadata=_help(f"Strategies to compare, from {list(STRATEGIES)}", "strategies")
    )
    num_seeds: int | None = field(
        default=None,
        metadata=_help("Target runs per (task, strategy), each with its own few-shot draw and seed", "num_seeds"),
    )
    shots: int = field(default=20, metadata=_help("Target training images per class."))
    val_per_class: int = field(
        default=10, metadata=_help("Target validation images per class (they choose the LR and LP-FT's C).")
    )
    source_epochs: float | None = field(default=None, metadata=_help("Epochs of source pretraining", "source_epochs"))
    target_epochs: float | None = field(
        default=None, metadata=_help("Epochs of every target fine-tuning", "target_epochs")
    )
    ood_noise: float = field(default=0.4, metadata=_help("Std of the Gaussian noise of the OOD test images."))
    source_noise: float = field(
        default=0.4, metadata=_help("Source pretraining adds Gaussian noise of std drawn from U(0, source_noise).")
    )
    lp_mode: str = field(
        default="logistic",
        metadata={
            "help": "LP-FT's probe: `logistic` (scikit-learn on frozen features, C chosen on validation) or "
            "`epochs` (the head alone by SGD for the first third of training).",
            "choices": ["logistic", "epochs"],
        },
    )
    lr_multipliers: list[float] | None = field(
        default=None,
        metadata=_help(
            "LR grid, as multiples of each strategy's LR; with more than one, chosen per run on validation",
            "lr_multipliers",
        ),
    )
    meta_methods: list[str] | None = field(
        default=None,
        metadata=_help(
            f"Meta-learning methods on digits, from {list(META_METHODS)} (default: {DEFAULT_META_METHODS})."
        ),
    )
    meta_way: int = field(default=4, metadata=_help("Classes per episode (N), meta-training and test."))
    meta_shots: list[int] = field(
        default_factory=lambda: [1, 5],
        metadata=_help("Support images per class (K); one meta-training per K, tested on K-shot episodes."),
    )
    meta_query: int = field(default=15, metadata=_help("Query images per class of every episode."))
    meta_eval_episodes: int | None = field(
        default=None,
        metadata=_help("Fixed test episodes per setting (digits) and test tasks (sinusoid)", "meta_eval_episodes"),
    )
    meta_steps: int | None = field(default=None, metadata=_help("Meta-updates of every digits method", "meta_steps"))
    sinusoid_steps: int | None = field(
        default=None,
        metadata=_help("Meta-updates of MAML on the sinusoid (25 tasks each); 0 skips it", "sinusoid_steps"),
    )
    disable_tqdm: bool = field(
        default=False,
        metadata=_help("Hide the progress bars (always hidden when stderr is not a terminal, e.g. a log file)."),
    )

    @property
    def preset(self) -> str:
        return "full" if self.full else "quick" if self.quick else "default"

    def __post_init__(self):
        if self.full and self.quick:
            raise ValueError("--full and --quick are two presets: pass one of them.")
        for name, value in PRESETS[self.preset].items():
            if getattr(self, name) is None:
                setattr(self, name, list(value) if isinstance(value, list) else value)
        if self.meta_methods is None:
            self.meta_methods = list(DEFAULT_META_METHODS)
        self.disable_tqdm = self.disable_tqdm or not stderr_is_terminal()  # a log file gets the plain lines only
        for what, given, known in (
            ("study", self.studies, STUDIES),
            ("task", self.tasks, TASKS),
            ("strategy", self.strategies, STRATEGIES),
            ("meta-learning method", self.meta_methods, META_METHODS),
        ):
            unknown = [x for x in given if x not in known]
            if unknown:
                raise ValueError(f"Unknown {what} {unknown}: choose from {list(known)}.")
        if self.num_seeds < 1 or self.shots < 1 or self.val_per_class < 1 or not self.lr_multipliers:
            raise ValueError(
                f"num_seeds, shots and val_per_class must be >= 1 and lr_multipliers non-empty, got {self.num_seeds}, "
                f"{self.shots}, {self.val_per_class}, {self.lr_multipliers}."
            )
        if self.lp_mode not in ("logistic", "epochs"):
            raise ValueError(f"lp_mode must be 'logistic' or 'epochs', got {self.lp_mode!r}.")
        if not 2 <= self.meta_way <= len(META_TEST_CLASSES):
            raise ValueError(
                f"meta_way={self.meta_way}: episodes draw from the {len(META_TEST_CLASSES)} test digits, so choose "
                f"2..{len(META_TEST_CLASSES)}."
            )
        if not self.meta_shots or min(self.meta_shots) < 1 or self.meta_query < 1 or self.meta_eval_episodes < 1:
            raise ValueError(
                f"meta_shots, meta_query and meta_eval_episodes must be >= 1, got {self.meta_shots}, "
                f"{self.meta_query}, {self.meta_eval_episodes}."
            )

    def describe(self) -> str:
        """One line of what this preset runs, for the start of the log."""
        lr = "LR chosen per seed on validation" if len(self.lr_multipliers) > 1 else "no LR search"
        return (
            f"{self.preset} study: {self.num_seeds} seed(s), {lr}, {len(self.strategies)} strategies x "
            f"{len(self.tasks)} tasks; {len(self.meta_methods)} meta-learning methods, {self.meta_eval_episodes} test "
            f"episodes, {self.sinusoid_steps} sinusoid meta-updates"
            + ("" if self.full else " (`--full` for the full study)")
        )


def _check_writable(output_dir: str) -> None:
    try:
        os.makedirs(output_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output_dir, prefix=".write_test_"):
            pass
    except OSError as err:
        raise SystemExit(
            f"error: cannot write to --output_dir {output_dir!r} ({err.strerror or err}). Pass a folder you can "
            "write to, e.g. --output_dir outputs/demo."
        ) from None


@contextlib.contextmanager
def _study_environment():
    """Quiet and fast for a study of many small runs; everything is restored afterwards.

    * transformers' own progress bars and load reports are off: every run reloads the source model, and the head
      mismatch of a new head is expected (Trainer's progress bars stay);
    * objects alive now are moved out of the garbage collector's reach (`gc.freeze`): accelerate runs
      `gc.collect()` after every training, which otherwise walks the large heap of transformers at every run;
    * torch uses one thread: these models are too small to gain from more, and threads spin-wait when the cores are
      shared.
    """
    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    threads = torch.get_num_threads()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    torch.set_num_threads(1)
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
        torch.set_num_threads(threads)
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def main(argv: list[str] | None = None) -> dict:
    """Parse `argv` into `DemoArguments`, run the studies, write `results.json`; returns the results."""
    parser = HfArgumentParser(DemoArguments)
    parser.prog = "hf-transfer-meta demo"
    try:
        (args,) = parser.parse_args_into_dataclasses(args=argv if argv is not None else sys.argv[1:])
    except ValueError as err:
        parser.error(str(err))
    _check_writable(args.output_dir)
    log(args.describe())
    start = time.perf_counter()
    results = {"arguments": {**asdict(args), "preset": args.preset}}
    with _study_environment():
        for name in args.studies:
            results[name] = STUDIES[name](args)
    results["seconds"] = time.perf_counter() - start
    if len(args.studies) > 1:  # each study printed its table when it ended; here they are side by side
        print("\n" + "\n\n".join(results[name]["table"] for name in args.studies), flush=True)
    path = os.path.join(args.output_dir, "results.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2, default=str)
    log(f"results in {path} ({results['seconds']:.0f}s)")
    return results
