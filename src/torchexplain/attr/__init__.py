"""Attribution methods with Captum's names, arguments and return forms."""

from .base import Attribution
from .gradient import Deconvolution, GuidedBackprop, InputXGradient, Saliency
from .integrated import IntegratedGradients

__all__ = [
    "Attribution",
    "Deconvolution",
    "GuidedBackprop",
    "InputXGradient",
    "IntegratedGradients",
    "Saliency",
]
