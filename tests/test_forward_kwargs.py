"""``forward_kwargs`` on every attribution class of ``torchexplain.attr`` and
``torchexplain.cam``: each ``attribute`` takes it, and it reaches the model.

Oracles: the model takes a required keyword-only argument, so a call that drops it
fails; and the attributions equal those of the same modules with the argument fixed
inside the forward (same random draws). For the methods that gained the argument
last (Lime, KernelShap, LimeBase, RISE, LRP, LayerLRP), per-example tensors are
checked to follow their example: one example at a time, or the scale identity
``f(x; s_i) = s_i g(x)`` where the method is linear in the model's output.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

import torchexplain.attr as A
import torchexplain.cam as C
from torchexplain.attr.lime_base import default_from_interp_rep_transform
from torchexplain.attr.surrogate import WeightedLinearRegression
from torchexplain.masks import grid


class KwNet(nn.Module):
    """conv -> relu -> global average pool -> linear; ``scale`` multiplies the input."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x, *, scale):
        return self.fc(self.pool(self.relu(self.conv(x * scale))).flatten(1))


class Fixed(nn.Module):
    """The same modules with ``scale`` fixed inside the forward."""

    def __init__(self, net: KwNet, scale):
        super().__init__()
        self.net, self.scale = net, scale

    def forward(self, x):
        return self.net(x, scale=self.scale)


X = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(1))
T = [0, 2]
BASES = torch.stack([torch.zeros(3, 6, 6), X.mean(0)])
CELLS = grid(X, 3)  # 4 features of 3 x 3 pixels, shape (1, 1, 6, 6)


def _gen():
    return torch.Generator().manual_seed(0)


def _draw(inputs, **kwargs):
    return torch.randint(0, 2, (1, 4))


def _lime_base(m, net):
    return A.LimeBase(m, WeightedLinearRegression(), lambda *a, **k: 1.0, _draw, True,
                      default_from_interp_rep_transform, None)


