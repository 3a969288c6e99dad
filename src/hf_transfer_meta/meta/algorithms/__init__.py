"""Meta-learning algorithms with one interface: ``meta_loss(model, tasks)`` and ``adapt_and_predict(model, episode)``.

* :class:`ProtoNet` (Snell et al. 2017), metric-based;
* :class:`MAML`, :class:`FOMAML`, :class:`ANIL`, :class:`MetaSGD` (Finn et al. 2017; Raghu et al. 2020; Li et al.
  2017), and :class:`Reptile` (Nichol et al. 2018), gradient-based, by a functional inner loop;
* :class:`FineTune`, the transfer baseline (Chen et al. 2019).
"""

from .base import EPISODE_KEYS, InnerLoopAlgorithm, MetaAlgorithm, MetaOutput, check_episode, stack_tasks
from .finetune import FineTune
from .maml import ANIL, FOMAML, MAML, MetaSGD
from .protonet import ProtoNet, embed, prototypes, squared_euclidean
from .reptile import Reptile

ALGORITHMS = {
    "protonet": ProtoNet,
    "maml": MAML,
    "fomaml": FOMAML,
    "anil": ANIL,
    "metasgd": MetaSGD,
    "reptile": Reptile,
    "finetune": FineTune,
}

__all__ = [
    "ALGORITHMS",
    "ANIL",
    "EPISODE_KEYS",
    "FOMAML",
    "FineTune",
    "InnerLoopAlgorithm",
    "MAML",
    "MetaAlgorithm",
    "MetaOutput",
    "MetaSGD",
    "ProtoNet",
    "Reptile",
    "check_episode",
    "embed",
    "prototypes",
    "squared_euclidean",
    "stack_tasks",
]
