"""Attribution methods with Captum's names, arguments and return forms."""

from .base import Attribution
from .gradient import Deconvolution, GuidedBackprop, InputXGradient, Saliency
from .deeplift import DeepLift, DeepLiftShap
from .ablation import FeatureAblation, FeaturePermutation, PerturbationAttribution
from .integrated import IntegratedGradients
from .layer import (
    GuidedGradCam,
    LayerActivation,
    LayerFeatureAblation,
    LayerGradCam,
    LayerGradientXActivation,
)
from .layer_path import (
    InternalInfluence,
    LayerConductance,
    LayerDeepLift,
    LayerGradientShap,
    LayerIntegratedGradients,
)
from .layer_base import LayerAttribution
from .lime import KernelShap, Lime, get_exp_kernel_similarity_function
from .layer_deeplift import LayerDeepLiftShap
from .layer_lrp import LayerLRP
from .lrp import (
    LRP,
    Alpha1_Beta0_Rule,
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
    PropagationRule,
    ZBox,
    ZPlus,
)
from .neuron import (
    NeuronAttribution,
    NeuronConductance,
    NeuronDeconvolution,
    NeuronDeepLift,
    NeuronDeepLiftShap,
    NeuronFeatureAblation,
    NeuronGradient,
    NeuronGradientShap,
    NeuronGuidedBackprop,
    NeuronIntegratedGradients,
)
from .noise import GradientShap, NoiseTunnel
from .occlusion import Occlusion
from .rise import RISE
from .shapley import ShapleyValues, ShapleyValueSampling

__all__ = [
    "PerturbationAttribution",
    "NeuronAttribution",
    "NeuronConductance",
    "NeuronDeconvolution",
    "NeuronDeepLift",
    "NeuronDeepLiftShap",
    "NeuronFeatureAblation",
    "NeuronGradient",
    "NeuronGradientShap",
    "NeuronGuidedBackprop",
    "NeuronIntegratedGradients",
    "GuidedGradCam",
    "InternalInfluence",
    "LayerActivation",
    "LayerConductance",
    "LayerDeepLift",
    "LayerFeatureAblation",
    "LayerGradientShap",
    "LayerIntegratedGradients",
    "LayerAttribution",
    "LayerGradCam",
    "LayerGradientXActivation",
    "FeatureAblation",
    "FeaturePermutation",
    "KernelShap",
    "Lime",
    "Occlusion",
    "RISE",
    "ShapleyValueSampling",
    "ShapleyValues",
    "get_exp_kernel_similarity_function",
    "LRP",
    "LayerLRP",
    "LayerDeepLiftShap",
    "Alpha1_Beta0_Rule",
    "PropagationRule",
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
