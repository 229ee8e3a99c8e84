"""Attribution methods with Captum's names, arguments and return forms."""

from .base import Attribution
from .gradient import Deconvolution, GuidedBackprop, InputXGradient, Saliency
from .deeplift import DeepLift, DeepLiftShap
from .integrated import IntegratedGradients
from .noise import GradientShap, NoiseTunnel

__all__ = [
    "Attribution",
    "Deconvolution",
    "DeepLift",
    "DeepLiftShap",
    "GradientShap",
    "GuidedBackprop",
    "InputXGradient",
    "IntegratedGradients",
    "NoiseTunnel",
    "Saliency",
]
