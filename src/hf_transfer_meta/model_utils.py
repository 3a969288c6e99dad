"""Finding the model inside its wrappers, once for the whole package.

Trainer and Accelerate wrap a model in DDP (``module.``), ``torch.compile`` (``_orig_mod.``) or FSDP; PEFT wraps it
in a ``PeftModel``. Structure (layer maps) is read below all of them; parameter names are kept below the parallel
wrappers only, so that a PEFT model's names match what its optimizer and checkpoints see.
"""

from __future__ import annotations

from torch import nn

__all__ = ["WRAPPER_PREFIXES", "is_peft_model", "is_transformers_model", "strip_wrapper_prefixes", "unwrap_model",
           "unwrap_parallel"]  # fmt: skip

WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def is_peft_model(model: nn.Module) -> bool:
    """A `peft.PeftModel` (or anything with its `get_base_model`)."""
    return hasattr(model, "get_base_model") and callable(model.get_base_model)


def is_transformers_model(model: nn.Module) -> bool:
    """A `transformers.PreTrainedModel`, possibly wrapped."""
    from transformers import PreTrainedModel

    return isinstance(unwrap_model(model), PreTrainedModel)


def unwrap_parallel(model: nn.Module) -> nn.Module:
    """Below DDP / DataParallel (``module``) and ``torch.compile`` (``_orig_mod``), not below PEFT."""
    seen = set()
    while id(model) not in seen:
        seen.add(id(model))
        if isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        elif isinstance(getattr(model, "module", None), nn.Module) and len(list(model.children())) == 1:
            model = model.module
    return model


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module whose structure describes the model: below PEFT, DDP / FSDP and ``torch.compile`` wrappers."""
    seen = set()
    while id(model) not in seen:
        seen.add(id(model))
        model = unwrap_parallel(model)
        if is_peft_model(model):
            model = model.get_base_model()
    return model


def strip_wrapper_prefixes(name: str) -> str:
    """A parameter name without the ``module.`` / ``_orig_mod.`` prefixes that parallel wrappers add."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, stripped = name[len(prefix) :], True
    return name


def image_classifier_output(logits, labels=None, hidden_states=None, return_dict: bool | None = None):
    """What an image classifier's ``forward`` returns, as transformers' own do: cross-entropy ``loss`` when
    ``labels`` are given, an ``ImageClassifierOutput`` (or a tuple with ``return_dict=False``)."""
    import torch.nn.functional as F
    from transformers.modeling_outputs import ImageClassifierOutput

    loss = F.cross_entropy(logits, labels) if labels is not None else None
    if return_dict is False:
        rest = (logits,) + ((hidden_states,) if hidden_states is not None else ())
        return ((loss,) + rest) if loss is not None else rest
    return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=hidden_states)


def register_image_classifier(model_type: str, config_cls, model_cls, classifier_cls) -> None:
    """Register a config and its models with the Auto classes, so saved folders load through them."""
    from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

    AutoConfig.register(model_type, config_cls, exist_ok=True)
    AutoModel.register(config_cls, model_cls, exist_ok=True)
    AutoModelForImageClassification.register(config_cls, classifier_cls, exist_ok=True)
