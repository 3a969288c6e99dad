"""The meta-learning study: episodic meta-training on digits 0-5 with `MetaTrainer`, tested on digits 6-9.

Each method of `META_METHODS` meta-trains a network of Conv4 blocks once per shot count (N-way K-shot) and is tested
on fixed, seeded episodes, the same episodes for every method; the table gives the mean query accuracy and its 95%
CI. "no meta-training" tests the same randomly initialised network the same way (ProtoNet: prototypes of random
features; MAML: the same SGD steps on the support set), so the table shows what meta-training buys. Then MAML on the
sinusoid exactly as Finn et al. 2017 ("Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks", section
5.1): the MSE after one step, before it, and from a random initialisation.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from transformers import set_seed

from ..meta import (
    Conv4Config,
    Conv4ForImageClassification,
    Conv4Model,
    EpisodeDataset,
    MetaTrainer,
    MetaTrainingArguments,
    SinusoidMLP,
    SinusoidTasks,
)
from .data import META_TEST_CLASSES, META_TRAIN_CLASSES, load_meta_digits
from .report import EpisodeProgressBars, format_meta_table, log, meta_result_line, progress_bars_only

if TYPE_CHECKING:
    from .run import DemoArguments

__all__ = ["DEFAULT_META_METHODS", "META_METHODS", "SINUSOID", "MetaMethod", "meta_train_and_test", "run_meta_study"]


@dataclass(frozen=True)
class MetaMethod:
    """A meta-learning method of the demo: a label, the `MetaTrainingArguments` fields that make it, its steps.

    ProtoNet embeds with `Conv4Model`; the MAML family adapts `Conv4ForImageClassification` (an N-way head) by SGD
    on each episode's support set. `max_steps` is where validation accuracy stopped rising (see `_SGD`).
    """

    label: str
    fields: dict
    max_steps: int

    @property
    def encoder_only(self) -> bool:
        return self.fields["algorithm"] == "protonet"


META_BATCH = 4  # episodes per meta-update
# Chosen on meta-train digits only (leave-two-out folds over 0-5, 2-way validation episodes); digits 6-9 chose
# nothing. Finn et al.'s inner LR of 0.4 for Omniglot overshoots on this small network; 3 SGD steps at test are their
# Omniglot protocol and give the random-init baseline a fair chance (benchmarks/README.md, "demo", has the numbers).
_SGD = {"inner_lr": 0.05, "inner_steps": 1, "eval_inner_steps": 3}
META_METHODS: dict[str, MetaMethod] = {
    "protonet": MetaMethod("ProtoNet", {"algorithm": "protonet"}, max_steps=100),
    "maml": MetaMethod("MAML (2nd order)", {"algorithm": "maml", **_SGD}, max_steps=150),
    "fomaml": MetaMethod("FOMAML", {"algorithm": "fomaml", **_SGD}, max_steps=150),
}
DEFAULT_META_METHODS = ("protonet", "maml")  # FOMAML is one flag away: --meta_methods protonet maml fomaml

# Finn et al.'s section 5.1: K=10, one inner step at 0.01, meta-batch 25, Adam 1e-3; 100 query points per test task.
SINUSOID = {"k_shot": 10, "inner_lr": 0.01, "meta_batch": 25, "test_points": 100}


def _conv4_config(n_way: int) -> Conv4Config:
    # Three of Conv4's blocks: each halves the side, and an 8x8 digit is 1x1 (64 features) after three.
    return Conv4Config(num_channels=1, image_size=8, hidden_size=64, num_blocks=3, num_labels=n_way)


def _meta_training_args(run_dir: str, args: DemoArguments, max_steps: int, **fields) -> MetaTrainingArguments:
    defaults = dict(
        output_dir=run_dir,
        seed=args.seed,
        episode_seed=args.seed,
        use_cpu=True,
        report_to="none",
        max_steps=max_steps,
        per_device_train_batch_size=META_BATCH,
        learning_rate=1e-3,
        save_strategy="no",
        logging_strategy="steps",
        logging_steps=max(1, max_steps // 10),
        disable_tqdm=args.disable_tqdm,
        dataloader_num_workers=0,
    )
    return MetaTrainingArguments(**{**defaults, **fields})


def _evaluate_episodes(trainer: MetaTrainer, episodes, bars: EpisodeProgressBars | None) -> dict:
    """Mean query accuracy (or MSE) over `episodes` with its 95% CI, and the pre-adaptation value."""
    if bars is not None:
        bars.expect(len(episodes), trainer.args.per_device_eval_batch_size)
    out = trainer.evaluate(episodes)
    name = "mse" if "eval_mse" in out else "accuracy"
    return {
        "metric": name,
        "value": out[f"eval_{name}"],
        "ci95": out[f"eval_{name}_ci95"],
        "pre_adaptation": out.get(f"eval_pre_adaptation_{name}"),
        "loss": out["eval_loss"],
        "episodes": out["eval_episodes"],
        "seconds": out["eval_runtime"],
    }


def meta_train_and_test(
    model,
    targs: MetaTrainingArguments,
    train_dataset,
    test_episodes,
    before: dict | None = None,
    card: dict | None = None,
) -> dict:
    """Evaluate `model` on `test_episodes` (unless `before` is given), meta-train it, evaluate it again, save it.

    Returns ``{"before": ..., "after": ..., "train_seconds", "train_loss", "meta": trainer.meta_summary()}``; the
    run folder gets the model, `trainer_state.json` (the meta-training curve) and `result.json`.
    """
    trainer = MetaTrainer(model=model, args=targs, train_dataset=train_dataset)
    bars = progress_bars_only(trainer, EpisodeProgressBars)
    if before is None:
        before = _evaluate_episodes(trainer, test_episodes, bars)
    start = time.perf_counter()
    train_out = trainer.train()
    train_seconds = time.perf_counter() - start
    after = _evaluate_episodes(trainer, test_episodes, bars)
    result = {
        "before": before,
        "after": after,
        "train_seconds": train_seconds,
        "train_loss": train_out.training_loss,
        "meta": trainer.meta_summary(),
        "run_dir": targs.output_dir,
    }
    trainer.save_model(targs.output_dir)
    name = after["metric"]
    # For the card: test episodes (classes or tasks no training episode has), before and after meta-training.
    all_results = {
        f"test_{name}": after["value"], f"test_{name}_ci95": after["ci95"], "test_episodes": after["episodes"],
        f"test_no_meta_training_{name}": before["value"], f"test_no_meta_training_{name}_ci95": before["ci95"],
        "train_loss": train_out.training_loss, "train_seconds": train_seconds,
    }  # fmt: skip
    if after["pre_adaptation"] is not None:
        all_results[f"test_pre_adaptation_{name}"] = after["pre_adaptation"]
    trainer.save_metrics("all", all_results)
    trainer.state.save_to_json(os.path.join(targs.output_dir, "trainer_state.json"))
    with open(os.path.join(targs.output_dir, "result.json"), "w") as f:
        json.dump(result, f, indent=2, default=str)
    trainer.create_model_card(**(card or {}))
    return result


def _meta_row(task: str, method: str, label: str, setting: str, run: dict, **extra) -> dict:
    before, after = run["before"], run["after"]
    return {
        "task": task,
        "method": method,
        "label": label,
        "setting": setting,
        "metric": after["metric"],
        "value": after["value"],
        "ci95": after["ci95"],
        "pre_adaptation": after["pre_adaptation"],
        "no_meta_training": before["value"],
        "no_meta_training_ci95": before["ci95"],
        "episodes": after["episodes"],
        "train_seconds": run["train_seconds"],
        "eval_seconds": after["seconds"] + (0.0 if run.get("shared_before") else before["seconds"]),
        "run_dir": run["run_dir"],
        **extra,
    }


def run_meta_study(args: DemoArguments) -> dict:
    """Meta-train every method of `meta_methods` on digits 0-5 and test it on episodes of digits 6-9; then MAML on
    the sinusoid. Every row also evaluates the same network before meta-training."""
    study_dir = os.path.join(args.output_dir, "meta")
    os.makedirs(study_dir, exist_ok=True)
    start = time.perf_counter()
    meta_train, meta_test = load_meta_digits()
    way, methods = args.meta_way, args.meta_methods
    # The same fixed test episodes for every method (paired comparison); seeded apart from the training episodes.
    tests = {
        k: EpisodeDataset(
            meta_test, way, k, args.meta_query, num_episodes=args.meta_eval_episodes, seed=args.seed + 1, fixed=True
        )
        for k in args.meta_shots
    }
    rows, baselines = [], {}
    total, done = len(methods) * len(args.meta_shots) + int(args.sinusoid_steps > 0), 0
    for name in methods:
        method = META_METHODS[name]
        steps = args.meta_steps if args.meta_steps is not None else method.max_steps
        for k, episodes in tests.items():
            setting = f"{way}-way {k}-shot"
            run_dir = os.path.join(study_dir, "digits", name, f"{way}way_{k}shot")
            done += 1
            log(f"meta run {done}/{total}: digits | {method.label} | {setting} | {steps} steps")
            set_seed(args.seed)
            config = _conv4_config(way)
            model = Conv4Model(config) if method.encoder_only else Conv4ForImageClassification(config)
            fields = {**method.fields, "n_way": way, "k_shot": k, "n_query": args.meta_query}
            targs = _meta_training_args(run_dir, args, steps, **fields)
            # Before meta-training, methods that share the model and the test-time procedure (MAML and FOMAML: the
            # same SGD steps from the same random init) have the same number: evaluate it once.
            lr = targs.eval_inner_lr or targs.inner_lr
            key = (method.encoder_only, k, str(targs.adapt_spec), lr, targs.eval_inner_steps)
            card = {
                "model_name": f"demo-meta-digits-{name}-{way}way{k}shot",
                "dataset": f"scikit-learn digits (meta-train digits {list(META_TRAIN_CLASSES)}, test episodes of "
                f"{list(META_TEST_CLASSES)})",
                "tags": ["hf-transfer-meta-demo"],
            }
            run = meta_train_and_test(model, targs, meta_train, episodes, before=baselines.get(key), card=card)
            run["shared_before"] = key in baselines
            baselines.setdefault(key, run["before"])
            rows.append(_meta_row("digits", name, method.label, setting, run, chance=1 / way, meta_steps=steps))
            log(meta_result_line(rows[-1]))
    if args.sinusoid_steps > 0:
        done += 1
        log(f"meta run {done}/{total}: sinusoid | MAML (2nd order) | {args.sinusoid_steps} steps")
        rows.append(_sinusoid_row(args, os.path.join(study_dir, "sinusoid", "maml")))
        log(meta_result_line(rows[-1]))
    table = format_meta_table(rows, _table_notes(rows))
    results = {
        "digits": {
            "meta_train_classes": list(META_TRAIN_CLASSES),
            "meta_test_classes": list(META_TEST_CLASSES),
            "meta_train_images": len(meta_train),
            "meta_test_images": len(meta_test),
            "model": _conv4_config(way).to_dict(),
            "meta_batch_size": META_BATCH,
            "test_episodes": args.meta_eval_episodes,
            "n_query": args.meta_query,
        },
        "sinusoid": SINUSOID,
        "summary": rows,
        "table": table,
        "seconds": time.perf_counter() - start,
    }
    with open(os.path.join(study_dir, "table.txt"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(study_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2, default=str)
    print("\n" + table, flush=True)
    return results


def _sinusoid_row(args: DemoArguments, run_dir: str) -> dict:
    """Second-order MAML on the sinusoid, exactly Finn et al.'s setting, through `MetaTrainer` like the digits."""
    s, steps = SINUSOID, args.sinusoid_steps
    set_seed(args.seed)
    model = SinusoidMLP()
    targs = _meta_training_args(
        run_dir,
        args,
        steps,
        algorithm="maml",
        inner_lr=s["inner_lr"],
        inner_steps=1,
        per_device_train_batch_size=s["meta_batch"],
        per_device_eval_batch_size=100,
    )
    train = SinusoidTasks(steps * s["meta_batch"], k_shot=s["k_shot"], n_query=s["k_shot"], seed=args.seed)
    # Test tasks from another seed: new amplitudes and phases, 100 query points each (as `evaluate_sinusoid`).
    test = SinusoidTasks(
        args.meta_eval_episodes, k_shot=s["k_shot"], n_query=s["test_points"], seed=10_000 + args.seed
    )
    card = {
        "model_name": "demo-meta-sinusoid-maml",
        "dataset": "sinusoid regression tasks (Finn et al. 2017, section 5.1)",
        "tags": ["hf-transfer-meta-demo", "sinusoid"],
    }
    run = meta_train_and_test(model, targs, train, test, card=card)
    return _meta_row("sinusoid", "maml", "MAML (2nd order)", f"K={s['k_shot']}, 1 step", run, meta_steps=steps)


