"""The linear probe of LP-FT: logistic regression on frozen features, written into the head's final ``nn.Linear``.

Kumar et al. 2022 ("Fine-Tuning can Distort Pretrained Features and Underperform Out-of-Distribution") first fit a
linear probe on the frozen pretrained features, use it as the head, then fine-tune everything. Their official code
(``log_reg_sk.py``) fits the probe with scikit-learn, and this module does the same:

* features of the frozen backbone are computed once, in eval mode under ``torch.no_grad`` (no dropout, no BatchNorm
  statistics updates), as the *input of the head's last Linear* (RoBERTa/ELECTRA heads hold ``dense`` then
  ``out_proj``: the probe replaces ``out_proj`` only);
* features are normalised by one scalar mean and one scalar standard deviation over the whole training matrix ("this
  makes regularization hyperparameters more consistent across datasets"), and the fitted weights are mapped back to
  raw features before they are written into the head;
* an L2-regularised ``LogisticRegression(warm_start=True, max_iter=200, random_state=0)`` is fit for each C in
  ``np.logspace(-7, 2, 100)``, from the strongest regularisation to the weakest, warm-starting each fit from the
  previous one; the C with the best validation accuracy wins (the first one on ties);
* classes absent from the training set get a zero row in the head (their ``pad_head``).
"""

from __future__ import annotations

import copy
import inspect
import logging
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ...model_utils import unwrap_model
from ..layer_map import LayerMap

