"""Meta-learning algorithms with one interface: ``meta_loss(model, tasks)`` and ``adapt_and_predict(model, episode)``.

* :class:`ProtoNet`, metric-based;
* :class:`MAML`, :class:`FOMAML`, :class:`ANIL`, :class:`MetaSGD` and :class:`Reptile`, gradient-based, by a
  functional inner loop;
* :class:`FineTuneBaseline`, the transfer baseline (evaluation only).

Each class registers its ``algorithm=`` name in :data:`ALGORITHMS` (``registry.py``). They import with torch alone.
"""

from ..._lazy import renamed as _renamed
from .base import EPISODE_KEYS, InnerLoopAlgorithm, MetaAlgorithm, MetaOutput, check_episode, stack_tasks
from .registry import ALGORITHMS, build_algorithm, register_algorithm

# isort: off
# The import order is the registration order, i.e. the order of the `algorithm` choices.
from .protonet import ProtoNet, embed, prototypes, squared_euclidean
from .maml import ANIL, FOMAML, MAML, MetaSGD
from .reptile import Reptile
from .finetune_baseline import FineTuneBaseline

# isort: on

__all__ = [
    "ALGORITHMS",
    "ANIL",
    "EPISODE_KEYS",
    "FOMAML",
    "FineTuneBaseline",
    "InnerLoopAlgorithm",
    "MAML",
    "MetaAlgorithm",
    "MetaOutput",
    "MetaSGD",
    "ProtoNet",
    "Reptile",
    "build_algorithm",
    "check_episode",
    "embed",
    "prototypes",
    "register_algorithm",
    "squared_euclidean",
    "stack_tasks",
]


def __getattr__(name: str):
    if name == "FineTune":
        _renamed(f"{__name__}.FineTune", f"{__name__}.FineTuneBaseline")
        return FineTuneBaseline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
