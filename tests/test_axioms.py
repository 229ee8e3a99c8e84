"""Oracles without a peer library: values derived by hand on tiny models, and the
axioms the methods promise (completeness, linearity, implementation invariance,
summation-to-delta), plus rule invariance to how a model computes its ReLUs and
smoke-with-values runs on torchvision architectures."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import helpers
import torchexplain.attr as te

DT = torch.float64


close = functools.partial(helpers.close, rtol=1e-7, atol=1e-9)


def delta_ok(total, gap, rel=1e-4, abs_=1e-5):
    """Summation-to-delta within |sum(attr) - gap| <= 1e-4 |gap| + 1e-5."""
    return bool(((total - gap).abs() <= rel * gap.abs() + abs_).all())


def sums(attrs):
    parts = attrs if isinstance(attrs, tuple) else (attrs,)
    return sum(p.reshape(p.shape[0], -1).sum(1) for p in parts)


# --------------------------------------------------------------------------- values by hand


def kinked(x1, x2):
    """relu(relu(x1) - 1 - relu(x2)), the IG paper's example."""
    return F.relu(F.relu(x1) - 1 - F.relu(x2)).reshape(-1)


def test_ig_kinked_function_by_hand():
    """On the path t*(3, 1) the output is 2t - 1 for t > 1/2 and 0 before, so
    IG = (3 * 1 * 1/2, 1 * (-1) * 1/2) = (1.5, -0.5). With an even number of midpoint
    steps exactly half the steps fall beyond t = 1/2, so the sum is exact."""
    x = (torch.tensor([[3.0]], dtype=DT), torch.tensor([[1.0]], dtype=DT))
    ig = te.IntegratedGradients(kinked)
    a1, a2 = ig.attribute(x, n_steps=100, method="riemann_middle")
    close(a1, [[1.5]])
    close(a2, [[-0.5]])
    # Gauss-Legendre converges too, more slowly across the kink
    b1, b2 = ig.attribute(x, n_steps=301)
    close(b1, [[1.5]], atol=2e-2)
    close(b2, [[-0.5]], atol=2e-2)


def hidden3_net():
    """y = w2 . relu(W1 x + b1) with W1 = [[1,-2],[3,1],[-1,1]], b1 = [.5,-1,-.5], w2 = [2,-1,3]."""
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)).double().eval()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 1.0], [-1.0, 1.0]]))
        net[0].bias.copy_(torch.tensor([0.5, -1.0, -0.5]))
        net[2].weight.copy_(torch.tensor([[2.0, -1.0, 3.0]]))
        net[2].bias.zero_()
    return net


# pre-activations: (1,1) -> (-0.5, 3, -0.5): mask (0,1,0); (2,-1) -> (4.5, 4, -3.5): (1,1,0);
# (-1,2) -> (-4.5, -2, 2.5): (0,0,1). Gradient W1^T (w2 * mask); guided W1^T (relu(w2) * mask);
# deconvolution W1^T relu(w2) = W1^T (2, 0, 3) = (-1, -1) for every input.
HAND_X = [[1.0, 1.0], [2.0, -1.0], [-1.0, 2.0]]
HAND_Y = [-3.0, 5.0, 7.5]
HAND_GRAD = [[-3.0, -1.0], [-1.0, -5.0], [-3.0, 3.0]]
HAND_GUIDED = [[0.0, 0.0], [2.0, -4.0], [-3.0, 3.0]]
HAND_DECONV = [[-1.0, -1.0], [-1.0, -1.0], [-1.0, -1.0]]


def test_hand_net_forward_is_as_derived():
    net = hidden3_net()
    close(net(torch.tensor(HAND_X, dtype=DT)).reshape(-1), HAND_Y)


def test_saliency_and_input_x_gradient_by_hand():
    net, x = hidden3_net(), torch.tensor(HAND_X, dtype=DT)
    close(te.Saliency(net).attribute(x, target=0, abs=False), HAND_GRAD)
    close(te.Saliency(net).attribute(x, target=0), torch.tensor(HAND_GRAD).abs())
    close(te.InputXGradient(net).attribute(x, target=0), torch.tensor(HAND_X) * torch.tensor(HAND_GRAD))


