"""Training-data influence with Captum's names, arguments and return forms.

``TracInCP`` (gradients of chosen layers, per example with ``torch.func``),
``TracInCPFast`` (the final fully-connected layer in closed form) and
``TracInCPFastRandProj`` (those gradients randomly projected and stored for fast
queries); ``SimilarityInfluence`` (nearest training examples by layer activations).
The TracIn classes load each checkpoint once per call and give the model back as it
was (values, ``requires_grad``, train/eval mode); no ``.grad`` is written.
"""

from ._checkpoints import load_flexible_state_dict
from ._unsupported import NaiveInfluenceFunction
from .base import DataInfluence, KMostInfluentialResults, TracInCPBase
from .fast import TracInCPFast
from .randproj import TracInCPFastRandProj
from .similarity import SimilarityInfluence
from .tracincp import TracInCP

__all__ = [
    "DataInfluence",
    "SimilarityInfluence",
    "KMostInfluentialResults",
    "TracInCPBase",
    "TracInCP",
    "TracInCPFast",
    "TracInCPFastRandProj",
    "load_flexible_state_dict",
]
# NaiveInfluenceFunction: importable (it raises NotImplementedError when constructed), not in __all__
_ = NaiveInfluenceFunction
