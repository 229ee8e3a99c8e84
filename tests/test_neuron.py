"""Neuron attributions against Captum 0.9 (the oracle where it is right), hand-derived
values and axioms where it is not.

Everything runs in float64, so the two libraries differ only by the order of sums and
Captum's float32 quadrature weights. Where Captum disagrees with the math:

* DeepLIFT through max-pooling (and on torchvision's ResNet, whose in-place ReLU
  modules run twice, Captum raises): checked by completeness, the attributions sum to
  ``neuron(x) - neuron(x0)``, and against Captum on the same net with average pooling;
* conductance of a group of neurons (a slice, a summing callable): Captum multiplies
  the sum of their output gradients by the gradient of their sum; here it is the sum
  of the neurons' conductances, checked by that identity and by "the conductances of
  all neurons of a layer every path goes through add up to integrated gradients".
"""

from __future__ import annotations

import copy
import functools
import warnings

import captum.attr as ca
import pytest
import torch
import torchvision
from test_model_unchanged import assert_unchanged, make_cnn, snapshot
from torch import nn

import helpers
import torchexplain.attr as te
from torchexplain.attr import neuron as tn

DT = torch.float64


def close(ours, theirs, rtol=1e-5):
    """Equal within ``rtol`` of the largest magnitude, which must not be zero."""
    for b in theirs if isinstance(theirs, tuple) else (theirs,):
        assert float(b.detach().abs().max()) > 1e-8, "the oracle is all zeros: the comparison would show nothing"
    helpers.close_to_largest(ours, theirs, rtol)


def module(model, name):
    return dict(model.named_modules())[name]


def captum(cls, model, layer, inputs, *args, init=None, **kwargs):
    """Captum's ``cls(model, layer module)`` on clones of the inputs, warnings off."""
    clone = tuple(t.clone() for t in inputs) if isinstance(inputs, tuple) else inputs.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(model, module(model, layer), **(init or {})).attribute(clone, *args, **kwargs)


# --------------------------------------------------------------------------- models


class Toy(nn.Module):
    """conv -> ReLU -> pool -> conv -> ReLU -> linear -> ReLU -> linear, on 3x8x8."""

    def __init__(self, pool=nn.MaxPool2d, inplace=False, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu1 = nn.ReLU(inplace=inplace)
        self.pool = pool(2)
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1)
        self.relu2 = nn.ReLU(inplace=inplace)
        self.fc1 = nn.Linear(80, 6)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(6, 3)
        self.double().eval()

    def forward(self, x):
        h = self.pool(self.relu1(self.conv1(x)))
        h = self.relu2(self.conv2(h)).flatten(1)
        return self.fc2(self.relu3(self.fc1(h)))


class Mix(nn.Module):
    def forward(self, a, b):
        return a + b


class TwoInputs(nn.Module):
    """An image and a vector, joined by ``mix`` (a layer with two inputs)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 2, 3)
        self.relu = nn.ReLU()
        self.fc_x = nn.Linear(72, 6)
        self.fc_z = nn.Linear(4, 6)
        self.tanh = nn.Tanh()  # a module: Captum's DeepLIFT sees only module activations
        self.mix = Mix()
        self.out_relu = nn.ReLU()
        self.head = nn.Linear(6, 3)
        self.double().eval()

    def forward(self, x, z):
        a = self.fc_x(self.relu(self.conv(x)).flatten(1))
        return self.head(self.out_relu(self.mix(a, self.tanh(self.fc_z(z)))))


images = functools.partial(helpers.images, dtype=DT)


@pytest.fixture(scope="module")
def resnet():
    """Random-init resnet18 in eval with random BatchNorm statistics (so it is not
    positively homogeneous and ReLU patterns change along paths)."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=5).double().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model


# --------------------------------------------------------------------------- methods

# name: (ours, Captum's, attribute keyword arguments)
METHODS = {
    "Gradient": (te.NeuronGradient, ca.NeuronGradient, {}),
    "IntegratedGradients": (te.NeuronIntegratedGradients, ca.NeuronIntegratedGradients, {"n_steps": 8}),
    "GuidedBackprop": (te.NeuronGuidedBackprop, ca.NeuronGuidedBackprop, {}),
    "Deconvolution": (te.NeuronDeconvolution, ca.NeuronDeconvolution, {}),
    "FeatureAblation": (te.NeuronFeatureAblation, ca.NeuronFeatureAblation, {"baselines": 0.2}),
    "Conductance": (te.NeuronConductance, ca.NeuronConductance, {"target": [0, 2, 1], "n_steps": 8}),
    "DeepLift": (te.NeuronDeepLift, ca.NeuronDeepLift, {"baselines": 0.1}),
}

