"""The method registry behind :func:`torchexplain.explain`: names, aliases and the
defaults a one-call user gets (baselines, noise levels)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from . import attr, cam


def _zero_and_mean_baselines(x: Tensor) -> Tensor:
    """A small baseline distribution: the black image and the batch's mean image."""
    return torch.cat([torch.zeros_like(x[:1]), x.mean(0, keepdim=True)])


def _cells(x: Tensor, per_side: int) -> int:
    return max(1, -(-min(x.shape[-2:]) // per_side))


def _grid_mask(per_side: int) -> Callable[[Tensor], dict]:
    """Image inputs get a grid of about ``per_side`` x ``per_side`` feature cells;
    other inputs keep one feature per value."""

    def defaults(x: Tensor) -> dict:
        if x.dim() != 4:
            return {}
        from .masks import grid

        return {"feature_mask": grid(x, _cells(x, per_side))}

    return defaults


def _occlusion_window(x: Tensor) -> dict:
    """A window of about an eighth of the image side, sliding by half a window."""
    if x.dim() != 4:
        return {"sliding_window_shapes": (1,) * (x.dim() - 1)}
    side = _cells(x, 8)
    step = max(1, side // 2)
    return {"sliding_window_shapes": (x.shape[1], side, side), "strides": (x.shape[1], step, step)}


def _noise_level(x: Tensor) -> float:
    """SmoothGrad's suggestion: noise of about 15% of the input's range."""
    return float(0.15 * (x.max() - x.min()).clamp_min(1e-12))


@dataclass(frozen=True)
class MethodSpec:
    """How :func:`explain` builds and calls one method."""

    name: str
    build: Callable  # model -> attribution object
    defaults: Callable[[Tensor], dict] = lambda x: {}  # noqa: E731  inputs -> attribute() kwargs
    aliases: tuple[str, ...] = ()
    delta: bool = False  # returns a convergence delta
    description: str = ""
    extra: dict = field(default_factory=dict)


METHODS: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Add a method (later families register theirs the same way)."""
    for key in (spec.name, *spec.aliases):
        METHODS[key] = spec
    return spec


for _spec in (
    MethodSpec("saliency", attr.Saliency, aliases=("gradient", "vanilla_gradient"), description="|gradient|"),
    MethodSpec("input_x_gradient", attr.InputXGradient, aliases=("ixg", "gradient_x_input"), description="input x gradient"),
    MethodSpec("integrated_gradients", attr.IntegratedGradients, aliases=("ig",), delta=True,
               description="integrated gradients from a zero baseline"),
    MethodSpec("gradient_shap", attr.GradientShap, aliases=("gradshap", "expected_gradients"), delta=True,
               defaults=lambda x: {"baselines": _zero_and_mean_baselines(x), "n_samples": 20},
               description="GradientSHAP over a zero and a mean-image baseline"),
    MethodSpec("smoothgrad", lambda m: attr.NoiseTunnel(attr.Saliency(m)), aliases=("smooth_grad", "noise_tunnel"),
               defaults=lambda x: {"nt_type": "smoothgrad", "nt_samples": 16, "stdevs": _noise_level(x)},
               description="SmoothGrad: saliency averaged over noisy copies"),
    MethodSpec("guided_backprop", attr.GuidedBackprop, aliases=("guided", "gbp"), description="guided backpropagation"),
    MethodSpec("deconvolution", attr.Deconvolution, aliases=("deconv",), description="deconvolution"),
    MethodSpec("deeplift", attr.DeepLift, aliases=("deep_lift",), delta=True, description="DeepLIFT (rescale)"),
    MethodSpec("deeplift_shap", attr.DeepLiftShap, aliases=("deepliftshap", "deep_shap"), delta=True,
               defaults=lambda x: {"baselines": _zero_and_mean_baselines(x)},
               description="DeepLIFT averaged over a zero and a mean-image baseline"),
    MethodSpec("lrp", attr.LRP, aliases=("layerwise_relevance",), delta=True, description="LRP, epsilon rule"),
    MethodSpec("occlusion", attr.Occlusion, defaults=_occlusion_window,
               description="occlusion by a sliding zero window"),
    MethodSpec("feature_ablation", attr.FeatureAblation, aliases=("ablation",), defaults=_grid_mask(8),
               description="zeroing each cell of an 8x8 grid"),
    MethodSpec("feature_permutation", attr.FeaturePermutation, aliases=("permutation",), defaults=_grid_mask(8),
               description="permuting each grid cell across the batch (needs 2+ inputs)"),
    MethodSpec("shapley_value_sampling", attr.ShapleyValueSampling, aliases=("shapley_sampling", "svs"),
               defaults=lambda x: {**_grid_mask(8)(x), "n_samples": 4, "seed": 0},
               description="Shapley values of 8x8 grid cells from 4 sampled orders"),
    MethodSpec("shapley_values", attr.ShapleyValues, aliases=("shapley",), defaults=_grid_mask(3),
               description="exact Shapley values of 3x3 grid cells"),
    MethodSpec("kernel_shap", attr.KernelShap, aliases=("kernelshap",),
               defaults=lambda x: {**_grid_mask(8)(x), "n_samples": 200, "seed": 0},
               description="KernelSHAP over 8x8 grid cells, 200 samples"),
    MethodSpec("lime", attr.Lime, defaults=lambda x: {**_grid_mask(8)(x), "n_samples": 200, "seed": 0},
               description="LIME over 8x8 grid cells, 200 samples"),
    MethodSpec("rise", attr.RISE, defaults=lambda x: {"n_masks": 500, "seed": 0},
               description="RISE, 500 random masks"),
    MethodSpec("grad_cam", lambda m: cam.GradCAM(m), aliases=("gradcam",),
               description="Grad-CAM at the last convolutional block (located automatically), upsampled"),
    MethodSpec("grad_cam_plus_plus", lambda m: cam.GradCAMPlusPlus(m), aliases=("gradcam++", "gradcampp"),
               description="Grad-CAM++ at the last convolutional block, upsampled"),
):
    register(_spec)


def resolve(name: str) -> MethodSpec:
    """The spec for a method name or alias (case and dashes ignored)."""
    if not isinstance(name, str):
        raise TypeError(f"method must be a name or a list of names; got {type(name).__name__}")
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    if key not in METHODS:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(available())}")
    return METHODS[key]


def available() -> list[str]:
    """Canonical method names, in registry order."""
    return list(dict.fromkeys(spec.name for spec in METHODS.values()))
