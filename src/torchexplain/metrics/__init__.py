"""Which explanation can I trust? Faithfulness metrics, torch-native and batched.

Each metric returns one value per example (a tensor on the inputs' device);
:class:`MetricResult` aggregates them; :func:`evaluate` runs several methods on a
model's inputs and ranks them by every metric.
"""

from .curves import area_under_curve, deletion, gaussian_blur, insertion
from .evaluate import DEFAULT_METHODS, DEFAULT_METRICS, METRICS, MetricSpec, evaluate
from .fidelity import default_perturb_func, infidelity, infidelity_perturb_func_decorator, sensitivity_max
from .properties import completeness, sparseness
from .randomization import RandomizationResult, randomization_check, spearman
from .result import MetricResult
from .table import EvaluationTable

__all__ = [
    "DEFAULT_METHODS",
    "DEFAULT_METRICS",
    "METRICS",
    "EvaluationTable",
    "MetricResult",
    "MetricSpec",
    "RandomizationResult",
    "area_under_curve",
    "completeness",
    "default_perturb_func",
    "deletion",
    "evaluate",
    "gaussian_blur",
    "infidelity",
    "infidelity_perturb_func_decorator",
    "insertion",
    "randomization_check",
    "sensitivity_max",
    "sparseness",
    "spearman",
]
