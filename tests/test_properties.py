"""Property tests of the public boundary (Hypothesis): random shapes, dtypes, input
forms, baselines, targets and feature masks, some of them wrong on purpose.

Every call either returns attributions in the inputs' form (tensor or tuple), shapes
and dtypes, all finite, with the model and the inputs unchanged; or, when one
argument was drawn wrong, raises a ValueError or TypeError whose message names that
argument. Never another exception, never a NaN from valid input. Layer methods return
the layer's shape, CAMs an (N, 1, H, W) map.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from torchexplain import attr

#: the same 25 examples per method on every run (derandomised); TORCHEXPLAIN_PROPERTY_EXAMPLES=500 explores more,
#: with fresh random examples
EXAMPLES = int(os.environ.get("TORCHEXPLAIN_PROPERTY_EXAMPLES", "25"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES == 25, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

#: the argument each fault is about: its name must be in the error message
FAULT_ARGUMENT = {
    "target_out_of_range": "target", "target_length": "target", "target_missing": "target", "target_float": "target",
    "baselines_shape": "baselines", "baselines_batch": "baselines", "inputs_integer": "inputs",
    "mask_shape": "feature_mask", "mask_fraction": "feature_mask", "n_steps": "n_steps",
    "window": "sliding_window_shapes", "strides": "strides",
}
TARGET_FAULTS = ["target_out_of_range", "target_length", "target_missing", "target_float"]


@dataclass
class Spec:
    """How to run one method: its constructor, fixed keyword arguments, and the faults it can be given."""

    build: object
    kwargs: dict = field(default_factory=dict)
    baselines: bool = False   # takes a baseline per input (None, a number or a tensor)
    distribution: bool = False  # baselines are a distribution (a tensor of any batch size)
    mask: bool = False
    window: bool = False
    gradient: bool = True
    faults: tuple = ()
    target_none: bool = True  # target=None is valid for a one-output model


GRADIENT = ("inputs_integer",)
SPECS = {
    "Saliency": Spec(attr.Saliency),
    "InputXGradient": Spec(attr.InputXGradient),
    "GuidedBackprop": Spec(attr.GuidedBackprop),
    "Deconvolution": Spec(attr.Deconvolution),
    "IntegratedGradients": Spec(attr.IntegratedGradients, {"n_steps": 4}, baselines=True, faults=("n_steps",)),
    "DeepLift": Spec(attr.DeepLift, baselines=True),
    "GradientShap": Spec(attr.GradientShap, {"n_samples": 3, "stdevs": 0.1}, distribution=True),
    "NoiseTunnel": Spec(lambda m: attr.NoiseTunnel(attr.Saliency(m)), {"nt_samples": 2, "stdevs": 0.1}),
    "LRP": Spec(attr.LRP),
    "FeatureAblation": Spec(attr.FeatureAblation, baselines=True, mask=True, gradient=False),
    # Captum's ShapleyValueSampling keeps an (N, 1) output's 1 for target=None ((N, 1, *input) attributions),
    # and so does ours: target=None is left out
    "ShapleyValueSampling": Spec(attr.ShapleyValueSampling, {"n_samples": 2}, baselines=True, mask=True,
                                 gradient=False, target_none=False),
    "KernelShap": Spec(attr.KernelShap, {"n_samples": 12}, baselines=True, mask=True, gradient=False),
    "Occlusion": Spec(attr.Occlusion, baselines=True, window=True, gradient=False, faults=("window", "strides")),
}


def make_model(kind: str, shape: tuple, outputs: int, dtype: torch.dtype, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    if kind == "flat":
        model = nn.Sequential(nn.Linear(shape[1], 4), nn.ReLU(), nn.Linear(4, outputs))
    else:
        channels, height, width = shape[1:]
        model = nn.Sequential(nn.Conv2d(channels, 3, 2, padding=1), nn.ReLU(), nn.Flatten(),
                              nn.Linear(3 * (height + 1) * (width + 1), outputs))
    return model.to(dtype).eval()


@st.composite
def cases(draw, name: str):
    spec = SPECS[name]
    kind = draw(st.sampled_from(["flat", "image"]))
    n = draw(st.integers(1, 3))
    shape = (n, draw(st.integers(1, 5))) if kind == "flat" else (
        n, draw(st.integers(1, 2)), draw(st.integers(2, 5)), draw(st.integers(2, 5)))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    outputs = draw(st.integers(1, 3))
    possible = list(TARGET_FAULTS) + list(spec.faults) + (list(GRADIENT) if spec.gradient else [])
    possible += ["baselines_shape", "baselines_batch"] if spec.baselines or spec.distribution else []
    possible += ["mask_shape", "mask_fraction"] if spec.mask else []
    if outputs == 1 or not spec.gradient:
        # perturbation methods with target=None attribute every output value, as Captum's do ((N * K, ...) for an
        # (N, K) output): not a fault, and not the inputs' shape, so left out
        possible.remove("target_missing")
    if n == 1:
        possible.remove("target_length")
    if n == 1 or spec.distribution:
        possible = [f for f in possible if f != "baselines_batch"]
    fault = draw(st.one_of(st.none(), st.sampled_from(possible)))
    seed = draw(st.integers(0, 2**16))
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=generator, dtype=dtype)
    if fault == "inputs_integer":
        x = (x * 3).round().long()

    if fault == "target_out_of_range":
        target = draw(st.sampled_from([outputs, -outputs - 1]))
    elif fault == "target_length":
        target = list(range(n + 1))
    elif fault == "target_missing":
        target = None
    elif fault == "target_float":
        target = 0.5
    else:
        target = draw(st.one_of(
            st.integers(0, outputs - 1),
            st.lists(st.integers(0, outputs - 1), min_size=n, max_size=n),
            st.lists(st.integers(0, outputs - 1), min_size=n, max_size=n).map(torch.tensor),
            *([st.none()] if outputs == 1 and spec.target_none else [])))

    kwargs = dict(spec.kwargs)
    if spec.baselines or spec.distribution:
        forms = ["tensor", "one"] if spec.distribution else ["none", "number", "tensor", "one"]
        form = draw(st.sampled_from(forms))
        if fault == "baselines_shape":
            bad = list(shape)
            bad[-1] += 1
            kwargs["baselines"] = torch.zeros(bad, dtype=dtype)
        elif fault == "baselines_batch":
            kwargs["baselines"] = torch.zeros((n + 1,) + shape[1:], dtype=dtype)
        elif form == "number":
            kwargs["baselines"] = draw(st.sampled_from([0, 0.5, -1.0]))
        elif form == "tensor":
            rows = draw(st.integers(1, 4)) if spec.distribution else n
            kwargs["baselines"] = torch.randn((rows,) + shape[1:], generator=generator, dtype=dtype)
        elif form == "one":
            kwargs["baselines"] = torch.randn((1,) + shape[1:], generator=generator, dtype=dtype)
    if spec.mask:
        if fault == "mask_shape":
            bad = list(shape)
            bad[-1] += 1
            kwargs["feature_mask"] = torch.zeros(bad, dtype=torch.long)
        elif fault == "mask_fraction":  # whole-number floats are ids (as Captum's tests use them); 0.5 is not
            kwargs["feature_mask"] = torch.full(shape, 0.5)
        elif draw(st.booleans()):
            groups = draw(st.integers(1, 4))
            mask_shape = (draw(st.sampled_from([1, n])),) + shape[1:]
            kwargs["feature_mask"] = torch.randint(0, groups, mask_shape, generator=generator)
    if spec.window:
        window = tuple(draw(st.integers(1, s)) for s in shape[1:])
        if fault == "strides" and window == shape[1:]:
            fault = None  # one window covers everything: no stride can leave a gap
        kwargs["sliding_window_shapes"] = tuple(s + 1 for s in shape[1:]) if fault == "window" else window
        # a stride longer than the window would leave positions unattributed: refused
        kwargs["strides"] = tuple(w + 1 for w in window) if fault == "strides" else tuple(
            draw(st.integers(1, w)) for w in window)
    if fault == "n_steps":
        kwargs["n_steps"] = draw(st.sampled_from([0, -2, 2.5]))
    as_tuple = draw(st.booleans())
    model = make_model(kind, shape, outputs, dtype, seed)
    return model, (x,) if as_tuple else x, target, kwargs, fault


def _snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "hooks": [len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad for p in model.parameters()],
    }


def _same(before: dict, after: dict) -> bool:
    return (before["state"].keys() == after["state"].keys()
            and all(torch.equal(before["state"][k], after["state"][k]) for k in before["state"])
            and before["training"] == after["training"] and before["hooks"] == after["hooks"]
            and before["requires_grad"] == after["requires_grad"] and all(g is None for g in after["grads"]))


def check(name: str, case) -> None:
    model, inputs, target, kwargs, fault = case
    method = SPECS[name].build(model)
    before = _snapshot(model)
    x = inputs[0] if isinstance(inputs, tuple) else inputs
    x_before = x.clone()
    try:
        result = method.attribute(inputs, target=target, **kwargs)
    except (ValueError, TypeError) as error:
        assert fault is not None, f"valid call raised {type(error).__name__}: {error}"
        assert FAULT_ARGUMENT[fault] in str(error), f"{fault}: the message does not name the argument: {error}"
    else:
        assert fault is None, f"{fault}: accepted, returned {type(result).__name__}"
        assert isinstance(result, tuple) == isinstance(inputs, tuple)
        out = result[0] if isinstance(result, tuple) else result
        assert out.shape == x.shape and out.dtype == x.dtype
        assert torch.isfinite(out).all(), f"non-finite attributions: {out}"
    assert _same(before, _snapshot(model)), "the model changed"
    assert torch.equal(x, x_before), "the inputs changed"


@pytest.mark.parametrize("name", sorted(SPECS))
def test_public_boundary(name):
    @SETTINGS
    @given(cases(name))
    def run(case):
        check(name, case)

    run()


#: methods explaining a hidden layer (the model's first layer, a conv or a linear): the result has the layer's shape
LAYER_SPECS = {
    "LayerGradCam": lambda m: attr.LayerGradCam(m, m[0]),
    "LayerIntegratedGradients": lambda m: attr.LayerIntegratedGradients(m, m[0]),
    "LayerActivation": lambda m: attr.LayerActivation(m, m[0]),
    "LayerConductance": lambda m: attr.LayerConductance(m, m[0]),
}
LAYER_KWARGS = {"LayerIntegratedGradients": {"n_steps": 4}, "LayerConductance": {"n_steps": 4}}


@st.composite
def layer_cases(draw):
    kind = draw(st.sampled_from(["flat", "image"]))
    n = draw(st.integers(1, 3))
    shape = (n, draw(st.integers(1, 5))) if kind == "flat" else (
        n, draw(st.integers(1, 2)), draw(st.integers(2, 5)), draw(st.integers(2, 5)))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    outputs = draw(st.integers(2, 3))
    fault = draw(st.one_of(st.none(), st.sampled_from(["target_out_of_range", "target_length", "target_float"]
                                                        if n > 1 else ["target_out_of_range", "target_float"])))
    seed = draw(st.integers(0, 2**16))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    target = {"target_out_of_range": outputs, "target_length": list(range(n + 1)), "target_float": 0.5}.get(
        fault, draw(st.lists(st.integers(0, outputs - 1), min_size=n, max_size=n)))
    return make_model(kind, shape, outputs, dtype, seed), x, target, fault


@pytest.mark.parametrize("name", sorted(LAYER_SPECS))
def test_layer_boundary(name):
    @SETTINGS
    @given(layer_cases())
    def run(case):
        model, x, target, fault = case
        layer_out = model[0](x).detach()
        before, x_before = _snapshot(model), x.clone()
        kwargs = {} if name == "LayerActivation" else {"target": target}
        try:
            result = LAYER_SPECS[name](model).attribute(x, **kwargs, **LAYER_KWARGS.get(name, {}))
        except (ValueError, TypeError) as error:
            assert fault is not None, f"valid call raised {type(error).__name__}: {error}"
            assert "target" in str(error), f"{fault}: the message does not name the argument: {error}"
        else:
            assert fault is None or name == "LayerActivation", f"{fault}: accepted"
            # Grad-CAM sums the layer's channels (dimension 1), kept as a size-1 dimension, as Captum does
            expected = layer_out.shape if name != "LayerGradCam" else (layer_out.shape[0], 1) + layer_out.shape[2:]
            assert result.shape == expected and result.dtype == x.dtype and torch.isfinite(result).all()
        assert _same(before, _snapshot(model)), "the model changed"
        assert torch.equal(x, x_before), "the inputs changed"

    run()


@pytest.mark.parametrize("name", ["GradCAM", "GradCAMPlusPlus", "HiResCAM", "ScoreCAM", "EigenCAM"])
def test_cam_boundary(name):
    """CAMs take an image batch (N, C, H, W) and return (N, 1, H, W) maps in [0, inf); anything else is refused."""
    from torchexplain import cam

    @SETTINGS
    @given(layer_cases(), st.sampled_from([None, "flat", "integer"]))
    def run(case, input_fault):
        model, x, target, fault = case
        if x.dim() == 2:  # a CAM needs a conv layer: give the flat case's model an image instead
            model, x = make_model("image", (x.shape[0], 1, 3, 4), model[-1].out_features, x.dtype, 0), \
                torch.randn(x.shape[0], 1, 3, 4, dtype=x.dtype)
        if input_fault == "flat":
            x, fault = x.flatten(1), "inputs"
        elif input_fault == "integer":
            x, fault = x.round().long(), "inputs"
        before = _snapshot(model)
        method = getattr(cam, name)(model, target_layer="1")
        try:
            maps = method.attribute(x, target=target)
        except (ValueError, TypeError) as error:
            assert fault is not None, f"valid call raised {type(error).__name__}: {error}"
            argument = "inputs" if fault == "inputs" else "target"
            assert argument in str(error), f"{fault}: the message does not name the argument: {error}"
        else:
            assert fault is None or name == "EigenCAM", f"{fault}: accepted"  # EigenCAM ignores the target
            assert maps.shape == (x.shape[0], 1) + x.shape[2:] and torch.isfinite(maps).all()
            assert (maps >= 0).all()
        assert _same(before, _snapshot(model)), "the model changed"

    run()
