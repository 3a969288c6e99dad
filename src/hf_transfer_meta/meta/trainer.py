"""`MetaTrainer`: episodic meta-training with `transformers.Trainer`'s loop, checkpoints, logging and Accelerate.

One optimizer step is one meta-batch of episodes. The batch the DataLoader yields is ``{"tasks": [episode, ...]}``
(:class:`~hf_transfer_meta.meta.EpisodeCollator`); ``compute_loss`` hands the tasks to the algorithm's
``meta_loss`` on the *unwrapped* model (the inner loop is a pure function of parameter dicts). Consequences, each
handled here:

* DistributedDataParallel's gradient hooks fire only after a forward through the DDP wrapper, and second-order
  MAML cannot ``backward(create_graph=True)`` through it (design notes, trap 16). So the wrapper is never called:
  after the last micro-batch of a step, gradients of the model *and* of the algorithm (Meta-SGD's learning rates)
  are averaged over processes with one explicit all-reduce. Each process meta-trains on different episodes (the
  sampler shards the episode indices), so a step with P processes equals one process with P times the meta-batch.
* Gradient accumulation: the loss is the mean over the micro-batch's tasks and Trainer divides it by the
  accumulation steps (``loss_is_scaled_for_ga=False``), so the update is the mean over all tasks of the step.
* The algorithm's own parameters join the optimizer (their own group, no weight decay) and are saved with every
  checkpoint (``meta_algorithm.safetensors``) and restored on resume.

Evaluation adapts to each test episode (``eval_inner_steps`` at ``eval_inner_lr``) and reports the mean query
accuracy with its 95% confidence interval over the episodes (``eval_accuracy``, ``eval_accuracy_ci95``), the
pre-adaptation accuracy of the gradient-based methods and the query loss; MSE for regression (the sinusoid).
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from collections import defaultdict
from collections.abc import Callable

import datasets
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import speed_metrics

from ..cards.hooks import RunCardMixin
from ..cards.record import META_SUMMARY_FILE
from .algorithms import FineTuneBaseline, InnerLoopAlgorithm, MetaAlgorithm, MetaSGD, ProtoNet, build_algorithm
from .arguments import MetaTrainingArguments
from .data.collator import EpisodeCollator
from .data.episodes import EpisodeDataset
from .evaluation import evaluate_episodes
from .functional import unwrap_model

logger = logging.getLogger(__name__)

__all__ = ["ALGORITHM_FILE", "MetaTrainer", "build_algorithm", "fixed_eval_episodes"]

ALGORITHM_FILE = "meta_algorithm.safetensors"


def fixed_eval_episodes(
    dataset: datasets.Dataset, args: MetaTrainingArguments, k_shot: int | None = None
) -> EpisodeDataset:
    """The fixed test episodes of a raw labelled dataset: ``eval_n_way`` x (``k_shot`` or ``eval_k_shot``) x
    ``eval_n_query`` (defaults: the training shape), ``eval_episodes`` of them, seeded by ``episode_seed + 1``."""
    return EpisodeDataset(
        dataset, args.eval_n_way or args.n_way, k_shot or args.eval_k_shot or args.k_shot,
        args.eval_n_query or args.n_query, label_column=args.label_column, num_episodes=args.eval_episodes,
        seed=args.episode_seed + 1, rotations=args.rotations, image_column=args.image_column, fixed=True,
    )  # fmt: skip


def _as_meta_args(args: TrainingArguments | None) -> MetaTrainingArguments:
    if args is None:
        return MetaTrainingArguments(output_dir="trainer_output")
    if isinstance(args, MetaTrainingArguments):
        return args
    raise TypeError(
        f"MetaTrainer needs MetaTrainingArguments (the episode shape and the algorithm), not {type(args).__name__}: "
        "MetaTrainingArguments(output_dir=..., algorithm='maml', n_way=5, k_shot=1, ...)."
    )


class _ZeroAlgorithmGrads(TrainerCallback):
    """Trainer zeroes the model's gradients after each step; the algorithm's (Meta-SGD's rates) need the same."""

    def __init__(self, algorithm: nn.Module):
        self.algorithm = algorithm

    def on_step_end(self, args, state, control, **kwargs):
        self.algorithm.zero_grad(set_to_none=True)


class MetaTrainer(RunCardMixin, Trainer):
    """`Trainer` for episodic meta-learning (ProtoNet, MAML, FOMAML, ANIL, Meta-SGD, Reptile) on any model.

    Args:
        model: any transformers model or ``nn.Module`` (N-way head for the MAML family; any encoder for ProtoNet).
        args: :class:`MetaTrainingArguments`.
        train_dataset / eval_dataset: :class:`EpisodeDataset` (or ``SinusoidTasks``, any dataset of episodes), or a
            raw labelled ``datasets.Dataset`` of *disjoint* classes, which is wrapped into episodes of
            ``n_way``/``k_shot``/``n_query`` (eval: ``eval_episodes`` fixed episodes seeded by ``episode_seed + 1``).
        data_collator: default :class:`EpisodeCollator` with ``processing_class`` (tokenizer or image processor).
        algorithm: a :class:`MetaAlgorithm` instance, overriding ``args.algorithm``.
        train_transform: ``example -> example`` applied to every row of the meta-training episodes built from a raw
            ``train_dataset`` (augmentation, e.g. :class:`~hf_transfer_meta.meta.data.augment.RandomAffine`); evaluation
            episodes are never transformed. Pass your own ``EpisodeDataset(transform=...)`` for other cases.

    Everything else is `Trainer`'s: ``report_to``, ``push_to_hub``, ``resume_from_checkpoint``, callbacks,
    ``accelerate launch``. ``create_model_card`` / ``push_to_hub`` write a card of the meta-training
    (`hf_transfer_meta.cards`), and ``hub_token`` never reaches ``training_args.bin``.
    """

    def __init__(
        self,
        model=None,
        args: MetaTrainingArguments | None = None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        algorithm: MetaAlgorithm | None = None,
        train_transform: Callable[[dict], dict] | None = None,
        **kwargs,
    ):
        args = _as_meta_args(args)
        if model is None:
            raise ValueError("MetaTrainer needs a model (model_init is not supported yet).")
        self.algorithm = algorithm if algorithm is not None else build_algorithm(args, model)
        if isinstance(self.algorithm, MetaSGD) and not self.algorithm.lr_names:
            self.algorithm.setup(unwrap_model(model))
        if data_collator is None:
            data_collator = EpisodeCollator(processing_class=processing_class)
        if train_transform is not None and not isinstance(train_dataset, datasets.Dataset):
            raise ValueError(
                "train_transform applies to the episodes MetaTrainer builds from a raw datasets.Dataset; for a "
                f"{type(train_dataset).__name__}, pass the transform to it (EpisodeDataset(transform=...))."
            )
        train_dataset = self._episodes(train_dataset, args, train=True, transform=train_transform)
        eval_dataset = self._episodes(eval_dataset, args, train=False)
        callbacks = list(kwargs.pop("callbacks", None) or []) + [_ZeroAlgorithmGrads(self.algorithm)]
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            **kwargs,
        )
        self.algorithm.to(self.args.device)
        # compute_loss returns a mean over tasks and ignores num_items_in_batch: Trainer must divide by the GA steps.
        self.model_accepts_loss_kwargs = False
        self.loss_is_scaled_for_ga = False
        self._meta_metrics: dict[str, list[float]] = defaultdict(list)

    # ------------------------------------------------------------------ data
    @staticmethod
    def _episodes(dataset, args: MetaTrainingArguments, train: bool, warn: bool = True, transform=None):
        """Wrap a raw labelled ``datasets.Dataset`` into episodes; pass datasets of episodes (and dicts) through."""
        if dataset is None or not isinstance(dataset, datasets.Dataset):
            if isinstance(dataset, dict):
                return {k: MetaTrainer._episodes(v, args, train, warn) for k, v in dataset.items()}
            if warn and not train and isinstance(dataset, EpisodeDataset) and len(dataset) < 600:
                warnings.warn(
                    f"The evaluation has {len(dataset)} episodes; few-shot accuracy is reported over at least 600 "
                    "(a 95% CI of about +-0.4-0.8 points at 5-way). Pass EpisodeDataset(num_episodes=600, fixed=True).",
                    stacklevel=3,
                )
            return dataset
        if train:
            if args.train_episodes is not None:
                num = args.train_episodes
            elif args.max_steps > 0:
                num = args.max_steps * args.per_device_train_batch_size * args.gradient_accumulation_steps
                num *= int(os.environ.get("WORLD_SIZE", "1"))
            else:
                num = 10_000
            return EpisodeDataset(
                dataset, args.n_way, args.k_shot, args.n_query, label_column=args.label_column, num_episodes=num,
                seed=args.episode_seed, rotations=args.rotations, image_column=args.image_column, transform=transform,
            )  # fmt: skip
        if warn and args.eval_episodes < 600:
            warnings.warn(
                f"eval_episodes={args.eval_episodes}: few-shot accuracy is reported over at least 600 test episodes.",
                stacklevel=3,
            )
        return fixed_eval_episodes(dataset, args)

    # ------------------------------------------------------------------ optimizer
    def create_optimizer(self, model=None):
        """Trainer's optimizer (``optim``, weight-decay rules) plus the algorithm's parameters as their own group."""
        optimizer = super().create_optimizer(model)
        extra = [p for p in self.algorithm.parameters() if p.requires_grad]
        known = {id(p) for g in optimizer.param_groups for p in g["params"]}
        extra = [p for p in extra if id(p) not in known]
        if extra:
            optimizer.add_param_group({"params": extra, "weight_decay": 0.0, "lr": self.args.learning_rate})
        return optimizer

    # ------------------------------------------------------------------ training
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if isinstance(self.algorithm, FineTuneBaseline):
            raise ValueError(
                "algorithm='finetune' is the transfer baseline: it has no meta-training. Train the model with "
                "TransferTrainer (or Trainer) on the base classes, then call MetaTrainer(...).evaluate()."
            )
        tasks = inputs.get("tasks") if isinstance(inputs, dict) else None
        if tasks is None:
            raise ValueError(
                "A meta-training batch is {'tasks': [episode, ...]}: use EpisodeDataset with EpisodeCollator (the "
                f"default collator), not a plain dataset of examples (got keys {sorted(inputs)})."
            )
        output = self.algorithm.meta_loss(unwrap_model(model), tasks)
        for k, v in output.metrics.items():
            self._meta_metrics[k].append(v)
        return (output.loss, output) if return_outputs else output.loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.accelerator.sync_gradients:
            self._all_reduce_gradients(model)
        return loss

    def _all_reduce_gradients(self, model) -> None:
        """Average gradients over processes (the DDP wrapper's hooks never run: see the module docstring)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        params = [p for p in unwrap_model(model).parameters() if p.requires_grad]
        params += [p for p in self.algorithm.parameters() if p.requires_grad]
        for p in params:
            if p.grad is None:  # a process may not reach a parameter; zeros keep the collective aligned
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= dist.get_world_size()
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset : offset + n].view_as(g))
            offset += n

    def floating_point_ops(self, inputs) -> int:
        return 0  # a meta-batch is not a batch of tokens; Trainer's estimate does not apply

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Training logs also carry the mean query metrics of the meta-batches since the last log."""
        if "loss" in logs and self._meta_metrics:
            for k, values in self._meta_metrics.items():
                logs[f"train_{k}"] = round(sum(values) / len(values), 4)
            self._meta_metrics.clear()
        super().log(logs, start_time)

    # ------------------------------------------------------------------ checkpoints
    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        super()._save(output_dir, state_dict)
        state = {k: v.detach().cpu().contiguous() for k, v in self.algorithm.state_dict().items()}
        if state and self.args.should_save:
            output_dir = output_dir if output_dir is not None else self.args.output_dir
            save_file(state, os.path.join(output_dir, ALGORITHM_FILE), metadata={"algorithm": self.args.algorithm})

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        self.load_algorithm(resume_from_checkpoint)

    def load_algorithm(self, folder: str) -> None:
        """Restore the algorithm's parameters (Meta-SGD's learning rates) saved in ``folder``."""
        path = os.path.join(folder, ALGORITHM_FILE)
        if not os.path.isfile(path):
            if any(True for _ in self.algorithm.parameters()):
                raise FileNotFoundError(
                    f"{path} is missing: this checkpoint has no state for {type(self.algorithm).__name__}'s learned "
                    "parameters (was it saved by MetaTrainer with the same algorithm?)."
                )
            return
        self.algorithm.load_state_dict({k: v.to(self.args.device) for k, v in load_file(path).items()})

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Adapt to every test episode and report the mean query accuracy (or MSE) with its 95% CI.

        Metrics: ``{prefix}_accuracy``, ``{prefix}_accuracy_ci95``, ``{prefix}_pre_adaptation_accuracy`` (gradient-
        based methods), ``{prefix}_loss`` (query loss after adaptation), ``{prefix}_episodes``; for float labels
        ``{prefix}_mse`` and ``{prefix}_mse_ci95`` instead of accuracy.
        """
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None:
            raise ValueError("MetaTrainer.evaluate needs an eval_dataset of test episodes (disjoint classes).")
        if isinstance(dataset, dict):
            metrics = {}
            for name, part in dataset.items():
                metrics.update(self.evaluate(part, ignore_keys, f"{metric_key_prefix}_{name}"))
            return metrics
        dataset = self._episodes(dataset, self.args, train=False, warn=False)
        self._memory_tracker.start()
        start = time.time()

        def on_batch() -> None:
            self.control = self.callback_handler.on_prediction_step(self.args, self.state, self.control)

        result = evaluate_episodes(
            self.algorithm,
            unwrap_model(self.model),
            (self._prepare_inputs(inputs)["tasks"] for inputs in self.get_eval_dataloader(dataset)),
            steps=self.args.eval_inner_steps,
            lr=self.args.eval_inner_lr,
            gather=self.accelerator.gather_for_metrics,
            on_batch=on_batch,
        )
        metrics = result.metrics(metric_key_prefix)
        metrics.update(speed_metrics(metric_key_prefix, start, num_samples=len(result)))
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        self._memory_tracker.stop_and_update_metrics(metrics)
        return metrics

    def meta_summary(self) -> dict:
        """What a model card needs to say about the meta-training: algorithm, episode shape, inner loop."""
        a = self.args
        summary = {
            "algorithm": type(self.algorithm).__name__,
            "n_way": a.n_way,
            "k_shot": a.k_shot,
            "n_query": a.n_query,
            "eval_n_way": a.eval_n_way or a.n_way,
            "eval_k_shot": a.eval_k_shot or a.k_shot,
            "meta_batch_size": a.per_device_train_batch_size * a.gradient_accumulation_steps * a.world_size,
            "outer_optimizer": getattr(a.optim, "value", str(a.optim)),
            "outer_learning_rate": a.learning_rate,
        }
        if isinstance(self.algorithm, InnerLoopAlgorithm):
            summary.update(
                inner_steps=self.algorithm.inner_steps,
                inner_lr=self.algorithm.inner_lr,
                eval_inner_steps=self.algorithm._eval_steps(a.eval_inner_steps),
                adapt=str(a.adapt_spec if isinstance(a.adapt_spec, str) else a.adapt),
                second_order=bool(self.algorithm.second_order),
            )
        if isinstance(self.algorithm, ProtoNet):
            summary.update(embedding=str(self.algorithm.embedding), distance=self.algorithm.distance)
            if self.algorithm.distance == "cosine":
                summary["temperature"] = self.algorithm.temperature
        transform = getattr(self.train_dataset, "transform", None)
        if transform is not None:
            summary["train_augmentation"] = repr(transform)
        return {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in summary.items()}

    def run_summary(self) -> tuple[str, dict]:
        """For the model card's records: `meta_summary`, the episodes seen and the meta-training classes."""
        summary = self.meta_summary()
        summary["episodes_seen"] = self.state.global_step * summary["meta_batch_size"]
        train = self.train_dataset
        if getattr(train, "num_classes", None) is not None:
            summary["meta_train_classes"] = int(train.num_classes)  # classes x rotations
        if getattr(train, "k_shot", None) is not None and getattr(train, "n_way", None) is None:
            # Regression tasks (SinusoidTasks): the shape is the data set's, not n_way / k_shot of the arguments.
            summary.update(task_type="regression", n_way=None, eval_n_way=None, k_shot=train.k_shot,
                           n_query=train.n_query, eval_k_shot=train.k_shot)  # fmt: skip
        return META_SUMMARY_FILE, summary