def _table_notes(rows: list[dict]) -> list[str]:
    """What the digits and sinusoid rows measured, for under the table."""
    notes = []
    digits = [r for r in rows if r["task"] == "digits"]
    if digits:
        d = digits[0]
        notes += [
            f"digits: meta-trained on digits {', '.join(map(str, META_TRAIN_CLASSES))} (all their images), tested on "
            f"{d['episodes']} fixed episodes of digits {', '.join(map(str, META_TEST_CLASSES))} (never meta-trained "
            f"on); query accuracy, mean +- 95% CI over episodes; chance {100 * d['chance']:.0f}%.",
            "  ProtoNet: prototypes of the support embeddings; MAML/FOMAML: 3 SGD steps on the support set at test.",
        ]
    sine = [r for r in rows if r["task"] == "sinusoid"]
    if sine:
        s = SINUSOID
        notes.append(
            f"sinusoid (Finn et al. 2017): {s['k_shot']} support points, one SGD step at lr {s['inner_lr']}; MSE on "
            f"{s['test_points']} query points of unseen amplitudes and phases, mean +- 95% CI over "
            f"{sine[0]['episodes']} tasks."
        )
    notes.append(
        f"meta-updates: meta-batches of {META_BATCH} episodes (digits) or {SINUSOID['meta_batch']} tasks (sinusoid) "
        "that meta-training ran."
    )
    return notes
