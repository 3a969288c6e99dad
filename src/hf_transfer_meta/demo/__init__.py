"""`hf-transfer-meta demo`: a transfer study and a meta-learning study on data every machine has.

Both learn from scikit-learn's digits 0-5 and are tested on digits 6-9 (`data`). The transfer study (`transfer`)
pretrains a small ResNet and compares fine-tuning strategies on few-shot target tasks with an input-level, an
output-level and a new-classes shift; the meta-learning study (`meta_study`) meta-trains ProtoNet and MAML with
`MetaTrainer` and adds MAML on the sinusoid. `run` holds the options and `main`; `report` the progress and tables.
"""

from .data import (
    META_TEST_CLASSES,
    META_TRAIN_CLASSES,
    NEW_CLASSES,
    SOURCE_CLASSES,
    TASKS,
    draw_few_shot,
    load_digit_tasks,
    load_meta_digits,
    target_datasets,
)
from .meta_study import META_METHODS, run_meta_study
from .run import PRESETS, STUDIES, DemoArguments, main
from .transfer import STRATEGIES, run_transfer_study

__all__ = [
    "DemoArguments",
    "META_METHODS",
    "META_TEST_CLASSES",
    "META_TRAIN_CLASSES",
    "NEW_CLASSES",
    "PRESETS",
    "SOURCE_CLASSES",
    "STRATEGIES",
    "STUDIES",
    "TASKS",
    "draw_few_shot",
    "load_digit_tasks",
    "load_meta_digits",
    "main",
    "run_meta_study",
    "run_transfer_study",
    "target_datasets",
]