def test_guided_backprop_by_hand():
    net, x = hidden3_net(), torch.tensor(HAND_X, dtype=DT)
    close(te.GuidedBackprop(net).attribute(x, target=0), HAND_GUIDED)


def test_deconvolution_by_hand():
    net, x = hidden3_net(), torch.tensor(HAND_X, dtype=DT)
    close(te.Deconvolution(net).attribute(x, target=0), HAND_DECONV)


class Unit(nn.Module):
    """act(w . x + b) with w = (2, -1), b = -1."""

    def __init__(self, act):
        super().__init__()
        self.lin = nn.Linear(2, 1).double()
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([[2.0, -1.0]]))
            self.lin.bias.fill_(-1.0)
        self.act = act

    def forward(self, x):
        return self.act(self.lin(x))


@pytest.mark.parametrize(
    "act, f", [(nn.ReLU(), lambda z: max(z, 0.0)), (nn.Sigmoid(), lambda z: 1 / (1 + math.exp(-z))), (torch.tanh, math.tanh)]
)
def test_deeplift_rescale_single_unit_by_hand(act, f):
    """x = (2, 1), x0 = (0, 0): z = 2, z0 = -1, multiplier m = (f(2) - f(-1)) / 3,
    attributions w * (x - x0) * m = (4m, -m), summing to f(2) - f(-1)."""
    net = Unit(act)
    x, x0 = torch.tensor([[2.0, 1.0]], dtype=DT), torch.zeros(1, 2, dtype=DT)
    m = (f(2.0) - f(-1.0)) / 3
    attrs = te.DeepLift(net).attribute(x, baselines=x0, target=0)
    close(attrs, [[4 * m, -m]])
    close(attrs.sum(), f(2.0) - f(-1.0))
    # without the input difference: the multipliers w * m
    close(te.DeepLift(net, multiply_by_inputs=False).attribute(x, baselines=x0, target=0), [[2 * m, -m]])
    # the gradient rule would give (4 f'(2), -f'(2)) instead: not the same
    assert not torch.allclose(attrs, te.InputXGradient(net).attribute(x, target=0))


def test_deeplift_rescale_two_units_by_hand():
    """y = 3 relu(2 x1 - x2 - 1) - sigmoid(x1 + x2) at x = (1.5, -0.5), x0 = (0.5, 0.5):
    pre-activations (2.5, 1) vs (-0.5, 1) -> multipliers m1 = (2.5 - 0) / 3 and, the
    sigmoid's input not changing, its gradient m2 = sig'(1). With x - x0 = (1, -1):
    attributions (6 m1 - m2, 3 m1 + m2), summing to 9 m1 = 7.5 = F(x) - F(x0)."""

    class Two(nn.Module):
        def forward(self, x):
            a = 3 * torch.relu(2 * x[:, 0] - x[:, 1] - 1)
            return a - torch.sigmoid(x[:, 0] + x[:, 1])

    x, x0 = torch.tensor([[1.5, -0.5]], dtype=DT), torch.tensor([[0.5, 0.5]], dtype=DT)
    m1 = 2.5 / 3
    s = 1 / (1 + math.exp(-1.0))
    m2 = s * (1 - s)
    attrs = te.DeepLift(Two()).attribute(x, baselines=x0)
    close(attrs, [[6 * m1 - m2, 3 * m1 + m2]])
    close(attrs.sum(), 7.5)
    with torch.no_grad():
        close(Two()(x) - Two()(x0), [7.5])


# --------------------------------------------------------------------------- completeness


class BNPoolNet(nn.Module):
    """Conv -> BN -> ReLU -> MaxPool(3, 2, 1: overlapping) -> Conv -> BN -> ReLU ->
    MaxPool -> Linear, with BN statistics that are not the identity."""

    def __init__(self, seed=0, dtype=DT):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
            nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.fc = nn.Linear(8 * 2 * 2, 5)
        randomize_bn(self)
        self.to(dtype).eval()

    def forward(self, x):
        return self.fc(self.body(x).flatten(1))


