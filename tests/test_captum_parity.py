"""Differential tests: torchexplain.attr against captum.attr (the oracle) wherever
Captum is right.

Every model and input here is float64, so the two libraries may differ only by the
order of floating-point sums (and by Captum's float32 quadrature weights), far below
the tolerances used. Places where Captum is known to be wrong (DeepLIFT through
max-pooling, functional / reused ReLUs) are checked against the axiom instead, or
against Captum on an equivalent module-based model where Captum is right.
Random methods (GradientShap, NoiseTunnel) are compared only where their result does
not depend on the random draws, and otherwise against analytic expectations.
"""

from __future__ import annotations

import math
import warnings

import captum.attr as ca
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torchexplain.attr as te

DT = torch.float64
N = 3  # examples per batch
RTOL, ATOL = 1e-6, 1e-9  # float64; Captum's float32 step sizes limit it to ~1e-7


# --------------------------------------------------------------------------- models


class Net(nn.Module):
    """Conv2d -> ReLU -> Conv2d -> act -> Flatten -> Linear, output reshaped to
    ``out_shape`` per example (``()`` gives one scalar per example). Optional extra
    positional arguments: a per-example tensor ``scale`` multiplying the output and a
    plain number ``k`` (non-tensor) doing the same."""

    def __init__(self, act: type[nn.Module] = nn.Sigmoid, out_shape: tuple = (5,), seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 3)
        self.act = act()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(4 * 6 * 6, max(1, math.prod(out_shape)))
        self.out_shape = out_shape
        self.double().eval()

    def forward(self, x, scale=None, k=1):
        y = self.fc(self.flatten(self.act(self.conv2(self.relu(self.conv1(x))))))
        if scale is not None:
            y = y * scale
        y = y * k
        return y.reshape((y.shape[0],) + self.out_shape)


class TwoInputNet(nn.Module):
    """An image (N, 3, 8, 8) and a vector (N, 6) feeding one (N, 5) output."""

    def __init__(self, seed: int = 1):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc1 = nn.Linear(4 * 8 * 8, 5)
        self.fc2 = nn.Linear(6, 5)
        self.tanh = nn.Tanh()
        self.sigmoid = nn.Sigmoid()
        self.double().eval()

    def forward(self, image, vector, k=1.0):
        a = self.fc1(self.relu(self.conv(image)).flatten(1))
        b = self.tanh(self.fc2(vector))
        return self.sigmoid(a) + b * k


class ProductNet(TwoInputNet):
    """Its two branches multiply, so DeepLIFT's deltas are not zero (in either library)."""

    def forward(self, image, vector):
        a = self.fc1(self.relu(self.conv(image)).flatten(1))
        return self.sigmoid(a) * self.tanh(self.fc2(vector)) * 4


def _inputs(seed: int = 0, n: int = N):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g, dtype=DT)


def _two_inputs(seed: int = 0, n: int = N):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g, dtype=DT), torch.randn(n, 6, generator=g, dtype=DT)


_MODELS: dict = {}


def model(kind: str) -> nn.Module:
    """Models are built once and shared (neither library may change them)."""
    if kind not in _MODELS:
        _MODELS[kind] = {
            "cnn": lambda: Net(nn.Sigmoid),
            "cnn_tanh": lambda: Net(nn.Tanh),
            "cnn_elu": lambda: Net(nn.ELU),
            "cnn_leaky": lambda: Net(nn.LeakyReLU),
            "cnn_softplus": lambda: Net(nn.Softplus),
            "scalar": lambda: Net(nn.Tanh, out_shape=()),
            "out3d": lambda: Net(nn.Sigmoid, out_shape=(2, 3)),
            "two": TwoInputNet,
            "product": ProductNet,
        }[kind]()
    return _MODELS[kind]


# --------------------------------------------------------------------------- helpers

METHODS = {
    "Saliency": (te.Saliency, ca.Saliency),
    "InputXGradient": (te.InputXGradient, ca.InputXGradient),
    "IntegratedGradients": (te.IntegratedGradients, ca.IntegratedGradients),
    "GuidedBackprop": (te.GuidedBackprop, ca.GuidedBackprop),
    "Deconvolution": (te.Deconvolution, ca.Deconvolution),
    "DeepLift": (te.DeepLift, ca.DeepLift),
    "DeepLiftShap": (te.DeepLiftShap, ca.DeepLiftShap),
    # noise-free NoiseTunnels are deterministic, so they join every comparison
    "NoiseTunnel(IntegratedGradients)": (
        lambda net, **init: te.NoiseTunnel(te.IntegratedGradients(net, **init)),
        lambda net, **init: ca.NoiseTunnel(ca.IntegratedGradients(net, **init)),
    ),
    "NoiseTunnel(DeepLift)": (
        lambda net, **init: te.NoiseTunnel(te.DeepLift(net, **init)),
        lambda net, **init: ca.NoiseTunnel(ca.DeepLift(net, **init)),
    ),
}
WITH_BASELINES = ("IntegratedGradients", "DeepLift")
DETERMINISTIC = tuple(METHODS)