__all__ = [
    "ProbeResult",
    "check_probe_dataset",
    "extract_features",
    "final_linear",
    "fit_linear_probe",
    "linear_probe",
    "write_probe_into_head",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_ITER = 200  # Kumar et al.'s default (100-200 per data set in their scripts)


def default_cs(num: int = 100) -> np.ndarray:
    """The regularisation sweep of the official LP-FT code: ``np.logspace(-7, 2, num)``."""
    return np.logspace(-7, 2, num)


@dataclass
class ProbeResult:
    """A fitted linear probe, in the space of the raw (un-normalised) features.

    Attributes:
        weight: ``(num_classes, in_features)``, ready for ``nn.Linear.weight``; row ``c`` scores label id ``c``.
        bias: ``(num_classes,)``, or None when the probe was fit without an intercept (a head Linear without bias).
        C: the chosen inverse regularisation strength.
        val_accuracy: validation accuracy at ``C`` (NaN without a validation set).
        train_accuracy: training accuracy at ``C``.
        seconds: time spent fitting the sweep (feature extraction not included).
        extract_seconds: time spent extracting the frozen features (set by :func:`linear_probe`).
        all_scores: one ``{"C", "train_accuracy", "val_accuracy"}`` dict per C, in sweep order.
        classes: label ids present in the training set.
        classifier: the scikit-learn estimator at ``C`` (it expects normalised features, see ``normalize``).
        feature_mean, feature_std: the scalar normalisation applied before scikit-learn.
        converged: False when some fit of the sweep stopped at ``max_iter`` (as in the paper's runs).
    """

    weight: np.ndarray
    bias: np.ndarray | None
    C: float
    val_accuracy: float
    train_accuracy: float
    seconds: float
    all_scores: list[dict[str, float]]
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    classifier: Any = None
    feature_mean: float = 0.0
    feature_std: float = 1.0
    converged: bool = True
    extract_seconds: float = 0.0

    def normalize(self, features: np.ndarray) -> np.ndarray:
        """Raw features -> the normalised features ``classifier`` was fit on."""
        return (np.asarray(features, dtype=np.float64) - self.feature_mean) / self.feature_std

    def logits(self, features: np.ndarray) -> np.ndarray:
        """What the head computes on raw features after [`write_probe_into_head`]."""
        out = np.asarray(features, dtype=np.float64) @ self.weight.T
        return out + self.bias if self.bias is not None else out

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.logits(features).argmax(-1)

    def to_dict(self) -> dict[str, Any]:
        """What a model card or a log records about the probe."""
        return {
            "C": self.C,
            "val_accuracy": self.val_accuracy,
            "train_accuracy": self.train_accuracy,
            "num_cs": len(self.all_scores),
            "seconds": round(self.seconds, 3),
            "extract_seconds": round(self.extract_seconds, 3),
            "total_seconds": round(self.seconds + self.extract_seconds, 3),
            "converged": self.converged,
        }


# ------------------------------------------------------------------------------------------------- the head's Linear


def final_linear(model: nn.Module, layer_map: LayerMap | None = None) -> tuple[str, nn.Linear]:
    """The last ``nn.Linear`` of the head (in registration order), which the probe replaces.

    Under PEFT, the copy that runs is returned: the active ``modules_to_save`` copy of a wrapped head, the
    ``base_layer`` of a LoRA-adapted Linear (never ``lora_A``/``lora_B``).

    Returns:
        ``(name, linear)``, the name as ``model.named_modules()`` gives it.
    """
    layer_map = layer_map or LayerMap.from_model(model)
    inner = unwrap_model(model)
    modules = dict(inner.named_modules())
    found: list[nn.Linear] = []
    for head in layer_map.head_names:
        if head not in modules:
            raise ValueError(
                f"Head module {head!r} of the layer map is not in {type(inner).__name__}: build the map on this "
                "model (`LayerMap.from_model(model)`)."
            )
        found += [m for m in _running_modules(modules[head]) if isinstance(m, nn.Linear)]
    if not found:
        raise ValueError(
            f"The head of {layer_map.model_class} ({layer_map.head_names or 'none found'}) holds no nn.Linear, so "
            "there is nothing for a linear probe to initialise. Give the map the head's modules "
            "(`LayerMap.from_model(model, head=[...])`) or skip the linear-probe phase."
        )
    linear = found[-1]
    name = next(n for n, m in model.named_modules() if m is linear)
    return name, linear


def _running_modules(module: nn.Module) -> Iterable[nn.Module]:
    """``module.modules()``, but through PEFT wrappers only the branch that runs in forward."""
    yield module
    to_save = getattr(module, "modules_to_save", None)
    if isinstance(to_save, nn.ModuleDict) and isinstance(getattr(module, "original_module", None), nn.Module):
        active = list(getattr(module, "active_adapters", []) or [])
        disabled = getattr(module, "disable_adapters", False)
        branch = module.original_module if disabled or not active or active[0] not in to_save else to_save[active[0]]
        yield from _running_modules(branch)
        return
    base = getattr(module, "base_layer", None)
    if isinstance(base, nn.Module) and base is not module:  # a PEFT tuner layer: the adapters are not the head
        yield from _running_modules(base)
        return
    for child in module.children():
        yield from _running_modules(child)


# ------------------------------------------------------------------------------------------------------- features


def extract_features(
    model: nn.Module,
    dataset,
    data_collator: Callable | None = None,
    layer_map: LayerMap | None = None,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    label_names: Sequence[str] = ("labels",),
    progress: bool = False,
    desc: str = "LP probe: features",
) -> tuple[np.ndarray, np.ndarray]:
    """The input of the head's final Linear for every example, with its label.

    The model runs in eval mode under ``torch.no_grad`` (dropout off, BatchNorm statistics untouched) and every
    module's train/eval state is restored afterwards. When the final Linear sees one vector per token (decoder
    ``*ForSequenceClassification`` models score every token, then keep one), the vector of the token whose score the
    model returned is kept.

    Args:
        dataset: model inputs as ``Trainer`` receives them (a ``datasets.Dataset``, whose columns that the model's
            ``forward`` does not take are dropped as ``Trainer`` does, or any map-style dataset), or a ready
            ``DataLoader`` whose batches are used as they come (what `TransferTrainer` passes: its own loaders).
        data_collator: builds batches; ``transformers.default_data_collator`` when None.
        label_names: keys of the labels in a collated batch (``label`` and ``label_ids`` are also tried); they are
            removed before the forward pass.

    Returns:
        ``(features, labels)``: float32 array ``(n, in_features)`` and int64 array ``(n,)``, in dataset order.
    """
    from torch.utils.data import DataLoader
    from transformers import default_data_collator

    layer_map = layer_map or LayerMap.from_model(model)
    name, linear = final_linear(model, layer_map)
    accepted = _forward_parameters(model)
    label_keys = list(dict.fromkeys([*label_names, "label", "label_ids"]))
    if isinstance(dataset, DataLoader):
        loader = dataset
        dataset = getattr(loader, "dataset", loader)
    else:
        check_probe_dataset(dataset, "dataset", label_names)
        dataset = _drop_unused_columns(dataset, accepted | set(label_keys))
        loader = DataLoader(
            dataset, batch_size=batch_size, shuffle=False, collate_fn=data_collator or default_data_collator
        )
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))

    captured: dict[str, torch.Tensor] = {}

    def hook(module, args, kwargs, output):
        x = args[0] if args else kwargs["input"]
        captured["input"], captured["output"] = x.detach(), output.detach()

    # Every head Linear is watched so that a head whose last-registered Linear does not run last is caught.
    order: list[nn.Module] = []
    head_linears = [m for m in model.modules() if isinstance(m, nn.Linear) and _is_head_module(model, m, layer_map)]
    handles = [m.register_forward_hook(lambda mod, *_: order.append(mod)) for m in head_linears]
    handles.append(linear.register_forward_hook(hook, with_kwargs=True))
    modes = {m: m.training for m in model.modules()}
    features, labels = [], []
    try:
        model.eval()
        with torch.no_grad():
            for batch in _progress(loader, progress, desc):
                label_key = next((k for k in label_keys if k in batch), None)
                if label_key is None:
                    raise ValueError(
                        f"No labels in the batches of {type(dataset).__name__}: the batch keys are {sorted(batch)}, "
                        f"none of {label_keys}. Give the labels one of those names, or pass `label_names` "
                        "(TrainingArguments.label_names) with the key your collator uses."
                    )
                y = batch[label_key]
                if isinstance(y, (list, tuple)) and y and isinstance(y[0], str):
                    raise ValueError(
                        f"The labels under {label_key!r} are {type(y[0]).__name__}s (e.g. {y[0]!r}), not integer class "
                        f"ids. Encode them first, e.g. `dataset = dataset.class_encode_column({label_key!r})`, and "
                        "give the model the mapping (config.label2id / id2label)."
                    )
                inputs = {
                    k: v.to(device) if torch.is_tensor(v) else v
                    for k, v in batch.items()
                    if k not in label_keys and k in accepted
                }
                captured.clear()
                order.clear()
                outputs = model(**inputs)
                if "input" not in captured:
                    raise RuntimeError(
                        f"The head's final Linear {name!r} did not run in the forward pass of {layer_map.model_class}."
                    )
                if order and order[-1] is not linear:
                    last = next(n for n, m in model.named_modules() if m is order[-1])
                    raise RuntimeError(
                        f"{last!r} runs after {name!r} in the head of {layer_map.model_class}: the probe must replace "
                        "the Linear that produces the logits. Give the map that Linear's module as the head "
                        "(`LayerMap.from_model(model, head=[...])`)."
                    )
                logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
                features.append(_pool(captured["input"], captured["output"], logits, name).float().cpu())
                labels.append(torch.as_tensor(y).reshape(-1).cpu())
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.train(training)
    if not features:
        raise ValueError(
            f"{type(dataset).__name__} yielded no batches (0 examples): the linear probe needs labelled examples."
        )
    x = torch.cat(features).numpy()
    y = torch.cat(labels)
    if y.is_floating_point():
        if not torch.equal(y, y.round()):
            raise ValueError("The labels are not class ids (floats with fractions): a linear probe needs classes.")
        y = y.long()
    return x, y.numpy().astype(np.int64)


