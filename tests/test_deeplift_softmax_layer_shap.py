"""DeepLIFT's softmax rule (hand-derived values, summation to delta, Captum where its rule
is exact) and LayerDeepLiftShap (Captum as the oracle, completeness, chunking)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchexplain.attr import DeepLift, DeepLiftShap, LayerDeepLiftShap

captum_attr = pytest.importorskip("captum.attr")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
CLOSE = dict(rtol=1e-7, atol=1e-9)


class SoftmaxNet(nn.Module):
    """Linear -> ReLU -> Linear -> softmax, the softmax written as ``how`` says."""

    def __init__(self, how: str = "module", centred: bool = False, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.lin1, self.relu, self.lin2 = nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 4)
        self.softmax, self.how = nn.Softmax(dim=1), how
        if centred:  # every column of W2 sums to zero: the logits' change sums to zero
            with torch.no_grad():
                self.lin2.weight.sub_(self.lin2.weight.mean(0, keepdim=True))
        self.double()

    def forward(self, x):
        logits = self.lin2(self.relu(self.lin1(x)))
        if self.how == "functional":
            return F.softmax(logits, dim=-1)
        if self.how == "method":
            return logits.softmax(1)
        return self.softmax(logits)


def gap(model, x, baseline, target):
    with torch.no_grad():
        return model(x)[:, target] - model(baseline)[:, target]


def test_softmax_by_hand():
    """Softmax of x = (2, 0, 0) against 0, target 0: only x_0 moves, so the whole change
    dy_0 = e^2 / (e^2 + 2) - 1/3 is x_0's. Captum's centred rule falls short of it."""
    model = nn.Sequential(nn.Linear(3, 3, bias=False), nn.Softmax(dim=1)).double()
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(3))
    x = torch.tensor([[2.0, 0.0, 0.0]], dtype=torch.float64)
    dy0 = math.exp(2) / (math.exp(2) + 2) - 1 / 3
    ours, delta = DeepLift(model).attribute(x, 0.0, target=0, return_convergence_delta=True)
    torch.testing.assert_close(ours, torch.tensor([[dy0, 0.0, 0.0]], dtype=torch.float64))
    assert abs(float(delta)) < 1e-12
    _, their_delta = captum_attr.DeepLift(copy.deepcopy(model)).attribute(
        x, 0.0, target=0, return_convergence_delta=True)
    assert abs(float(their_delta)) > 1e-2


@pytest.mark.parametrize("n", [1, 3])
def test_softmax_equals_captum_where_its_rule_is_exact(n):
    """When the logits' change sums to zero, Captum's centred rescale is exact: ours
    is then Captum's, and both sum to the output change."""
    model = SoftmaxNet(centred=True)
    torch.manual_seed(1)
    x, baseline = torch.randn(n, 5, dtype=torch.float64), torch.randn(n, 5, dtype=torch.float64)
    ours, delta = DeepLift(model).attribute(x, baseline, target=2, return_convergence_delta=True)
    theirs, their_delta = captum_attr.DeepLift(copy.deepcopy(model)).attribute(
        x, baseline, target=2, return_convergence_delta=True)
    assert ours.abs().max() > 1e-3
    torch.testing.assert_close(ours, theirs.detach(), **CLOSE)
    assert their_delta.abs().max() < 1e-8 and delta.abs().max() < 1e-10


@pytest.mark.parametrize("how", ["module", "functional", "method"])
def test_softmax_sums_to_the_output_change(how):
    """In general Captum's rule misses sum(dy) by mean(u) * sum(dx); ours sums to the
    change of the output (completeness) for every way of writing softmax, and an
    example's attributions do not depend on the others in the batch."""
    model = SoftmaxNet(how)
    torch.manual_seed(2)
    x, baseline = 3 * torch.randn(4, 5, dtype=torch.float64), torch.zeros(1, 5, dtype=torch.float64)
    ours, delta = DeepLift(model).attribute(x, baseline, target=1, return_convergence_delta=True)
    torch.testing.assert_close(ours.sum(1), gap(model, x, baseline, 1), rtol=0, atol=1e-10)
    assert delta.abs().max() < 1e-10 and ours.abs().max() > 1e-3
    alone = DeepLift(model).attribute(x[2:3], baseline, target=1)
    torch.testing.assert_close(alone, ours[2:3], **CLOSE)
    _, their_delta = captum_attr.DeepLift(SoftmaxNet()).attribute(x, baseline, target=1, return_convergence_delta=True)
    assert their_delta.abs().max() > 1e-3  # Captum's rule does not sum to delta here


