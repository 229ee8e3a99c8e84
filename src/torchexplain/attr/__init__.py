"""Attribution methods with Captum's names, arguments and return forms."""

from .base import Attribution
from .gradient import Deconvolution, GuidedBackprop, InputXGradient, Saliency
from .deeplift import DeepLift, DeepLiftShap
from .integrated import IntegratedGradients
from .lrp import (
    LRP,
    AlphaBeta,
    Composite,
    Epsilon,
    EpsilonAlpha2Beta1,
    EpsilonGammaBox,
    EpsilonPlus,
    EpsilonRule,
    Gamma,
    GammaRule,
    Identity,
    IdentityRule,
    ZBox,
    ZPlus,
)
from .noise import GradientShap, NoiseTunnel

__all__ = [
    "LRP",
    "AlphaBeta",
    "Composite",
    "Epsilon",
    "EpsilonAlpha2Beta1",
    "EpsilonGammaBox",
    "EpsilonPlus",
    "EpsilonRule",
    "Gamma",
    "GammaRule",
    "Identity",
    "IdentityRule",
    "ZBox",
    "ZPlus",
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