# name: (layer, neuron_selector, attribute_to_neuron_input)
CASES = {
    "conv2-index": ("conv2", (1, 2, 3), False),
    "relu2-input-slices": ("relu2", (slice(0, 2), 1, slice(1, 3)), True),
    "fc1-int": ("fc1", 1, False),
    "relu3-input-negative-int": ("relu3", -2, True),
    "relu3-callable": ("relu3", lambda v: v[:, 1] - 2 * v[:, 4], False),
}
GROUPS = ("relu2-input-slices", "relu3-callable")  # several neurons (see the module docstring)


def both(name, model, inputs, layer, selector, to_input, **extra):
    ours_cls, theirs_cls, kwargs = METHODS[name]
    kwargs = {**kwargs, **extra}
    first = inputs[0] if isinstance(inputs, tuple) else inputs
    if name == "Conductance" and len(first) != 3:
        kwargs["target"] = 1
    ours = ours_cls(model, layer).attribute(inputs, selector, attribute_to_neuron_input=to_input, **kwargs)
    theirs = captum(theirs_cls, model, layer, inputs, selector, attribute_to_neuron_input=to_input, **kwargs)
    return ours, theirs


TOY_PARAMS = [
    pytest.param(name, case, id=f"{name}-{case}")
    for name in METHODS
    for case in CASES
    if not (name == "Conductance" and case in GROUPS)
]


@pytest.mark.parametrize("name, case", TOY_PARAMS)
def test_toy_matches_captum(name, case):
    """Max-pooling toy CNN, three examples; DeepLIFT on the average-pooling twin."""
    model = Toy(nn.AvgPool2d) if name == "DeepLift" else Toy()
    layer, selector, to_input = CASES[case]
    close(*both(name, model, images(), layer, selector, to_input))


@pytest.mark.parametrize("baselines", ["none", "scalar", "one-row", "per-example"])
@pytest.mark.parametrize("name", ["IntegratedGradients", "FeatureAblation", "Conductance", "DeepLift"])
def test_baseline_forms_match_captum(name, baselines):
    x = images()
    form = {
        "none": None,
        "scalar": 0.25,
        "one-row": images(1, seed=5),
        "per-example": images(3, seed=6),
    }[baselines]
    model = Toy(nn.AvgPool2d) if name == "DeepLift" else Toy()
    close(*both(name, model, x, "conv2", (1, 2, 3), False, baselines=form))


TUPLE_CASES = {
    "mix-output-int": (3, False),
    "mix-inputs-group": (lambda ab: ab[0][:, 1] + 3 * ab[1][:, 1], True),
}


def two_inputs(seed=3):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 3, 8, 8, dtype=DT, generator=g), torch.randn(2, 4, dtype=DT, generator=g))


@pytest.mark.parametrize("name, case", [
    pytest.param(name, case, id=f"{name}-{case}")
    for name in METHODS
    for case in TUPLE_CASES
    if not (name == "Conductance" and case == "mix-inputs-group")
])
def test_tuple_inputs_match_captum(name, case):
    model, inputs = TwoInputs(), two_inputs()
    selector, to_input = TUPLE_CASES[case]
    extra = {}
    if name in ("IntegratedGradients", "DeepLift", "Conductance"):
        extra["baselines"] = (0.1, two_inputs(4)[1][:1])
    if name == "FeatureAblation":
        extra["baselines"] = (0.2, 0.2)  # Captum 0.9 raises IndexError on a scalar with tuple inputs
    ours, theirs = both(name, model, inputs, "mix", selector, to_input, **extra)
    assert isinstance(ours, tuple) and len(ours) == 2
    close(ours, theirs)
    if name == "FeatureAblation":
        scalar = te.NeuronFeatureAblation(model, "mix").attribute(
            inputs, selector, baselines=0.2, attribute_to_neuron_input=to_input
        )
        close(scalar, ours, rtol=1e-12)


