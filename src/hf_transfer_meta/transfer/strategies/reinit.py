"""Re-initialising the head and the top blocks of a pretrained model, in a way that survives ``from_pretrained``.

Zhang et al. 2021 ("Revisiting Few-sample BERT Fine-tuning") found that re-initialising the pooler and the top
blocks of BERT before fine-tuning helps with few examples: the top pretrained layers are specialised to the
pretraining objective and transfer worse than a fresh start.

Why this needs care in transformers 5: ``from_pretrained`` marks every loaded tensor (and module) with
``_is_hf_initialized = True`` and the init helpers of ``transformers.initialization`` skip marked tensors, so the
obvious ``model._init_weights(model.classifier)`` silently does nothing on a loaded model. Here the flags are cleared
on exactly the modules being re-initialised, the model's own ``_init_weights`` runs on them (children before parents,
as ``PreTrainedModel.initialize_weights`` does), and the flags are put back.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import nullcontext

import torch
from torch import nn

from ...model_utils import is_peft_model, unwrap_model, unwrap_parallel
from ..layer_map import LayerMap

__all__ = ["reinit_depths", "reinit_head", "reinit_top_blocks"]

logger = logging.getLogger(__name__)


def reinit_head(model: nn.Module, layer_map: LayerMap | None = None, seed: int | None = None) -> list[str]:
    """Re-initialise the task head (depth L+1) with the model's own initialisation.

    Args:
        model: a transformers model (also DDP/``torch.compile`` wrapped) or a plain ``nn.Module``. Call this before
            ``peft.get_peft_model``: PEFT adapters would be re-initialised with the base model's scheme.
        layer_map: the model's depth map; built with ``LayerMap.from_model(model)`` when not given.
        seed: seeds the re-initialisation without touching the global RNG state.

    Returns:
        The re-initialised parameter names, as ``model.named_parameters()`` gives them.

    Raises:
        ValueError: when the head shares weights with the rest of the model (GPT-2/T5 language-model heads tied to the
            input embeddings): re-initialising it would wipe the embeddings too.
    """
    layer_map = layer_map or LayerMap.from_model(model)
    return reinit_depths(model, [layer_map.head_depth], layer_map=layer_map, seed=seed)


def reinit_top_blocks(
    model: nn.Module, k: int, layer_map: LayerMap | None = None, seed: int | None = None
) -> list[str]:
    """Re-initialise the top ``k`` blocks (depths L-k+1 .. L), as Zhang et al. 2021 did for BERT.

    Parameters that the layer map puts with the last block (BERT's pooler, a final norm) are re-initialised with it,
    which is what the paper did (pooler plus the top layers). The head is left alone: re-initialise it with
    [`reinit_head`] (a new head is freshly initialised anyway).

    Returns:
        The re-initialised parameter names, as ``model.named_parameters()`` gives them.
    """
    layer_map = layer_map or LayerMap.from_model(model)
    if not 0 <= k <= layer_map.num_blocks:
        raise ValueError(
            f"Cannot re-initialise the top {k} blocks of {layer_map.model_class}: it has {layer_map.num_blocks} "
            f"blocks. Use 0 <= k <= {layer_map.num_blocks}."
        )
    depths = range(layer_map.num_blocks - k + 1, layer_map.num_blocks + 1)
    return reinit_depths(model, depths, layer_map=layer_map, seed=seed)


def reinit_depths(
    model: nn.Module, depths: Iterable[int], layer_map: LayerMap | None = None, seed: int | None = None
) -> list[str]:
    """Re-initialise every parameter at ``depths`` (and the buffers of the modules they live in).

    The smallest modules whose parameters all lie at those depths are found, and every module below them is
    re-initialised, children first: transformers models through the ``_init_weights`` of the nearest
    ``PreTrainedModel`` above the module (composite models keep each sub-model's own scheme), plain modules through
    ``reset_parameters()``.
    """
    layer_map = layer_map or LayerMap.from_model(model)
    depths = set(depths)
    if not depths:
        return []
    inner = unwrap_model(model)
    if is_peft_model(unwrap_parallel(model)):
        raise ValueError(
            f"{type(model).__name__} is a PEFT model: re-initialise the base model before `get_peft_model`, "
            "otherwise the adapter weights inside the re-initialised modules would be reset by the base model's "
            "init as well."
        )

    names = layer_map.names_at(depths)
    by_name = dict(model.named_parameters())
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(
            f"The layer map names parameters that {type(model).__name__} does not have, e.g. {missing[:3]}: build "
            "the map on the model you pass (`LayerMap.from_model(model)`)."
        )
    _refuse_shared_weights(inner, model, depths, layer_map)
    target = {id(by_name[n]) for n in names}
    if not target:
        raise ValueError(
            f"No parameters of {layer_map.model_class} lie at depth(s) {sorted(depths)} "
            f"(depths run 0..{layer_map.head_depth}); nothing to re-initialise."
        )

    roots = _covering_modules(inner, target)
    devices = sorted({p.device.index or 0 for p in inner.parameters() if p.device.type == "cuda"})
    rng = torch.random.fork_rng(devices=devices) if seed is not None else nullcontext()
    with rng, torch.no_grad():
        if seed is not None:
            torch.manual_seed(seed)
        for path, root in roots:
            _reinit_subtree(inner, path, root)
    return names


# ---------------------------------------------------------------------------------------------------------- helpers


def _refuse_shared_weights(inner: nn.Module, model: nn.Module, depths: set[int], layer_map: LayerMap) -> None:
    """Tied weights (an LM head that *is* the input embedding) cannot be re-initialised on one side only.

    The layer map lists a tied tensor once, at the depth of its first name; here every name of it is placed where
    its module sits (under a head or block path of the map), and a tensor named both inside and outside ``depths``
    is refused.
    """
    depth_of_tensor = {id(p): layer_map.depth_of.get(n) for n, p in model.named_parameters()}
    prefixes = [(h, layer_map.head_depth) for h in layer_map.head_names]
    prefixes += [(b, i) for i, b in enumerate(layer_map.block_names, start=1)]

    def positional_depth(name: str, p: nn.Parameter) -> int | None:
        for prefix, depth in prefixes:
            if name.startswith(prefix + "."):
                return depth
        return depth_of_tensor.get(id(p))

    names_of: dict[int, list[tuple[str, bool]]] = {}
    for name, p in inner.named_parameters(remove_duplicate=False):
        names_of.setdefault(id(p), []).append((name, positional_depth(name, p) in depths))
    for names in names_of.values():
        inside = [n for n, is_in in names if is_in]
        outside = [n for n, is_in in names if not is_in]
        if inside and outside:
            raise ValueError(
                f"Cannot re-initialise {inside[0]!r} of {layer_map.model_class}: it is tied to {outside[0]!r} (the "
                "same tensor). Untie the weights first (e.g. `tie_word_embeddings=False` in the config before "
                "`from_pretrained`) so that the head gets its own copy."
            )


def _covering_modules(inner: nn.Module, target: set[int]) -> list[tuple[str, nn.Module]]:
    """The outermost modules whose parameters (at least one) all lie in ``target``, and which cover it."""
    roots: list[tuple[str, nn.Module]] = []

    def visit(module: nn.Module, path: str) -> None:
        params = [id(p) for p in module.parameters()]
        if params and all(pid in target for pid in params):
            roots.append((path, module))
            return
        for child_name, child in module.named_children():
            visit(child, f"{path}.{child_name}" if path else child_name)

    visit(inner, "")
    covered = {id(p) for _, m in roots for p in m.parameters()}
    loose = [n for n, p in inner.named_parameters() if id(p) in target and id(p) not in covered]
    if loose:
        # A module mixing target and other parameters: re-initialising it would touch the others.
        raise ValueError(
            f"Cannot re-initialise {loose[:3]} alone: the module holding them also holds parameters at other "
            "depths. Pass a layer map whose depths follow module boundaries (`LayerMap.from_model(model, blocks=..., "
            "head=...)`)."
        )
    return roots


def _owner(inner: nn.Module, path: str):
    """The nearest transformers ``PreTrainedModel`` at or above ``path`` (None for plain modules)."""
    from transformers import PreTrainedModel

    owner = inner if isinstance(inner, PreTrainedModel) else None
    module = inner
    for part in path.split(".") if path else []:
        module = getattr(module, part)
        if isinstance(module, PreTrainedModel):
            owner = module
    return owner


def _reinit_subtree(inner: nn.Module, path: str, root: nn.Module) -> None:
    owner = _owner(inner, path)
    if owner is None:
        _reset_parameters(root, path)
        return
    from transformers import PreTrainedModel
    from transformers import initialization as hf_init

    def visit(module: nn.Module, owner: PreTrainedModel) -> None:
        for child in module.children():
            visit(child, child if isinstance(child, PreTrainedModel) else owner)
        tensors = [
            module,
            *module.parameters(recurse=False),
            *(b for b in module.buffers(recurse=False) if b is not None),
        ]
        flags = [t.__dict__.get("_is_hf_initialized") for t in tensors]
        for t in tensors:
            # The flag is what makes `transformers.initialization` skip a tensor loaded by `from_pretrained`.
            t._is_hf_initialized = False
        try:
            owner._init_weights(module)
        finally:
            for t, flag in zip(tensors, flags):
                if flag is None:
                    del t._is_hf_initialized
                else:
                    t._is_hf_initialized = flag

    # Remote code may call torch.nn.init directly: guard it like `initialize_weights` does (flags are cleared).
    with hf_init.guard_torch_init_functions():
        visit(root, root if isinstance(root, PreTrainedModel) else owner)


def _reset_parameters(root: nn.Module, path: str) -> None:
    reset = set()
    for module in reversed(list(root.modules())):  # children before parents
        if callable(getattr(module, "reset_parameters", None)):
            module.reset_parameters()
            reset.update(id(p) for p in module.parameters(recurse=False))
    missed = [n for n, p in root.named_parameters() if id(p) not in reset]
    if missed:
        logger.warning(
            "%d parameter(s) under %r have no `reset_parameters()` on their module and were left as they were: %s",
            len(missed),
            path,
            [f"{path}.{n}" if path else n for n in missed[:5]],
        )


# ------------------------------------------------------------------------------------------------------- strategy


def _before_training(start) -> None:
    a = start.args
    if a.reinit_head:
        reinit_head(start.model, start.layer_map, seed=start.seed)
    if a.reinit_top_blocks:
        reinit_top_blocks(start.model, a.reinit_top_blocks, start.layer_map, seed=start.seed)


def _describe(a) -> str:
    return "head re-initialised" + (f" + top {a.reinit_top_blocks} blocks" if a.reinit_top_blocks else "")


def _make_strategy():
    from .base import Strategy, check_field

    return Strategy(
        name="reinit",
        title="Re-initialising the head and the top blocks",
        paper="Zhang et al. 2021, Revisiting Few-sample BERT Fine-tuning",
        fields=("reinit_head", "reinit_top_blocks"),
        is_active=lambda a: bool(a.reinit_head or a.reinit_top_blocks),
        describe=_describe,
        check=lambda a: check_field(
            a.reinit_top_blocks >= 0, "reinit_top_blocks", a.reinit_top_blocks, "it is a number of blocks, >= 0"
        ),
        before_training=_before_training,
    )


STRATEGY = _make_strategy()