def test_softmax_of_a_pure_logit_shift_gets_no_attribution():
    """Equal rows in the last layer: the logits of x and of the baseline differ by one
    shift (~3e5), which leaves softmax unchanged; float32 leaves only rounding noise
    in its change. The attributions must be zero, not that noise amplified and spread
    over the inputs (so the delta is the noise itself, as small as Captum's)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 20), nn.ReLU(), nn.Linear(20, 20), nn.ReLU(), nn.Linear(20, 10),
                          nn.Softmax(dim=1))
    with torch.no_grad():
        for layer in (model[0], model[2], model[4]):
            layer.weight.fill_(1.0)
    x = torch.arange(120.0).reshape(3, 40)
    ours, delta = DeepLift(model).attribute(x, 0.0, target=3, return_convergence_delta=True)
    assert ours.abs().max() < 1e-9
    torch.testing.assert_close(delta, -gap(model, x, torch.zeros_like(x), 3), rtol=0, atol=1e-8)


# --------------------------------------------------------------------------- LayerDeepLiftShap


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.conv1, self.relu1, self.pool = nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
        self.conv2, self.relu2, self.fc = nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Linear(16, 3)
        self.double()

    def forward(self, x):
        return self.fc(self.relu2(self.conv2(self.pool(self.relu1(self.conv1(x))))).flatten(1))


class TwoOut(nn.Module):
    def forward(self, x):
        return torch.relu(x), torch.relu(-x)


class TupleLayerNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(6)
        self.lin, self.split, self.head = nn.Linear(4, 5), TwoOut(), nn.Linear(10, 2)
        self.double()

    def forward(self, x):
        a, b = self.split(self.lin(x))
        return self.head(torch.cat([a, b], 1))


def data(shape, n=3, n_refs=4, seed=7):
    torch.manual_seed(seed)
    return torch.randn(n, *shape, dtype=torch.float64), torch.randn(n_refs, *shape, dtype=torch.float64)


@pytest.mark.parametrize(
    "layer, kwargs",
    [("conv2", {}), ("conv2", {"attribute_to_layer_input": True}), ("relu1", {}),
     ("conv2", {"multiply_by_inputs": False})],
    ids=["conv2", "conv2-input", "relu1", "local"],
)
def test_layer_deepliftshap_matches_captum(layer, kwargs):
    net, (x, refs) = ConvNet(), data((2, 8, 8))
    kwargs = dict(kwargs)
    multiply = kwargs.pop("multiply_by_inputs", True)
    theirs, their_delta = captum_attr.LayerDeepLiftShap(net, getattr(net, layer), multiply_by_inputs=multiply).attribute(
        x, refs, target=[0, 2, 1], return_convergence_delta=True, **kwargs)
    ours, delta = LayerDeepLiftShap(net, layer, multiply_by_inputs=multiply).attribute(
        x, refs, target=[0, 2, 1], return_convergence_delta=True, **kwargs)
    assert isinstance(ours, torch.Tensor) and delta.shape == (3 * 4,)
    torch.testing.assert_close(ours, theirs.detach(), **CLOSE)
    torch.testing.assert_close(delta, their_delta.detach(), rtol=0, atol=1e-9)
    if multiply:  # ReLU / max-pool network: every (example, baseline) pair sums to its gap
        assert delta.abs().max() < 1e-9


@pytest.mark.parametrize("layer", ["pool", "relu1"])
def test_layer_deepliftshap_at_a_nonlinear_layers_input_sums_to_the_gap(layer):
    """At the input of a ReLU or max-pool layer the multipliers pass that layer's own
    rescale rule: every (example, baseline) pair sums to its gap. (Captum's do not:
    their delta is far from zero there.)"""
    net, (x, refs) = ConvNet(), data((2, 8, 8))
    ours, delta = LayerDeepLiftShap(net, layer).attribute(
        x, refs, target=[0, 2, 1], return_convergence_delta=True, attribute_to_layer_input=True)
    assert ours.abs().max() > 1e-2 and delta.abs().max() < 1e-9
    _, their_delta = captum_attr.LayerDeepLiftShap(net, getattr(net, layer)).attribute(
        x, refs, target=[0, 2, 1], return_convergence_delta=True, attribute_to_layer_input=True)
    assert their_delta.abs().max() > 1e-3


def test_layer_deepliftshap_tuple_layer_custom_function_and_chunks():
    net, (x, refs) = TupleLayerNet(), data((4,), n=5, n_refs=3)

    def halved(multipliers, inputs, baselines):
        return tuple(0.5 * m * (i - b) for m, i, b in zip(multipliers, inputs, baselines))

    theirs = captum_attr.LayerDeepLiftShap(net, net.split).attribute(x, refs, target=1, custom_attribution_func=halved)
    ours = LayerDeepLiftShap(net, net.split).attribute(x, refs, target=1, custom_attribution_func=halved)
    assert isinstance(ours, tuple) and len(ours) == 2
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b.detach(), **CLOSE)
    chunked = LayerDeepLiftShap(net, net.split).attribute(x, lambda inp: refs, target=1, internal_batch_size=2)
    whole = LayerDeepLiftShap(net, net.split).attribute(x, refs, target=1, internal_batch_size=None)
    for a, b in zip(chunked, whole):
        torch.testing.assert_close(a, b, **CLOSE)
    # the mean over baselines of DeepLift against each (our DeepLiftShap at the layer's input)
    inputs_side = LayerDeepLiftShap(net, net.lin).attribute(x, refs, target=1, attribute_to_layer_input=True)
    torch.testing.assert_close(inputs_side, DeepLiftShap(net).attribute(x, refs, target=1), **CLOSE)