class Scaled(Toy):
    """The input is scaled per example by an extra argument before the toy net."""

    def forward(self, x, scale, shift=0.0):
        return super().forward(x * scale.view(-1, 1, 1, 1) + shift)


@pytest.mark.parametrize("name", list(METHODS))
def test_additional_forward_args_match_captum(name):
    model = Scaled(nn.AvgPool2d) if name == "DeepLift" else Scaled()
    args = (torch.tensor([0.5, 2.0, -1.0], dtype=DT), 0.1)
    close(*both(name, model, images(), "conv2", (1, 2, 3), False, additional_forward_args=args))


def test_multiply_by_inputs_false_matches_captum():
    x, model = images(), Toy()
    for ours_cls, theirs_cls, kwargs in (
        (te.NeuronIntegratedGradients, ca.NeuronIntegratedGradients, {"n_steps": 6}),
        (te.NeuronConductance, ca.NeuronConductance, {"n_steps": 6, "target": 1}),
    ):
        ours = ours_cls(model, "conv2", multiply_by_inputs=False).attribute(x, (0, 1, 2), baselines=0.2, **kwargs)
        assert not ours_cls(model, "conv2", multiply_by_inputs=False).multiplies_by_inputs
        theirs = captum(theirs_cls, model, "conv2", x, (0, 1, 2), baselines=0.2,
                        init={"multiply_by_inputs": False}, **kwargs)
        close(ours, theirs)


def test_other_methods_and_quadratures_match_captum():
    x, model = images(), Toy()
    ours = te.NeuronIntegratedGradients(model, "fc1").attribute(x, 1, n_steps=7, method="riemann_middle")
    close(ours, captum(ca.NeuronIntegratedGradients, model, "fc1", x, 1, n_steps=7, method="riemann_middle"))
    ours = te.NeuronConductance(model, "fc1").attribute(x, 1, target=2, n_steps=5, method="gausslegendre")
    close(ours, captum(ca.NeuronConductance, model, "fc1", x, 1, target=2, n_steps=5, method="gausslegendre"))
    mask = torch.arange(16).view(1, 1, 4, 4).repeat_interleave(2, 2).repeat_interleave(2, 3)
    ours = te.NeuronFeatureAblation(model, "conv2").attribute(x, (0, 1, 1), feature_mask=mask)
    close(ours, captum(ca.NeuronFeatureAblation, model, "conv2", x, (0, 1, 1), feature_mask=mask))


def test_deeplift_shap_matches_captum():
    x, model = images(), Toy(nn.AvgPool2d)
    refs = images(4, seed=9)
    ours = te.NeuronDeepLiftShap(model, "fc1").attribute(x, 3, baselines=refs)
    close(ours, captum(ca.NeuronDeepLiftShap, model, "fc1", x, 3, baselines=refs))


def test_gradient_shap_where_draws_do_not_matter():
    """conv1 is linear in the input and there is one baseline row: without noise
    every sampled point has the same neuron gradient, so the result is
    ``gradient * (x - baseline)`` whatever the draws."""
    x, model = images(), Toy()
    ref = images(1, seed=9)
    ours = te.NeuronGradientShap(model, "conv1").attribute(x, (1, 3, 3), baselines=ref, n_samples=6)
    close(ours, captum(ca.NeuronGradientShap, model, "conv1", x, (1, 3, 3), baselines=ref, n_samples=6))
    close(ours, te.NeuronGradient(model, "conv1").attribute(x, (1, 3, 3)) * (x - ref), rtol=1e-12)


def test_gradient_shap_is_gradient_shap_of_the_neuron():
    """With the same draws, the input method on the neuron function."""
    x, model = images(), Toy()
    kw = dict(baselines=images(4, seed=9), n_samples=5, stdevs=0.1)
    ours = te.NeuronGradientShap(model, "relu2").attribute(
        x, (0, 1, 1), generator=torch.Generator().manual_seed(4), **kw
    )
    neuron = tn.NeuronFunction(model, tn.LayerTap(model.relu2), lambda v: v[:, 0, 1, 1])
    plain = te.GradientShap(neuron).attribute(x, generator=torch.Generator().manual_seed(4), **kw)
    close(ours, plain, rtol=1e-12)


