"""Neural-backed decision trees (Wan et al., "NBDT: Neural-Backed Decision Trees",
ICLR 2021): turn a classifier into a readable sequence of decisions.

>>> tree = induce_hierarchy(model, class_names)           # from the final linear layer
>>> probs, decisions = SoftNBDT(model, tree).forward_with_decisions(x)
>>> print(decision_line(class_names, int(probs[0].argmax()), decisions[0]))
Prediction: 3 // Decisions: {3, 5, 8} (97.10%), 3 (99.02%)
"""

from .hierarchy import Hierarchy, agglomerate, final_linear_weight, induce_hierarchy
from .inference import HardNBDT, SoftNBDT, TreeTables, decision_line
from .loss import SoftTreeSupLoss, finetune
from .naming import default_namer, wordnet_namer

__all__ = [
    "Hierarchy",
    "HardNBDT",
    "SoftNBDT",
    "SoftTreeSupLoss",
    "TreeTables",
    "agglomerate",
    "decision_line",
    "default_namer",
    "final_linear_weight",
    "finetune",
    "induce_hierarchy",
    "wordnet_namer",
]
