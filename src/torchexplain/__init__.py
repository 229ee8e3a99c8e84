"""torchexplain: explain PyTorch models.

``torchexplain.explain(model, inputs, method=..., target=...)`` is the one-call
entry point; ``torchexplain.attr`` holds the Captum-compatible methods. Every
subpackage (``models``, ``cam``, ``shap``, ``nbdt``, ``metrics``, ``viz``, ``masks``,
``inspect``, ``attr``) is an attribute after ``import torchexplain``; those not needed
by the entry points are imported on first use, so ``import torchexplain`` stays fast.
"""

import importlib

from . import attr, config
from .api import explain
from .explanation import Explanation
from .methods import available as available_methods
from .metrics import evaluate

__version__ = "0.1.0"

#: subpackages imported on first attribute access (``torchexplain.models.load(...)``)
SUBPACKAGES = ("attr", "cam", "concept", "core", "dataset", "influence", "inspect", "masks", "metrics", "models",
               "nbdt", "report", "robust", "shap", "viz")

__all__ = ["Explanation", "attr", "available_methods", "config", "evaluate", "explain", "__version__"]


def __getattr__(name: str):
    if name in SUBPACKAGES:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module 'torchexplain' has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(SUBPACKAGES))