# class name -> (build(model, net), call(method, fk)); fk is forward_kwargs or None
CASES = {
    "Saliency": (lambda m, n: A.Saliency(m), lambda a, fk: a.attribute(X, T, forward_kwargs=fk)),
    "InputXGradient": (lambda m, n: A.InputXGradient(m), lambda a, fk: a.attribute(X, T, forward_kwargs=fk)),
    "GuidedBackprop": (lambda m, n: A.GuidedBackprop(m), lambda a, fk: a.attribute(X, T, forward_kwargs=fk)),
    "Deconvolution": (lambda m, n: A.Deconvolution(m), lambda a, fk: a.attribute(X, T, forward_kwargs=fk)),
    "IntegratedGradients": (lambda m, n: A.IntegratedGradients(m),
                            lambda a, fk: a.attribute(X, target=T, n_steps=4, forward_kwargs=fk)),
    "DeepLift": (lambda m, n: A.DeepLift(m), lambda a, fk: a.attribute(X, target=T, forward_kwargs=fk)),
    "DeepLiftShap": (lambda m, n: A.DeepLiftShap(m), lambda a, fk: a.attribute(X, BASES, T, forward_kwargs=fk)),
    "GradientShap": (lambda m, n: A.GradientShap(m), lambda a, fk: a.attribute(
        X, BASES, n_samples=3, stdevs=0.1, target=T, forward_kwargs=fk, generator=_gen())),
    "NoiseTunnel": (lambda m, n: A.NoiseTunnel(A.Saliency(m)), lambda a, fk: a.attribute(
        X, nt_samples=2, stdevs=0.1, generator=_gen(), target=T, forward_kwargs=fk)),
    "LRP": (lambda m, n: A.LRP(m), lambda a, fk: a.attribute(X, T, forward_kwargs=fk)),
    "Occlusion": (lambda m, n: A.Occlusion(m),
                  lambda a, fk: a.attribute(X, (3, 2, 2), target=T, forward_kwargs=fk)),
    "FeatureAblation": (lambda m, n: A.FeatureAblation(m),
                        lambda a, fk: a.attribute(X, target=T, feature_mask=CELLS, forward_kwargs=fk)),
    "FeaturePermutation": (lambda m, n: A.FeaturePermutation(m),
                           lambda a, fk: a.attribute(X, target=T, feature_mask=CELLS, forward_kwargs=fk, seed=0)),
    "ShapleyValueSampling": (lambda m, n: A.ShapleyValueSampling(m), lambda a, fk: a.attribute(
        X, target=T, feature_mask=CELLS, n_samples=2, forward_kwargs=fk, seed=0)),
    "ShapleyValues": (lambda m, n: A.ShapleyValues(m),
                      lambda a, fk: a.attribute(X, target=T, feature_mask=CELLS, forward_kwargs=fk)),
    "KernelShap": (lambda m, n: A.KernelShap(m), lambda a, fk: a.attribute(
        X, target=T, feature_mask=CELLS, n_samples=10, seed=0, forward_kwargs=fk)),
    "Lime": (lambda m, n: A.Lime(m), lambda a, fk: a.attribute(
        X, target=T, feature_mask=CELLS, n_samples=10, seed=0, forward_kwargs=fk)),
    "LimeBase": (_lime_base, lambda a, fk: (torch.manual_seed(0), a.attribute(
        X[:1], target=0, n_samples=10, forward_kwargs=fk, feature_mask=CELLS, baselines=0.0))[1]),
    "RISE": (lambda m, n: A.RISE(m),
             lambda a, fk: a.attribute(X, T, n_masks=8, grid_size=2, seed=0, forward_kwargs=fk)),
    "DataLoaderAttribution": (lambda m, n: A.DataLoaderAttribution(A.FeatureAblation(m)),
                              lambda a, fk: a.attribute([X, X[:1]], feature_mask=CELLS, forward_kwargs=fk)),
    "GuidedGradCam": (lambda m, n: A.GuidedGradCam(m, n.conv), lambda a, fk: a.attribute(X, T, forward_kwargs=fk)),
    "LayerActivation": (lambda m, n: A.LayerActivation(m, n.conv), lambda a, fk: a.attribute(X, forward_kwargs=fk)),
    "LayerGradientXActivation": (lambda m, n: A.LayerGradientXActivation(m, n.conv),
                                 lambda a, fk: a.attribute(X, T, forward_kwargs=fk)),
    "LayerGradCam": (lambda m, n: A.LayerGradCam(m, n.conv), lambda a, fk: a.attribute(X, T, forward_kwargs=fk)),
    "InternalInfluence": (lambda m, n: A.InternalInfluence(m, n.conv),
                          lambda a, fk: a.attribute(X, target=T, n_steps=4, forward_kwargs=fk)),
    "LayerConductance": (lambda m, n: A.LayerConductance(m, n.conv),
                         lambda a, fk: a.attribute(X, target=T, n_steps=4, forward_kwargs=fk)),
    "LayerIntegratedGradients": (lambda m, n: A.LayerIntegratedGradients(m, n.conv),
                                 lambda a, fk: a.attribute(X, target=T, n_steps=4, forward_kwargs=fk)),
    "LayerDeepLift": (lambda m, n: A.LayerDeepLift(m, n.conv),
                      lambda a, fk: a.attribute(X, target=T, forward_kwargs=fk)),
    "LayerDeepLiftShap": (lambda m, n: A.LayerDeepLiftShap(m, n.conv),
                          lambda a, fk: a.attribute(X, BASES, T, forward_kwargs=fk)),
    "LayerGradientShap": (lambda m, n: A.LayerGradientShap(m, n.conv), lambda a, fk: a.attribute(
        X, BASES, n_samples=3, stdevs=0.1, target=T, forward_kwargs=fk, generator=_gen())),
    "LayerFeatureAblation": (lambda m, n: A.LayerFeatureAblation(m, n.conv),
                             lambda a, fk: a.attribute(X, target=T, forward_kwargs=fk)),
    "LayerFeaturePermutation": (lambda m, n: A.LayerFeaturePermutation(m, n.conv),
                                lambda a, fk: a.attribute(X, target=T, forward_kwargs=fk, seed=0)),
    "LayerLRP": (lambda m, n: A.LayerLRP(m, n.conv), lambda a, fk: a.attribute(X, T, forward_kwargs=fk)),
    "NeuronGradient": (lambda m, n: A.NeuronGradient(m, n.fc), lambda a, fk: a.attribute(X, 1, forward_kwargs=fk)),
    "NeuronGuidedBackprop": (lambda m, n: A.NeuronGuidedBackprop(m, n.fc),
                             lambda a, fk: a.attribute(X, 1, forward_kwargs=fk)),
    "NeuronDeconvolution": (lambda m, n: A.NeuronDeconvolution(m, n.fc),
                            lambda a, fk: a.attribute(X, 1, forward_kwargs=fk)),
    "NeuronIntegratedGradients": (lambda m, n: A.NeuronIntegratedGradients(m, n.fc),
                                  lambda a, fk: a.attribute(X, 1, n_steps=4, forward_kwargs=fk)),
    "NeuronDeepLift": (lambda m, n: A.NeuronDeepLift(m, n.fc), lambda a, fk: a.attribute(X, 1, forward_kwargs=fk)),
    "NeuronDeepLiftShap": (lambda m, n: A.NeuronDeepLiftShap(m, n.fc),
                           lambda a, fk: a.attribute(X, 1, BASES, forward_kwargs=fk)),
    "NeuronGradientShap": (lambda m, n: A.NeuronGradientShap(m, n.fc), lambda a, fk: (torch.manual_seed(0), a.attribute(
        X, 1, BASES, n_samples=3, stdevs=0.1, forward_kwargs=fk))[1]),
    "NeuronFeatureAblation": (lambda m, n: A.NeuronFeatureAblation(m, n.fc),
                              lambda a, fk: a.attribute(X, 1, feature_mask=CELLS, forward_kwargs=fk)),
    "NeuronConductance": (lambda m, n: A.NeuronConductance(m, n.conv),
                          lambda a, fk: a.attribute(X, (1, 2, 2), target=T, n_steps=4, forward_kwargs=fk)),
}
for _name in ("CAM", "EigenCAM", "GradCAM", "GradCAMPlusPlus", "HiResCAM", "LayerCAM", "XGradCAM", "ScoreCAM",
              "AblationCAM"):
    CASES[_name] = (lambda m, n, cls=getattr(C, _name): cls(m, target_layer=n.conv),  # noqa: B008 (binds the class)
                    lambda a, fk: a.attribute(X, T, forward_kwargs=fk))

