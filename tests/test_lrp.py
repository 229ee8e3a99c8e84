"""LRP: Captum as an oracle where it is right, hand-derived values, one-line matrix
formulas per rule, conservation, torchvision architectures, the borrowed model, and the
batch-norm canonizer."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchexplain.attr.lrp import (
    LRP,
    AlphaBeta,
    Composite,
    Epsilon,
    EpsilonAlpha2Beta1,
    EpsilonGammaBox,
    EpsilonPlus,
    Gamma,
    Identity,
    ZBox,
    ZPlus,
)
from torchexplain.core.hooks.relevance import Term

captum_attr = pytest.importorskip("captum.attr")
captum_rules = pytest.importorskip("captum.attr._utils.lrp_rules")

CLOSE = dict(rtol=1e-5, atol=1e-8)
LRP0 = {nn.Module: Epsilon(0.0)}  # every op of every module: LRP-0


# --------------------------------------------------------------------------- models


class Plain(nn.Module):
    """Captum-compatible: every leaf module is of a supported type and used once."""

    def __init__(self, bn: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4) if bn else None
        self.relu1, self.pool1 = nn.ReLU(), nn.MaxPool2d(2)
        self.conv2, self.relu2, self.pool2 = nn.Conv2d(4, 6, 3), nn.ReLU(), nn.AvgPool2d(2)
        self.fc1, self.relu3, self.fc2 = nn.Linear(24, 8), nn.ReLU(), nn.Linear(8, 5)

    def forward(self, x):
        x = self.conv1(x)
        x = self.pool1(self.relu1(x if self.bn is None else self.bn(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.fc2(self.relu3(self.fc1(x.flatten(1))))


class Functional(nn.Module):
    """``Plain``'s weights, with functional, in-place and one reused activation."""

    def __init__(self, plain: Plain):
        super().__init__()
        self.p = plain
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        x = F.max_pool2d(torch.relu_(self.p.conv1(x)), 2)
        x = F.avg_pool2d(self.act(self.p.conv2(x)), 2)
        return self.p.fc2(self.act(self.p.fc1(x.view(x.shape[0], -1))))


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.relu1, self.pool = nn.Conv2d(2, 3, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2)
        self.dense, self.relu2 = nn.Linear(5, 4), nn.ReLU()
        self.head = nn.Linear(16, 3)

    def forward(self, image, vector):
        a = self.pool(self.relu1(self.conv(image))).flatten(1)
        return self.head(torch.cat([a, self.relu2(self.dense(vector))], 1))


def plain(bn=False, seed=0):
    torch.manual_seed(seed)
    model = Plain(bn).eval()
    if bn:
        with torch.no_grad():
            model.bn.running_mean.uniform_(-0.5, 0.5)
            model.bn.running_var.uniform_(0.5, 2.0)
            model.bn.weight.uniform_(0.5, 1.5)
            model.bn.bias.uniform_(-0.2, 0.2)
    return model


def captum(model, inputs, target, rules=None, **kwargs):
    model = copy.deepcopy(model)  # Captum writes rules onto modules
    for name, rule in (rules or {}).items():
        model.get_submodule(name).rule = rule
    return captum_attr.LRP(model).attribute(inputs, target=target, return_convergence_delta=True, **kwargs)