def _progress(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc)


def check_probe_dataset(dataset, what: str, label_names: Sequence[str] = ("labels",)) -> None:
    """Refuse, before anything runs, a data set the probe cannot fit on: empty, or with string labels."""
    if dataset is None:
        return
    try:
        n = len(dataset)
    except TypeError:
        n = None
    if n == 0:
        raise ValueError(
            f"{what} is empty (0 rows): the linear probe of lp_mode='logistic' fits on its frozen features. Pass a "
            f"non-empty {what} (check the split or the filter that built it)."
        )
    features = getattr(dataset, "features", None)
    if not isinstance(features, dict):
        return
    for key in dict.fromkeys([*label_names, "label", "labels", "label_ids"]):
        feature = features.get(key)
        if getattr(feature, "dtype", None) in ("string", "large_string"):
            example = dataset.data.column(key)[0].as_py() if hasattr(dataset, "data") else "?"
            raise ValueError(
                f"Column {key!r} of {what} holds strings (e.g. {example!r}), not integer class ids. Encode it first: "
                f"`{what} = {what}.class_encode_column({key!r})`, and give the model the mapping "
                f"(`id2label=dict(enumerate({what}.features[{key!r}].names))` and `label2id`)."
            )


def _is_head_module(model: nn.Module, module: nn.Module, layer_map: LayerMap) -> bool:
    inner = unwrap_model(model)
    modules = dict(inner.named_modules())
    return any(module in set(_running_modules(modules[h])) for h in layer_map.head_names if h in modules)


