"""SHAP-style explainers with shap's interface: ``GradientExplainer`` (expected
gradients on inputs or a hidden layer), ``DeepExplainer`` (DeepLIFT rescale against
each background row, averaged) and ``image_plot``.

Values come back in shap's (>= 0.45) forms, NumPy arrays ``(N, *features, K)``;
the computation runs on torchexplain's batched evaluator and leaves the model as it
was found.
"""

from .deep import AdditivityError, DeepExplainer
from .gradient import GradientExplainer
from .plot import image_plot

__all__ = ["AdditivityError", "DeepExplainer", "GradientExplainer", "image_plot"]
