"""`RunCardMixin`: what `TransferMixin` and `MetaTrainer` add to Trainer's saving, card and Hub path.

* ``create_model_card``: Trainer writes its draft (offline-safe: a failure there costs the draft, not the card), the
  run's records are written, then the card is built from the records (`cards.card.write_card`) with its figures.
* ``init_hf_repo`` (called by ``Trainer.__init__`` when ``push_to_hub=True``, before anything is written): no token
  or an offline Hub is a `PushToHubError` naming the fix, before the first step.
* ``_push_from_checkpoint`` (``hub_strategy`` every_save / checkpoint / all_checkpoints): a card of the run so far
  is written before each upload, and ``training_args.bin`` is pickled without the token.
* ``_save``: ``training_args.bin`` without ``hub_token``, in ``output_dir`` and in every checkpoint (trap 14b).
* ``train``: the run's records at the end of training; theta_0 and the depth drift for the transfer strategies.

The mixin has no ``__init__`` and adds no callback: with no strategy a `TransferTrainer` keeps stock Trainer's
callbacks, log keys and optimizer.
"""

from __future__ import annotations

import contextlib
import copy
import copyreg
import dataclasses
import functools
import json
import logging
import os
import re

import torch
from transformers import TrainingArguments

from ..model_utils import unwrap_model
from .card import CARD_FILE, GENERATED, write_card
from .drift import measure_drift, save_start_weights, start_weights_for
from .hub import PushToHubError, check_push_ready, explain_hub_error
from .record import (
    DRIFT_FILE,
    REDACTED,
    RUN_INFO_FILE,
    atomic_write,
    command_line,
    git_commit,
    non_default_arguments,
    package_versions,
    secrets_of,
    write_json,
)

logger = logging.getLogger(__name__)