# --------------------------------------------------------------------------- Captum as oracle


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("target", [2, [0, 2, 4], torch.tensor([1, 3, 0])], ids=["int", "list", "tensor"])
def test_matches_captum_default(target):
    model, x = plain(), torch.randn(3, 3, 12, 12)
    ours, delta = LRP(model).attribute(x, target=target, return_convergence_delta=True)
    theirs, their_delta = captum(model, x, target)
    assert ours.shape == x.shape and not ours.requires_grad
    torch.testing.assert_close(ours, theirs.detach(), **CLOSE)
    torch.testing.assert_close(delta, their_delta.detach(), rtol=1e-5, atol=1e-7)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_matches_captum_tuple_inputs():
    torch.manual_seed(1)
    model, inputs = TwoInputs().eval(), (torch.randn(2, 2, 6, 6), torch.randn(2, 5))
    ours, delta = LRP(model).attribute(inputs, target=[1, 2], return_convergence_delta=True)
    theirs, their_delta = captum(model, inputs, [1, 2])
    assert isinstance(ours, tuple) and len(ours) == 2
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b.detach(), **CLOSE)
    torch.testing.assert_close(delta, their_delta.detach(), rtol=1e-5, atol=1e-7)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(
    "ours, theirs",
    [
        (
            {"conv2": Gamma(), "fc1": Epsilon(0.1)},
            {"conv2": captum_rules.GammaRule(), "fc1": captum_rules.EpsilonRule(0.1)},
        ),
        (
            {nn.Conv2d: Gamma(0.5, set_bias_to_zero=True)},
            {n: captum_rules.GammaRule(0.5, True) for n in ("conv1", "conv2")},
        ),
        # Captum's alpha1-beta0 keeps x whole: the same as z+ on non-negative inputs without bias
        ({nn.Conv2d: ZPlus()}, {n: captum_rules.Alpha1_Beta0_Rule(set_bias_to_zero=True) for n in ("conv1", "conv2")}),
        ({"bn": Identity()}, {"bn": captum_rules.IdentityRule()}),
        ({}, {}),  # batch norm under the default epsilon rule
    ],
    ids=["gamma-epsilon", "gamma-nobias", "zplus", "identity-bn", "epsilon-bn"],
)
def test_rules_match_captum(ours, theirs):
    model, x = plain(bn=True), torch.rand(3, 3, 12, 12)
    got = LRP(model, rules=ours).attribute(x, target=[0, 2, 4])
    expected, _ = captum(model, x, [0, 2, 4], theirs)
    torch.testing.assert_close(got, expected.detach(), **CLOSE)


def test_functional_inplace_and_reused_activations_match_module_form():
    """The same weights, activations as modules (Captum is right there) or as F.relu,
    relu_ and one reused in-place ReLU module: the same relevance."""
    model, x = plain(), torch.randn(2, 3, 12, 12)
    expected = LRP(model).attribute(x, target=1)
    got = LRP(Functional(model)).attribute(x, target=1)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0.0)


# --------------------------------------------------------------------------- hand-derived values


def tiny():
    """x (2) -> Linear(W1, b1) -> ReLU -> Linear(W2, b2) -> 1 output."""
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -1.0], [2.0, 1.0]]))
        model[0].bias.copy_(torch.tensor([0.5, -1.0]))
        model[2].weight.copy_(torch.tensor([[1.0, 2.0]]))
        model[2].bias.copy_(torch.tensor([1.0]))
    return model.eval()


def test_epsilon_by_hand():
    # x = (1, 2): hidden pre-activations (1 - 2 + 0.5, 2 + 2 - 1) = (-0.5, 3) -> a = (0, 3)
    # output 0*1 + 3*2 + 1 = 7. With eps = 0.5 (z > 0: denominators z + 0.5):
    #   R_a = a * w2 * 7 / 7.5 = (0, 3 * 2 * 7 / 7.5) = (0, 5.6)
    #   hidden unit 2 (z = 3): s = 5.6 / 3.5 = 1.6; unit 1 carries no relevance
    #   R_x = x * (W1^T s) = (1 * 2 * 1.6, 2 * 1 * 1.6) = (3.2, 3.2)
    x = torch.tensor([[1.0, 2.0]])
    got, delta = LRP(tiny(), rules={nn.Linear: Epsilon(0.5)}).attribute(x, return_convergence_delta=True)
    torch.testing.assert_close(got, torch.tensor([[3.2, 3.2]]))
    torch.testing.assert_close(delta, torch.tensor([7.0 - 6.4]))