def _pool(x: torch.Tensor, out: torch.Tensor, logits: torch.Tensor, name: str) -> torch.Tensor:
    """One feature vector per example from the final Linear's input."""
    if x.dim() == 2:
        return x
    if x.dim() != 3 or logits.dim() != 2:
        raise ValueError(
            f"The final Linear {name!r} sees inputs of shape {tuple(x.shape)} and the model returns logits of shape "
            f"{tuple(logits.shape)}: the linear probe handles one label per example (sequence or image "
            "classification), not token classification."
        )
    # The model scored every position and returned one (the last non-padding token for decoder classifiers):
    # find it by matching the returned logits, which is exact whatever the model's pooling rule.
    distance = (out - logits[:, None, :].to(out.dtype)).abs().amax(-1)
    best = distance.argmin(-1)
    rows = torch.arange(x.shape[0], device=x.device)
    scale = logits.abs().amax().clamp_min(1.0)
    if (distance[rows, best] > 1e-5 * scale).any():
        raise ValueError(
            f"Cannot tell which position of {name!r}'s per-token outputs the model returned as logits; the linear "
            "probe needs one feature vector per example."
        )
    return x[rows, best]


def _forward_parameters(model: nn.Module) -> set[str]:
    """Names the model's forward takes (the unwrapped model: PEFT's forward passes them through as kwargs)."""
    params = set()
    for m in (model, unwrap_model(model)):
        params |= {
            n
            for n, p in inspect.signature(m.forward).parameters.items()
            if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
        }
    return params


def _drop_unused_columns(dataset, keep: set[str]):
    columns = getattr(dataset, "column_names", None)
    if not isinstance(columns, list) or not hasattr(dataset, "remove_columns"):
        return dataset
    unused = [c for c in columns if c not in keep]
    if len(unused) == len(columns):
        raise ValueError(
            f"None of the columns {columns} is an input of the model's forward: tokenize/preprocess the dataset first."
        )
    return dataset.remove_columns(unused) if unused else dataset


# ---------------------------------------------------------------------------------------------------------- fitting