def randomize_bn(model, seed=3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.2)


images = functools.partial(helpers.images, dtype=DT)


def gaps(net, x, x0, target):
    with torch.no_grad():
        rows = torch.arange(len(x))
        return net(x)[rows, target] - net(x0.expand_as(x))[rows, target]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_deeplift_summation_to_delta_bn_maxpool_cnn(dtype):
    net, x = BNPoolNet(dtype=dtype), images(dtype=dtype)
    x0 = images(1, seed=1, dtype=dtype) * 0.5
    target = torch.tensor([0, 2, 4])
    attrs, delta = te.DeepLift(net).attribute(x, baselines=x0, target=target, return_convergence_delta=True)
    gap = gaps(net, x, x0, target)
    assert float(gap.abs().min()) > 1e-3  # a gap worth explaining
    assert delta_ok(sums(attrs), gap)
    assert delta.shape == (3,)
    assert bool((delta.abs() <= 1e-4 * gap.abs() + 1e-5).all())
    close(delta, sums(attrs) - gap, rtol=0, atol=1e-5)
    # the gradient rule does not sum to the gap here: the test can tell them apart
    assert not delta_ok(sums(gradient_times_difference(net, x, x0, target)), gap)


def gradient_times_difference(net, x, x0, target):
    return te.Saliency(net).attribute(x, target=target, abs=False) * (x - x0)


def test_deeplift_shap_completeness_mean_over_references():
    """DeepLiftShap sums to F(x) - mean_j F(r_j)."""
    net, x = BNPoolNet(seed=1), images(seed=2)
    refs = images(5, seed=3) * 0.3
    attrs, delta = te.DeepLiftShap(net).attribute(x, baselines=refs, target=1, return_convergence_delta=True)
    with torch.no_grad():
        gap = net(x)[:, 1] - net(refs)[:, 1].mean()
    assert delta_ok(sums(attrs), gap)
    assert delta.shape == (15,) and float(delta.abs().max()) < 1e-8


def test_ig_completeness_with_many_steps():
    """Smooth model: sum(IG) -> F(x) - F(x0) as the steps grow (Gauss-Legendre: fast)."""
    torch.manual_seed(4)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3), nn.Softplus()).double()
    x, x0 = images(seed=5), images(1, seed=6)
    attrs, delta = te.IntegratedGradients(net).attribute(
        x, baselines=x0, target=2, n_steps=64, return_convergence_delta=True
    )
    gap = gaps(net, x, x0, 2)
    close(sums(attrs), gap, rtol=1e-6, atol=1e-9)
    close(delta, torch.zeros(3), atol=1e-6 * float(gap.abs().max()))


def _act_pool_net(act: nn.Module, pool: nn.Module, seed=0):
    """Conv -> act -> pool -> Linear -> act (the same module again) -> Linear, on 9x9."""
    torch.manual_seed(seed)
    features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), act, pool).double()
    with torch.no_grad():
        flat = features(torch.zeros(1, 3, 9, 9, dtype=DT)).numel()
    return nn.Sequential(*features, nn.Flatten(), nn.Linear(flat, 6), act, nn.Linear(6, 3)).double().eval()


def _relative_deltas(net):
    x, x0 = images(2, seed=60, size=9), images(1, seed=61, size=9) * 0.5
    attrs, delta = te.DeepLift(net).attribute(x, baselines=x0, target=1, return_convergence_delta=True)
    gap = gaps(net, x, x0, 1)
    assert float(gap.abs().min()) > 1e-4
    close(delta, sums(attrs) - gap, rtol=0, atol=1e-10)
    return delta.abs() / gap.abs()


SUPPORTED_ACTS = [
    nn.ReLU, nn.ReLU6, nn.ELU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.GELU, nn.SiLU,
    nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh,
]


@pytest.mark.parametrize("act", SUPPORTED_ACTS, ids=lambda a: a.__name__)
def test_deeplift_summation_to_delta_every_elementwise_activation(act):
    """Chains of linear maps and elementwise activations: the rescale rule is exact."""
    assert bool((_relative_deltas(_act_pool_net(act(), nn.MaxPool2d(3))) < 1e-9).all())


