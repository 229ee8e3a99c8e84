"""Layer attributions against Captum 0.9, and where Captum is wrong, against hand
constructions and axioms.

Captum comparisons run in float64: path methods differentiate through ReLU kinks,
where float32 rounding of the interpolated points moves results by up to 1e-3
relative between two correct implementations.
"""

from __future__ import annotations

import copy

import captum.attr as ca
import pytest
import torch
import torchvision
from test_model_unchanged import assert_unchanged, snapshot
from torch import nn

import helpers
import torchexplain.attr as te

close = helpers.close_to_largest


class Net(nn.Module):
    """conv -> relu -> maxpool -> conv -> relu -> linear, with a second input added
    after the first conv and an extra scale argument."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 6, 3)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(6 * 2 * 2, 5)

    def forward(self, x, extra=None, scale=1.0):
        h = self.conv1(x)
        if extra is not None:
            h = h + extra
        h = self.pool(self.relu1(h))
        h = self.relu2(self.conv2(h))
        return self.fc(h.flatten(1)) * scale


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return Net().eval().double()


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 3, 10, 10, generator=g, dtype=torch.float64)
    b = 0.1 * torch.randn(3, 3, 10, 10, generator=g, dtype=torch.float64)
    return x, b, torch.tensor([0, 2, 4])


@pytest.fixture(scope="module")
def resnets():
    """resnet18 as shipped (in-place ReLUs) and a copy whose ReLUs are not in-place,
    which Captum's layer methods need."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval().double()
    plain = copy.deepcopy(model)
    for m in plain.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return model, plain


LAYERS = ["conv1", "relu1", "pool", "conv2"]


# --------------------------------------------------------------------------- toy net, every method


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("to_input", [False, True])
def test_one_pass_methods_match_captum(net, data, layer, to_input):
    x, _, t = data
    module = getattr(net, layer)
    close(te.LayerActivation(net, layer).attribute(x, attribute_to_layer_input=to_input),
          ca.LayerActivation(net, module).attribute(x, attribute_to_layer_input=to_input))
    for mult in (True, False):
        close(te.LayerGradientXActivation(net, layer, multiply_by_inputs=mult).attribute(
                  x, target=t, attribute_to_layer_input=to_input),
              ca.LayerGradientXActivation(net, module, multiply_by_inputs=mult).attribute(
                  x, target=t, attribute_to_layer_input=to_input))
    for relu in (True, False):
        for summed in (True, False):
            kw = dict(target=t, attribute_to_layer_input=to_input, relu_attributions=relu, attr_dim_summation=summed)
            close(te.LayerGradCam(net, layer).attribute(x, **kw), ca.LayerGradCam(net, module).attribute(x, **kw))


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
def test_path_methods_match_captum(net, data, layer, method):
    x, b, t = data
    module = getattr(net, layer)
    kw = dict(baselines=b, target=t, n_steps=7, method=method)
    for ours, theirs in [(te.LayerIntegratedGradients, ca.LayerIntegratedGradients),
                         (te.LayerConductance, ca.LayerConductance)]:
        a, d = ours(net, layer).attribute(x, return_convergence_delta=True, internal_batch_size=4, **kw)
        c, dc = theirs(net, module).attribute(x, return_convergence_delta=True, **kw)
        close(a, c)
        close(d, dc, rtol=1e-6)
    close(te.InternalInfluence(net, layer).attribute(x, internal_batch_size=5, **kw),
          ca.InternalInfluence(net, module).attribute(x, **kw))


