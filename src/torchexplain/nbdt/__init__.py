"""Neural-backed decision trees (Wan et al., "NBDT: Neural-Backed Decision Trees",
ICLR 2021): turn a classifier into a readable sequence of decisions.

>>> tree = induce_hierarchy(model, class_names)           # from the final linear layer
>>> probs, decisions = SoftNBDT(model, tree).forward_with_decisions(x)
>>> print(decision_line(class_names, int(probs[0].argmax()), decisions[0]))
Prediction: 3 // Decisions: {3, 5, 8} (97.10%), 3 (99.02%)

nbdt's own forms work too: ``from torchexplain.nbdt.model import HardNBDT``,
``HardNBDT(dataset="CIFAR10", arch="ResNet18", model=model, hierarchy="tree.json")``,
``from torchexplain.nbdt.utils import DATASET_TO_CLASSES, load_image_from_path``;
``decisions[i]`` starts with the root, as nbdt's (``decisions[i][1:]`` are the real
decisions). Nothing is downloaded.
"""

from . import model, utils  # noqa: F401  (nbdt.model and nbdt.utils, as in nbdt)
from .hierarchy import Hierarchy, agglomerate, final_linear_weight, induce_hierarchy
from .inference import HardNBDT, SoftNBDT, TreeTables, decision_line, decision_steps
from .loss import SoftTreeSupLoss, finetune
from .naming import default_namer, wordnet_namer
from .results import TreeDecisions
from .utils import DATASET_TO_CLASSES, load_image_from_path

__all__ = [
    "DATASET_TO_CLASSES",
    "Hierarchy",
    "HardNBDT",
    "SoftNBDT",
    "SoftTreeSupLoss",
    "TreeDecisions",
    "TreeTables",
    "agglomerate",
    "decision_line",
    "decision_steps",
    "default_namer",
    "final_linear_weight",
    "finetune",
    "induce_hierarchy",
    "load_image_from_path",
    "wordnet_namer",
]