def test_zplus_by_hand():
    # x = (1, 2): a = (0, 3), output 7. z+ on the output layer (bias ignored):
    #   z = 3*2 = 6, R_a = (0, 3*2*7/6) = (0, 7); hidden unit 2: contributions (2*1, 1*2), z = 4
    #   R_x = (2*7/4, 2*7/4) = (3.5, 3.5)
    # x = (1, -2): pre-activations (1 + 2 + 0.5, 2 - 2 - 1) = (3.5, -1) -> a = (3.5, 0), output 4.5
    #   R_a = (4.5, 0); hidden unit 1: contributions (1*1, (-2)*(-1)) = (1, 2), both positive, z = 3
    #   R_x = (4.5*1/3, 4.5*2/3) = (1.5, 3.0)
    x = torch.tensor([[1.0, 2.0], [1.0, -2.0]])
    got = LRP(tiny(), rules={nn.Linear: ZPlus()}).attribute(x)
    torch.testing.assert_close(got, torch.tensor([[3.5, 3.5], [1.5, 3.0]]))


def test_addition_and_gate_by_hand():
    class Mix(nn.Module):
        def forward(self, x):
            s = x[:, 0:2] + x[:, 2:4]  # epsilon on a sum: R_i = x_i R / (x_i + x_j)
            return torch.sigmoid(x[:, 4:5]) * s  # the (broadcast) gate gets nothing, the signal all

    # s = (1 + 2, 3 + 0.5) = (3, 3.5); target 1: out = g * 3.5 flows back to s_1 whole,
    # then x_1 gets 3 / 3.5 of it and x_3 gets 0.5 / 3.5
    x = torch.tensor([[1.0, 3.0, 2.0, 0.5, 0.3]])
    out = float(torch.sigmoid(torch.tensor(0.3))) * 3.5
    got = LRP(Mix(), rules=LRP0).attribute(x, target=1)
    torch.testing.assert_close(got, torch.tensor([[0.0, 3.0 * out / 3.5, 0.0, 0.5 * out / 3.5, 0.0]]))


# --------------------------------------------------------------------------- matrix formulas


def one_layer(layer, rule, x):
    """Relevance of ``layer`` alone when the output relevance is the output itself:
    a ones-weight sum layer under LRP-0 hands back R_out = z."""
    total = nn.Linear(layer(x).flatten(1).shape[1], 1, bias=False)
    nn.init.ones_(total.weight)
    model = nn.Sequential(layer, nn.Flatten(), total)
    return LRP(model, rules={"0": rule, "2": Epsilon(0.0)}).attribute(x), layer(x).detach().flatten(1)


def test_linear_rules_match_matrix_formulas():
    torch.manual_seed(3)
    layer = nn.Linear(6, 4)
    with torch.no_grad():
        layer.weight[:, 0].abs_()  # every unit has a positive weight: W+ x > 0 for x > 0
    w, b = layer.weight.detach(), layer.bias.detach()
    x = torch.randn(2, 6)
    wp, wn, xp, xn = w.clamp(min=0), w.clamp(max=0), x.clamp(min=0), x.clamp(max=0)
    got, r = one_layer(layer, Epsilon(0.01), x)
    z = x @ w.T + b
    torch.testing.assert_close(got, x * ((r / (z + 0.01 * z.sign())) @ w))
    g = w + 0.25 * wp
    got, r = one_layer(layer, Gamma(0.25), x)
    torch.testing.assert_close(got, x * ((r / (x @ g.T + b)) @ g))
    got, r = one_layer(layer, ZPlus(), x.abs())
    torch.testing.assert_close(got, x.abs() * ((r / (x.abs() @ wp.T)) @ wp))  # R_in = x * W+^T (R / W+ x)
    got, r = one_layer(layer, AlphaBeta(2.0, 1.0), x)
    pos, neg = xp @ wp.T + xn @ wn.T, xp @ wn.T + xn @ wp.T
    expected = 2 * (xp * ((r / pos) @ wp) + xn * ((r / pos) @ wn)) - (xp * ((r / neg) @ wn) + xn * ((r / neg) @ wp))
    torch.testing.assert_close(got, expected)
    low, high = torch.full((6,), -3.0), torch.full((6,), 3.0)
    got, r = one_layer(layer, ZBox(low, high), x)
    s = r / (x @ w.T - low @ wp.T - high @ wn.T)
    torch.testing.assert_close(got, x * (s @ w) - low * (s @ wp) - high * (s @ wn))