def clone(x):
    return tuple(t.clone() for t in x) if isinstance(x, tuple) else x.clone()


def captum_attribute(explainer, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return explainer.attribute(*args, **kwargs)


def run_both(name: str, net, inputs, init=None, **kwargs):
    """Our attribution and Captum's for the same call (inputs copied for each)."""
    ours_cls, captum_cls = METHODS[name]
    init = init or {}
    before = clone(inputs)
    ours = ours_cls(net, **init).attribute(clone(inputs), **kwargs)
    theirs = captum_attribute(captum_cls(net, **init), clone(inputs), **kwargs)
    assert_same_form_and_values(inputs, before, rtol=0, atol=0)  # inputs untouched
    return ours, theirs


def assert_same_form_and_values(ours, theirs, rtol=RTOL, atol=ATOL):
    """Same form (tensor or tuple of the same length) and values as ``theirs``."""
    if isinstance(theirs, tuple):
        assert isinstance(ours, tuple), f"expected a tuple, got {type(ours).__name__}"
        assert len(ours) == len(theirs)
        for o, t in zip(ours, theirs):
            assert isinstance(o, torch.Tensor)
            torch.testing.assert_close(o, t, rtol=rtol, atol=atol)
    else:
        assert isinstance(ours, torch.Tensor), f"expected a tensor, got {type(ours).__name__}"
        torch.testing.assert_close(ours, theirs, rtol=rtol, atol=atol)


def assert_delta_close(ours, theirs):
    """Deltas are differences of nearly equal sums: compare them on the scale of the
    attributions (Captum's float32 quadrature weights leave ~1e-8 of it)."""
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)


def assert_not_trivial(result):
    """Guards against comparing two all-zero results."""
    parts = result if isinstance(result, tuple) else (result,)
    assert any(float(p.detach().abs().max()) > 1e-6 for p in parts)


def baselines_for(name: str, inputs, seed: int = 5):
    """A baseline distribution (DeepLiftShap needs one; Captum wants B > 1)."""
    if name != "DeepLiftShap":
        return {}
    g = torch.Generator().manual_seed(seed)
    if isinstance(inputs, tuple):
        return {"baselines": tuple(torch.randn((4,) + x.shape[1:], generator=g, dtype=DT) for x in inputs)}
    return {"baselines": torch.randn((4,) + inputs.shape[1:], generator=g, dtype=DT) * 0.5}


def call_kwargs(name: str, **kwargs):
    if name == "IntegratedGradients":
        kwargs.setdefault("n_steps", 16)
    elif name == "NoiseTunnel(IntegratedGradients)":
        kwargs.update(n_steps=6, nt_samples=2, stdevs=0.0)
    elif name == "NoiseTunnel(DeepLift)":
        kwargs.update(nt_type="smoothgrad_sq", nt_samples=3, nt_samples_batch_size=2, stdevs=0.0)
    return kwargs


# --------------------------------------------------------------------------- targets

TARGETS = {
    "none_scalar_output": ("scalar", None),
    "int": ("cnn", 2),
    "negative_int": ("cnn", -1),
    "tuple_3d_output": ("out3d", (1, 2)),
    "list_of_ints": ("cnn", [0, 4, 2]),
    "list_of_tuples": ("out3d", [(0, 1), (1, 2), (0, 0)]),
    "tensor_0d": ("cnn", torch.tensor(3)),
    "tensor_per_example": ("cnn", torch.tensor([1, 0, 4])),
}


@pytest.mark.parametrize("target_case", list(TARGETS))
@pytest.mark.parametrize("name", DETERMINISTIC)
def test_target_forms(name, target_case):
    kind, target = TARGETS[target_case]
    net, x = model(kind), _inputs()
    kw = call_kwargs(name, target=target, **baselines_for(name, x))
    ours, theirs = run_both(name, net, x, **kw)
    assert_not_trivial(theirs)
    assert_same_form_and_values(ours, theirs)


