"""SHAP-style explainers with shap's interface: ``GradientExplainer`` (expected
gradients on inputs or a hidden layer), ``DeepExplainer`` (DeepLIFT rescale against
each background row, averaged, on inputs or a hidden layer), both callable
(``explainer(X)`` gives an :class:`Explanation`, shap.Explanation's fields), and
``image_plot``.

Values come back in shap's (>= 0.45) forms, NumPy arrays ``(N, *features, K)``;
the computation runs on torchexplain's batched evaluator and leaves the model as it
was found.
"""

from .deep import AdditivityError, DeepExplainer
from .explanation import Explanation
from .gradient import GradientExplainer
from .plot import image_plot

__all__ = ["AdditivityError", "DeepExplainer", "Explanation", "GradientExplainer", "image_plot"]
