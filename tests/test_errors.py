"""Bad input fails early and clearly: a ValueError or TypeError whose message names
the argument, what was expected and what was given. Argument checks that need no
model output happen before the model is ever called."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchexplain.attr import (
    Deconvolution,
    DeepLift,
    DeepLiftShap,
    GradientShap,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    NoiseTunnel,
    Saliency,
)

ALL = [
    "Saliency", "InputXGradient", "GuidedBackprop", "Deconvolution", "IntegratedGradients",
    "DeepLift", "DeepLiftShap", "GradientShap", "NoiseTunnel",
]
WITH_BASELINES = ["IntegratedGradients", "DeepLift"]
WITH_DISTRIBUTION = ["GradientShap", "DeepLiftShap"]
WITH_CHUNKS = ["IntegratedGradients", "DeepLift", "DeepLiftShap", "GradientShap"]


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.l1 = nn.Linear(5, 6)
        self.l2 = nn.Linear(6, 3)

    def forward(self, x):
        return self.l2(F.relu(self.l1(x)))


class Counting(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.calls = [0]

    def forward(self, *args, **kwargs):
        self.calls[0] += 1
        return self.inner(*args, **kwargs)


def build(name, model, **init):
    return {
        "Saliency": Saliency, "InputXGradient": InputXGradient, "GuidedBackprop": GuidedBackprop,
        "Deconvolution": Deconvolution, "IntegratedGradients": IntegratedGradients, "DeepLift": DeepLift,
        "DeepLiftShap": DeepLiftShap, "GradientShap": GradientShap,
        "NoiseTunnel": lambda m, **kw: NoiseTunnel(Saliency(m, **kw)),
    }[name](model, **init)


def default_distribution(inputs):
    if isinstance(inputs, (tuple, list)):
        return tuple(torch.zeros((2,) + tuple(t.shape[1:])) for t in inputs)
    return torch.zeros((2,) + tuple(inputs.shape[1:]))


def call(name, model, inputs, output_selector=None, **kw):
    """Run ``name`` with small settings; kwargs override the defaults."""
    method = build(name, model, output_selector=output_selector)
    if name in WITH_DISTRIBUTION and "baselines" not in kw:
        try:
            kw["baselines"] = default_distribution(inputs)
        except Exception:  # malformed inputs: let the method report them
            kw["baselines"] = torch.zeros(2, 5)
    if name == "IntegratedGradients":
        kw.setdefault("n_steps", 4)
    if name == "GradientShap":
        kw.setdefault("n_samples", 2)
    if name == "NoiseTunnel":
        kw.setdefault("nt_samples", 2)
    return method.attribute(inputs, **kw)


@pytest.fixture
def net():
    return Counting(Net().eval())


@pytest.fixture
def x():
    torch.manual_seed(1)
    return torch.randn(3, 5)


# --------------------------------------------------------------------------- target


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize(
    "target,pattern",
    [
        (3, r"target index 3 is out of range for the model output \(per-example shape \(3,\); dimension 1 has size 3\)"),
        (-4, r"target index -4 is out of range for the model output \(per-example shape \(3,\)"),
        ([0, 1, 7], r"target index 7 is out of range for the model output \(per-example shape \(3,\)"),
        (torch.tensor([9, 0, 1]), r"target index 9 is out of range"),
        (torch.tensor(5), r"target index 5 is out of range"),
        ((0, 1), r"target has 2 index\(es\) per example but the model output \(per-example shape \(3,\)\) has only 1"),
    ],
    ids=["int", "negative", "list", "tensor", "0d-tensor", "tuple-too-long"],
)
def test_target_out_of_range(name, target, pattern, net, x):
    # the reported shape is that of the evaluated rows (e.g. (6, 3) under NoiseTunnel
    # with 2 samples), so only the class dimension is pinned here
    with pytest.raises(ValueError, match=pattern):
        call(name, net, x, target=target)


@pytest.mark.parametrize("name", ["Saliency", "IntegratedGradients", "DeepLift"])
@pytest.mark.parametrize(
    "target,error,pattern",
    [
        ([0, 1], ValueError, r"target list has 2 entries but the batch has 3 examples"),
        (torch.tensor([0, 1]), ValueError, r"target tensor must be 0-d or hold one index per example \(3\); got shape \(2,\)"),
        (torch.tensor([0.0, 1.0, 2.0]), TypeError, r"target tensor must hold integer class indices; got dtype torch.float32"),
        (1.0, TypeError, r"target must be None, an int, a tuple of ints, a list .*; got float"),
        (True, TypeError, r"target must be None, an int.*; got bool"),
        ((0.5,), TypeError, r"target must contain integer indices; got \(0.5,\)"),
        ([0, "a", 1], TypeError, r"target\[1\] must contain integer indices"),
    ],
    ids=["short-list", "short-tensor", "float-tensor", "float", "bool", "float-tuple", "str-in-list"],
)
def test_target_malformed(name, target, error, pattern, net, x):
    with pytest.raises(error, match=pattern):
        call(name, net, x, target=target)
    assert net.calls[0] == 0  # rejected before any forward


@pytest.mark.parametrize("name", ALL)
def test_target_required_for_multi_output_model(name, net, x):
    with pytest.raises(ValueError, match=r"target is required: the model output has 3 values per example \(per-example shape \(3,\)\)"):
        call(name, net, x)


@pytest.mark.parametrize("name", ["Saliency", "IntegratedGradients", "DeepLift"])
def test_target_selecting_several_values(name, x):
    model = lambda t: torch.stack([t, 2 * t], 1)  # (N, 2, 5)  # noqa: E731
    with pytest.raises(ValueError, match=r"target selects 5 values per example from a model output of per-example shape \(2, 5\)"):
        call(name, model, x, target=1)


@pytest.mark.parametrize("name", ["Saliency", "IntegratedGradients", "DeepLift", "GradientShap"])
def test_callable_target_must_return_one_value_per_example(name, net, x):
    with pytest.raises(ValueError, match=r"a callable target must return one scalar per example: a tensor of shape \(N,\) for a model output of N rows; got \(\d+, 2\)"):
        call(name, net, x, target=lambda out: out[:, :2])


# --------------------------------------------------------------------------- baselines


@pytest.mark.parametrize("name", WITH_BASELINES)
@pytest.mark.parametrize(
    "baselines,pattern",
    [
        (torch.zeros(2, 5), r"baselines of shape \(2, 5\) cannot broadcast to the input's shape \(3, 5\)"),
        (torch.zeros(3, 4), r"baselines of shape \(3, 4\) cannot broadcast to the input's shape \(3, 5\)"),
        (torch.zeros(1, 3, 5), r"baselines of shape \(1, 3, 5\) cannot broadcast"),
    ],
    ids=["batch", "features", "extra-dim"],
)
def test_baseline_shape_cannot_broadcast(name, baselines, pattern, net, x):
    with pytest.raises(ValueError, match=pattern):
        call(name, net, x, baselines=baselines, target=0)
    assert net.calls[0] == 0


@pytest.mark.parametrize("name", WITH_DISTRIBUTION)
def test_baseline_distribution_wrong_shape(name, net, x):
    with pytest.raises(ValueError, match=r"baselines must have shape \(B, 5\) to match the input; got \(4, 4\)"):
        call(name, net, x, baselines=torch.zeros(4, 4), target=0)
    assert net.calls[0] == 0


@pytest.mark.parametrize("name", WITH_DISTRIBUTION)
def test_baseline_distribution_required(name, net, x):
    with pytest.raises(ValueError, match=r"baselines must be given"):
        call(name, net, x, baselines=None, target=0)


@pytest.mark.parametrize("name", WITH_BASELINES + WITH_DISTRIBUTION)
def test_baselines_tuple_of_wrong_length(name, x):
    model = lambda a, b: a.sum(1) + b.sum(1)  # noqa: E731
    inputs = (x, x[:, :2])
    b3 = tuple(torch.zeros((1,) + t.shape[1:]) for t in inputs) + (torch.zeros(1, 2),)
    with pytest.raises(ValueError, match=r"baselines must give one entry per input tensor: 2 inputs but 3 baselines"):
        call(name, model, inputs, baselines=b3)
    with pytest.raises(ValueError, match=r"baselines must give one entry per input tensor: 2 inputs but 1 baselines"):
        call(name, model, inputs, baselines=(b3[0],))
    with pytest.raises(ValueError, match=r"baselines must be a tuple with one entry per input tensor"):
        call(name, model, inputs, baselines=torch.zeros(1, 5))


@pytest.mark.parametrize("name", WITH_BASELINES)
def test_baseline_of_one_tuple_entry_named(name, x):
    model = lambda a, b: a.sum(1) + b.sum(1)  # noqa: E731
    with pytest.raises(ValueError, match=r"baselines\[1\] of shape \(3,\) cannot broadcast to the input's shape \(3, 2\)"):
        call(name, model, (x, x[:, :2]), baselines=(0.0, torch.zeros(3)))
    with pytest.raises(TypeError, match=r"baselines\[0\] must be None, a number or a tensor; got str"):
        call(name, model, (x, x[:, :2]), baselines=("zero", None))


@pytest.mark.parametrize("name", WITH_BASELINES)
def test_nan_in_baselines(name, net, x):
    b = torch.zeros(1, 5)
    b[0, 2] = float("nan")
    with pytest.raises(ValueError, match=r"baselines contains NaN values"):
        call(name, net, x, baselines=b, target=0)
    assert net.calls[0] == 0


# --------------------------------------------------------------------------- inputs


@pytest.mark.parametrize("name", ALL)
def test_inputs_of_different_batch_sizes(name, x):
    model = lambda a, b: a.sum(1) + b.sum(1)  # noqa: E731
    inputs = (x, torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"all inputs must share the batch size \(dimension 0\); got batch sizes \[3, 2\]"):
        call(name, model, inputs)


@pytest.mark.parametrize("name", ALL)
def test_nan_in_inputs(name, net, x):
    x = x.clone()
    x[1, 3] = float("nan")
    with pytest.raises(ValueError, match=r"inputs contains NaN values"):
        call(name, net, x, target=0)
    with pytest.raises(ValueError, match=r"inputs\[1\] contains NaN values"):
        call(name, lambda a, b: net(a + b), (torch.zeros_like(x), x), target=0)
    assert net.calls[0] == 0


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize(
    "inputs,pattern",
    [
        (np.zeros((3, 5), dtype=np.float32), r"inputs must be a torch.Tensor; got ndarray"),
        ([[0.0] * 5] * 3, r"inputs\[0\] must be a torch.Tensor; got list"),
        ((torch.zeros(3, 5), 1.0), r"inputs\[1\] must be a torch.Tensor; got float"),
        ("image.png", r"inputs must be a torch.Tensor; got str"),
    ],
    ids=["ndarray", "nested-list", "tuple-with-float", "str"],
)
def test_non_tensor_inputs(name, inputs, pattern, net):
    with pytest.raises(TypeError, match=pattern):
        call(name, net, inputs, target=0)
    assert net.calls[0] == 0


@pytest.mark.parametrize("name", ALL)
def test_empty_inputs_tuple(name, net):
    with pytest.raises(ValueError, match=r"inputs must be a tensor or a non-empty tuple of tensors; got an empty tuple"):
        call(name, net, (), target=0)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
def test_integer_inputs_for_gradient_methods(name, dtype, net):
    x = torch.ones(3, 5, dtype=dtype)
    pattern = rf"inputs must be a floating-point tensor to take gradients; got dtype {dtype}"
    with pytest.raises(TypeError, match=pattern):
        call(name, net, x, target=0)
    assert net.calls[0] == 0


@pytest.mark.parametrize("name", ALL)
def test_zero_dim_input(name, net):
    with pytest.raises(ValueError, match=r"inputs must have a batch dimension; got a 0-d tensor"):
        call(name, net, torch.tensor(1.0), target=0)


# --------------------------------------------------------------------------- differentiable path


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize(
    "kind,pattern",
    [
        ("constant", r"the model output does not depend differentiably on the inputs"),
        ("argmax", r"the model output does not depend differentiably on the inputs"),
        ("detach", r"inputs has no differentiable path to the model output \(its gradient is None\)"),
    ],
)
def test_model_without_differentiable_path(name, kind, pattern, x):
    inner = Net().eval()
    model = {
        "constant": lambda t: torch.ones(t.shape[0], 3),
        "argmax": lambda t: F.one_hot(inner(t).argmax(1), 3).float(),
        "detach": lambda t: inner(t.detach()),
    }[kind]
    with pytest.raises(ValueError, match=pattern):
        call(name, model, x, target=0)


@pytest.mark.parametrize("name", ["Saliency", "IntegratedGradients", "DeepLift", "GradientShap"])
def test_one_tuple_input_without_path_is_named(name, net, x):
    model = lambda a, b: net(a)  # b unused  # noqa: E731
    with pytest.raises(ValueError, match=r"inputs\[1\] has no differentiable path to the model output"):
        call(name, model, (x, x.clone()), target=0)


# --------------------------------------------------------------------------- method arguments


@pytest.mark.parametrize("n_steps", [0, -3, 2.5, "10", True, None], ids=repr)
def test_ig_n_steps(n_steps, net, x):
    with pytest.raises(ValueError, match=rf'n_steps must be a positive int or "auto"; got {n_steps!r}'):
        IntegratedGradients(net).attribute(x, target=0, n_steps=n_steps)
    assert net.calls[0] == 0


@pytest.mark.parametrize("max_steps", [0, -1, 8.5, True], ids=repr)
def test_ig_auto_max_steps(max_steps, net, x):
    with pytest.raises(ValueError, match=rf"max_steps must be a positive int; got {max_steps!r}"):
        IntegratedGradients(net).attribute(x, target=0, n_steps="auto", max_steps=max_steps)
    assert net.calls[0] == 0


def test_ig_n_steps_too_few_for_riemann(net, x):
    with pytest.raises(ValueError, match=r"n_steps must be at least 2 for riemann_trapezoid; got 1"):
        IntegratedGradients(net).attribute(x, target=0, n_steps=1, method="riemann_trapezoid")
    assert net.calls[0] == 0


@pytest.mark.parametrize("method", ["simpson", "gauss_legendre", "", None], ids=repr)
def test_ig_unknown_method(method, net, x):
    pattern = r"method must be one of riemann_left, riemann_right, riemann_middle, riemann_trapezoid, gausslegendre; got " + repr(method)
    with pytest.raises(ValueError, match=pattern):
        IntegratedGradients(net).attribute(x, target=0, n_steps=4, method=method)
    assert net.calls[0] == 0


@pytest.mark.parametrize("nt_type", ["smooth", "SmoothGrad", "var_grad", None], ids=repr)
def test_noise_tunnel_unknown_type(nt_type, net, x):
    with pytest.raises(ValueError, match=rf"nt_type must be one of smoothgrad, smoothgrad_sq, vargrad; got {nt_type!r}"):
        NoiseTunnel(Saliency(net)).attribute(x, nt_type=nt_type, target=0)
    assert net.calls[0] == 0


@pytest.mark.parametrize("value", [0, -1, 1.5, "3"], ids=repr)
def test_noise_tunnel_sample_counts(value, net, x):
    nt = NoiseTunnel(Saliency(net))
    with pytest.raises(ValueError, match=rf"nt_samples must be a positive int; got {value!r}"):
        nt.attribute(x, nt_samples=value, target=0)
    with pytest.raises(ValueError, match=rf"nt_samples_batch_size must be a positive int; got {value!r}"):
        nt.attribute(x, nt_samples=2, nt_samples_batch_size=value, target=0)
    assert net.calls[0] == 0


@pytest.mark.parametrize("name", ["NoiseTunnel", "GradientShap"])
def test_negative_stdevs(name, net, x):
    with pytest.raises(ValueError, match=r"stdevs must be non-negative numbers; got -0.1"):
        call(name, net, x, target=0, stdevs=-0.1)
    assert net.calls[0] == 0


def test_stdevs_per_input_count(net, x):
    with pytest.raises(ValueError, match=r"stdevs must be a number or one number per input tensor \(1\); got 2"):
        NoiseTunnel(Saliency(net)).attribute(x, target=0, stdevs=(0.1, 0.2))


@pytest.mark.parametrize("value", [0, -1, 1.5, "3"], ids=repr)
def test_gradient_shap_n_samples(value, net, x):
    with pytest.raises(ValueError, match=rf"n_samples must be a positive int; got {value!r}"):
        call("GradientShap", net, x, target=0, n_samples=value)
    assert net.calls[0] == 0


@pytest.mark.parametrize("name", WITH_CHUNKS)
@pytest.mark.parametrize("value", [0, -2, 1.5, "big", True], ids=repr)
def test_internal_batch_size(name, value, net, x):
    with pytest.raises(ValueError, match=rf'internal_batch_size must be "auto", None or a positive int; got {value!r}'):
        call(name, net, x, target=0, internal_batch_size=value)
    assert net.calls[0] == 0


def test_noise_tunnel_delta_for_method_without_one(net, x):
    with pytest.raises(ValueError, match=r"Saliency has no convergence delta"):
        NoiseTunnel(Saliency(net)).attribute(x, target=0, return_convergence_delta=True)


# --------------------------------------------------------------------------- model and output


class TupleNet(Net):
    def forward(self, x):
        out = super().forward(x)
        return out, out.sum(1)


class DictNet(Net):
    def forward(self, x):
        return {"logits": super().forward(x), "meta": "v1"}


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("cls,kind", [(TupleNet, "tuple"), (DictNet, "dict")])
def test_output_selector_missing(name, cls, kind, x):
    with pytest.raises(ValueError, match=rf"the model returned a {kind}; pass output_selector=<index, key or callable>"):
        call(name, cls().eval(), x, target=0)


@pytest.mark.parametrize("name", ["Saliency", "IntegratedGradients", "DeepLift", "NoiseTunnel"])
def test_output_selector_selects_nothing(name, x):
    with pytest.raises(ValueError, match=r"output_selector 5 does not select anything from the model output"):
        call(name, TupleNet().eval(), x, target=0, output_selector=5)
    with pytest.raises(ValueError, match=r"output_selector 'probs' does not select anything"):
        call(name, DictNet().eval(), x, target=0, output_selector="probs")
    with pytest.raises(TypeError, match=r"the selected model output must be a tensor or a number; got str"):
        call(name, DictNet().eval(), x, target=0, output_selector="meta")


@pytest.mark.parametrize("name", ["Saliency", "IntegratedGradients", "DeepLift"])
def test_model_output_without_batch_dimension(name, x):
    model = lambda t: t.sum(0, keepdim=True)  # (1, 5) for 3 rows  # noqa: E731
    with pytest.raises(ValueError, match=r"the model output has 1 rows for \d+ input rows; its first dimension must be the batch"):
        call(name, model, x, target=0)


@pytest.mark.parametrize("name", ALL)
def test_forward_func_not_callable(name):
    with pytest.raises(TypeError, match=r"forward_func must be callable \(an nn.Module or function\); got str"):
        build(name, "resnet18")


def test_noise_tunnel_needs_attribution_method(net):
    with pytest.raises(TypeError, match=r"attribution_method must be an attribution method; got Counting"):
        NoiseTunnel(net)
