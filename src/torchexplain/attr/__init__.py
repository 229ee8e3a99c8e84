"""Attribution methods with Captum's names, arguments and return forms."""

from . import lrp_rules as _lrp_rules
from .ablation import FeatureAblation, FeaturePermutation, PerturbationAttribution
from .base import Attribution, GradientAttribution
from .baselines import ProductBaselines
from .dataloader import DataLoaderAttribution
from .deeplift import DeepLift, DeepLiftShap
from .embedding import (
    InterpretableEmbeddingBase,
    TokenReferenceBase,
    configure_interpretable_embedding_layer,
    remove_interpretable_embedding_layer,
)
from .gradient import Deconvolution, GuidedBackprop, InputXGradient, Saliency
from .integrated import IntegratedGradients
from .interpretable_input import ImageMaskInput, InterpretableInput, TextTemplateInput, TextTokenInput
from .layer import (
    GuidedGradCam,
    LayerActivation,
    LayerGradCam,
    LayerGradientXActivation,
)
from .layer_base import LayerAttribution
from .layer_deeplift import LayerDeepLift, LayerDeepLiftShap
from .layer_lrp import LayerLRP
from .layer_path import InternalInfluence, LayerConductance, LayerGradientShap, LayerIntegratedGradients
from .layer_perturbation import LayerFeatureAblation, LayerFeaturePermutation
from .lime import KernelShap, Lime, get_exp_kernel_similarity_function
from .lime_base import LimeBase
from .llm import LLMAttribution, LLMAttributionResult, LLMGradientAttribution
from .llm_remote import RemoteLLMAttribution, RemoteLLMProvider, VLLMProvider
from .lrp import LRP
from .lrp_rules import *  # noqa: F403  (the LRP rules and composites, named once: lrp_rules.__all__)
from .neuron import NeuronAttribution, NeuronDeconvolution, NeuronFeatureAblation, NeuronGradient, NeuronGuidedBackprop
from .neuron_path import (
    NeuronConductance,
    NeuronDeepLift,
    NeuronDeepLiftShap,
    NeuronGradientShap,
    NeuronIntegratedGradients,
)
from .noise import GradientShap, NoiseTunnel
from .occlusion import Occlusion
from .rise import RISE
from .shapley import ShapleyValues, ShapleyValueSampling
from .stat import MSE, CommonStats, Count, Max, Mean, Min, Stat, StatValue, StdDev, Sum, Var
from .summarizer import ClassSummarizer, Summarizer, SummarizerSingleTensor

__all__ = [
    "visualization",  # noqa: F405  (a lazily imported submodule, see __getattr__)
    "GradientAttribution",
    "PerturbationAttribution",
    "LimeBase",
    "DataLoaderAttribution",
    "ProductBaselines",
    "TokenReferenceBase",
    "InterpretableEmbeddingBase",
    "configure_interpretable_embedding_layer",
    "remove_interpretable_embedding_layer",
    "InterpretableInput",
    "TextTemplateInput",
    "TextTokenInput",
    "ImageMaskInput",
    "Summarizer",
    "SummarizerSingleTensor",
    "ClassSummarizer",
    "Stat",
    "StatValue",
    "CommonStats",
    "Mean",
    "Var",
    "StdDev",
    "Min",
    "Max",
    "Sum",
    "MSE",
    "Count",
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
    "LayerFeaturePermutation",
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
    "LLMAttribution",
    "LLMAttributionResult",
    "LLMGradientAttribution",
    "RemoteLLMAttribution",
    "RemoteLLMProvider",
    "VLLMProvider",
    "LayerDeepLiftShap",
    *_lrp_rules.__all__,
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


def __getattr__(name):
    # ``visualization`` (Captum's module of plots) loads matplotlib, so only on first use
    if name == "visualization":
        import importlib

        return importlib.import_module(f"{__name__}.visualization")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