# --------------------------------------------------------------------------- where Captum is wrong


def neuron_values(model, layer, selector, x, to_input=False):
    with torch.no_grad():
        return tn.NeuronFunction(model, tn.LayerTap(module(model, layer), to_input=to_input), selector)(x)


@pytest.mark.parametrize("case", list(CASES))
def test_deeplift_through_maxpool_is_complete(case):
    """Captum's max-pool rule breaks completeness; ours sums to the neuron's change."""
    model, x = Toy(), images()
    layer, selector, to_input = CASES[case]
    selector = tn.check_neuron_selector(selector)
    attributions = te.NeuronDeepLift(model, layer).attribute(x, selector, baselines=0.1, attribute_to_neuron_input=to_input)
    gap = neuron_values(model, layer, selector, x, to_input) - neuron_values(
        model, layer, selector, torch.full_like(x, 0.1), to_input
    )
    assert gap.abs().min() > 1e-4
    torch.testing.assert_close(attributions.sum((1, 2, 3)), gap, rtol=1e-9, atol=1e-12)


def test_conductance_of_a_group_is_the_sum_of_its_neurons():
    model, x = Toy(), images()
    method = te.NeuronConductance(model, "conv2")
    kw = dict(target=[0, 2, 1], n_steps=6, baselines=0.1)
    group = method.attribute(x, (slice(0, 2), 1, slice(1, 3)), **kw)
    parts = sum(method.attribute(x, (c, 1, j), **kw) for c in (0, 1) for j in (1, 2))
    close(group, parts, rtol=1e-10)
    weighted = method.attribute(x, lambda v: v[:, 0, 1, 1] - 2 * v[:, 3, 2, 2], **kw)
    close(weighted, method.attribute(x, (0, 1, 1), **kw) - 2 * method.attribute(x, (3, 2, 2), **kw), rtol=1e-10)


@pytest.mark.parametrize("layer", ["conv2", "relu3"])
def test_conductance_of_all_neurons_is_integrated_gradients(layer):
    """Every path from the input to the output runs through ``layer``: summed over
    all its neurons, conductance is integrated gradients (same quadrature)."""
    model, x = Toy(), images()
    everything = lambda v: v.flatten(1).sum(1)  # noqa: E731
    kw = dict(baselines=0.3, n_steps=9, method="riemann_trapezoid")
    total = te.NeuronConductance(model, layer).attribute(x, everything, target=[2, 0, 1], **kw)
    ig = te.IntegratedGradients(model).attribute(x, target=[2, 0, 1], **kw)
    close(total, ig, rtol=1e-10)


# --------------------------------------------------------------------------- resnet18

RESNET_CASES = [
    pytest.param("layer1.0.bn1", (0, 15, 6), False, id="bn1-before-inplace-relu"),
    pytest.param("layer4.1.conv2", (10, 1, 0), True, id="layer4-input"),
    pytest.param("layer2.0.downsample.0", (slice(0, 4), 2, slice(None)), False, id="downsample-slices"),
]


@pytest.mark.parametrize("layer, selector, to_input", RESNET_CASES)
@pytest.mark.parametrize("name", ["Gradient", "IntegratedGradients", "GuidedBackprop", "Conductance"])
@pytest.mark.slow
def test_resnet18_matches_captum(resnet, name, layer, selector, to_input):
    if name == "Conductance" and any(isinstance(s, slice) for s in selector):
        selector = (1, 2, 3)  # a single neuron (see the module docstring)
    x = images(2, 64, seed=1)
    extra = {"n_steps": 3} if name in ("IntegratedGradients", "Conductance") else {}
    close(*both(name, resnet, x, layer, selector, to_input, **extra))


@pytest.mark.slow
def test_resnet18_feature_ablation_matches_captum(resnet):
    x = images(1, 64, seed=2)
    mask = torch.arange(16).view(1, 1, 4, 4).repeat_interleave(16, 2).repeat_interleave(16, 3)
    ours = te.NeuronFeatureAblation(resnet, "layer3.1.conv1").attribute(x, (7, 1, 2), feature_mask=mask)
    theirs = captum(ca.NeuronFeatureAblation, resnet, "layer3.1.conv1", x, (7, 1, 2), feature_mask=mask,
                    perturbations_per_eval=16)
    close(ours, theirs)