@pytest.mark.parametrize("layer", LAYERS)
def test_layer_input_path_methods_match_captum(net, data, layer):
    x, b, t = data
    module = getattr(net, layer)
    kw = dict(baselines=b, target=t, n_steps=6, attribute_to_layer_input=True)
    for ours, theirs in [(te.LayerIntegratedGradients, ca.LayerIntegratedGradients),
                         (te.LayerConductance, ca.LayerConductance), (te.InternalInfluence, ca.InternalInfluence)]:
        close(ours(net, layer).attribute(x, **kw), theirs(net, module).attribute(x, **kw))


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.slow
def test_deeplift_and_ablation_match_captum(net, data, layer):
    """Captum's DeepLift is wrong through max-pooling (its sums miss F(x) - F(x0)), so
    attributions whose gradient crosses the pool are checked by summation-to-delta,
    the others against Captum."""
    x, b, t = data
    module = getattr(net, layer)
    for to_input in (False, True):
        a, d = te.LayerDeepLift(net, layer).attribute(
            x, b, target=t, return_convergence_delta=True, attribute_to_layer_input=to_input)
        assert float(d.abs().max()) < 1e-10
        if layer == "conv2" or (layer == "pool" and not to_input):
            close(a, ca.LayerDeepLift(net, module).attribute(x, b, target=t, attribute_to_layer_input=to_input))
        kw = dict(target=t, layer_baselines=0.25, attribute_to_layer_input=to_input)
        close(te.LayerFeatureAblation(net, layer).attribute(x, perturbations_per_eval=3, **kw),
              ca.LayerFeatureAblation(net, module).attribute(x, **kw))


def test_deeplift_without_multiplying_and_custom_function(net, data):
    x, b, t = data
    close(te.LayerDeepLift(net, "conv2", multiply_by_inputs=False).attribute(x, b, target=t),
          ca.LayerDeepLift(net, net.conv2, multiply_by_inputs=False).attribute(x, b, target=t))

    def custom(mult, xs, refs):
        return tuple(m * (a - r) ** 2 for m, a, r in zip(mult, xs, refs))

    close(te.LayerDeepLift(net, "conv2").attribute(x, b, target=t, custom_attribution_func=custom),
          ca.LayerDeepLift(net, net.conv2).attribute(x, b, target=t, custom_attribution_func=custom))


def test_layer_feature_ablation_with_mask(net, data):
    x, _, t = data
    mask = torch.arange(6).reshape(1, 6, 1, 1).expand(1, 6, 2, 2) % 3  # channels in 3 groups
    close(te.LayerFeatureAblation(net, "conv2").attribute(x, target=t, layer_mask=mask),
          ca.LayerFeatureAblation(net, net.conv2).attribute(x, target=t, layer_mask=mask))


def test_gradient_shap_matches_captum_where_deterministic(net, data):
    """After relu2 the model is linear, so the layer gradient does not depend on the
    random path point; with one baseline row nothing else is random."""
    x, b, t = data
    a, d = te.LayerGradientShap(net, "relu2").attribute(x, b[:1], target=t, n_samples=4, return_convergence_delta=True)
    c, dc = ca.LayerGradientShap(net, net.relu2).attribute(x, b[:1], target=t, n_samples=4, return_convergence_delta=True)
    close(a, c)
    close(d, dc, rtol=1e-6)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    r1 = te.LayerGradientShap(net, "conv1").attribute(x, b, target=t, n_samples=3, stdevs=0.1, generator=g1)
    r2 = te.LayerGradientShap(net, "conv1").attribute(x, b, target=t, n_samples=3, stdevs=0.1, generator=g2,
                                                      internal_batch_size=2)
    torch.testing.assert_close(r1, r2)


def test_guided_grad_cam_and_interpolate_match_captum(net, data):
    x, _, t = data
    for mode in ("nearest", "bilinear"):
        close(te.GuidedGradCam(net, "conv2").attribute(x, target=t, interpolate_mode=mode),
              ca.GuidedGradCam(net, net.conv2).attribute(x, target=t, interpolate_mode=mode))
    cam = torch.randn(2, 1, 3, 3, dtype=torch.float64)
    for mode in ("nearest", "bilinear", "area"):
        close(te.LayerAttribution.interpolate(cam, (7, 5), mode), ca.LayerAttribution.interpolate(cam, (7, 5), mode))