POOLS = {
    "maxpool3": nn.MaxPool2d(3),
    "maxpool_overlapping_padded": nn.MaxPool2d(3, 2, 1),
    "maxpool_ceil": nn.MaxPool2d(2, 3, ceil_mode=True),
    "maxpool_dilated": nn.MaxPool2d(3, 3, dilation=2, padding=1),
    "avgpool": nn.AvgPool2d(3),
}


@pytest.mark.parametrize("pool", list(POOLS))
def test_deeplift_summation_to_delta_max_pool_variants(pool):
    assert bool((_relative_deltas(_act_pool_net(nn.ReLU(), POOLS[pool])) < 1e-9).all())


@pytest.mark.parametrize(
    "act", [nn.SELU, nn.CELU, nn.PReLU, nn.Softsign, nn.LogSigmoid, nn.Tanhshrink], ids=lambda a: a.__name__
)
def test_deeplift_summation_to_delta_more_activations(act):
    assert bool((_relative_deltas(_act_pool_net(act().double(), nn.MaxPool2d(3))) < 1e-9).all())


def test_deeplift_summation_to_delta_adaptive_max_pool():
    assert bool((_relative_deltas(_act_pool_net(nn.ReLU(), nn.AdaptiveMaxPool2d(3))) < 1e-9).all())


# --------------------------------------------------------------------------- linearity and invariance


def test_ig_linearity():
    """IG(a f + b g) = a IG(f) + b IG(g) (the same quadrature is linear in F)."""
    torch.manual_seed(8)
    f = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 1)).double()
    g = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 1), nn.Sigmoid()).double()
    a, b = 2.5, -0.75

    def h(x):
        return a * f(x) + b * g(x)

    x = torch.randn(4, 6, dtype=DT, generator=torch.Generator().manual_seed(9))
    bl = torch.randn(1, 6, dtype=DT, generator=torch.Generator().manual_seed(10))
    kw = dict(baselines=bl, n_steps=20, method="riemann_trapezoid")
    combined = te.IntegratedGradients(h).attribute(x, **kw)
    separate = a * te.IntegratedGradients(f).attribute(x, **kw) + b * te.IntegratedGradients(g).attribute(x, **kw)
    close(combined, separate, rtol=1e-9, atol=1e-12)
    assert float(combined.abs().max()) > 1e-3


def test_ig_implementation_invariance():
    """Two functionally equal nets: hidden units permuted, and one ReLU unit split into
    two halves (relu(z) = 2 relu(z / 2)). Equal functions give equal IG."""
    torch.manual_seed(11)
    a = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).double()
    b = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    perm = [2, 0, 1]
    with torch.no_grad():
        w1, b1, w2 = a[0].weight[perm], a[0].bias[perm], a[2].weight[:, perm]
        # unit 0 of the permuted layer split in two halves
        b[0].weight.copy_(torch.cat([w1, w1[:1] / 2]))
        b[0].weight[0] /= 2
        b[0].bias.copy_(torch.cat([b1, b1[:1] / 2]))
        b[0].bias[0] /= 2
        b[2].weight.copy_(torch.cat([w2, w2[:, :1]], 1))
        b[2].bias.copy_(a[2].bias)
    x = torch.randn(5, 4, dtype=DT, generator=torch.Generator().manual_seed(12))
    close(b(x), a(x).detach(), rtol=1e-12, atol=1e-12)
    for target in (0, 1):
        ia = te.IntegratedGradients(a).attribute(x, target=target, n_steps=32)
        ib = te.IntegratedGradients(b).attribute(x, target=target, n_steps=32)
        close(ib, ia, rtol=1e-9, atol=1e-12)


