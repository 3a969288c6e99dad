"""A depth for every parameter of a model: 0 = embeddings/stem, 1..L = repeated blocks, L+1 = task head.

The map is found structurally, with no per-architecture name tables:

* the **head** is what lies outside ``model.base_model`` (``classifier``, ``score``, ``lm_head``), plus the output
  embeddings when the model is its own base model (T5, BART and GPT-2 language-model heads);
* the **blocks** are the elements of the outermost repeated ``nn.ModuleList``/``nn.Sequential`` containers inside the
  base model (all elements of one class, each a container itself), numbered in registration order. Nested lists
  (Swin/ResNet/ConvNeXt stages holding layers, MoE experts inside a decoder layer) are not counted again: the stage
  is the block. Encoder-decoder models get their encoder blocks first, then their decoder blocks;
* parameters outside any block join the block registered before them (final norms, poolers, DeBERTa's relative
  embeddings), parameters before the first block and every ``nn.Embedding`` are depth 0.

ALBERT shares one layer across all its applications: its parameters exist once, so the map has one block per
*layer group* (``num_hidden_groups``, usually 1), not ``num_hidden_layers`` blocks.

Tied parameters (GPT-2's ``lm_head.weight`` is ``transformer.wte.weight``) appear once, at the depth of their first
name; ``LayerMap.tied`` records the other names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from torch import nn

from ..model_utils import unwrap_model

__all__ = ["LayerMap", "LayerMapError"]

DepthOverride = Mapping[str, int] | Callable[[str], "int | None"]


class LayerMapError(ValueError):
    """Raised when the depths of a model's parameters cannot be determined."""


_OVERRIDE_HELP = (
    "Pass an override, e.g.\n"
    "  LayerMap.from_model(model, blocks=['encoder.0', 'encoder.1', 'encoder.2'], head=['classifier'])\n"
    "  LayerMap.from_model(model, depths={r'^stem\\.': 0, r'^layers\\.(\\d+)\\.': lambda m: int(m.group(1)) + 1, "
    "r'^fc\\.': 4})\n"
    "  LayerMap.from_model(model, depths=lambda name: ...)  # a callable from parameter name to depth\n"
    "(TransferTrainingArguments: `layer_map_blocks`, `layer_map_head`.)"
)


def _is_block_list(module: nn.Module) -> bool:
    if not isinstance(module, (nn.ModuleList, nn.Sequential)) or len(module) == 0:
        return False
    children = list(module.children())
    first = type(children[0])
    if any(type(c) is not first for c in children):
        return False
    # Each element must be a container of layers (a transformer layer, a residual block, a stage), not a leaf
    # Linear/Conv/Norm, and must hold parameters.
    return all(len(list(c.children())) > 0 and any(True for _ in c.parameters()) for c in children)


def _find_block_lists(root: nn.Module, prefix: str, exclude: set[int]) -> list[tuple[str, nn.Module]]:
    """Outermost block lists under ``root`` in registration order, skipping modules in ``exclude`` (the head)."""
    found = []

    def visit(module: nn.Module, name: str) -> None:
        if id(module) in exclude:
            return
        if name and _is_block_list(module):
            found.append((name, module))
            return  # outermost only: lists nested inside a block are part of that block
        for child_name, child in module.named_children():
            visit(child, f"{name}.{child_name}" if name else child_name)

    visit(root, prefix)
    return found