def test_extra_args_tuple_inputs_and_target_forms(net, data):
    x, b, t = data
    extra = 0.3 * torch.randn(3, 4, 8, 8, dtype=torch.float64)
    for target in (2, t.tolist(), t):
        kw = dict(target=target, additional_forward_args=(2.0,))
        close(te.LayerIntegratedGradients(net, "conv2").attribute((x, extra), baselines=(b, 0.0), n_steps=5, **kw),
              ca.LayerIntegratedGradients(net, net.conv2).attribute((x, extra), baselines=(b, 0.0), n_steps=5, **kw))
        close(te.LayerConductance(net, "relu1").attribute((x, extra), n_steps=5, **kw),
              ca.LayerConductance(net, net.relu1).attribute((x, extra), n_steps=5, **kw))
        close(te.LayerGradientXActivation(net, "pool").attribute((x, extra), **kw),
              ca.LayerGradientXActivation(net, net.pool).attribute((x, extra), **kw))


def test_multiple_layers_give_a_list(net, data):
    x, _, t = data
    ours = te.LayerGradientXActivation(net, ["conv1", net.conv2]).attribute(x, target=t)
    theirs = ca.LayerGradientXActivation(net, [net.conv1, net.conv2]).attribute(x, target=t)
    assert isinstance(ours, list) and len(ours) == 2
    for a, c in zip(ours, theirs):
        close(a, c)
    acts = te.LayerActivation(net, ["relu1", "relu2"]).attribute(x)
    close(acts[1], ca.LayerActivation(net, net.relu2).attribute(x))


def test_chunking_does_not_change_results(net, data):
    x, b, t = data
    ref = te.LayerConductance(net, "conv2").attribute(x, b, target=t, n_steps=9, internal_batch_size=None)
    for chunk in (1, 4, 7, "auto"):
        close(te.LayerConductance(net, "conv2").attribute(x, b, target=t, n_steps=9, internal_batch_size=chunk), ref,
              rtol=1e-10)


# --------------------------------------------------------------------------- text: embeddings


class TextNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(20, 6, padding_idx=0)
        self.proj = nn.Linear(6, 6)
        self.out = nn.Linear(6, 3)

    def forward(self, tokens, mask):
        h = torch.tanh(self.proj(self.embedding(tokens)))
        return self.out((h * mask.unsqueeze(-1)).sum(1))