def test_conv_zplus_matches_jacobian_formula():
    torch.manual_seed(4)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1, bias=False)
    x = torch.rand(1, 2, 7, 7)
    jac = torch.autograd.functional.jacobian(lambda t: conv(t).flatten(), x).reshape(-1, x.numel())
    jp, xf = jac.clamp(min=0), x.flatten()  # a conv Jacobian holds single weights: J(W+) = J(W)+
    got, r = one_layer(conv, ZPlus(), x)
    expected = xf * (jp.T @ (r.flatten() / (jp @ xf)))
    torch.testing.assert_close(got.flatten(), expected)



def test_only_the_plain_term_reuses_the_forward_pass():
    """A rule whose one term is the layer itself reuses the forward's z; a subclass
    that changes the terms (here: doubled weights) is evaluated by its own terms."""

    class Doubled(Epsilon):
        def groups(self, x, weight, bias):
            return [(1.0, [Term(x, 2 * weight, bias)])]

    assert Epsilon().plain and not any(r.plain for r in (Gamma(), ZPlus(), AlphaBeta(), ZBox(0, 1), Doubled()))
    torch.manual_seed(8)
    layer, x = nn.Linear(5, 3), torch.randn(2, 5)
    w, b = layer.weight.detach(), layer.bias.detach()
    got, r = one_layer(layer, Doubled(0.0), x)
    torch.testing.assert_close(got, x * ((r / (x @ (2 * w).T + b)) @ (2 * w)))


@pytest.mark.parametrize("rules", [None, LRP0], ids=["epsilon", "lrp0"])
def test_inplace_op_on_a_layer_output_keeps_its_denominator(rules):
    """z and its denominator are kept from the forward pass; an in-place activation on
    the layer's output must not change them (with eps = 0 the denominator is z)."""
    torch.manual_seed(9)
    first, last, x = nn.Linear(6, 5), nn.Linear(5, 3), torch.randn(2, 6)

    class InPlace(nn.Module):
        def forward(self, t):
            return last(torch.tanh_(first(t)))

    expected = LRP(nn.Sequential(first, nn.Tanh(), last), rules=rules).attribute(x, target=1)
    torch.testing.assert_close(LRP(InPlace(), rules=rules).attribute(x, target=1), expected)

# --------------------------------------------------------------------------- conservation


