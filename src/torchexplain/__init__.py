"""torchexplain: explain PyTorch models.

``torchexplain.explain(model, inputs, method=..., target=...)`` is the one-call
entry point; ``torchexplain.attr`` holds the Captum-compatible methods.
"""

from . import attr, config
from .api import explain
from .explanation import Explanation
from .methods import available as available_methods
from .metrics import evaluate

__version__ = "0.1.0"

__all__ = ["Explanation", "attr", "available_methods", "config", "evaluate", "explain", "__version__"]