def fit_linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray | None = None,
    val_y: np.ndarray | None = None,
    Cs: Sequence[float] | None = None,
    max_iter: int = DEFAULT_MAX_ITER,
    *,
    num_classes: int | None = None,
    fit_intercept: bool = True,
    normalize: bool = True,
    random_state: int = 0,
    progress: bool = False,
) -> ProbeResult:
    """Sweep C for an L2 logistic regression on frozen features and keep the best on validation.

    Args:
        train_x, train_y: features ``(n, d)`` and integer label ids ``(n,)``.
        val_x, val_y: the validation set that chooses C (it may lack some classes). Without it, ``Cs`` must hold one
            value.
        Cs: inverse regularisation strengths, swept in the given order with warm starts; ``np.logspace(-7, 2, 100)``
            by default.
        max_iter: L-BFGS iterations per C.
        num_classes: rows of the returned weight (the head's outputs); ``max(label) + 1`` by default.
        fit_intercept: False for a head Linear without bias (features are then only scaled, not centred).
        normalize: the paper's scalar standardisation; the weights are mapped back to raw features either way.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    train_x = np.asarray(train_x, dtype=np.float64)
    train_y = _as_class_ids(train_y, "train_y")
    if train_x.ndim != 2 or len(train_x) != len(train_y):
        raise ValueError(f"train_x must be (n, d) with n = len(train_y) = {len(train_y)}; got {train_x.shape}.")
    Cs = default_cs() if Cs is None else np.asarray(list(Cs), dtype=np.float64)
    has_val = val_x is not None and val_y is not None and len(val_y) > 0
    if not has_val and len(Cs) != 1:
        raise ValueError(f"Choosing among {len(Cs)} values of C needs a validation set; pass val_x/val_y or one C.")
    if has_val:
        val_x = np.asarray(val_x, dtype=np.float64)
        val_y = _as_class_ids(val_y, "val_y")
    classes = np.unique(train_y)
    if len(classes) < 2:
        raise ValueError(f"The training set holds a single class ({classes.tolist()}): a probe needs at least two.")
    num_classes = int(classes.max()) + 1 if num_classes is None else num_classes
    if classes.max() >= num_classes:
        raise ValueError(f"Label id {int(classes.max())} does not fit a head with {num_classes} outputs.")

    mean = float(train_x.mean()) if normalize and fit_intercept else 0.0
    std = float(train_x.std()) if normalize else 1.0
    std = std if std > 0 else 1.0
    tx = (train_x - mean) / std
    vx = (val_x - mean) / std if has_val else None

    start = time.perf_counter()
    clf = LogisticRegression(
        C=float(Cs[0]), fit_intercept=fit_intercept, warm_start=True, max_iter=max_iter, random_state=random_state
    )
    scores: list[dict[str, float]] = []
    best, best_acc, not_converged = None, -1.0, 0
    for C in _progress(Cs, progress and len(Cs) > 1, "LP probe: C sweep"):
        clf.C = float(C)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            clf.fit(tx, train_y)
        not_converged += any(issubclass(w.category, ConvergenceWarning) for w in caught)
        train_acc = float(np.mean(clf.predict(tx) == train_y))
        val_acc = float(np.mean(clf.predict(vx) == val_y)) if has_val else float("nan")
        scores.append({"C": float(C), "train_accuracy": train_acc, "val_accuracy": val_acc})
        if best is None or val_acc > best_acc:  # strict: the first (most regularised) C wins ties
            best, best_acc = copy.deepcopy(clf), val_acc
    seconds = time.perf_counter() - start
    if not_converged:
        logger.info("linear probe: %d of %d fits stopped at max_iter=%d", not_converged, len(Cs), max_iter)

    coef, intercept = best.coef_, best.intercept_ if fit_intercept else np.zeros(len(best.coef_))
    if coef.shape[0] == 1:  # binary: sklearn scores class 1 against class 0; softmax([-z/2, z/2]) = sigmoid(z)
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
    weight = np.zeros((num_classes, coef.shape[1]))
    bias = np.zeros(num_classes)
    # Back to raw features: w.(x - m)/s + b = (w/s).x + (b - m/s * sum(w)).
    weight[best.classes_] = coef / std
    bias[best.classes_] = intercept - coef.sum(1) * mean / std
    best_scores = scores[[s["C"] for s in scores].index(float(best.C))]
    return ProbeResult(
        weight=weight,
        bias=bias if fit_intercept else None,
        C=float(best.C),
        val_accuracy=best_scores["val_accuracy"],
        train_accuracy=best_scores["train_accuracy"],
        seconds=seconds,
        all_scores=scores,
        classes=best.classes_.astype(np.int64),
        classifier=best,
        feature_mean=mean,
        feature_std=std,
        converged=not_converged == 0,
    )


def _as_class_ids(y, what: str) -> np.ndarray:
    y = np.asarray(y).reshape(-1)
    if y.dtype.kind == "f":
        if not np.all(y == np.round(y)):
            raise ValueError(f"{what} holds non-integer values ({y[:5]}...): the probe needs class ids.")
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        raise ValueError(f"{what} must hold integer class ids, got dtype {y.dtype}.")
    if len(y) and y.min() < 0:
        raise ValueError(f"{what} holds negative label {int(y.min())}: drop ignored examples (-100) first.")
    return y.astype(np.int64)


# -------------------------------------------------------------------------------------------------------- writing


def write_probe_into_head(model: nn.Module, layer_map: LayerMap | None, result: ProbeResult) -> str:
    """Copy the probe into the head's final Linear; returns that Linear's name."""
    name, linear = final_linear(model, layer_map)
    if tuple(result.weight.shape) != tuple(linear.weight.shape):
        raise ValueError(
            f"The probe's weight has shape {tuple(result.weight.shape)} but {name!r} is {tuple(linear.weight.shape)} "
            "(outputs, inputs): fit the probe on this model's features with num_classes=out_features."
        )
    if linear.bias is None and result.bias is not None and np.any(result.bias != 0):
        raise ValueError(f"{name!r} has no bias but the probe has an intercept: fit it with fit_intercept=False.")
    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(result.weight, dtype=linear.weight.dtype, device=linear.weight.device))
        if linear.bias is not None:
            bias = result.bias if result.bias is not None else np.zeros(linear.out_features)
            linear.bias.copy_(torch.as_tensor(bias, dtype=linear.bias.dtype, device=linear.bias.device))
    return name


def linear_probe(
    model: nn.Module,
    train_dataset,
    eval_dataset=None,
    data_collator: Callable | None = None,
    layer_map: LayerMap | None = None,
    Cs: Sequence[float] | None = None,
    *,
    max_iter: int = DEFAULT_MAX_ITER,
    batch_size: int = 64,
    label_names: Sequence[str] = ("labels",),
    normalize: bool = True,
    random_state: int = 0,
    progress: bool = False,
) -> ProbeResult:
    """LP of LP-FT in one call: extract frozen features once, sweep C on ``eval_dataset``, write the head.

    The backbone is not modified (only the head's final Linear is written). Under DDP every rank can run it: the
    features, the sweep (L-BFGS, fixed ``random_state``) and so the head come out identical.
    """
    layer_map = layer_map or LayerMap.from_model(model)
    _, linear = final_linear(model, layer_map)
    started = time.perf_counter()
    kwargs = dict(
        data_collator=data_collator, layer_map=layer_map, batch_size=batch_size, label_names=label_names,
        progress=progress,
    )  # fmt: skip
    train_x, train_y = extract_features(model, train_dataset, desc="LP probe: train features", **kwargs)
    val_x, val_y = (
        extract_features(model, eval_dataset, desc="LP probe: eval features", **kwargs)
        if eval_dataset is not None
        else (None, None)
    )
    result = fit_linear_probe(
        train_x,
        train_y,
        val_x,
        val_y,
        Cs=Cs,
        max_iter=max_iter,
        num_classes=linear.out_features,
        fit_intercept=linear.bias is not None,
        normalize=normalize,
        random_state=random_state,
        progress=progress,
    )
    name = write_probe_into_head(model, layer_map, result)
    result.extract_seconds = time.perf_counter() - started - result.seconds
    logger.info(
        "linear probe written into %s: C=%.3g, train accuracy %.4f, validation accuracy %.4f (%d C values, %.1fs; "
        "feature extraction %.1fs)",
        name,
        result.C,
        result.train_accuracy,
        result.val_accuracy,
        len(result.all_scores),
        result.seconds,
        result.extract_seconds,
    )
    return result
