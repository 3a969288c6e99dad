"""`MetaTrainingArguments`: `TrainingArguments` plus the episode shape and the meta-learning algorithm.

Every field is a plain dataclass field, so `HfArgumentParser(MetaTrainingArguments)` reads them from the command
line (``--algorithm maml --n_way 5 --k_shot 1 --inner_lr 0.4``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from transformers import TrainingArguments

from .._lazy import renamed
from .algorithms import ALGORITHMS

__all__ = ["MetaTrainingArguments"]


@dataclass
class MetaTrainingArguments(TrainingArguments):
    """Arguments of :class:`~hf_transfer_meta.meta.MetaTrainer`.

    One optimizer step is one meta-batch of episodes: ``meta_batch_size`` episodes in all, i.e.
    ``per_device_train_batch_size`` (episodes per device and forward) x processes x ``gradient_accumulation_steps``.
    ``per_device_eval_batch_size`` is the number of test episodes per evaluation batch.

    Defaults that differ from `TrainingArguments` follow the papers: Adam at ``learning_rate=1e-3`` with a
    constant schedule, ``remove_unused_columns=False`` (a batch is a list of episodes, not model inputs).
    """

    algorithm: str = field(
        default="maml",
        metadata={"help": f"Meta-learning algorithm: one of {', '.join(ALGORITHMS)} ('finetune' evaluates only)."},
    )
    n_way: int = field(default=5, metadata={"help": "Classes per episode (N)."})
    k_shot: int = field(default=1, metadata={"help": "Support examples per class (K)."})
    n_query: int = field(default=15, metadata={"help": "Query examples per class (Q)."})
    eval_n_way: int | None = field(default=None, metadata={"help": "N of the test episodes (default n_way)."})
    eval_k_shot: int | None = field(default=None, metadata={"help": "K of the test episodes (default k_shot)."})
    eval_n_query: int | None = field(default=None, metadata={"help": "Q of the test episodes (default n_query)."})
    meta_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Episodes per optimizer step over all processes and accumulation steps. Sets "
            "per_device_train_batch_size = meta_batch_size / (processes x gradient_accumulation_steps)."
        },
    )
    inner_steps: int = field(default=1, metadata={"help": "Inner (adaptation) SGD steps during meta-training."})
    inner_lr: float = field(default=0.4, metadata={"help": "Inner SGD learning rate (Finn et al.: 0.4 Omniglot)."})
    eval_inner_steps: int | None = field(
        default=None, metadata={"help": "Inner steps at evaluation (default inner_steps; Finn et al. use 3 for test)."}
    )
    eval_inner_lr: float | None = field(default=None, metadata={"help": "Inner LR at evaluation (default inner_lr)."})
    first_order: bool = field(default=False, metadata={"help": "MAML without second-order terms (= fomaml)."})
    adapt: str = field(
        default="auto",
        metadata={
            "help": "Parameters the inner loop adapts: all, head, last-K (depths of the layer map), lora, or a regex "
            "'re:<pattern>'. auto: head for anil, all otherwise."
        },
    )
    embedding: str = field(default="auto", metadata={"help": "ProtoNet embedding: auto, pooled, cls, mean or logits."})
    protonet_distance: str = field(default="sqeuclidean", metadata={"help": "ProtoNet distance: sqeuclidean|cosine."})
    protonet_temperature: float = field(
        default=10.0, metadata={"help": "ProtoNet cosine logits = temperature x cosine similarity (cosine only)."}
    )
    metasgd_lr_shape: str = field(
        default="param", metadata={"help": "Meta-SGD learning rates: one per element (param) or per tensor (scalar)."}
    )
    task_vmap: str = field(
        default="auto",
        metadata={"help": "Batch the tasks of a meta-batch with torch.vmap: auto, true or false (per-task loop)."},
    )
    label_column: str = field(default="label", metadata={"help": "Class column of raw datasets given to the trainer."})
    image_column: str = field(default="image", metadata={"help": "Image column (for rotations)."})
    rotations: list[int] | None = field(
        default=None,
        metadata={"help": "Rotations (degrees) as new classes, e.g. 0 90 180 270 for Omniglot (Santoro et al.)."},
    )
    train_episodes: int | None = field(
        default=None,
        metadata={
            "help": "Episodes per epoch when a raw dataset is given (default: max_steps x meta_batch_size, else 10000)."
        },
    )
    eval_episodes: int = field(
        default=600, metadata={"help": "Fixed, seeded test episodes when a raw eval dataset is given (>= 600)."}
    )
    episode_seed: int = field(
        default=0, metadata={"help": "Seed of the training episodes (test episodes use episode_seed + 1)."}
    )

    # Defaults of the meta-learning papers, where TrainingArguments' are for fine-tuning.
    learning_rate: float = field(default=1e-3, metadata={"help": "Outer (meta) learning rate of the optimizer."})
    lr_scheduler_type: str = field(default="constant", metadata={"help": "Outer LR schedule."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Must stay False: a batch is a list of episodes."}
    )
    per_device_train_batch_size: int = field(default=4, metadata={"help": "Episodes per device and forward."})
    per_device_eval_batch_size: int = field(default=8, metadata={"help": "Test episodes per evaluation batch."})

    def __post_init__(self):
        self.algorithm = self.algorithm.lower().replace("-", "").replace("_", "")
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm={self.algorithm!r} is not one of {tuple(ALGORITHMS)}.")
        if self.first_order and self.algorithm == "maml":
            self.algorithm = "fomaml"
        for name in ("n_way", "k_shot", "n_query", "eval_episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1.")
        if self.task_vmap not in ("auto", "true", "false", True, False):
            raise ValueError(f"task_vmap={self.task_vmap!r}: use auto, true or false.")
        if self.remove_unused_columns:
            raise ValueError(
                "remove_unused_columns=True would strip the episodes: a meta-training batch is a list of episodes. "
                "Leave it False."
            )
        super().__post_init__()
        if self.meta_batch_size is not None:
            processes = int(os.environ.get("WORLD_SIZE", "1"))
            per_step = processes * self.gradient_accumulation_steps
            if self.meta_batch_size % per_step:
                raise ValueError(
                    f"meta_batch_size={self.meta_batch_size} is not divisible by processes ({processes}) x "
                    f"gradient_accumulation_steps ({self.gradient_accumulation_steps}); choose a multiple of {per_step}."
                )
            self.per_device_train_batch_size = self.meta_batch_size // per_step

    @property
    def vmap_mode(self) -> bool | str:
        return {"true": True, "false": False, True: True, False: False}.get(self.task_vmap, "auto")

    @property
    def adapt_spec(self):
        if self.adapt == "auto":
            return "head" if self.algorithm == "anil" else "all"
        if self.adapt.startswith("re:"):
            from .functional import regex_selector

            return regex_selector(self.adapt[3:])
        return self.adapt


def __getattr__(name: str):
    if name == "META_ALGORITHMS":
        renamed(f"{__name__}.META_ALGORITHMS", "tuple(hf_transfer_meta.meta.ALGORITHMS)")
        return tuple(ALGORITHMS)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