class Residual(nn.Module):
    """Bias-free ReLU CNN with a residual addition, a functional and an in-place ReLU."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(6 * 4 * 4, 4, bias=False)

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        r = self.conv2(h)
        r += h
        h = self.relu(r)
        return self.fc(F.adaptive_avg_pool2d(h, 4).flatten(1))


def test_lrp0_conserves_relevance():
    torch.manual_seed(5)
    model, x = Residual().eval(), torch.randn(3, 3, 16, 16)
    out = model(x)[torch.arange(3), [0, 1, 3]].detach()
    relevance, delta = LRP(model, rules=LRP0).attribute(x, target=[0, 1, 3], return_convergence_delta=True)
    sums = relevance.flatten(1).sum(1)
    assert (out.abs() > 1e-3).all()
    torch.testing.assert_close(sums, out, rtol=1e-3, atol=0.0)
    torch.testing.assert_close(delta, out - sums)


# --------------------------------------------------------------------------- torchvision


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v3_small", "densenet121", "vgg11"])
@pytest.mark.slow
def test_torchvision_architectures(name):
    """Bias-free (biases zeroed, batch norm at init) so LRP-0 must conserve."""
    tvm = pytest.importorskip("torchvision.models")
    torch.manual_seed(6)
    model = getattr(tvm, name)(num_classes=10).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.zero_()
    x = torch.randn(1, 3, 64, 64)
    out = model(x)[0, 3].detach()
    relevance, delta = LRP(model, rules=LRP0).attribute(x, target=3, return_convergence_delta=True)
    assert relevance.shape == x.shape and bool(torch.isfinite(relevance).all())
    assert relevance.abs().sum() > 0
    assert abs(float(delta)) <= 1e-3 * abs(float(out))


# --------------------------------------------------------------------------- composites and options


def test_composites_choose_rules_by_kind_and_first_layer():
    model, x = plain(), torch.rand(2, 3, 12, 12)
    zplus_convs = LRP(model, rules={nn.Conv2d: ZPlus(), nn.Linear: Epsilon(1e-6)}).attribute(x, target=0)
    torch.testing.assert_close(LRP(model, composite=EpsilonPlus()).attribute(x, target=0), zplus_convs)
    box = {"conv1": ZBox(0.0, 1.0), "conv2": Gamma(0.25), nn.Linear: Epsilon(1e-6)}
    expected = LRP(model, rules=box).attribute(x, target=0)
    torch.testing.assert_close(LRP(model, composite=EpsilonGammaBox(0.0, 1.0)).attribute(x, target=0), expected)
    ab = LRP(model, rules={nn.Conv2d: AlphaBeta(2.0, 1.0), nn.Linear: Epsilon(1e-6)}).attribute(x, target=0)
    torch.testing.assert_close(LRP(model, composite=EpsilonAlpha2Beta1()).attribute(x, target=0), ab)
    # rules override the composite; the first-layer rule follows execution order
    overridden = LRP(model, composite=EpsilonPlus(), rules={"conv1": Gamma(0.25)}).attribute(x, target=0)
    torch.testing.assert_close(overridden, LRP(model, rules={"conv1": Gamma(0.25), nn.Conv2d: ZPlus(),
                                                               nn.Linear: Epsilon(1e-6)}).attribute(x, target=0))


def test_chunks_extra_args_and_verbose(capsys):
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = plain()

        def forward(self, x, mask):
            return self.net(x * mask)

    model, x, mask = Scaled(), torch.randn(4, 3, 12, 12), (torch.rand(4, 3, 12, 12) > 0.3).float()
    whole = LRP(model).attribute(x, target=2, additional_forward_args=(mask,), internal_batch_size=None)
    chunked = LRP(model).attribute(x, target=2, additional_forward_args=(mask,), internal_batch_size=1)
    torch.testing.assert_close(chunked, whole)
    assert bool((whole[mask == 0] == 0).all())
    LRP(plain(), rules={"conv2": Gamma()}).attribute(x[:1], target=0, verbose=True)
    printed = capsys.readouterr().out
    assert "Gamma(gamma=0.25" in printed and "conv2 (Conv2d)" in printed


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: LRP(lambda x: x), TypeError, "model"),
        (lambda: LRP(plain(), rules={1: Epsilon()}), TypeError, "rules"),
        (lambda: LRP(plain(), rules={"conv1": "epsilon"}), TypeError, r"rules\['conv1'\]"),
        (lambda: LRP(plain(), rules=[Epsilon()]), TypeError, "rules"),
        (lambda: LRP(plain(), composite="EpsilonPlus"), TypeError, "composite"),
        (lambda: LRP(plain(), fold_batchnorm="yes"), TypeError, "fold_batchnorm"),
        (lambda: Epsilon(-1.0), ValueError, "epsilon"),
        (lambda: Gamma(gamma="big"), ValueError, "gamma"),
        (lambda: AlphaBeta(1.0, 1.0), ValueError, "alpha - beta"),
        (lambda: ZBox(1.0, 0.0), ValueError, "low"),
        (lambda: ZBox("a", 1.0), TypeError, "low"),
        (lambda: Composite([("dense", ZPlus())]), ValueError, "dense"),
        (lambda: Composite([("conv", 3)]), TypeError, "rule"),
        (lambda: LRP(plain()).attribute("image", target=0), TypeError, "inputs"),
        (lambda: LRP(plain()).attribute(torch.randn(1, 3, 12, 12), target=9), ValueError, "target"),
        (lambda: LRP(plain()).attribute(torch.randn(1, 3, 12, 12), target=0, verbose="yes"), TypeError, "verbose"),
        (lambda: LRP(plain()).attribute(torch.randn(1, 3, 12, 12), target=0, internal_batch_size=0),
         ValueError, "internal_batch_size"),
    ],
)
def test_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()