def test_per_example_targets_pick_each_examples_own_output():
    """A list of targets must equal attributing each example separately."""
    net, x = model("cnn"), _inputs()
    ig = te.IntegratedGradients(net)
    together = ig.attribute(x, target=[0, 4, 2], n_steps=8)
    for i, t in enumerate([0, 4, 2]):
        alone = ig.attribute(x[i : i + 1], target=t, n_steps=8)
        torch.testing.assert_close(together[i : i + 1], alone, rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------- input forms


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_tuple_inputs_two_input_model(name):
    net, xs = model("two"), _two_inputs()
    ours, theirs = run_both(name, net, xs, **call_kwargs(name, target=[1, 3, 0], **baselines_for(name, xs)))
    assert_not_trivial(theirs)
    assert_same_form_and_values(ours, theirs)


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_one_tensor_in_a_tuple_gives_a_tuple(name):
    net, x = model("cnn"), _inputs()
    bl = baselines_for(name, x)
    if bl:
        bl = {"baselines": (bl["baselines"],)}
    ours, theirs = run_both(name, net, (x,), **call_kwargs(name, target=1, **bl))
    assert isinstance(ours, tuple) and len(ours) == 1
    assert_same_form_and_values(ours, theirs)
    plain = METHODS[name][0](net).attribute(x, **call_kwargs(name, target=1, **baselines_for(name, x)))
    torch.testing.assert_close(ours[0], plain, rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------- baselines


def _single_baselines(x):
    g = torch.Generator().manual_seed(11)
    return {
        "none": None,
        "scalar": 0.25,
        "int_scalar": 1,
        "full_tensor": torch.randn(x.shape, generator=g, dtype=DT),
        "batch1_tensor": torch.randn((1,) + x.shape[1:], generator=g, dtype=DT),
    }


@pytest.mark.parametrize("form", ["none", "scalar", "int_scalar", "full_tensor", "batch1_tensor"])
@pytest.mark.parametrize("name", WITH_BASELINES)
def test_baseline_forms_tensor_input(name, form):
    net, x = model("cnn"), _inputs()
    baselines = _single_baselines(x)[form]
    ours, theirs = run_both(name, net, x, **call_kwargs(name, baselines=baselines, target=2))
    assert_not_trivial(theirs)
    assert_same_form_and_values(ours, theirs)


def _tuple_baselines(xs):
    g = torch.Generator().manual_seed(12)
    full = tuple(torch.randn(x.shape, generator=g, dtype=DT) for x in xs)
    one = tuple(torch.randn((1,) + x.shape[1:], generator=g, dtype=DT) for x in xs)
    return {
        "none": None,
        "tuple_scalars": (0.1, -0.2),
        "tuple_scalar_and_tensor": (0.5, full[1]),
        "tuple_full": full,
        "tuple_batch1_and_full": (one[0], full[1]),
    }


@pytest.mark.parametrize(
    "form", ["none", "tuple_scalars", "tuple_scalar_and_tensor", "tuple_full", "tuple_batch1_and_full"]
)
@pytest.mark.parametrize("name", WITH_BASELINES)
def test_baseline_forms_tuple_input(name, form):
    net, xs = model("two"), _two_inputs()
    baselines = _tuple_baselines(xs)[form]
    ours, theirs = run_both(name, net, xs, **call_kwargs(name, baselines=baselines, target=4))
    assert_not_trivial(theirs)
    assert_same_form_and_values(ours, theirs)


@pytest.mark.parametrize("rows", [2, 5])
def test_deeplift_shap_baseline_distributions(rows):
    net, x = model("cnn"), _inputs()
    g = torch.Generator().manual_seed(rows)
    bl = torch.randn((rows,) + x.shape[1:], generator=g, dtype=DT)
    ours, theirs = run_both("DeepLiftShap", net, x, baselines=bl, target=[0, 1, 2])
    assert_same_form_and_values(ours, theirs)
    # a callable returning the distribution is the same as the distribution
    called = te.DeepLiftShap(net).attribute(x, baselines=lambda inp: bl, target=[0, 1, 2])
    torch.testing.assert_close(called, ours, rtol=RTOL, atol=ATOL)


def test_deeplift_shap_single_row_equals_deeplift():
    """Captum's DeepLiftShap refuses one baseline row; it must then be DeepLift."""
    net, x = model("cnn_tanh"), _inputs()
    bl = _single_baselines(x)["batch1_tensor"]
    ours = te.DeepLiftShap(net).attribute(x, baselines=bl, target=3)
    theirs = captum_attribute(ca.DeepLift(net), x.clone(), baselines=bl, target=3)
    assert_same_form_and_values(ours, theirs)


def test_deeplift_shap_tuple_distribution():
    net, xs = model("two"), _two_inputs()
    g = torch.Generator().manual_seed(3)
    bl = (torch.randn(3, 3, 8, 8, generator=g, dtype=DT), torch.randn(3, 6, generator=g, dtype=DT))
    (ours, d_ours), (theirs, d_theirs) = run_both(
        "DeepLiftShap", net, xs, baselines=bl, target=2, return_convergence_delta=True
    )
    assert_same_form_and_values(ours, theirs)
    assert d_ours.shape == (N * 3,)
    assert_delta_close(d_ours, d_theirs)


def test_deeplift_shap_delta_order_is_example_major():
    """With non-zero deltas (a product of branches) the (example, reference) order shows."""
    net, xs = model("product"), _two_inputs(seed=7)
    g = torch.Generator().manual_seed(8)
    bl = (torch.randn(4, 3, 8, 8, generator=g, dtype=DT), torch.randn(4, 6, generator=g, dtype=DT))
    (ours, d_ours), (theirs, d_theirs) = run_both(
        "DeepLiftShap", net, xs, baselines=bl, target=[0, 3, 1], return_convergence_delta=True
    )
    assert float(d_theirs.abs().min()) > 1e-6 and len(set(d_theirs.round(decimals=6).tolist())) == N * 4
    assert_same_form_and_values(ours, theirs)
    assert_delta_close(d_ours, d_theirs)


def test_deeplift_unchanged_units_take_the_gradient():
    """Where an activation's input equals the reference's (|dx| < eps) the multiplier is
    the gradient: here the image branch is given its own input as baseline."""
    net, xs = model("product"), _two_inputs(seed=9)
    bl = (xs[0].clone(), torch.zeros_like(xs[1]))
    (ours, d_ours), (theirs, d_theirs) = run_both(
        "DeepLift", net, xs, baselines=bl, target=2, init={"multiply_by_inputs": False}, return_convergence_delta=True
    )
    assert float(theirs[0].abs().max()) > 1e-3  # multipliers of the unchanged image are non-zero
    assert_same_form_and_values(ours, theirs)
    assert_delta_close(d_ours, d_theirs)


def test_inputs_that_require_grad():
    """Inputs already requiring grad give the same result and are left without .grad."""
    net, x = model("cnn"), _inputs()
    for name in ("Saliency", "IntegratedGradients", "DeepLift"):
        x_req = x.clone().requires_grad_(True)
        ours = METHODS[name][0](net).attribute(x_req, **call_kwargs(name, target=1))
        assert x_req.grad is None and all(p.grad is None for p in net.parameters())
        theirs = captum_attribute(METHODS[name][1](net), x.clone(), **call_kwargs(name, target=1))
        assert_same_form_and_values(ours, theirs.detach())


# --------------------------------------------------------------------------- extra arguments


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_additional_forward_args_tensor_and_non_tensor(name):
    net, x = model("cnn"), _inputs()
    g = torch.Generator().manual_seed(4)
    scale = torch.rand(N, 5, generator=g, dtype=DT) + 0.5  # one row per example
    kw = call_kwargs(name, target=[4, 0, 2], additional_forward_args=(scale, 3), **baselines_for(name, x))
    ours, theirs = run_both(name, net, x, **kw)
    assert_not_trivial(theirs)
    assert_same_form_and_values(ours, theirs)
    # the arguments really reach the model: without them the result changes
    kw.pop("additional_forward_args")
    plain = METHODS[name][0](net).attribute(x, **kw)
    assert not torch.allclose(plain, ours)


@pytest.mark.parametrize("name", ["Saliency", "IntegratedGradients", "DeepLift"])
def test_additional_forward_args_single_non_tuple(name):
    """A lone non-tuple extra argument is passed as the one extra positional argument."""
    net, xs = model("two"), _two_inputs()
    ours, theirs = run_both(name, net, xs, **call_kwargs(name, target=0, additional_forward_args=2.5))
    assert_same_form_and_values(ours, theirs)


# --------------------------------------------------------------------------- per-method options


def test_saliency_abs_false():
    net, x = model("cnn_tanh"), _inputs()
    ours, theirs = run_both("Saliency", net, x, target=1, abs=False)
    assert bool((theirs < 0).any())
    assert_same_form_and_values(ours, theirs)


@pytest.mark.parametrize("act", ["cnn", "cnn_tanh", "cnn_elu", "cnn_leaky", "cnn_softplus"])
def test_deeplift_activations(act):
    """Captum's rescale rule for every activation module it supports."""
    net, x = model(act), _inputs()
    (ours, d_ours), (theirs, d_theirs) = run_both(
        "DeepLift", net, x, baselines=0.1, target=[1, 2, 3], return_convergence_delta=True
    )
    assert_same_form_and_values(ours, theirs)
    assert_delta_close(d_ours, d_theirs)


def test_deeplift_multiply_by_inputs_false():
    net, x = model("cnn"), _inputs()
    ours, theirs = run_both("DeepLift", net, x, init={"multiply_by_inputs": False}, baselines=0.3, target=0)
    assert_same_form_and_values(ours, theirs)
    assert te.DeepLift(net, multiply_by_inputs=False).multiplies_by_inputs is False


def test_deeplift_custom_attribution_func():
    def custom(multipliers, inputs, baselines):
        return tuple(m * (x - b) ** 2 for m, x, b in zip(multipliers, inputs, baselines))

    net, xs = model("two"), _two_inputs()
    ours, theirs = run_both("DeepLift", net, xs, baselines=(0.2, -0.1), target=2, custom_attribution_func=custom)
    assert_same_form_and_values(ours, theirs)


@pytest.mark.parametrize("internal_batch_size", [1, 2, 7])
def test_deeplift_internal_batch_size(internal_batch_size):
    net, x = model("cnn"), _inputs()
    bl = _single_baselines(x)["full_tensor"]
    ours = te.DeepLift(net).attribute(x, baselines=bl, target=[0, 1, 2], internal_batch_size=internal_batch_size)
    theirs = captum_attribute(ca.DeepLift(net), x, baselines=bl, target=[0, 1, 2])
    assert_same_form_and_values(ours, theirs)


IG_METHODS = ["riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre"]


@pytest.mark.parametrize("internal_batch_size", [None, 2, 7])
@pytest.mark.parametrize("multiply_by_inputs", [True, False])
@pytest.mark.parametrize("method", IG_METHODS)
def test_integrated_gradients_options(method, multiply_by_inputs, internal_batch_size):
    net, x = model("cnn"), _inputs()
    bl = _single_baselines(x)["batch1_tensor"]
    kw = dict(baselines=bl, target=[2, 0, 1], n_steps=12, method=method, return_convergence_delta=True)
    if internal_batch_size is not None:
        kw["internal_batch_size"] = internal_batch_size
    (ours, d_ours), (theirs, d_theirs) = run_both(
        "IntegratedGradients", net, x, init={"multiply_by_inputs": multiply_by_inputs}, **kw
    )
    assert_same_form_and_values(ours, theirs)
    assert d_ours.shape == (N,)
    assert_delta_close(d_ours, d_theirs)


@pytest.mark.parametrize("method", IG_METHODS)
def test_integrated_gradients_tuple_inputs_with_delta(method):
    net, xs = model("two"), _two_inputs()
    kw = dict(baselines=_tuple_baselines(xs)["tuple_scalar_and_tensor"], target=3, n_steps=10, method=method)
    (ours, d_ours), (theirs, d_theirs) = run_both("IntegratedGradients", net, xs, return_convergence_delta=True, **kw)
    assert_same_form_and_values(ours, theirs)
    assert_delta_close(d_ours, d_theirs)


def test_compute_convergence_delta_matches_captum():
    net, x = model("cnn"), _inputs()
    attrs = te.Saliency(net).attribute(x, target=1)
    ours = te.IntegratedGradients(net).compute_convergence_delta(attrs, 0.5, x, target=1)
    theirs = ca.IntegratedGradients(net).compute_convergence_delta(attrs, 0.5, x, target=1)
    torch.testing.assert_close(ours, theirs, rtol=RTOL, atol=ATOL)


def test_float32_parity():
    """The same comparison in float32 with the usual tolerance."""
    net = Net(nn.Tanh).float()
    x = _inputs().float()
    for name in ("Saliency", "InputXGradient", "IntegratedGradients", "GuidedBackprop", "DeepLift"):
        ours, theirs = run_both(name, net, x, **call_kwargs(name, target=[0, 3, 4]))
        assert ours.dtype == torch.float32
        assert_same_form_and_values(ours, theirs, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- GradientShap


class Linear2(nn.Module):
    """A linear model over two inputs: gradients are constant, so GradientShap's
    result does not depend on the random points where they are taken."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(7)
        self.a = nn.Linear(12, 4)
        self.b = nn.Linear(5, 4)
        self.double().eval()

    def forward(self, x1, x2=None):
        y = self.a(x1.flatten(1))
        return y if x2 is None else y + self.b(x2)


def _linear_inputs():
    g = torch.Generator().manual_seed(8)
    return torch.randn(N, 3, 4, generator=g, dtype=DT), torch.randn(N, 5, generator=g, dtype=DT)


@pytest.mark.parametrize("target", [2, [0, 3, 1], torch.tensor([3, 3, 0])])
def test_gradient_shap_gradients_of_linear_model(target):
    """multiply_by_inputs=False gives the mean gradient: the weights, whatever is drawn."""
    net = Linear2()
    x1, x2 = _linear_inputs()
    g = torch.Generator().manual_seed(9)
    bl = (torch.randn(6, 3, 4, generator=g, dtype=DT), torch.randn(6, 5, generator=g, dtype=DT))
    kw = dict(baselines=bl, n_samples=7, stdevs=(0.3, 0.1), target=target)
    ours = te.GradientShap(net, multiply_by_inputs=False).attribute((x1, x2), **kw)
    theirs = captum_attribute(ca.GradientShap(net, multiply_by_inputs=False), (x1, x2), **kw)
    assert_same_form_and_values(ours, theirs)
    t = torch.as_tensor(target).expand(N) if not isinstance(target, list) else torch.tensor(target)
    torch.testing.assert_close(ours[0], net.a.weight[t].reshape(N, 3, 4), rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(ours[1], net.b.weight[t], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("tuple_inputs", [False, True])
def test_gradient_shap_single_baseline_linear_model(tuple_inputs):
    """One baseline row and no noise: (x - b) * w whatever the path points drawn."""
    net = Linear2()
    x1, x2 = _linear_inputs()
    g = torch.Generator().manual_seed(10)
    b1, b2 = torch.randn(1, 3, 4, generator=g, dtype=DT), torch.randn(1, 5, generator=g, dtype=DT)
    inputs, bl = ((x1, x2), (b1, b2)) if tuple_inputs else (x1, b1)
    kw = dict(baselines=bl, n_samples=4, target=[1, 2, 0], return_convergence_delta=True)
    ours, d_ours = te.GradientShap(net).attribute(inputs, **kw)
    theirs, d_theirs = captum_attribute(ca.GradientShap(net), inputs, **kw)
    assert_same_form_and_values(ours, theirs)
    assert d_ours.shape == d_theirs.shape == (N * 4,)
    torch.testing.assert_close(d_ours, d_theirs, rtol=0, atol=1e-9)
    first = ours[0] if tuple_inputs else ours
    w = net.a.weight[[1, 2, 0]].reshape(N, 3, 4)
    torch.testing.assert_close(first, w * (x1 - b1), rtol=RTOL, atol=ATOL)


class Linear1(nn.Module):
    """A linear model with a (2, 2) output per example and extra arguments."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(19)
        self.a = nn.Linear(12, 4)
        self.double().eval()

    def forward(self, x, scale=None, k=1):
        y = self.a(x.flatten(1)) * k
        if scale is not None:
            y = y * scale
        return y.reshape(-1, 2, 2)


@pytest.mark.parametrize("target", [(1, 0), [(0, 1), (1, 1), (0, 0)]])
def test_gradient_shap_linear_3d_targets_and_extra_args(target):
    net = Linear1()
    x = _linear_inputs()[0]
    g = torch.Generator().manual_seed(20)
    bl = torch.randn(5, 3, 4, generator=g, dtype=DT)
    scale = torch.rand(N, 4, generator=g, dtype=DT) + 0.5
    kw = dict(baselines=bl, n_samples=3, stdevs=0.4, target=target, additional_forward_args=(scale, 2))
    ours = te.GradientShap(net, multiply_by_inputs=False).attribute(x, **kw)
    theirs = captum_attribute(ca.GradientShap(net, multiply_by_inputs=False), x, **kw)
    assert_same_form_and_values(ours, theirs)
    rows = [target] * N if isinstance(target, tuple) else target
    expected = torch.stack([net.a.weight[2 * i + j] * 2 * scale[n, 2 * i + j] for n, (i, j) in enumerate(rows)])
    torch.testing.assert_close(ours, expected.reshape(N, 3, 4), rtol=RTOL, atol=ATOL)


def test_gradient_shap_quadratic_analytic():
    """f(x) = sum(x^2)/2 with one baseline b and no noise: each sample is
    (b + a (x - b)) (x - b) with a ~ U(0, 1), so the mean tends to (x^2 - b^2)/2 with
    per-sample standard deviation |x - b|^2 / sqrt(12)."""
    x = torch.tensor([[1.0, -2.0, 0.5, 3.0]], dtype=DT)
    b = torch.tensor([[0.5, 1.0, -0.5, 0.0]], dtype=DT)
    n = 4000
    gen = torch.Generator().manual_seed(0)
    attr = te.GradientShap(lambda t: (t * t).sum(1) / 2).attribute(x, b, n_samples=n, generator=gen)
    expected = (x * x - b * b) / 2
    sd = (x - b) ** 2 / math.sqrt(12 * n)
    assert bool(((attr - expected).abs() <= 5 * sd + 1e-12).all())


def test_gradient_shap_generator_reproducible():
    net, x = model("cnn"), _inputs()
    bl = torch.randn(4, 3, 8, 8, dtype=DT, generator=torch.Generator().manual_seed(1))
    gs = te.GradientShap(net)

    def run(seed):
        return gs.attribute(x, bl, n_samples=3, stdevs=0.2, target=1, generator=torch.Generator().manual_seed(seed))

    torch.testing.assert_close(run(5), run(5), rtol=0, atol=0)
    assert not torch.allclose(run(5), run(6))


# --------------------------------------------------------------------------- NoiseTunnel


WRAPPED = {
    "Saliency": {},
    "InputXGradient": {},
    "IntegratedGradients": {"n_steps": 8, "baselines": 0.2},
    "GuidedBackprop": {},
    "Deconvolution": {},
    "DeepLift": {"baselines": 0.2},
}


@pytest.mark.parametrize("name", list(WRAPPED))
def test_noise_tunnel_zero_noise_is_the_wrapped_method(name):
    net, x = model("cnn"), _inputs()
    ours_cls, captum_cls = METHODS[name]
    kw = dict(WRAPPED[name], target=[1, 2, 3])
    plain = ours_cls(net).attribute(x, **kw)
    assert_not_trivial(plain)
    nt = te.NoiseTunnel(ours_cls(net))
    smooth = nt.attribute(x, nt_type="smoothgrad", nt_samples=3, stdevs=0.0, **kw)
    theirs = captum_attribute(ca.NoiseTunnel(captum_cls(net)), x, nt_type="smoothgrad", nt_samples=3, stdevs=0.0, **kw)
    assert_same_form_and_values(smooth, plain)
    assert_same_form_and_values(smooth, theirs)
    sq = nt.attribute(x, nt_type="smoothgrad_sq", nt_samples=3, stdevs=0.0, **kw)
    torch.testing.assert_close(sq, plain * plain, rtol=RTOL, atol=ATOL)
    var = nt.attribute(x, nt_type="vargrad", nt_samples=3, stdevs=0.0, **kw)
    torch.testing.assert_close(var, torch.zeros_like(var), rtol=0, atol=1e-9)


@pytest.mark.parametrize("nt_samples_batch_size", [None, 2])
def test_noise_tunnel_zero_noise_tuple_inputs_with_delta(nt_samples_batch_size):
    net, xs = model("two"), _two_inputs()
    kw = dict(
        nt_type="smoothgrad", nt_samples=4, nt_samples_batch_size=nt_samples_batch_size, stdevs=(0.0, 0.0),
        baselines=(0.1, 0.0), target=[0, 1, 4], n_steps=6, return_convergence_delta=True,
        additional_forward_args=(2.0,),
    )
    ours, d_ours = te.NoiseTunnel(te.IntegratedGradients(net)).attribute(xs, **kw)
    theirs, d_theirs = captum_attribute(ca.NoiseTunnel(ca.IntegratedGradients(net)), xs, **kw)
    assert_same_form_and_values(ours, theirs)
    assert d_ours.shape == d_theirs.shape == (N * 4,)
    assert_delta_close(d_ours, d_theirs)


def test_noise_tunnel_draw_baseline_single_row_is_deterministic():
    """draw_baseline_from_distrib with a one-row distribution has nothing random."""
    net, x = model("cnn"), _inputs()
    bl = torch.full((1, 3, 8, 8), 0.3, dtype=DT)
    kw = dict(nt_samples=2, stdevs=0.0, draw_baseline_from_distrib=True, baselines=bl, target=0, n_steps=6)
    ours = te.NoiseTunnel(te.IntegratedGradients(net)).attribute(x, **kw)
    theirs = captum_attribute(ca.NoiseTunnel(ca.IntegratedGradients(net)), x, **kw)
    assert_same_form_and_values(ours, theirs)


def _half_square(x):
    return (x * x).reshape(x.shape[0], -1).sum(1) / 2


@pytest.fixture(scope="module")
def smoothing_setup():
    x = torch.tensor([[1.5, -0.5, 0.0, 2.0, -3.0], [0.25, 4.0, -1.0, 0.5, 1.0]], dtype=DT)
    return x, 0.7, 3000


@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_noise_tunnel_analytic(smoothing_setup, nt_type):
    """grad of sum(x^2)/2 is x, so with noise e ~ N(0, s^2) over n samples:
    smoothgrad -> x (sd s/sqrt(n)); smoothgrad_sq -> x^2 + s^2 (sd sqrt(4x^2s^2 + 2s^4)/sqrt(n));
    vargrad -> s^2 (n-1)/n (sd ~ s^2 sqrt(2/n))."""
    x, s, n = smoothing_setup
    nt = te.NoiseTunnel(te.Saliency(_half_square))
    gen = torch.Generator().manual_seed(123)
    out = nt.attribute(x, nt_type=nt_type, nt_samples=n, stdevs=s, abs=False, generator=gen)
    if nt_type == "smoothgrad":
        expected, sd = x, torch.full_like(x, s / math.sqrt(n))
    elif nt_type == "smoothgrad_sq":
        expected, sd = x * x + s * s, torch.sqrt(4 * x * x * s * s + 2 * s**4) / math.sqrt(n)
    else:
        expected, sd = torch.full_like(x, s * s * (n - 1) / n), torch.full_like(x, s * s * math.sqrt(2 / n))
    assert bool(((out - expected).abs() <= 5 * sd).all()), (out, expected)


def test_noise_tunnel_generator_reproducible():
    net, x = model("cnn"), _inputs()
    nt = te.NoiseTunnel(te.Saliency(net))

    def run(seed):
        return nt.attribute(x, nt_samples=3, stdevs=0.5, target=1, generator=torch.Generator().manual_seed(seed))

    torch.testing.assert_close(run(3), run(3), rtol=0, atol=0)
    assert not torch.allclose(run(3), run(4))


# --------------------------------------------------------------------------- where Captum is wrong


class PoolNet(nn.Module):
    """Conv -> ReLU -> MaxPool -> Conv -> ReLU -> MaxPool -> Linear (no overlap)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(13)
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.fc = nn.Linear(6 * 2 * 2, 4)
        self.double().eval()

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


def _deltas_hold(attrs, net, x, x0, target):
    with torch.no_grad():
        gap = net(x)[torch.arange(len(x)), target] - net(x0.expand_as(x))[torch.arange(len(x)), target]
    total = attrs.reshape(len(x), -1).sum(1)
    return (total - gap).abs() <= 1e-4 * gap.abs() + 1e-5


def test_deeplift_maxpool_sums_to_delta_where_captum_does_not():
    net, x = PoolNet(), _inputs(seed=21)
    x0 = _inputs(seed=22)[:1]
    target = torch.tensor([0, 1, 3])
    ours = te.DeepLift(net).attribute(x, baselines=x0, target=target)
    assert bool(_deltas_hold(ours, net, x, x0, target).all())
    # Captum's max-pool rule breaks summation-to-delta here (documented, not required)
    theirs = captum_attribute(ca.DeepLift(net), x, baselines=x0.expand_as(x), target=target)
    assert not bool(_deltas_hold(theirs, net, x, x0, target).all())


def test_deeplift_shap_maxpool_mean_sums_to_mean_delta():
    net, x = PoolNet(), _inputs(seed=23)
    refs = _inputs(seed=24, n=4) * 0.5
    attrs, delta = te.DeepLiftShap(net).attribute(x, baselines=refs, target=2, return_convergence_delta=True)
    with torch.no_grad():
        gap = net(x)[:, 2] - net(refs)[:, 2].mean()
    total = attrs.reshape(N, -1).sum(1)
    assert bool(((total - gap).abs() <= 1e-4 * gap.abs() + 1e-5).all())
    assert delta.shape == (N * 4,) and float(delta.abs().max()) < 1e-8


class FunctionalNet(Net):
    """``Net`` with the same weights but its ReLU called as ``F.relu`` (invisible
    to Captum's module hooks)."""

    def forward(self, x, scale=None, k=1):
        y = self.fc(self.flatten(self.act(self.conv2(F.relu(self.conv1(x))))))
        return y.reshape((y.shape[0],) + self.out_shape)


class ReusedNet(nn.Module):
    """Two ReLUs computed by one reused in-place module."""

    def __init__(self, reuse: bool):
        super().__init__()
        torch.manual_seed(17)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=reuse)
        self.relu2 = self.relu if reuse else nn.ReLU()
        self.fc = nn.Linear(4 * 8 * 8, 3)
        self.double().eval()

    def forward(self, x):
        return self.fc(self.relu2(self.conv2(self.relu(self.conv1(x)))).flatten(1))


@pytest.mark.parametrize("name", ["GuidedBackprop", "Deconvolution", "DeepLift"])
def test_functional_relu_matches_captum_on_module_twin(name):
    """Captum is right on the nn.ReLU model; ours must give that on the F.relu twin."""
    modular = model("cnn")
    functional = FunctionalNet(nn.Sigmoid)
    functional.load_state_dict(modular.state_dict())
    x = _inputs()
    kw = {"baselines": 0.1} if name == "DeepLift" else {}
    ours = METHODS[name][0](functional).attribute(x, target=[0, 1, 2], **kw)
    theirs = captum_attribute(METHODS[name][1](modular), x, target=[0, 1, 2], **kw)
    assert_same_form_and_values(ours, theirs)
    if name == "GuidedBackprop":  # and it is not the plain gradient Captum silently gives
        grad = te.Saliency(functional).attribute(x, target=[0, 1, 2], abs=False)
        assert not torch.allclose(ours, grad, rtol=1e-3, atol=1e-6)
        blind = captum_attribute(ca.GuidedBackprop(functional), x, target=[0, 1, 2])
        torch.testing.assert_close(blind, grad, rtol=RTOL, atol=ATOL)  # Captum 0.9.0's blind spot


@pytest.mark.parametrize("name", ["GuidedBackprop", "Deconvolution", "DeepLift"])
def test_reused_inplace_relu_matches_captum_on_distinct_modules(name):
    distinct, reused = ReusedNet(reuse=False), ReusedNet(reuse=True)
    reused.load_state_dict(distinct.state_dict())
    x = _inputs(seed=30)
    kw = {"baselines": _inputs(seed=31)} if name == "DeepLift" else {}
    ours = METHODS[name][0](reused).attribute(x, target=1, **kw)
    theirs = captum_attribute(METHODS[name][1](distinct), x, target=1, **kw)
    assert_not_trivial(theirs)
    assert_same_form_and_values(ours, theirs)
