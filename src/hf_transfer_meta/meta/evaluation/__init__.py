"""Evaluation with a 95% CI: :func:`evaluate_episodes` (adapt, score, summarise test episodes), the deployment case
of every test class at once (:func:`evaluate_all_classes`), the CI convention (:func:`mean_ci95`), and the bundled
``evaluate`` metric script ``few_shot_accuracy/``."""

from .all_classes import (
    AllClassesEvaluation,
    all_classes_accuracy,
    embed_rows,
    evaluate_all_classes,
    meta_test_metrics,
)
from .episodes import EpisodeEvaluation, evaluate_episodes, query_loss, query_score
from .few_shot import (
    episode_accuracies,
    few_shot_accuracy,
    few_shot_accuracy_metric_path,
    load_few_shot_accuracy,
    mean_ci95,
)

__all__ = [
    "AllClassesEvaluation",
    "EpisodeEvaluation",
    "all_classes_accuracy",
    "embed_rows",
    "episode_accuracies",
    "evaluate_all_classes",
    "evaluate_episodes",
    "few_shot_accuracy",
    "few_shot_accuracy_metric_path",
    "load_few_shot_accuracy",
    "meta_test_metrics",
    "mean_ci95",
    "query_loss",
    "query_score",
]
