"""k-fold cross-validated hyper-parameter search for any ``Trainer`` subclass, with optuna.

Small target data sets (the few-sample settings where the choice of transfer strategy matters most) make one
validation split a noisy judge: the search here scores each trial by the mean held-out metric over k stratified
folds of the training set, all trials seeing the same folds.

Why optuna directly and not ``Trainer.hyperparameter_search``: that method runs one study per trainer, and a trainer
is bound to one train/eval split, so k folds would mean k independent studies whose best trials need not agree.
It also writes the trial's values into the trainer's own ``args`` with ``setattr`` (values of one trial leak into
the next when the space is conditional, and ``__post_init__`` never sees them) and only warns on a misspelt field.
Here one study runs; its objective loops over the folds and builds, for each, a fresh model (``model_init``) and a
fresh trainer whose arguments are ``dataclasses.replace(args, **hyperparameters)``: any field of the arguments
dataclass can be searched (strategy fields of ``TransferTrainingArguments`` such as ``layer_lr_decay`` included),
``__post_init__`` validates and converts them as for the command line, and an unknown name is an error.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import gc
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["CrossValidatedRun", "apply_hyperparameters", "cross_validated_search", "folds_summary", "kfold_indices"]

logger = logging.getLogger(__name__)


@dataclass
class CrossValidatedRun:
    """The best trial of a cross-validated search; reads like ``transformers.trainer_utils.BestRun``.

    Attributes:
        run_id: the optuna trial number of the best trial, as a string.
        objective: its mean held-out metric over the folds.
        hyperparameters: the values ``hp_space`` returned for it (what was applied to the arguments).
        fold_scores: its held-out metric on each fold.
        trials: every trial: ``{"number", "hyperparameters", "fold_scores", "objective", "state"}``.
        run_summary: the optuna study.
    """

    run_id: str
    objective: float
    hyperparameters: dict[str, Any]
    fold_scores: list[float]
    trials: list[dict[str, Any]] = field(default_factory=list)
    run_summary: Any = None

    @property
    def fold_std(self) -> float:
        return float(np.std(self.fold_scores)) if self.fold_scores else float("nan")


def apply_hyperparameters(args, hyperparameters: dict[str, Any]):
    """A copy of ``args`` with ``hyperparameters`` set: ``dataclasses.replace``, so ``__post_init__`` checks them.

    Numbers are cast to the field's current type as ``Trainer`` does (``per_device_train_batch_size=8.0`` -> 8).
    """
    names = {f.name for f in dataclasses.fields(args) if f.init}
    unknown = [k for k in hyperparameters if k not in names]
    if unknown:
        hints = {k: difflib.get_close_matches(k, names, n=3) for k in unknown}
        raise ValueError(
            f"Hyper-parameter(s) {unknown} are not fields of {type(args).__name__}"
            + "".join(f"; for {k!r} did you mean {v}?" for k, v in hints.items() if v)
            + ". The search space may only name fields of the arguments dataclass."
        )
    changes = {}
    for key, value in hyperparameters.items():
        old = getattr(args, key)
        if isinstance(old, enum.Enum):
            value = type(old)(value)
        elif isinstance(old, (int, float)) and not isinstance(old, bool) and isinstance(value, (int, float)):
            if isinstance(old, int) and not float(value).is_integer():
                raise ValueError(f"{key} is an integer field; the search space gave {value!r}.")
            value = type(old)(value)
        changes[key] = value
    return dataclasses.replace(args, **changes)


def kfold_indices(
    dataset, n_folds: int, stratify_column: str | None = "labels", seed: int = 42
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(train_indices, held_out_indices)`` for each fold: ``StratifiedKFold`` on ``stratify_column`` (``label``
    is tried when ``labels`` is missing), plain ``KFold`` when it is None. Shuffled with ``seed``."""
    from sklearn.model_selection import KFold, StratifiedKFold

    n = len(dataset)
    if not 2 <= n_folds <= n:
        raise ValueError(f"n_folds must be between 2 and the number of examples ({n}), got {n_folds}.")
    if stratify_column is None:
        return list(KFold(n_folds, shuffle=True, random_state=seed).split(np.zeros(n)))
    labels = _column(dataset, stratify_column)
    if labels is None and stratify_column == "labels":
        labels = _column(dataset, "label")
    if labels is None:
        raise ValueError(
            f"Cannot stratify on {stratify_column!r}: the dataset has no such column. Pass the label column as "
            "`stratify_column`, or `stratify_column=None` for unstratified folds."
        )
    labels = np.asarray(labels)
    counts = np.unique(labels, return_counts=True)[1]
    if counts.min() < n_folds:
        raise ValueError(
            f"The rarest class has {counts.min()} examples, fewer than n_folds={n_folds}: use fewer folds or "
            "`stratify_column=None`."
        )
    return list(StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(np.zeros(n), labels))