@pytest.mark.slow
def test_resnet18_deeplift_is_complete(resnet):
    """Captum raises here (its DeepLIFT needs each ReLU module to run once)."""
    x = images(2, 64, seed=3)
    for layer, selector in (("layer4.1.conv2", (10, 1, 0)), ("layer2.1.bn2", (3, 2, 2))):
        attributions = te.NeuronDeepLift(resnet, layer).attribute(x, selector, baselines=0.05)
        gap = neuron_values(resnet, layer, selector, x) - neuron_values(resnet, layer, selector, torch.full_like(x, 0.05))
        assert gap.abs().min() > 1e-3
        torch.testing.assert_close(attributions.sum((1, 2, 3)), gap, rtol=1e-8, atol=1e-10)


def test_resnet18_reused_relu(resnet):
    """``layer1.0.relu`` runs twice per block: ``layer_call`` picks the run. Run 1 is
    the one Captum reads (its hook keeps the last); run 0 is relu(bn1), so its
    gradient is that of relu of the bn1 neuron."""
    x = images(2, 64, seed=4)
    neuron = (2, 0, 1)  # active in both runs for both images
    with pytest.raises(ValueError, match="ran 2 times.*layer_call"):
        te.NeuronGradient(resnet, "layer1.0.relu").attribute(x, neuron)
    last = te.NeuronGradient(resnet, "layer1.0.relu", layer_call=1).attribute(x, neuron)
    close(last, captum(ca.NeuronGradient, resnet, "layer1.0.relu", x, neuron))
    first = te.NeuronGradient(resnet, "layer1.0.relu", layer_call=0).attribute(x, neuron)
    by_hand = te.NeuronGradient(resnet, "layer1.0.bn1").attribute(x, lambda v: torch.relu(v[:, 2, 0, 1]))
    close(first, by_hand, rtol=1e-12)
    assert (first - last).abs().max() > 1e-3 * last.abs().max()


# --------------------------------------------------------------------------- in-place and reused layers


def run(name, model, x, layer, selector=(1, 2, 3), **init):
    """One neuron method with settings that make several forward calls."""
    ours_cls, _, kwargs = METHODS[name]
    if name in ("IntegratedGradients", "Conductance", "DeepLift"):  # (chunks of < 4 rows run
        kwargs = {**kwargs, "internal_batch_size": 2}  # in the given layout, never retried)
    if name == "FeatureAblation":
        kwargs = {**kwargs, "perturbations_per_eval": 1}
    return ours_cls(model, layer, **init).attribute(x, selector, **kwargs)


@pytest.mark.parametrize("name", list(METHODS))
def test_inplace_relu_after_the_layer_changes_nothing(name):
    x = images()
    plain = run(name, Toy(), x, "conv1")
    inplace = run(name, Toy(inplace=True), x, "conv1")
    assert plain.abs().max() > 0
    torch.testing.assert_close(inplace, plain, rtol=1e-12, atol=0)


class Shared(nn.Module):
    """One conv module applied twice (weight sharing)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 16, 3)
        self.double().eval()

    def forward(self, x):
        h = torch.relu(self.conv(torch.relu(self.conv(x))))
        return self.fc(nn.functional.max_pool2d(h, 2).flatten(1))


class Twin(nn.Module):
    """The same computation with two distinct but identical conv modules."""

    def __init__(self, shared: Shared):
        super().__init__()
        self.conv_a = copy.deepcopy(shared.conv)
        self.conv_b = copy.deepcopy(shared.conv)
        self.fc = copy.deepcopy(shared.fc)

    def forward(self, x):
        h = torch.relu(self.conv_b(torch.relu(self.conv_a(x))))
        return self.fc(nn.functional.max_pool2d(h, 2).flatten(1))


@pytest.mark.parametrize("name", list(METHODS))
def test_reused_layer_needs_layer_call_and_matches_distinct_modules(name):
    shared = Shared()
    twin = Twin(shared)
    x = images()
    with pytest.raises(ValueError, match="ran 2 times.*layer_call"):
        run(name, shared, x, "conv")
    for call, layer in ((0, "conv_a"), (1, "conv_b")):
        ours = run(name, shared, x, "conv", layer_call=call)
        by_hand = run(name, twin, x, layer)
        assert by_hand.abs().max() > 0
        torch.testing.assert_close(ours, by_hand, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="layer_call=2 but layer 'conv' ran only 2"):
        run(name, shared, x, "conv", layer_call=2)


# --------------------------------------------------------------------------- hand-derived values


class Tiny(nn.Module):
    """neuron = relu(2 x1 - x2) (layer ``act``), output = 3 * neuron - 1."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1, bias=False)
        self.act = nn.ReLU()
        self.head = nn.Linear(1, 1)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([[2.0, -1.0]]))
            self.head.weight.fill_(3.0)
            self.head.bias.fill_(-1.0)
        self.double()

    def forward(self, x):
        return self.head(self.act(self.lin(x)))