#: classes that are only bases of the others (their ``attribute`` is the subclasses'), and the LLM
#: wrappers, which take an interpretable input and call the model with token ids themselves
BASES_ONLY = {"BaseCAM", "GradientCAM", "LLMAttribution", "LLMGradientAttribution", "RemoteLLMAttribution"}


def _classes() -> dict:
    found = {}
    for module in (A, C):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) and callable(getattr(obj, "attribute", None)) and name not in BASES_ONLY:
                found[name] = obj
    return found


def test_every_attribute_takes_forward_kwargs():
    classes = _classes()
    assert len(classes) >= 50
    missing = []
    for name, cls in classes.items():
        params = inspect.signature(cls.attribute).parameters
        if "forward_kwargs" in params:
            assert params["forward_kwargs"].default is None, name
        elif not (name == "NoiseTunnel" and any(p.kind is p.VAR_KEYWORD for p in params.values())):
            missing.append(name)  # (NoiseTunnel hands its **kwargs to the method it wraps)
    assert not missing, f"attribute without forward_kwargs: {missing}"
    assert set(CASES) == set(classes), "teach CASES how to call the new class(es)"


def _flat(result) -> list:
    if isinstance(result, torch.Tensor):
        return [result]
    return [t for part in result for t in _flat(part)]


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_kwargs_reach_the_model(name):
    build, call = CASES[name]
    net = KwNet().eval()
    scale = 1.5
    torch.manual_seed(0)
    got = _flat(call(build(net, net), {"scale": scale}))
    torch.manual_seed(0)
    expected = _flat(call(build(Fixed(net, scale), net), None))
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-7)
    assert any(bool(e.abs().sum() > 0) for e in expected), "a test on all-zero attributions shows nothing"
    with pytest.raises(TypeError, match="scale"):  # the keyword is required: without it the call fails
        call(build(net, net), None)


def _alone(name, net, scale):
    """Each example explained alone, with its own row of ``scale``."""
    build, _ = CASES[name]
    out = []
    for i in range(2):
        method = build(Fixed(net, scale[i : i + 1]), net)
        if name == "RISE":
            out.append(method.attribute(X[i : i + 1], T[i], n_masks=8, grid_size=2, seed=0))
        else:
            out.append(method.attribute(X[i : i + 1], T[i]))
    return torch.cat(out)


@pytest.mark.parametrize("name", ["LRP", "LayerLRP", "RISE"])
def test_batched_forward_kwargs_follow_their_example(name):
    net = KwNet().eval()
    scale = torch.tensor([0.5, -2.0]).view(2, 1, 1, 1)
    build, call = CASES[name]
    got = call(build(net, net), {"scale": scale})
    torch.testing.assert_close(got, _alone(name, net, scale), rtol=1e-5, atol=1e-6)


class Scaled(nn.Module):
    """``f(x; s) = s_i * g(x)_i``, rows of ``s`` per example."""

    def __init__(self, net: KwNet):
        super().__init__()
        self.net = net

    def forward(self, x, *, s):
        return self.net(x, scale=1.0) * s.view(-1, 1)


@pytest.mark.parametrize("name", ["Lime", "KernelShap"])
def test_batched_forward_kwargs_scale_the_surrogate_by_example(name):
    """With the same samples, a least-squares surrogate of ``s_i * g`` has ``s_i``
    times the coefficients of the surrogate of ``g``."""
    net = KwNet().eval()
    s = torch.tensor([3.0, -0.5])
    cls = getattr(A, name)
    kwargs = dict(target=T, feature_mask=CELLS, n_samples=12, seed=0)
    got = cls(Scaled(net)).attribute(X, forward_kwargs={"s": s}, **kwargs)
    plain = cls(Fixed(net, 1.0)).attribute(X, **kwargs)
    torch.testing.assert_close(got, plain * s.view(2, 1, 1, 1), rtol=1e-4, atol=1e-6)
    assert plain.abs().sum() > 0


def test_lime_base_repeats_forward_kwargs_for_every_sample():
    net = KwNet().eval()
    scale = torch.tensor([[[[2.0]]]])  # batched over the one example
    build, call = CASES["LimeBase"]
    got = call(build(net, net), {"scale": scale})
    torch.testing.assert_close(got, call(build(Fixed(net, scale), net), None))
    torch.manual_seed(0)
    batched = build(net, net).attribute(X[:1], target=0, n_samples=10, perturbations_per_eval=4,
                                        forward_kwargs={"scale": scale}, feature_mask=CELLS, baselines=0.0)
    torch.testing.assert_close(batched, got, rtol=1e-5, atol=1e-6)