def _column(dataset, name: str):
    columns = getattr(dataset, "column_names", None)
    if isinstance(columns, list):
        return list(dataset[name]) if name in columns else None
    first = dataset[0]
    if not isinstance(first, dict) or name not in first:
        return None
    values = [dataset[i][name] for i in range(len(dataset))]
    return [v.item() if hasattr(v, "item") else v for v in values]


def _subset(dataset, indices: np.ndarray):
    if hasattr(dataset, "select"):
        return dataset.select(indices.tolist())
    from torch.utils.data import Subset

    return Subset(dataset, indices.tolist())


def cross_validated_search(
    trainer_cls: type,
    model_init: Callable[..., Any],
    args,
    train_dataset,
    hp_space: Callable[[Any], dict[str, Any]],
    n_folds: int = 5,
    n_trials: int = 20,
    compute_metrics: Callable | None = None,
    metric_name: str = "eval_accuracy",
    direction: str = "maximize",
    stratify_column: str | None = "labels",
    seed: int | None = None,
    sampler: Any = None,
    pruner: Any = None,
    study_name: str | None = None,
    storage: str | None = None,
    timeout: float | None = None,
    **trainer_kwargs,
) -> CrossValidatedRun:
    """Search hyper-parameters by the mean held-out ``metric_name`` over ``n_folds`` folds of ``train_dataset``.

    Args:
        trainer_cls: ``transformers.Trainer`` or a subclass (``TransferTrainer``).
        model_init: returns a fresh model, called once per fold (with the optuna trial if it takes one argument),
            after seeding with the fold's ``args.seed`` as ``Trainer`` does.
        args: the base arguments; each fold trains with ``apply_hyperparameters(args, hp_space(trial))`` and an
            ``output_dir`` of ``<output_dir>/trial-<n>/fold-<k>``.
        hp_space: ``trial -> {field: value}`` (optuna ``trial.suggest_*``), any field of ``type(args)``.
        compute_metrics: passed to each trainer; ``metric_name`` must be among ``trainer.evaluate()``'s keys
            (the ``eval_`` prefix may be left out).
        direction: ``"maximize"`` or ``"minimize"`` the mean over folds.
        stratify_column: label column for ``StratifiedKFold``; None for ``KFold``.
        seed: shuffles the folds and seeds the default TPE sampler; ``args.seed`` when None.
        sampler, pruner, study_name, storage, timeout: optuna options. A pruner sees the running mean after each
            fold (step = fold index); there is none by default.
        trainer_kwargs: more ``trainer_cls`` arguments (``data_collator``, ``processing_class``, ``callbacks``).

    Returns:
        The best trial with its per-fold scores, and every trial in ``trials``.
    """
    import optuna
    from transformers import enable_full_determinism, set_seed
    from transformers.trainer_utils import number_of_arguments

    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}.")
    if getattr(args, "world_size", 1) > 1:
        raise ValueError(
            f"cross_validated_search runs in one process (world size here: {args.world_size}): run the search "
            "without torchrun/accelerate launch, then launch the final training with the best hyper-parameters."
        )
    for reserved in ("model", "model_init", "args", "train_dataset", "eval_dataset"):
        if reserved in trainer_kwargs:
            raise ValueError(f"{reserved!r} is set per fold by cross_validated_search; do not pass it.")
    seed = args.seed if seed is None else seed
    folds = kfold_indices(train_dataset, n_folds, stratify_column, seed)
    takes_trial = number_of_arguments(model_init) == 1  # Trainer's rule for model_init(trial)

    def objective(trial: optuna.Trial) -> float:
        hyperparameters = dict(hp_space(trial))
        trial.set_user_attr("hyperparameters", hyperparameters)
        fold_scores: list[float] = []
        trial.set_user_attr("fold_scores", fold_scores)
        for k, (train_idx, held_out_idx) in enumerate(folds):
            fold_args = apply_hyperparameters(args, hyperparameters)
            fold_args.output_dir = os.path.join(args.output_dir or "hpo", f"trial-{trial.number}", f"fold-{k}")
            # Same seeding as Trainer does before model_init, so that every trial starts from the same weights.
            enable_full_determinism(fold_args.seed) if fold_args.full_determinism else set_seed(fold_args.seed)
            model = model_init(trial) if takes_trial else model_init()
            trainer = trainer_cls(
                model=model,
                args=fold_args,
                train_dataset=_subset(train_dataset, train_idx),
                eval_dataset=_subset(train_dataset, held_out_idx),
                compute_metrics=compute_metrics,
                **trainer_kwargs,
            )
            trainer.train()
            metrics = trainer.evaluate()
            fold_scores.append(_metric(metrics, metric_name))
            trial.set_user_attr("fold_scores", list(fold_scores))
            logger.info("trial %d fold %d: %s = %.6g", trial.number, k, metric_name, fold_scores[-1])
            del trainer, model
            gc.collect()
            _empty_device_cache()
            trial.report(float(np.mean(fold_scores)), k)
            if k < len(folds) - 1 and trial.should_prune():
                raise optuna.TrialPruned()
        return float(np.mean(fold_scores))

    study = optuna.create_study(
        direction=direction,
        sampler=sampler or optuna.samplers.TPESampler(seed=seed),
        pruner=pruner or optuna.pruners.NopPruner(),
        study_name=study_name,
        storage=storage,
        load_if_exists=storage is not None,
    )
    study.optimize(objective, n_trials=n_trials, timeout=timeout)

    trials = [
        {
            "number": t.number,
            "hyperparameters": t.user_attrs.get("hyperparameters", t.params),
            "fold_scores": t.user_attrs.get("fold_scores", []),
            "objective": t.value,
            "state": t.state.name,
        }
        for t in study.trials
    ]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise RuntimeError(f"No trial of the cross-validated search completed ({len(study.trials)} started).")
    best = study.best_trial
    return CrossValidatedRun(
        run_id=str(best.number),
        objective=float(best.value),
        hyperparameters=best.user_attrs.get("hyperparameters", best.params),
        fold_scores=list(best.user_attrs.get("fold_scores", [])),
        trials=trials,
        run_summary=study,
    )


def _metric(metrics: dict[str, float], name: str) -> float:
    for key in (name, f"eval_{name}"):
        if key in metrics:
            value = float(metrics[key])
            if math.isnan(value):
                raise ValueError(f"{key} is NaN on a held-out fold; the search cannot rank this trial.")
            return value
    raise KeyError(
        f"Metric {name!r} is not among the evaluation results {sorted(metrics)}: pass a `compute_metrics` that "
        "returns it, or another `metric_name`."
    )


def _empty_device_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def folds_summary(run: CrossValidatedRun) -> str:
    """One line per trial: its hyper-parameters, per-fold scores, mean and standard deviation."""
    lines = []
    for t in run.trials:
        scores: Sequence[float] = t["fold_scores"]
        mean = f"{np.mean(scores):.4g} ± {np.std(scores):.2g}" if scores else "-"
        marker = " *" if str(t["number"]) == run.run_id else ""
        lines.append(
            f"trial {t['number']} {t['state'].lower()}: {t['hyperparameters']} folds {scores} mean {mean}{marker}"
        )
    return "\n".join(lines)