@dataclass
class LayerMap:
    """Which depth every parameter of a model sits at.

    Attributes:
        depth_of: parameter name (as ``model.named_parameters()`` gives it) -> depth.
        num_blocks: L, the number of repeated blocks; depths run from 0 to L+1 (``head_depth``).
        block_names: module path of each block, ``block_names[i]`` is depth ``i + 1``.
        head_names: module paths that form the head (depth L+1).
        tied: other name of a tied parameter -> the name it is listed under.
        model_class: class name of the mapped model, for messages and model cards.
        how: how the map was found ("structural" or the kind of override), for model cards.
    """

    depth_of: dict[str, int]
    num_blocks: int
    block_names: list[str] = field(default_factory=list)
    head_names: list[str] = field(default_factory=list)
    tied: dict[str, str] = field(default_factory=dict)
    model_class: str = ""
    how: str = "structural"
    notes: list[str] = field(default_factory=list)
    _numel: dict[str, int] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        *,
        depths: DepthOverride | None = None,
        blocks: Sequence[str] | None = None,
        head: Sequence[str] | None = None,
    ) -> LayerMap:
        """Map every parameter of ``model`` (a transformers model, a PEFT model or a plain ``nn.Module``) to a depth.

        Args:
            depths: override, either ``{regex: depth}`` (first ``re.search`` match wins; the depth may also be a
                callable taking the match) or a callable ``name -> depth``. Every parameter must get a depth.
            blocks: override, module paths of the blocks in order (as in ``model.named_modules()``). Parameters
                before the first block are depth 0, those after the last block are the head unless ``head`` says
                otherwise.
            head: module paths of the task head (depth L+1), for models whose head is not outside
                ``model.base_model``.
        """
        named = list(model.named_parameters())
        all_named = list(model.named_parameters(remove_duplicate=False))
        canonical = {id(p): n for n, p in named}
        tied = {n: canonical[id(p)] for n, p in all_named if canonical[id(p)] != n}
        numel = {n: p.numel() for n, p in named}
        model_class = type(unwrap_model(model)).__name__

        if depths is not None:
            depth_of = _depths_from_override(named, depths, model_class)
            num_blocks = max(depth_of.values()) - 1
            if num_blocks < 0:
                raise LayerMapError(f"The depth override for {model_class} gives no depth above 0.")
            return cls(depth_of, num_blocks, tied=tied, model_class=model_class, how="override: depths", _numel=numel)

        depth_of, block_names, head_names, notes = _structural_depths(model, blocks=blocks, head=head)
        how = "structural" if blocks is None and head is None else "override: blocks/head"
        return cls(
            {n: depth_of[id(p)] for n, p in named},
            len(block_names),
            block_names=block_names,
            head_names=head_names,
            tied=tied,
            model_class=model_class,
            how=how,
            notes=notes,
            _numel=numel,
        )

    # ------------------------------------------------------------------ queries
    @property
    def head_depth(self) -> int:
        return self.num_blocks + 1

    @property
    def num_depths(self) -> int:
        return self.num_blocks + 2

    def names_at(self, depth: int | Iterable[int]) -> list[str]:
        wanted = {depth} if isinstance(depth, int) else set(depth)
        return [n for n, d in self.depth_of.items() if d in wanted]

    def num_params(self, depth: int) -> int:
        return sum(self._numel.get(n, 0) for n in self.names_at(depth))

    def resolve(self, spec: str | int | Sequence[int | str]) -> list[int]:
        """Depths named by a user: an int, "head", "embeddings", "first"/"middle"/"last" block, "all",
        "last-k" (the top k depths, head included) or a list of these. Negative ints count from the head."""
        if isinstance(spec, (list, tuple)):
            out: list[int] = []
            for s in spec:
                out.extend(d for d in self.resolve(s) if d not in out)
            return out
        if isinstance(spec, str) and re.fullmatch(r"-?\d+", spec.strip()):
            spec = int(spec)
        if isinstance(spec, int):
            d = spec if spec >= 0 else self.num_depths + spec
            if not 0 <= d < self.num_depths:
                raise LayerMapError(
                    f"Depth {spec} is out of range for {self.model_class}: depths are 0..{self.head_depth}."
                )
            return [d]
        key = spec.strip().lower()
        L = self.num_blocks
        named = {
            "embeddings": [0],
            "stem": [0],
            "head": [L + 1],
            "first": [1] if L else [0],
            "middle": [(L + 1) // 2] if L else [0],
            "last": [L] if L else [L + 1],
            "all": list(range(L + 2)),
            "blocks": list(range(1, L + 1)),
        }
        if key in named:
            return named[key]
        m = re.fullmatch(r"last-(\d+)", key)
        if m:
            k = int(m.group(1))
            return list(range(max(0, L + 2 - k), L + 2))
        raise LayerMapError(
            f"Cannot read depth spec {spec!r}: use an int (0..{L + 1}, negative from the head), 'embeddings', "
            "'first', 'middle', 'last', 'head', 'all', 'blocks', 'last-K' or a list of these."
        )

    def depth_label(self, depth: int) -> str:
        if depth == 0:
            return "embeddings"
        if depth == self.head_depth:
            return "head"
        return f"block {depth}"

    def describe(self, lrs: Mapping[int, float] | None = None, trainable: Mapping[int, bool] | None = None) -> str:
        """A table: depth, what sits there, parameter count, and optionally the LR and whether it trains."""
        rows = []
        for d in range(self.num_depths):
            names = self.names_at(d)
            modules = _summarise_modules(names)
            if d == self.head_depth and not names:
                tied_heads = [a for a in self.tied if any(a.startswith(h + ".") for h in self.head_names)]
                modules = f"(tied: {', '.join(sorted(tied_heads))})" if tied_heads else "(none)"
            row = [str(d), self.depth_label(d), modules, f"{self.num_params(d):,}"]
            if lrs is not None:
                row.append(f"{lrs[d]:.3g}" if d in lrs else "-")
            if trainable is not None:
                row.append("yes" if trainable.get(d, False) else "frozen")
            rows.append(row)
        header = ["depth", "part", "modules", "params"] + (["lr"] if lrs is not None else [])
        header += ["trains"] if trainable is not None else []
        widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
        fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
        lines = [
            f"{self.model_class}: {self.num_depths} depths ({self.num_blocks} blocks), map {self.how}",
            fmt(header),
        ]
        lines.append("  ".join("-" * w for w in widths))
        lines += [fmt(r) for r in rows]
        if self.tied:
            lines.append("tied: " + ", ".join(f"{a} -> {c}" for a, c in sorted(self.tied.items())))
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """What a model card records about the map."""
        return {
            "model_class": self.model_class,
            "how": self.how,
            "num_depths": self.num_depths,
            "blocks": self.block_names,
            "head": self.head_names,
            "params_per_depth": [self.num_params(d) for d in range(self.num_depths)],
            "notes": self.notes,
        }


def _summarise_modules(names: list[str], limit: int = 3) -> str:
    """Parameter names -> their owning modules, de-duplicated, shortened to a few entries."""
    mods: list[str] = []
    for n in names:
        m = n.rsplit(".", 1)[0] if "." in n else n
        # collapse to the module two levels below the deepest common container for readability
        if m not in mods:
            mods.append(m)
    # Shorten: keep the common stem of nested submodules.
    stems: list[str] = []
    for m in mods:
        if not any(m == s or m.startswith(s + ".") for s in stems):
            parts = m.split(".")
            stem = ".".join(parts[: min(len(parts), _stem_len(parts))])
            if stem not in stems:
                stems.append(stem)
    shown = ", ".join(stems[:limit])
    return shown + (f", +{len(stems) - limit} more" if len(stems) > limit else "")


def _stem_len(parts: list[str]) -> int:
    # keep through the first numeric index (a block), else three components
    for i, p in enumerate(parts):
        if p.isdigit():
            return i + 1
    return min(3, len(parts))


def _depths_from_override(named, depths: DepthOverride, model_class: str) -> dict[str, int]:
    out: dict[str, int] = {}
    missing = []
    for name, _ in named:
        d = None
        if callable(depths):
            d = depths(name)
        else:
            for pattern, value in depths.items():
                m = re.search(pattern, name)
                if m:
                    d = value(m) if callable(value) else value
                    break
        if d is None:
            missing.append(name)
        else:
            out[name] = int(d)
    if missing:
        raise LayerMapError(
            f"The depth override for {model_class} gives no depth to {len(missing)} parameter(s), e.g. "
            f"{missing[:5]}. Add a pattern (e.g. r'.*': 0 as a catch-all at the end)."
        )
    return out


def _module_prefixes(model: nn.Module, paths: Sequence[str], what: str) -> list[tuple[str, nn.Module]]:
    modules = dict(model.named_modules())
    out = []
    for p in paths:
        if p not in modules:
            close = [n for n in modules if n.endswith(p) or p.endswith(n)][:5] if p else []
            raise LayerMapError(
                f"{what} module {p!r} is not in {type(model).__name__}."
                + (f" Did you mean one of {close}?" if close else " See `model.named_modules()` for the paths.")
            )
        out.append((p, modules[p]))
    return out


def _structural_depths(model: nn.Module, *, blocks=None, head=None):
    """Returns ``({id(param): depth}, block module paths, head module paths, notes)``, paths relative to ``model``;
    the notes say where parameters outside any block were put (for `LayerMap.describe`)."""
    inner = unwrap_model(model)
    # Paths are reported relative to the structural model; parameters are keyed by identity so that the caller's
    # names (PEFT's "base_model.model." prefix, DDP's "module.") keep working.
    model_class = type(inner).__name__

    # --- head
    if head is not None:
        head_modules = _module_prefixes(inner, head, "Head")
    else:
        head_modules = []
        base = getattr(inner, "base_model", inner)
        if base is not inner and isinstance(base, nn.Module):
            head_modules = [(n, m) for n, m in inner.named_children() if m is not base]
        out_emb = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
        if isinstance(out_emb, nn.Module):
            name = next((n for n, m in inner.named_modules() if m is out_emb), None)
            if name is not None and all(name != n and not name.startswith(n + ".") for n, _ in head_modules):
                head_modules.append((name, out_emb))
    # A parameter is in the head only if its first name is: a tied output embedding stays with the input embedding.
    head_paths = [n for n, _ in head_modules]
    head_param_ids = {id(p) for n, p in inner.named_parameters() if any(n.startswith(h + ".") for h in head_paths)}

    # --- blocks
    if blocks is not None:
        block_modules = _module_prefixes(inner, blocks, "Block")
    else:
        base = getattr(inner, "base_model", inner)
        base_prefix = next((n for n, m in inner.named_modules() if m is base), "")
        lists = _find_block_lists(base, base_prefix, exclude={id(m) for _, m in head_modules})
        block_modules = [(f"{ln}.{cn}", c) for ln, lst in lists for cn, c in lst.named_children()]
    if not block_modules:
        raise LayerMapError(
            f"Cannot find the repeated blocks of {model_class}: no nn.ModuleList/nn.Sequential of identical "
            f"layers inside its base model.\n{_OVERRIDE_HELP}"
        )

    depth: dict[int, int] = {}
    for i, (_, block) in enumerate(block_modules, start=1):
        for p in block.parameters():
            depth.setdefault(id(p), i)
    embedding_ids = {
        id(p) for m in inner.modules() if isinstance(m, nn.Embedding) for p in m.parameters(recurse=False)
    }
    explicit_blocks = blocks is not None
    L = len(block_modules)
    current = 0
    joined: dict[str, int] = {}  # module outside any block -> the block depth it joins
    for name, p in inner.named_parameters():
        pid = id(p)
        if pid in head_param_ids:
            depth[pid] = L + 1
        elif pid in depth:
            current = depth[pid]
        elif pid in embedding_ids:
            depth[pid] = 0
        elif explicit_blocks and head is None and current == L:
            depth[pid] = L + 1  # plain modules: what follows the last named block is the head
        else:
            depth[pid] = current
            if current > 0:
                joined.setdefault(name.rsplit(".", 1)[0], current)
    notes = [f"{m} follows block {d} outside any block and trains with it (depth {d})" for m, d in joined.items()]
    return depth, [n for n, _ in block_modules], [n for n, _ in head_modules], notes


_unwrap = unwrap_model  # the name other modules of 0.1 imported
