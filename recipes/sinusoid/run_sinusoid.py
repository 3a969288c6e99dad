#!/usr/bin/env python
"""Few-shot regression on Finn et al. 2017's sinusoid family (MAML, section 5.1) with `MetaTrainer`.

Algorithms: ``maml`` (second order), ``fomaml``, ``metasgd`` (learned per-parameter inner LRs), and ``finetune``,
the paper's "pretrained" baseline: one network trained on all tasks jointly (no inner loop), fine-tuned by SGD on
each test task's support points. Reports the query MSE after 0 (pre-adaptation), 1 and 10 inner steps with its 95% CI
over ``--eval_tasks`` test tasks, and saves the lecture's figure: for a few test tasks, the true curve, the K support
points and the fit before and after adaptation (``sinusoid_fits.png``, needs matplotlib).

    python recipes/sinusoid/run_sinusoid.py --algorithm maml --max_steps 7000 --output_dir runs/sinusoid-maml

The paper's settings are the defaults: K=10, MLP 1-40-40-1, one inner step at lr 0.01, Adam 1e-3, 25 tasks per
meta-batch. Pass a single ``.json`` file instead of flags to read the arguments from it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field

import torch
import transformers
from transformers import HfArgumentParser, PrinterCallback, set_seed
from transformers.trainer_utils import get_last_checkpoint

from hf_transfer_meta.meta import MAML, MetaSGD, MetaTrainer, MetaTrainingArguments, SinusoidMLP, SinusoidTasks
from hf_transfer_meta.meta.sinusoid import evaluate_sinusoid

logger = logging.getLogger(__name__)

ALGORITHMS = ("maml", "fomaml", "metasgd", "finetune")
# Finn et al. 2017, section 5.1: what MetaTrainingArguments' defaults (set for Omniglot) are replaced by here.
PAPER_DEFAULTS = dict(
    algorithm="maml", k_shot=10, n_query=10, inner_lr=0.01, inner_steps=1, per_device_train_batch_size=25, learning_rate=1e-3,
    max_steps=7000, optim="adamw_torch", weight_decay=0.0, max_grad_norm=0.0, logging_steps=100, save_steps=1000,
    report_to="none", dataloader_num_workers=0, dataloader_pin_memory=False,
)  # fmt: skip


@dataclass
class SinusoidArguments:
    eval_tasks: int = field(default=600, metadata={"help": "Test tasks (the 95 percent CI is over them)."})
    adaptation_steps: list[int] = field(
        default_factory=lambda: [1, 10], metadata={"help": "Inner steps at test to report (0 = before adaptation)."}
    )
    plot_tasks: int = field(default=3, metadata={"help": "Test tasks drawn in sinusoid_fits.png (0: no figure)."})
    hidden_sizes: list[int] = field(default_factory=lambda: [40, 40], metadata={"help": "Hidden layers of the MLP."})

    def __post_init__(self):
        if self.eval_tasks < 1:
            raise ValueError(f"eval_tasks={self.eval_tasks} must be >= 1.")
        if any(s < 0 for s in self.adaptation_steps):
            raise ValueError(f"adaptation_steps={self.adaptation_steps}: steps must be >= 0.")


def parse_args(argv=None):
    parser = HfArgumentParser((SinusoidArguments, MetaTrainingArguments))
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        with open(argv[0]) as f:
            given = json.load(f)
        return parser.parse_dict({**PAPER_DEFAULTS, **given})
    parser.set_defaults(**PAPER_DEFAULTS)
    data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    if training_args.algorithm not in ALGORITHMS:
        raise ValueError(f"--algorithm {training_args.algorithm!r}: the sinusoid recipe runs one of {ALGORITHMS}.")
    return data_args, training_args


def build_algorithm(args: MetaTrainingArguments):
    """The algorithm of ``args.algorithm``; ``finetune`` = joint training (no inner step) + SGD at test."""
    test_steps = args.eval_inner_steps if args.eval_inner_steps is not None else args.inner_steps
    if args.algorithm == "finetune":
        return MAML(inner_lr=args.eval_inner_lr or args.inner_lr, inner_steps=0, eval_steps=max(1, test_steps))
    if args.algorithm == "metasgd":
        return MetaSGD(inner_lr=args.inner_lr, inner_steps=args.inner_steps, eval_steps=args.eval_inner_steps)
    return MAML(
        inner_lr=args.inner_lr, inner_steps=args.inner_steps, eval_steps=args.eval_inner_steps,
        first_order=args.algorithm == "fomaml",
    )  # fmt: skip


def plot_fits(algorithm, model, tasks: SinusoidTasks, count: int, steps: int, path: str) -> str:
    """The lecture's figure: true curve, support points, the fit before and after ``steps`` inner steps."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("The sinusoid figure needs matplotlib: pip install matplotlib (or --plot_tasks 0).") from e
    grid = torch.linspace(-5, 5, 200).unsqueeze(-1)
    fig, axes = plt.subplots(1, count, figsize=(4 * count, 3.2), squeeze=False)
    for i, ax in enumerate(axes[0]):
        episode = tasks[i]
        amp, phase = tasks.task(i)
        dense = {**episode, "query": {"x": grid}, "query_labels": amp * torch.sin(grid - phase)}
        before = algorithm.adapt_and_predict(model, dense, steps=0)
        after = algorithm.adapt_and_predict(model, dense, steps=steps)
        ax.plot(grid, amp * torch.sin(grid - phase), color="black", label="true")
        ax.plot(grid, before, "--", color="tab:blue", label="before adaptation")
        ax.plot(grid, after, color="tab:red", label=f"after {steps} step{'s' if steps != 1 else ''}")
        ax.scatter(episode["support"]["x"], episode["support_labels"], color="tab:green", zorder=3, label="K support")
        ax.set_title(f"A={amp:.2f}, phase={phase:.2f}")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> dict:
    data_args, training_args = parse_args(argv)

    # Setup logging
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    set_seed(training_args.seed)

    # Detecting last checkpoint (transformers' examples convention)
    last_checkpoint = None
    if os.path.isdir(training_args.output_dir) and training_args.do_train:
        last_checkpoint = get_last_checkpoint(training_args.output_dir)

    # Tasks and model
    train_tasks = SinusoidTasks(
        training_args.max_steps * training_args.per_device_train_batch_size, k_shot=training_args.k_shot,
        n_query=training_args.n_query, seed=training_args.seed,
    )  # fmt: skip
    model = SinusoidMLP(hidden=tuple(data_args.hidden_sizes))
    algorithm = build_algorithm(training_args)

    # Initialize the trainer
    trainer = MetaTrainer(model=model, args=training_args, train_dataset=train_tasks, algorithm=algorithm)
    if training_args.disable_tqdm:
        trainer.remove_callback(PrinterCallback)

    # Training
    results: dict = {"algorithm": training_args.algorithm}
    if training_args.do_train or not training_args.do_eval:
        checkpoint = training_args.resume_from_checkpoint or last_checkpoint
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.log_metrics("train", train_result.metrics)
        trainer.save_metrics("train", train_result.metrics)
        trainer.save_state()
        trainer.save_model()
        results.update({f"train_{k}" if not k.startswith("train") else k: v for k, v in train_result.metrics.items()})

    # Evaluation: query MSE after each number of inner steps, on test tasks no training task shares
    metrics: dict[str, float] = {}
    seed = 10_000 + training_args.seed
    for steps in sorted({0, *data_args.adaptation_steps}):
        r = evaluate_sinusoid(
            algorithm, model, num_tasks=data_args.eval_tasks, steps=steps, k_shot=training_args.k_shot, seed=seed
        )
        metrics[f"eval_mse_{steps}_steps"] = r["mse"]
        metrics[f"eval_mse_{steps}_steps_ci95"] = r["mse_ci95"]
    main_steps = data_args.adaptation_steps[0] if data_args.adaptation_steps else 0
    metrics["eval_mse"], metrics["eval_mse_ci95"] = (
        metrics[f"eval_mse_{main_steps}_steps"],
        metrics[f"eval_mse_{main_steps}_steps_ci95"],
    )
    metrics["eval_tasks"] = data_args.eval_tasks
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    results.update(metrics)

    # The figure
    if data_args.plot_tasks > 0:
        tasks = SinusoidTasks(
            data_args.plot_tasks, k_shot=training_args.k_shot, n_query=training_args.k_shot, seed=seed
        )
        steps = max(data_args.adaptation_steps or [1])
        path = plot_fits(
            algorithm,
            model,
            tasks,
            data_args.plot_tasks,
            steps,
            os.path.join(training_args.output_dir, "sinusoid_fits.png"),
        )
        logger.info(f"figure: {path}")

    # The end: push to the Hub or write the card
    kwargs = {
        "finetuned_from": "SinusoidMLP (random init)",
        "tasks": "sinusoid-regression",
        "dataset": "sinusoid regression tasks (Finn et al. 2017, section 5.1)",
        "tags": ["few-shot", "sinusoid", training_args.algorithm],
    }
    if training_args.push_to_hub:
        trainer.push_to_hub(**kwargs)
    else:
        trainer.create_model_card(**kwargs)
    return results


if __name__ == "__main__":
    main()