__all__ = ["RunCardMixin", "redact_saved_args", "resolve_base_model"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _is_hub_id(name) -> bool:
    return isinstance(name, str) and bool(_HUB_ID.match(name)) and not os.path.exists(name) and ".." not in name


_CACHE_SNAPSHOT = re.compile(r"models--([^/\\]+)--([^/\\]+)[/\\]snapshots[/\\]")


def resolve_base_model(model, base_model: str | None = None, finetuned_from: str | None = None) -> dict:
    """The model this run started from.

    ``{"id"}``: a Hub id when one is known for sure: the ``base_model`` or ``finetuned_from`` argument, the config's
    ``_name_or_path`` when the model was loaded from the Hub, or a Hub cache folder (``models--org--name/snapshots``).
    ``{"name"}``: what to call it otherwise (the local folder, "SinusoidMLP (random init)"); ``{"saved_name"}``: the
    ``_name_or_path`` a local folder's config.json kept. That is where the folder was saved *from*, which need not be
    the model itself (the pip all-MiniLM-L6-v2 records its own parent, nreimers/MiniLM-L6-H384-uncased): named on the
    card, never claimed as the base model. ``{"source"}``: where the answer came from.
    """
    config = getattr(unwrap_model(model), "config", None) if model is not None else None
    name_or_path = getattr(config, "_name_or_path", None) or None
    for source, value in (("base_model argument", base_model), ("finetuned_from argument", finetuned_from),
                          ("config _name_or_path", name_or_path)):  # fmt: skip
        if _is_hub_id(value):
            return {"id": value, "name": value, "source": source}
    local = next((v for v in (base_model, finetuned_from, name_or_path) if v), None)
    if local:
        cached = _CACHE_SNAPSHOT.search(str(local))
        if cached:
            repo = f"{cached.group(1)}/{cached.group(2)}"
            return {"id": repo, "name": repo, "source": f"Hub cache folder {local}"}
        out = {"id": None, "name": str(local), "source": "local folder" if os.path.isdir(str(local)) else "user"}
        try:
            with open(os.path.join(str(local), "config.json"), encoding="utf-8") as f:
                saved = json.load(f).get("_name_or_path")
        except (OSError, ValueError, AttributeError):
            saved = None
        if _is_hub_id(saved):
            out["saved_name"] = saved
        return out
    cls = type(unwrap_model(model)).__name__ if model is not None else "the model"
    return {"id": None, "name": f"{cls} built from its config (random initialisation)", "source": "config"}


def redact_saved_args(args: TrainingArguments, output_dir: str) -> None:
    """Stock Trainer pickles the whole TrainingArguments, `hub_token` included, into training_args.bin."""
    path = os.path.join(output_dir, "training_args.bin")
    if getattr(args, "hub_token", None) and os.path.isfile(path):
        redacted = copy.copy(args)
        redacted.hub_token = REDACTED
        buffer = _pickled(redacted)
        atomic_write(path, buffer)


def _pickled(obj) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@functools.cache
def _token_free_pickle_class(cls: type) -> type:
    """A subclass of ``cls`` whose instances pickle as a ``cls`` with ``hub_token`` redacted."""

    def __reduce_ex__(self, protocol):
        # Rebuilt as a plain ``cls`` by the standard library alone: loading training_args.bin needs no view class.
        return copyreg._reconstructor, (cls, object, None), {**self.__dict__, "hub_token": REDACTED}

    return type(cls.__name__, (cls,), {"__reduce_ex__": __reduce_ex__, "__module__": cls.__module__})


@contextlib.contextmanager
def _args_pickled_without_token(trainer):
    """While Trainer saves ``training_args.bin`` and starts an upload in the background (``_push_from_checkpoint``),
    ``trainer.args`` pickles without the token; the upload itself still gets the token."""
    args = trainer.args
    if not getattr(args, "hub_token", None):
        yield
        return
    view = object.__new__(_token_free_pickle_class(type(args)))
    view.__dict__.update(args.__dict__)
    trainer.args = view
    try:
        yield
    finally:
        trainer.args = args


def _infer_task(model) -> str | None:
    """The task tag of the model's class, as Trainer's card infers it."""
    from transformers.modelcard import TASK_MAPPING

    name = type(unwrap_model(model)).__name__ if model is not None else None
    for task, mapping in TASK_MAPPING.items():
        for value in mapping.values():
            if name == value or (isinstance(value, (list, tuple)) and name in value):
                return task
    return None


def _listify(value) -> list | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


class RunCardMixin:
    """Model card, run records, Hub pre-flight and token redaction for a `Trainer` subclass (see the module)."""

    def run_summary(self) -> tuple[str, dict]:
        """``(file name, summary)``: what the trainer's method did, as plain data."""
        raise NotImplementedError

    # ------------------------------------------------------------------ records
    def _secrets(self) -> list[str]:
        return secrets_of(self.args)

    def _hyperparameters(self) -> dict[str, dict]:
        """Every argument that differs from its default: TrainingArguments' own fields, the fields its subclass adds
        (MetaTrainingArguments, TransferTrainingArguments) and a separate TransferArguments."""
        secrets = self._secrets()
        values = non_default_arguments(self.args, secrets)
        base = {f.name for f in dataclasses.fields(TrainingArguments)}
        groups = {"TrainingArguments": {k: v for k, v in values.items() if k in base}}
        own = {k: v for k, v in values.items() if k not in base}
        if own:
            groups[type(self.args).__name__] = own
        transfer_args = getattr(self, "transfer_args", None)
        if transfer_args is not None and transfer_args is not self.args:
            groups[type(transfer_args).__name__] = non_default_arguments(transfer_args, secrets)
        return groups

    def _run_environment(self) -> dict:
        env = getattr(self, "_card_environment", None)
        if env is None:
            env = self._card_environment = {"git": git_commit(), "versions": package_versions()}
        return env

    def write_run_records(self, card_inputs: dict | None = None) -> None:
        """Write ``run_info.json`` and the method's summary to ``output_dir`` (process zero only)."""
        if not self.is_world_process_zero():
            return
        if card_inputs is not None:
            self._card_inputs = card_inputs
        inputs = getattr(self, "_card_inputs", None)
        if inputs is None:
            inputs = {"base_model": resolve_base_model(self.model), "tasks": _listify(_infer_task(self.model))}
        out, secrets = self.args.output_dir, self._secrets()
        model = unwrap_model(self.model) if self.model is not None else None
        info = {
            "command": command_line(secrets=secrets),
            **self._run_environment(),
            "trainer_class": type(self).__name__,
            "model_class": type(model).__name__ if model is not None else None,
            "world_size": self.args.world_size,
            "global_step": self.state.global_step,
            "hyperparameters": self._hyperparameters(),
            "card": inputs,
        }
        write_json(os.path.join(out, RUN_INFO_FILE), info, secrets)
        name, summary = self.run_summary()
        write_json(os.path.join(out, name), summary, secrets)

    # ------------------------------------------------------------------ the card
    def create_model_card(
        self,
        language: str | None = None,
        license: str | None = None,
        tags: str | list[str] | None = None,
        model_name: str | None = None,
        finetuned_from: str | None = None,
        tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None,
        dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
        base_model: str | None = None,
        plots: bool = True,
        **kwargs,
    ) -> None:
        """Trainer's card, completed with what the run did (see `hf_transfer_meta.cards`); Trainer's arguments, plus
        ``base_model`` (a Hub id, when the model was loaded from a local folder) and ``plots``."""
        if not self.is_world_process_zero():
            return
        base = resolve_base_model(self.model, base_model, finetuned_from)
        inputs = {
            "model_name": model_name or os.path.basename(os.path.abspath(self.args.output_dir)),
            "language": language,
            "license": license,
            "tags": _listify(tags),
            "tasks": _listify(tasks) or _listify(_infer_task(self.model)),
            "dataset_tags": _listify(dataset_tags),
            "dataset": _listify(dataset) or _listify(dataset_tags),
            "dataset_args": _listify(dataset_args),
            "base_model": base,
        }
        draft_kwargs = dict(language=language, license=license, tags=list(_listify(tags) or []) or None,
                            model_name=inputs["model_name"], finetuned_from=base["id"] or finetuned_from, tasks=tasks,
                            dataset_tags=dataset_tags, dataset=dataset, dataset_args=dataset_args, **kwargs)  # fmt: skip
        self._write_card(inputs, draft_kwargs, plots=plots)

    def _write_card(self, inputs: dict, draft_kwargs: dict, plots: bool) -> str:
        out = self.args.output_dir
        os.makedirs(out, exist_ok=True)
        inputs = {**inputs, "trainer_card": self._trainer_draft(draft_kwargs)}
        self.write_run_records(inputs)
        # The card reads the log history from trainer_state.json: the current state, however far the run got.
        state = json.dumps(dataclasses.asdict(self.state), indent=2, sort_keys=True) + "\n"
        atomic_write(os.path.join(out, "trainer_state.json"), state)
        return write_card(out, plots=plots, secrets=self._secrets())

    def _trainer_draft(self, draft_kwargs: dict) -> str | None:
        """Trainer's own card (or its subclass's), as text; None when it cannot be written (a plain nn.Module)."""
        path = os.path.join(self.args.output_dir, CARD_FILE)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                if GENERATED in f.read():
                    os.remove(path)  # our previous card: its tags must not leak into this draft
        try:
            super().create_model_card(**draft_kwargs)
        except Exception as err:  # noqa: BLE001 - the draft is optional; the card is not
            logger.warning(f"Trainer's model card could not be drafted ({type(err).__name__}: {err}); writing ours.")
            return None
        if not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8") as f:
            return f.read()

    # ------------------------------------------------------------------ the Hub
    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """Trainer's repository creation, after checking (on every process) that a push can work at all."""
        check_push_ready(self.args, token)
        try:
            super().init_hf_repo(token=token, private=private)
        except PushToHubError:
            raise
        except Exception as err:
            explained = explain_hub_error(err, self.args)
            if explained is None:
                raise
            raise explained from err

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        strategy = str(getattr(self.args.hub_strategy, "value", self.args.hub_strategy))
        if self.is_world_process_zero() and strategy != "end":
            try:  # the upload that follows sends a card of the run so far, never a stale one
                inputs = getattr(self, "_card_inputs", None) or {
                    "model_name": os.path.basename(os.path.abspath(self.args.output_dir)),
                    "base_model": resolve_base_model(self.model),
                    "tasks": _listify(_infer_task(self.model)),
                }
                self._write_card(inputs, {"model_name": inputs.get("model_name")}, plots=False)
            except Exception as err:  # noqa: BLE001
                logger.warning(f"The model card of step {self.state.global_step} could not be written: {err}")
        with _args_pickled_without_token(self):
            super()._push_from_checkpoint(checkpoint_folder)

    # ------------------------------------------------------------------ saving and training
    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        """Trainer's save, with `hub_token` redacted from training_args.bin (trap 14b)."""
        super()._save(output_dir, state_dict)
        if self.args.should_save:
            redact_saved_args(self.args, output_dir or self.args.output_dir)

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        if not resume_from_checkpoint and self.is_world_process_zero():
            stale = os.path.join(self.args.output_dir, DRIFT_FILE)
            if os.path.isfile(stale):
                os.remove(stale)  # a previous run's: this run measures its own (or none)
        # With a strategy, TransferMixin saves theta_0 itself, before the strategy's own steps; without one (stock
        # Trainer: full fine-tuning) it is done here, around Trainer's loop. Not with `model_init` (the model is
        # built inside train) nor for trainers without a layer map (MetaTrainer).
        plain = getattr(self, "strategy_active", True) is False and hasattr(self, "get_layer_map")
        plain = plain and self.model_init is None and self.model is not None
        if plain:
            self._drift_start(self.model, resume_from_checkpoint)
        output = super().train(
            resume_from_checkpoint=resume_from_checkpoint, trial=trial, ignore_keys_for_eval=ignore_keys_for_eval,
            **kwargs,
        )  # fmt: skip
        if plain and getattr(self, "_start_weights", None) is not None:
            kept = self.layer_map  # stock Trainer keeps no layer map (the drop-in contract): measure, then forget it
            try:
                layer_map = self.get_layer_map()
            except Exception as err:  # noqa: BLE001 - a model without a layer map: the card says nothing of drift
                logger.info(f"No layer map for the depth drift of the model card: {err}")
            else:
                self._drift_end(self.model, layer_map)
            finally:
                self.layer_map = kept
        self.write_run_records()
        return output

    # ------------------------------------------------------------------ depth drift (theta_0 -> theta_end)
    def _drift_start(self, model, resume_from_checkpoint) -> None:
        """Save theta_0 at the start of a fresh run; find it again on resume."""
        self._start_weights = None
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:
            return  # sharded parameters: not measured
        if resume_from_checkpoint is None:
            if self.is_world_process_zero():
                self._start_weights = save_start_weights(model, self.args.output_dir)
        elif self.is_world_process_zero():
            self._start_weights = start_weights_for(self.args.output_dir, resume_from_checkpoint)

    def _drift_end(self, model, layer_map, note: str | None = None) -> dict | None:
        path = getattr(self, "_start_weights", None)
        if path is None or not self.is_world_process_zero():
            return None
        drift = measure_drift(
            model, path, layer_map.depth_of, layer_map.depth_label, layer_map.num_depths,
            global_step=self.state.global_step, note=note,
        )  # fmt: skip
        write_json(os.path.join(self.args.output_dir, DRIFT_FILE), drift)
        return drift