def test_hand_derived_values():
    """x = (3, 1): the neuron is active (2*3 - 1 = 5); x = (1, 3): inactive (-1).
    Along the path from 0 the pre-activation is alpha times its end value, so the
    ReLU pattern is constant and the path methods are exact."""
    model = Tiny()
    x = torch.tensor([[3.0, 1.0], [1.0, 3.0]], dtype=DT)
    t = lambda *rows: torch.tensor(rows, dtype=DT)  # noqa: E731
    close(te.NeuronGradient(model, "act").attribute(x, 0), t([2.0, -1.0], [0.0, 0.0]))
    close(te.NeuronGradient(model, model.act).attribute(x, (0,)), t([2.0, -1.0], [0.0, 0.0]))  # a module
    close(te.NeuronGradient(model, "act").attribute(x, 0, attribute_to_neuron_input=True), t([2.0, -1.0], [2.0, -1.0]))
    close(te.NeuronIntegratedGradients(model, "act").attribute(x, 0, n_steps=3), t([6.0, -1.0], [0.0, 0.0]), 1e-12)
    close(te.NeuronDeepLift(model, "act").attribute(x, 0), t([6.0, -1.0], [0.0, 0.0]), 1e-12)
    # ablating x1 leaves relu(-1) = 0 (drop 5) or relu(-3) = 0 (drop 0); x2: relu(6), relu(2)
    close(te.NeuronFeatureAblation(model, "act").attribute(x, 0), t([5.0, -1.0], [0.0, -2.0]))
    close(te.NeuronGuidedBackprop(model, "act").attribute(x, 0), t([2.0, -1.0], [0.0, 0.0]))
    close(te.NeuronDeconvolution(model, "act").attribute(x, 0), t([2.0, -1.0], [2.0, -1.0]))
    # conductance: d out / d neuron = 3, so 3 x the neuron's integrated gradients;
    # Captum's riemann_trapezoid weights sum to (n - 1) / n and the ReLU's gradient
    # at alpha = 0 is 0, so 4 steps give 3 * (1/4 + 1/4 + 1/8) = 1.875 per unit
    close(te.NeuronConductance(model, "act").attribute(x, 0, n_steps=4, method="gausslegendre"),
          t([18.0, -3.0], [0.0, 0.0]), 1e-12)
    close(te.NeuronConductance(model, "act").attribute(x, 0, n_steps=4), t([11.25, -1.875], [0.0, 0.0]), 1e-12)
    # a callable selector on the layer's input: 2 * pre-activation
    close(te.NeuronGradient(model, "act").attribute(x, lambda v: 2 * v[:, 0], attribute_to_neuron_input=True),
          t([4.0, -2.0], [4.0, -2.0]))


# --------------------------------------------------------------------------- the borrowed model

UNCHANGED = ["Gradient", "IntegratedGradients", "GuidedBackprop", "Deconvolution", "FeatureAblation",
             "Conductance", "DeepLift"]


def run_cnn(name, model, x, layer="conv2", selector=(0, 3, 3)):
    """On ``make_cnn``'s model: float32, BatchNorm in train mode, a reused in-place ReLU."""
    if name == "Conductance":
        return te.NeuronConductance(model, layer).attribute(
            x, selector, target=[1, 2], n_steps=4, internal_batch_size=2
        )
    return run(name, model, x, layer, selector)


