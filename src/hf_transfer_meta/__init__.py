"""hf-transfer-meta: transfer-learning and meta-learning strategies as one-line switches on any transformers model."""

from .layer_map import LayerMap, LayerMapError

__version__ = "0.1.0.dev0"

__all__ = ["LayerMap", "LayerMapError", "__version__"]
