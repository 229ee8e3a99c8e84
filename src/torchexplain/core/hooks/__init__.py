"""Everything that temporarily changes how a borrowed model runs, as context managers
undone on every exit path:

* :mod:`.model`: :func:`model_guard` (flags, buffers, grads and hooks restored) and
  :func:`module_hooks` (temporary forward hooks);
* :mod:`.functions`: :class:`FunctionRules`, backward rules for activations and
  max-pooling intercepted at the function level;
* :mod:`.relevance`: the LRP engine, relevance rules for every op that mixes values;
* :mod:`.canonizers`: reversible batch-norm folding.
"""

from .functions import ELEMENTWISE_KINDS, FunctionRules, Saved, scatter_to_input
from .model import frozen_parameters, model_guard, module_hooks

__all__ = [
    "ELEMENTWISE_KINDS",
    "FunctionRules",
    "Saved",
    "frozen_parameters",
    "model_guard",
    "module_hooks",
    "scatter_to_input",
]