def test_layer_integrated_gradients_on_embedding_matches_captum():
    torch.manual_seed(0)
    model = TextNet().double().eval()
    tokens = torch.tensor([[3, 7, 11, 2, 0], [5, 5, 1, 9, 4]])
    mask = torch.tensor([[1.0, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.float64)
    base = torch.zeros_like(tokens)
    kw = dict(baselines=base, target=1, additional_forward_args=(mask,), n_steps=20, return_convergence_delta=True)
    a, d = te.LayerIntegratedGradients(model, "embedding").attribute(tokens, **kw)
    c, dc = ca.LayerIntegratedGradients(model, model.embedding).attribute(tokens, **kw)
    close(a, c)
    torch.testing.assert_close(d, dc, rtol=1e-5, atol=1e-9)
    assert a.shape == (2, 5, 6)
    # attributing to the projection's input is attributing to the embedding's output
    a_in = te.LayerIntegratedGradients(model, "proj").attribute(tokens, attribute_to_layer_input=True, **kw)[0]
    c_in = ca.LayerIntegratedGradients(model, model.proj).attribute(tokens, attribute_to_layer_input=True, **kw)[0]
    close(a_in, c_in)
    close(a_in, a, rtol=1e-10)


# --------------------------------------------------------------------------- resnet18: in-place and reuse


@pytest.mark.parametrize("layer", ["layer1.0.bn1", "layer3", "layer2.0.conv2"])
@pytest.mark.slow
def test_inplace_relu_after_layer_matches_captum_on_plain_copy(resnets, layer):
    """In torchvision's ResNet, bn1 is followed by an in-place ReLU: Captum's
    LayerIntegratedGradients raises there (its replaced output is a leaf that the ReLU
    modifies) and its activations would be read after the ReLU. Ours on the model as
    shipped equals Captum's on a copy whose ReLUs are not in-place."""
    model, plain = resnets
    module = dict(plain.named_modules())[layer]
    torch.manual_seed(2)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    t = [1, 7]
    close(te.LayerActivation(model, layer).attribute(x), ca.LayerActivation(plain, module).attribute(x))
    close(te.LayerGradientXActivation(model, layer).attribute(x, target=t),
          ca.LayerGradientXActivation(plain, module).attribute(x, target=t))
    kw = dict(baselines=0.0, target=t, n_steps=4)
    close(te.LayerIntegratedGradients(model, layer).attribute(x, **kw),
          ca.LayerIntegratedGradients(plain, module).attribute(x, **kw))
    close(te.LayerConductance(model, layer).attribute(x, **kw), ca.LayerConductance(plain, module).attribute(x, **kw))


@pytest.mark.slow
def test_layer_deeplift_sums_to_delta_on_resnet18(resnets):
    """Captum's DeepLift cannot run on resnet18 (reused in-place ReLUs). Summation
    to delta holds for layers that cut the graph (not inside a residual block, whose
    skip connection bypasses them)."""
    model, _ = resnets
    torch.manual_seed(3)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    b = 0.1 * torch.randn(2, 3, 32, 32, dtype=torch.float64)
    for layer in ("maxpool", "layer2", "layer4.0"):
        attr, delta = te.LayerDeepLift(model, layer).attribute(x, b, target=[3, 4], return_convergence_delta=True)
        with torch.no_grad():
            out = model(x)[[0, 1], [3, 4]] - model(b)[[0, 1], [3, 4]]
        assert float(delta.abs().max()) <= 1e-6 * float(out.abs().max()) + 1e-8


def test_reused_layer_needs_layer_call_and_then_attributes_to_that_run():
    torch.manual_seed(0)
    act = nn.Linear(4, 4)

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.block, self.head = act, nn.Linear(4, 2)

        def forward(self, x):
            return self.head(torch.tanh(self.block(torch.tanh(self.block(x)))))

    class Distinct(nn.Module):
        def __init__(self):
            super().__init__()
            self.first, self.second, self.head = copy.deepcopy(act), copy.deepcopy(act), None

        def forward(self, x):
            return self.head(torch.tanh(self.second(torch.tanh(self.first(x)))))

    shared = Shared().double()
    distinct = Distinct().double()
    distinct.head = shared.head
    x = torch.randn(3, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="ran 2 times.*layer_call"):
        te.LayerGradientXActivation(shared, "block").attribute(x, target=1)
    for call, name in ((0, "first"), (1, "second")):
        for cls, kw in ((te.LayerGradientXActivation, {}), (te.LayerIntegratedGradients, {"n_steps": 5}),
                        (te.LayerConductance, {"n_steps": 5})):
            ours = cls(shared, "block", layer_call=call).attribute(x, target=1, **kw)
            hand = cls(distinct, name).attribute(x, target=1, **kw)
            close(ours, hand, rtol=1e-12)
    with pytest.raises(ValueError, match="layer_call=2 but layer 'block' ran only 2"):
        te.LayerActivation(shared, "block", layer_call=2).attribute(x)


# --------------------------------------------------------------------------- bad input, model unchanged


def test_bad_layer_arguments(net, data):
    with pytest.raises(ValueError, match="close matches: conv2, conv1"):
        te.LayerGradCam(net, "conv3")
    with pytest.raises(ValueError, match="not a submodule"):
        te.LayerIntegratedGradients(net, nn.Conv2d(1, 1, 1))
    with pytest.raises(TypeError, match="layer must be an nn.Module or its dotted name"):
        te.LayerConductance(net, 3)
    with pytest.raises(ValueError, match="layer_call"):
        te.LayerActivation(net, "conv1", layer_call=-1)
    unused = nn.Linear(2, 2)
    net.unused = unused
    try:
        with pytest.raises(ValueError, match="did not run"):
            te.LayerActivation(net, "unused").attribute(data[0])
    finally:
        del net.unused


def test_model_unchanged_after_success_and_error(net, data):
    x, b, t = data
    before = snapshot(net)
    te.LayerIntegratedGradients(net, "relu1").attribute(x, b, target=t, n_steps=3)
    te.LayerDeepLift(net, "pool").attribute(x, b, target=t)
    te.LayerFeatureAblation(net, "conv2").attribute(x, target=t)
    assert_unchanged(net, before)
    with pytest.raises(ValueError, match="target index 9"):
        te.LayerConductance(net, "conv2").attribute(x, b, target=9, n_steps=3)
    assert_unchanged(net, before)