def test_ig_invariant_to_folding_batchnorm():
    """conv -> BN (eval) and the conv with BN folded in are the same function."""
    torch.manual_seed(13)
    conv, bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
    randomize_bn(nn.Sequential(bn))
    head = nn.Sequential(nn.Tanh(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    unfolded = nn.Sequential(conv, bn, head).double().eval()
    folded = nn.Conv2d(3, 4, 3).double()
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        folded.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        folded.bias.copy_((conv.bias - bn.running_mean) * scale + bn.bias)
    fused = nn.Sequential(folded, head).double().eval()
    x = images(seed=14)
    ia = te.IntegratedGradients(unfolded).attribute(x, target=1, n_steps=16)
    ib = te.IntegratedGradients(fused).attribute(x, target=1, n_steps=16)
    close(ib, ia, rtol=1e-8, atol=1e-11)


# --------------------------------------------------------------------------- ReLU styles


class StyledNet(nn.Module):
    """The same weights with the ReLUs (and max-pool) computed in different styles."""

    def __init__(self, style: str):
        super().__init__()
        torch.manual_seed(21)
        self.conv1 = nn.Conv2d(3, 5, 3, padding=1)
        self.conv2 = nn.Conv2d(5, 5, 3, padding=1)
        self.fc1 = nn.Linear(5 * 4 * 4, 6)
        self.fc2 = nn.Linear(6, 4)
        self.style = style
        self.relu = nn.ReLU(inplace=(style == "inplace_module"))
        if style == "modules":
            self.relu2, self.relu3 = nn.ReLU(), nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.double().eval()

    def act(self, h, i):
        s = self.style
        if s == "modules":
            return (self.relu, self.relu2, self.relu3)[i](h)
        if s in ("reused_module", "inplace_module"):
            return self.relu(h)
        if s == "functional":
            return F.relu(h)
        if s == "functional_inplace":
            return F.relu(h, inplace=True)
        if s == "tensor_method":
            return h.relu()
        if s == "tensor_inplace":
            return h.relu_()
        if s == "torch_relu":
            return torch.relu(h)
        raise AssertionError(s)

    def forward(self, x):
        h = self.act(self.conv1(x), 0)
        h = F.max_pool2d(h, 2) if self.style.startswith("functional") else self.pool(h)
        h = self.act(self.conv2(h), 1)
        return self.fc2(self.act(self.fc1(h.flatten(1)), 2))


RELU_STYLES = [
    "reused_module", "inplace_module", "functional", "functional_inplace", "tensor_method", "tensor_inplace", "torch_relu",
]


@pytest.fixture(scope="module")
def styled_reference():
    net, x = StyledNet("modules"), images(seed=22)
    x0 = images(1, seed=23) * 0.5
    refs = {
        "GuidedBackprop": te.GuidedBackprop(net).attribute(x, target=[0, 1, 3]),
        "Deconvolution": te.Deconvolution(net).attribute(x, target=[0, 1, 3]),
        "DeepLift": te.DeepLift(net).attribute(x, baselines=x0, target=[0, 1, 3]),
        "Saliency": te.Saliency(net).attribute(x, target=[0, 1, 3], abs=False),
    }
    return x, x0, refs


@pytest.mark.parametrize("style", RELU_STYLES)
def test_rules_see_every_relu_style(style, styled_reference):
    x, x0, refs = styled_reference
    net = StyledNet(style)
    target = [0, 1, 3]
    got = {
        "GuidedBackprop": te.GuidedBackprop(net).attribute(x, target=target),
        "Deconvolution": te.Deconvolution(net).attribute(x, target=target),
        "DeepLift": te.DeepLift(net).attribute(x, baselines=x0, target=target),
    }
    for name, value in got.items():
        close(value, refs[name], rtol=1e-9, atol=1e-12)
        # a rule that was silently skipped would leave the plain gradient
        assert not torch.allclose(value, refs["Saliency"], rtol=1e-3, atol=1e-6), name
    gap = gaps(net, x, x0, torch.tensor(target))
    assert delta_ok(sums(got["DeepLift"]), gap)


def test_reference_rules_differ_from_each_other(styled_reference):
    _, _, refs = styled_reference
    assert not torch.allclose(refs["GuidedBackprop"], refs["Deconvolution"], rtol=1e-3, atol=1e-6)
    for name in ("GuidedBackprop", "Deconvolution", "DeepLift"):
        assert float(refs[name].abs().max()) > 1e-6, name


def test_forward_created_relu_module_is_seen():
    """A ReLU module created inside forward (invisible to module hooks set up front)."""

    class Fresh(StyledNet):
        def act(self, h, i):
            return nn.ReLU()(h)

    net, ref_net = Fresh("modules"), StyledNet("modules")
    x = images(seed=24)
    close(te.GuidedBackprop(net).attribute(x, target=2), te.GuidedBackprop(ref_net).attribute(x, target=2))


# --------------------------------------------------------------------------- torchvision models


TV_MODELS = ["resnet18", "resnet50", "mobilenet_v3_small", "densenet121", "vgg11"]


@pytest.fixture(scope="module")
def tv():
    torchvision = pytest.importorskip("torchvision")
    cache = {}

    def get(name):
        if name not in cache:
            torch.manual_seed(0)
            cache[name] = getattr(torchvision.models, name)(weights=None).eval()
        return cache[name]

    yield get
    cache.clear()


@pytest.fixture(scope="module")
def tv_input():
    return images(1, seed=31, size=64, dtype=torch.float32)


def rel_diff(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@pytest.mark.parametrize("name", TV_MODELS)
@pytest.mark.slow
def test_torchvision_guided_and_deconv(name, tv, tv_input):
    model, x = tv(name), tv_input
    before = {k: v.clone() for k, v in model.state_dict().items()}
    target = 7
    grad = te.Saliency(model).attribute(x, target=target, abs=False)
    guided = te.GuidedBackprop(model).attribute(x, target=target)
    deconv = te.Deconvolution(model).attribute(x, target=target)
    for a in (guided, deconv):
        assert a.shape == x.shape and a.dtype == x.dtype
        assert bool(torch.isfinite(a).all()) and float(a.abs().max()) > 0
    # every torchvision ReLU (in-place, reused in residual blocks) gets the rule
    assert rel_diff(guided, grad) > 0.05
    assert rel_diff(deconv, grad) > 0.05
    assert rel_diff(guided, deconv) > 0.05
    # the borrowed model is left as found
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("name", TV_MODELS)
@pytest.mark.slow
def test_torchvision_deeplift(name, tv, tv_input):
    """Finite attributions of the input's shape everywhere; summation-to-delta on the
    nets built only from ReLU, max/avg-pool, BatchNorm, linear ops and concatenation
    (MobileNetV3's squeeze-excitation multiplies two activations, which no
    elementwise multiplier rule makes exact)."""
    model, x = tv(name), tv_input
    # a non-zero baseline: from zero, these bias-free homogeneous nets would make
    # even gradient x input sum to the gap
    x0 = images(1, seed=32, size=64, dtype=torch.float32) * 0.5
    target = 3
    attrs, delta = te.DeepLift(model).attribute(x, baselines=x0, target=target, return_convergence_delta=True)
    assert attrs.shape == x.shape and bool(torch.isfinite(attrs).all())
    assert float(attrs.abs().max()) > 0
    if name != "mobilenet_v3_small":
        gap = gaps(model, x, x0, target)
        assert delta_ok(sums(attrs), gap)
        assert delta.shape == (1,) and bool((delta.abs() <= 1e-4 * gap.abs() + 1e-5).all())
        # the rule matters: the gradient times the difference does not sum to the gap
        assert not delta_ok(sums(gradient_times_difference(model, x, x0, target)), gap)


@pytest.mark.slow
def test_resnet18_deeplift_summation_to_delta_random_baseline():
    """resnet18 with non-trivial BatchNorm statistics and a random baseline."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(1)
    model = torchvision.models.resnet18(weights=None)
    randomize_bn(model, seed=5)
    model.eval()
    x, x0 = images(2, seed=41, size=64, dtype=torch.float32), images(1, seed=42, size=64, dtype=torch.float32) * 0.5
    target = torch.tensor([10, 500])
    attrs, delta = te.DeepLift(model).attribute(x, baselines=x0, target=target, return_convergence_delta=True)
    gap = gaps(model, x, x0, target)
    assert delta_ok(sums(attrs), gap)
    assert delta.shape == (2,)
    assert bool((delta.abs() <= 1e-4 * gap.abs() + 1e-5).all())


# --------------------------------------------------------------------------- IG n_steps="auto"


def smooth_net():
    torch.manual_seed(51)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 2)).double()


def relative_delta(net, attrs, x, x0, target):
    gap = gaps(net, x, x0, target)
    return (sums(attrs) - gap).abs() / gap.abs()


@pytest.mark.parametrize("method, tol", [("gausslegendre", 1e-6), ("riemann_trapezoid", 1e-3), ("riemann_left", 1e-2)])
def test_ig_auto_steps(method, tol):
    net = smooth_net()
    x = torch.randn(3, 6, dtype=DT, generator=torch.Generator().manual_seed(52)) * 2
    x0 = torch.zeros(1, 6, dtype=DT)
    ig = te.IntegratedGradients(net)
    attrs, delta = ig.attribute(
        x, baselines=x0, target=1, n_steps="auto", tol=tol, method=method, return_convergence_delta=True
    )
    steps = delta.n_steps
    assert ig.n_steps_used == steps
    assert steps >= 16 and math.log2(steps / 16).is_integer()
    rel = relative_delta(net, attrs, x, x0, 1)
    assert bool((rel < tol).all())
    close(delta.abs() / gaps(net, x, x0, 1).abs(), rel, rtol=1e-6, atol=1e-12)
    # the same as asking for that many steps directly
    close(attrs, ig.attribute(x, baselines=x0, target=1, n_steps=steps, method=method), rtol=1e-12, atol=1e-15)
    # and minimal: half as many steps (if tried) missed the tolerance
    if steps > 16:
        fewer = ig.attribute(x, baselines=x0, target=1, n_steps=steps // 2, method=method)
        assert not bool((relative_delta(net, fewer, x, x0, 1) < tol).all())


def test_ig_auto_steps_needs_more_than_16_somewhere():
    """A tolerance that 16 steps cannot meet makes the steps double at least once."""
    net = smooth_net()
    x = torch.randn(2, 6, dtype=DT, generator=torch.Generator().manual_seed(53)) * 3
    _, delta = te.IntegratedGradients(net).attribute(
        x, target=0, n_steps="auto", tol=1e-4, method="riemann_right", return_convergence_delta=True
    )
    assert delta.n_steps >= 32


def test_ig_auto_steps_cap():
    """A tolerance it cannot reach (a kink at t = 0.4 on the path t (3, 0.5), where the
    exact IG is (3 * 0.6, -0.5 * 0.6)) stops at max_steps."""
    x = (torch.tensor([[3.0]], dtype=DT), torch.tensor([[0.5]], dtype=DT))
    ig = te.IntegratedGradients(kinked)
    attrs, delta = ig.attribute(x, n_steps="auto", tol=1e-12, max_steps=128, return_convergence_delta=True)
    assert delta.n_steps == 128 and ig.n_steps_used == 128
    assert float(delta.abs().max()) >= 1e-12  # the cap, not the tolerance, stopped it
    close(attrs[0], [[1.8]], atol=5e-2)
    close(attrs[1], [[-0.3]], atol=5e-2)


def test_ig_auto_steps_below_16_start_at_the_cap():
    x = (torch.tensor([[3.0]], dtype=DT), torch.tensor([[0.5]], dtype=DT))
    ig = te.IntegratedGradients(kinked)
    _, delta = ig.attribute(x, n_steps="auto", tol=1e-12, max_steps=4, return_convergence_delta=True)
    assert delta.n_steps == 4 and ig.n_steps_used == 4


def test_ig_auto_steps_linear_model_stops_at_16():
    torch.manual_seed(54)
    lin = nn.Linear(5, 3).double()
    x = torch.randn(4, 5, dtype=DT, generator=torch.Generator().manual_seed(55))
    attrs, delta = te.IntegratedGradients(lin).attribute(
        x, target=2, n_steps="auto", tol=1e-9, return_convergence_delta=True
    )
    assert delta.n_steps == 16
    close(attrs, lin.weight[2].detach() * x)
