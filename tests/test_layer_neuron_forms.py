"""Captum 0.9's layer and neuron forms: ``grad_kwargs`` (``materialize_grads`` for a
layer that does not reach the output), LayerIntegratedGradients over a list of
layers, neuron selectors that return a batch aggregate or give fewer indices than
the layer has dimensions, LayerFeaturePermutation, and the places where Captum's
own tests fail for reasons that are not ours (each shown by an axiom or by Captum
itself on the same draws).

Against Captum where Captum is right; hand-derived values and axioms otherwise.
"""

from __future__ import annotations

import functools
import warnings

import captum.attr as ca
import pytest
import torch
from torch import nn

import helpers
import torchexplain.attr as te

DT = torch.float64


close = functools.partial(helpers.close_to_largest, rtol=1e-7, floor=1.0)


class Spare(nn.Module):
    """lin1 -> relu -> lin2, with ``spare`` run on lin1's output but never used."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.lin1 = nn.Linear(3, 4).to(DT)
        self.relu = nn.ReLU()
        self.spare = nn.ReLU()
        self.lin2 = nn.Linear(4, 2).to(DT)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=DT))

    def forward(self, x):
        h = self.lin1(x)
        self.spare(h)
        return self.lin2(self.relu(h))


def inputs(n=3, seed=1):
    return torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=DT)


MATERIALIZE = {"materialize_grads": True}

# (class name, constructor layer, attribute keywords)
UNUSED_CASES = [
    ("LayerGradCam", "spare", {}),
    ("LayerGradientXActivation", "spare", {}),
    ("InternalInfluence", "spare", {"n_steps": 8}),
    ("LayerConductance", "spare", {"n_steps": 8}),
    ("LayerDeepLift", "spare", {}),
    ("LayerIntegratedGradients", "spare", {"n_steps": 8}),
]


@pytest.mark.parametrize("name, layer, kw", UNUSED_CASES, ids=[c[0] for c in UNUSED_CASES])
def test_materialize_grads_gives_zeros_for_an_unused_layer_as_captum(name, layer, kw):
    model, x = Spare(), inputs()
    ours = getattr(te, name)(model, layer).attribute(x, target=0, grad_kwargs=MATERIALIZE, **kw)
    assert ours.shape == ((3, 1) if name == "LayerGradCam" else (3, 4))
    assert float(ours.abs().sum()) == 0.0
    if name != "LayerConductance":  # Captum's raises here (a backward pass without allow_unused)
        close(ours, getattr(ca, name)(model, model.spare).attribute(x, target=0, grad_kwargs=MATERIALIZE, **kw))


@pytest.mark.parametrize("name, layer, kw", UNUSED_CASES, ids=[c[0] for c in UNUSED_CASES])
def test_an_unused_layer_without_materialize_grads_is_a_clear_error(name, layer, kw):
    with pytest.raises(ValueError, match=r"does not depend differentiably on the layer's values.*materialize_grads"):
        getattr(te, name)(Spare(), layer).attribute(inputs(), target=0, **kw)


@pytest.mark.parametrize("name", ["LayerGradientXActivation", "LayerIntegratedGradients"])
def test_a_list_with_an_unused_layer_gives_captums_values_and_zeros(name):
    model, x = Spare(), inputs()
    kw = {"n_steps": 8} if name == "LayerIntegratedGradients" else {}
    ours = getattr(te, name)(model, ["lin1", "spare"]).attribute(x, target=1, grad_kwargs=MATERIALIZE, **kw)
    theirs = getattr(ca, name)(model, [model.lin1, model.spare]).attribute(
        x, target=1, grad_kwargs=MATERIALIZE, **kw)
    assert isinstance(ours, list) and len(ours) == 2
    close(ours, theirs)
    assert float(ours[0].abs().sum()) > 0 and float(ours[1].abs().sum()) == 0.0
    with pytest.raises(ValueError, match=r"layer's values\[1\] has no differentiable path.*materialize_grads"):
        getattr(te, name)(model, ["lin1", "spare"]).attribute(x, target=1, **kw)


def test_grad_kwargs_reach_autograd_and_are_checked():
    model, x = Spare(), inputs()
    plain = te.LayerConductance(model, "lin1").attribute(x, target=0, n_steps=6)
    kept = te.LayerConductance(model, "lin1").attribute(x, target=0, n_steps=6, grad_kwargs={"retain_graph": True})
    close(kept, plain)
    made = te.NeuronConductance(model, "relu").attribute(x, 1, target=0, n_steps=6, grad_kwargs=MATERIALIZE)
    close(made, ca.NeuronConductance(model, model.relu).attribute(x, 1, target=0, n_steps=6))
    with pytest.raises(TypeError, match="grad_kwargs must be a dict"):
        te.LayerGradCam(model, "lin1").attribute(x, target=0, grad_kwargs=[("retain_graph", True)])
    with pytest.raises(TypeError, match=r"grad_kwargs has keyword\(s\) \['grad_outputs'\].*allowed: retain_graph"):
        te.InternalInfluence(model, "lin1").attribute(x, target=0, n_steps=4, grad_kwargs={"grad_outputs": None})
    graph = te.LayerIntegratedGradients(model, "lin1").attribute(
        x, target=0, n_steps=4, grad_kwargs={"create_graph": True})
    assert graph.requires_grad
    close(graph, te.LayerIntegratedGradients(model, "lin1").attribute(x, target=0, n_steps=4))
    with pytest.raises(ValueError, match="create_graph.*not supported by LayerDeepLift"):
        te.LayerDeepLift(model, "lin1").attribute(x, target=0, grad_kwargs={"create_graph": True})


class TwoBranches(nn.Module):
    """Two sub-models on separate inputs, one of them taking two tensors; their
    outputs add (like Captum's multi-input test models)."""

    def __init__(self):
        super().__init__()
        self.a = Spare()
        self.b = Mix()

    def forward(self, x1, x2, x3):
        return self.a(x1) + self.b(x2, x3)


class Mix(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = Spare()

    def forward(self, u, v):
        return self.inner(torch.tanh(u) * v)


def test_layer_integrated_gradients_over_a_list_of_layers_matches_captum():
    model = TwoBranches()
    xs = tuple(inputs(4, seed) for seed in (2, 3, 4))
    base = tuple(0.1 * inputs(1, seed) for seed in (5, 6, 7))
    for to_input in (False, True):
        kw = dict(target=0, n_steps=20, attribute_to_layer_input=to_input, return_convergence_delta=True)
        ours, delta = te.LayerIntegratedGradients(model, ["a", model.b]).attribute(xs, base, **kw)
        theirs, their_delta = ca.LayerIntegratedGradients(model, [model.a, model.b]).attribute(xs, base, **kw)
        assert isinstance(ours, list) and isinstance(ours[0], torch.Tensor)
        assert isinstance(ours[1], torch.Tensor if not to_input else tuple)
        close(ours, theirs, rtol=1e-7)
        close(delta, their_delta, rtol=1e-7)
    # one joint path: the layers' attributions together are complete
    ours, delta = te.LayerIntegratedGradients(model, ["a", "b"]).attribute(
        xs, base, target=1, n_steps=200, return_convergence_delta=True)
    assert float(delta.abs().max()) < 1e-3
    single = te.LayerIntegratedGradients(model, ["a"]).attribute(xs, base, target=1, n_steps=4)
    assert isinstance(single, list) and len(single) == 1
    with pytest.raises(TypeError, match="LayerConductance takes one layer"):
        te.LayerConductance(model, ["a", "b"])


def test_neuron_selector_returning_a_batch_aggregate_is_a_sum_over_examples():
    model, x = Spare(), inputs(4)
    aggregate = te.NeuronIntegratedGradients(model, "relu").attribute(x, lambda v: v[:, 1:].sum(), n_steps=16)
    per_example = te.NeuronIntegratedGradients(model, "relu").attribute(x, lambda v: v[:, 1:].sum(1), n_steps=16)
    theirs = ca.NeuronIntegratedGradients(model, model.relu).attribute(x, lambda v: v[:, 1:].sum(), n_steps=16)
    close(aggregate, per_example)
    close(aggregate, theirs)
    # a value-based method sees each example's own value: DeepLift is complete per example
    ours = te.NeuronDeepLift(model, "relu").attribute(x, lambda v: v[:, 1:].sum(), baselines=0.0)
    gap = torch.relu(model.lin1(x))[:, 1:].sum(1) - torch.relu(model.lin1(torch.zeros_like(x)))[:, 1:].sum(1)
    close(ours.sum(1), gap)


class Cube(nn.Module):
    """A conv layer of per-example shape (3, 4, 4) and a head."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.conv = nn.Conv2d(2, 3, 3, padding=1).to(DT)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(3, 2).to(DT)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=DT))

    def forward(self, x, scale=None):
        out = self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))
        return out if scale is None else out * scale[:, None]


def test_fewer_indices_leave_the_remaining_dimensions_whole():
    model = Cube()
    x = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(4), dtype=DT)
    short = te.NeuronGradient(model, "conv").attribute(x, (1,))
    full = te.NeuronGradient(model, "conv").attribute(x, (1, slice(None), slice(None)))
    close(short, full)
    close(short, ca.NeuronGradient(model, model.conv).attribute(x, (1, slice(None), slice(None))))
    # where the rest is one element, Captum takes the short form too
    close(te.NeuronGradient(model, "pool").attribute(x, (2,)), ca.NeuronGradient(model, model.pool).attribute(x, (2,)))
    close(te.NeuronDeepLift(model, "pool").attribute(x, (2,)), te.NeuronDeepLift(model, "pool").attribute(x, (2, 0, 0)))


def test_layer_feature_permutation_matches_captum_and_the_swap_of_two_examples():
    model, x = Spare(), inputs(4)
    torch.manual_seed(5)
    ours = te.LayerFeaturePermutation(model, "lin1").attribute(x, perturbations_per_eval=1)
    torch.manual_seed(5)
    theirs = ca.LayerFeaturePermutation(model, model.lin1).attribute(x, perturbations_per_eval=1)
    assert ours.shape == (8, 4)  # target=None: every output element of every example
    close(ours, theirs)
    # two examples: the only permutation swaps them, so unit j's drop is F(x) - F(x, v_j from the other)
    two = x[:2]
    got = te.LayerFeaturePermutation(model, "lin1").attribute(two, target=1)
    h = model.lin1(two)
    for j in range(4):
        swapped = h.clone()
        swapped[:, j] = h.flip(0)[:, j]
        expected = model.lin2(torch.relu(h))[:, 1] - model.lin2(torch.relu(swapped))[:, 1]
        close(got[:, j], expected)
    assert te.LayerFeaturePermutation(model, "lin1").multiplies_by_inputs


def test_guided_grad_cam_with_a_mode_interpolate_refuses_gives_empty_maps_with_a_reason():
    model = Cube()
    x = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(6), dtype=DT)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = te.GuidedGradCam(model, "conv").attribute((x, torch.ones(1, dtype=DT)), target=0,
                                                          interpolate_mode="made_up")
    assert all(a.numel() == 0 for a in ours)
    text = " ".join(str(w.message) for w in caught)
    assert "interpolate_mode='made_up'" in text and "inputs[1] has 1 dimensions" in text


def test_layer_gradient_shap_is_complete_on_every_draw():
    """Captum's test_layer_gradient_shap expects values of numpy's draws; ours come
    from torch generators. Whatever the draws, each (example, sample) row is complete
    when the model is linear after the layer."""
    model, x = Spare(), inputs(2)
    base = inputs(5, seed=9)
    attrs, delta = te.LayerGradientShap(model, "relu").attribute(
        x, base, target=0, n_samples=6, stdevs=0.01, return_convergence_delta=True,
        generator=torch.Generator().manual_seed(0))
    assert delta.shape == (12,)
    assert float(delta.abs().max()) < 1e-9
    assert float(attrs.abs().sum()) > 0


def test_layer_lrp_ignores_a_registered_module_that_never_runs():
    """Captum's LayerLRP refuses a model with an nn.Sigmoid registered but never
    called (test_lrp_creator_activation); the relevance does not depend on it."""
    model, x = Spare(), inputs(2).abs()
    plain = te.LayerLRP(model, "lin1").attribute(x, target=0)
    model.add_module("sigmoid", nn.Sigmoid())
    close(te.LayerLRP(model, "lin1").attribute(x, target=0), plain)


def test_memory_efficient_layer_gradient_x_activation_keeps_results_on_cpu():
    model, x = Spare(), inputs()
    ours = te.LayerGradientXActivation(model, "lin1", memory_efficient=True).attribute(x, target=0)
    assert ours.device.type == "cpu"
    close(ours, ca.LayerGradientXActivation(model, model.lin1, memory_efficient=True).attribute(x, target=0))


def test_bad_neuron_selectors_and_targets_raise_and_leave_no_hooks():
    """Captum's hook-removal tests expect AssertionError here; ours is a ValueError
    naming the argument, and no hook stays on the model either way."""
    model, x = Spare(), inputs()
    calls = [
        lambda: te.NeuronGradient(model, "relu").attribute(x, (9999,) * 20),
        lambda: te.NeuronIntegratedGradients(model, "relu").attribute(x, (9999,) * 20, n_steps=4),
        lambda: te.NeuronFeatureAblation(model, "relu").attribute(x, (9999,) * 20),
        lambda: te.LayerConductance(model, "lin1").attribute(x, target=(9999,) * 20, n_steps=4),
        lambda: te.LayerFeatureAblation(model, "lin1").attribute(x, target=(9999,) * 20),
        lambda: te.LayerIntegratedGradients(model, ["lin1", "spare"]).attribute(x, target=(9999,) * 20, n_steps=4),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"(neuron_selector|target) has 20 index\(es\)"):
            call()
        for m in model.modules():
            assert not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks)


def test_layer_and_neuron_signatures_begin_with_captums():
    """Captum code passes these arguments by position and by name: our constructors and
    ``attribute`` take Captum's parameters first, in Captum's order (extras after)."""
    import inspect

    names = [n for n in ca.__all__ if n.startswith(("Layer", "Neuron")) or n in ("InternalInfluence", "GuidedGradCam")]
    assert len(names) >= 24
    for name in names:
        for meth in ("__init__", "attribute"):
            if not hasattr(getattr(ca, name), meth):
                continue
            theirs = [p.name for p in inspect.signature(getattr(getattr(ca, name), meth)).parameters.values()
                      if p.kind is not p.VAR_KEYWORD]
            ours = [p.name for p in inspect.signature(getattr(getattr(te, name), meth)).parameters.values()]
            assert ours[:len(theirs)] == theirs, (name, meth, theirs, ours)
