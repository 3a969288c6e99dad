"""The ``evaluate`` face of :func:`hf_transfer_meta.meta.evaluation.few_shot.few_shot_accuracy`: the mean over episodes
of each episode's query accuracy, with a 95% confidence interval."""

import datasets
import evaluate

from hf_transfer_meta.meta.evaluation.few_shot import few_shot_accuracy

_DESCRIPTION = """
Few-shot classification accuracy as reported by Snell et al. 2017 (Prototypical Networks) and Finn et al. 2017
(MAML): the accuracy of each test episode on its query set, then the mean over episodes and the half-width of the
95% confidence interval, 1.96 * std / sqrt(n) over n episodes (std with ddof=0 by default, as numpy's np.std).
Report at least 600 episodes.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted class (0..N-1) of each query example.
    references (`list` of `int`): true class of each query example.
    episode_ids (`list` of `int`): the episode each query example belongs to.
    ddof (`int`, defaults to 0): delta degrees of freedom of the standard deviation (1: sample std).
Returns:
    accuracy (`float`): mean of the per-episode accuracies, in [0, 1].
    accuracy_ci95 (`float`): 1.96 * std(per-episode accuracies) / sqrt(num_episodes).
    num_episodes (`int`): number of distinct episode ids.
Examples:
    >>> metric = evaluate.load("path/to/hf_transfer_meta/meta/evaluation/few_shot_accuracy")
    >>> metric.compute(predictions=[0, 1, 1, 1], references=[0, 1, 0, 1], episode_ids=[0, 0, 1, 1])
    {'accuracy': 0.75, 'accuracy_ci95': 0.3464823227814083, 'num_episodes': 2}
"""

_CITATION = """
@inproceedings{snell2017prototypical,
  title={Prototypical Networks for Few-shot Learning},
  author={Snell, Jake and Swersky, Kevin and Zemel, Richard},
  booktitle={Advances in Neural Information Processing Systems},
  year={2017}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class FewShotAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("int64"),
                    "references": datasets.Value("int64"),
                    "episode_ids": datasets.Value("int64"),
                }
            ),
            reference_urls=["https://arxiv.org/abs/1703.05175"],
        )

    def _compute(self, predictions, references, episode_ids, ddof=0):
        return few_shot_accuracy(predictions, references, episode_ids, ddof=ddof)
