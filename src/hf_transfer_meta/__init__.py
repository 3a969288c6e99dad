"""hf-transfer-meta: transfer-learning and meta-learning strategies as one-line switches on any transformers model.

Names are imported when first used (PEP 562), so `import hf_transfer_meta.meta.algorithms` needs torch alone.
"""

from . import _deprecated
from ._lazy import lazy_exports
from .selection import EXPORTS as _SELECTION_EXPORTS
from .transfer import EXPORTS as _TRANSFER_EXPORTS

__version__ = "0.1.0.dev0"

_EXPORTS = {**dict.fromkeys(_TRANSFER_EXPORTS, ".transfer"), **dict.fromkeys(_SELECTION_EXPORTS, ".selection")}
__all__ = [*sorted(_EXPORTS), "__version__"]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

_deprecated.install()