@pytest.mark.parametrize("name", UNCHANGED)
def test_model_unchanged_after_success_and_errors(name):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 8, 8)
    model = make_cnn()
    before = snapshot(model)
    calls = model.trip.state["calls"]
    result = run_cnn(name, model, x)
    per_run = model.trip.state["calls"] - calls
    assert_unchanged(model, before)
    assert torch.isfinite(result).all() and result.abs().sum() > 0
    with pytest.raises(ValueError, match="neuron_selector index 9 is out of range"):
        run_cnn(name, model, x, selector=(0, 9, 3))
    assert_unchanged(model, before)
    # the backward from a neuron after the tripwire passes through it
    for where, layer, selector in (("forward", "conv2", (0, 3, 3)), ("backward", "fc1", 1)):
        if where == "backward" and name == "FeatureAblation":
            continue
        model.trip.state.update(fire_at=model.trip.state["calls"] + min(2, per_run), where=where)  # mid-way
        with pytest.raises(RuntimeError, match=f"tripwire: {where} failed"):
            run_cnn(name, model, x, layer, selector)
        assert_unchanged(model, before)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("selector, error, match", [
    ("a", TypeError, "neuron_selector must be an int, a tuple"),
    (1.5, TypeError, "neuron_selector must be"),
    (True, TypeError, "neuron_selector must be"),
    ([1, 2, 3], TypeError, "neuron_selector must be"),
    ((1, 2.0, 3), TypeError, "neuron_selector must be"),
    ((), ValueError, "neuron_selector must not be an empty tuple"),
    ((1, slice(0, 2, -1), 3), ValueError, "neuron_selector slices must have a positive step"),
    ((1, slice(0.5, 2), 3), TypeError, "neuron_selector slices must have int bounds"),
    ((1, 2, 0, 0), ValueError, r"neuron_selector has 4 index\(es\) but .* only 3 non-batch dimension"),
    ((5, 0, 0), ValueError, r"neuron_selector index 5 is out of range for dimension 1 \(size 5\)"),
    ((0, -9, 0), ValueError, "neuron_selector index -9 is out of range for dimension 2"),
    ((0, slice(7, 9), 0), ValueError, "neuron_selector slice .* selects no neuron of dimension 2"),
    (lambda v: v[:, 0], ValueError, r"neuron_selector \(a callable\) must return one value per example"),
    (lambda v: v.sum() if v.shape[0] > 1 else v.sum().item(), ValueError,
     r"returned one value for the whole batch, and applying it to each example alone failed"),
    (lambda v: v[:, 0, 0, 0].tolist(), ValueError, r"neuron_selector \(a callable\) must return"),
])
def test_bad_neuron_selector_is_named(selector, error, match):
    with pytest.raises(error, match=match):
        te.NeuronGradient(Toy(), "conv2").attribute(images(), selector)


def test_index_on_a_layer_with_two_tensors_asks_for_a_callable():
    g = torch.Generator().manual_seed(0)
    inputs = (torch.randn(2, 3, 8, 8, dtype=DT, generator=g), torch.randn(2, 4, dtype=DT, generator=g))
    with pytest.raises(ValueError, match="neuron_selector: the layer has 2 tensors.*callable"):
        te.NeuronGradient(TwoInputs(), "mix").attribute(inputs, 1, attribute_to_neuron_input=True)


def test_bad_layer_and_arguments_are_named():
    model = Toy()
    with pytest.raises(ValueError, match="layer 'conv3' is not a module of the model; close matches: conv"):
        te.NeuronGradient(model, "conv3")
    with pytest.raises(ValueError, match="layer_call must be None or a non-negative int"):
        te.NeuronGradient(model, "conv2", layer_call=-1)
    with pytest.raises(ValueError, match="n_steps must be a positive int"):
        te.NeuronConductance(model, "conv2").attribute(images(), (0, 0, 0), target=0, n_steps=0)
    with pytest.raises(ValueError, match="neuron_selector .* must compute its values from the layer's values"):
        te.NeuronConductance(model, "conv2").attribute(images(), lambda v: torch.zeros(len(v)), target=0, n_steps=2)
    with pytest.raises(ValueError, match="target index 7 is out of range"):
        te.NeuronConductance(model, "conv2").attribute(images(), (0, 0, 0), target=7, n_steps=2)
