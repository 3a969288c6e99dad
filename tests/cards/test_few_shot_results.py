"""The few-shot recipes' meta-test keys become model-index entries with their shape, CI, episodes and split."""

import json

from hf_transfer_meta.cards.results import eval_results

RESULTS = {
    "eval_accuracy": 0.945, "eval_accuracy_ci95": 0.0046, "eval_5shot_accuracy": 0.988,
    "eval_5shot_accuracy_ci95": 0.002, "eval_all_classes_accuracy": 0.812, "eval_all_classes_accuracy_ci95": 0.0019,
    "eval_all_classes_5shot_accuracy": 0.947, "eval_all_classes_draws": 600, "eval_all_classes_k_shot": 1,
    "eval_all_classes_num_classes": 30, "eval_episodes": 600, "eval_k_shot": 1, "eval_n_way": 5, "eval_split": "test",
    "eval_runtime": 286.1,
}  # fmt: skip


def _by_name(results):
    entries = eval_results(results, task_type="text-classification", task_name=None, dataset_type="json",
                           dataset_name="clinc150", few_shot={"eval_n_way": 5, "eval_k_shot": 1})  # fmt: skip
    return {e.metric_name: e for e in entries}


def test_shapes_ci_episodes_and_the_recorded_split():
    entries = _by_name(RESULTS)
    assert set(entries) == {k for k in RESULTS if k.endswith(("accuracy", "accuracy_ci95"))}
    main, five, every, every5 = (entries[k] for k in ("eval_accuracy", "eval_5shot_accuracy",
                                                       "eval_all_classes_accuracy", "eval_all_classes_5shot_accuracy"))  # fmt: skip
    assert main.task_name == "5-way 1-shot few-shot" and main.metric_args == {"n_way": 5, "k_shot": 1,
                                                                               "episodes": 600, "ci95": 0.0046}  # fmt: skip
    assert five.task_name.startswith("5-way 5-shot") and five.metric_args["ci95"] == 0.002
    assert every.task_name.startswith("30-way 1-shot") and "every test class" in every.task_name
    assert every.metric_args["episodes"] == 600 and every5.task_name.startswith("30-way 5-shot")
    assert {e.dataset_split for e in entries.values()} == {"test"}  # recorded: the meta-test classes
    assert {e.dataset_split for e in _by_name({**RESULTS, "eval_split": "validation"}).values()} == {"validation"}
    no_record = dict(RESULTS)
    del no_record["eval_split"]
    assert {e.dataset_split for e in _by_name(no_record).values()} == {"validation"}  # eval_ means validation
    json.dumps([e.metric_args for e in entries.values()])  # plain data in the card's YAML
