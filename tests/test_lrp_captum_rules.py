"""LRP the Captum way: rules read from a module's ``rule`` attribute (ours or Captum's own
objects), Captum's rule names, dropout in training mode, LayerLRP, and the cases where
torchexplain is right and Captum is not (reused modules, a functional ``+``)."""

from __future__ import annotations

import copy
import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torchexplain.attr as te
from torchexplain.attr import (
    LRP,
    Alpha1_Beta0_Rule,
    Epsilon,
    EpsilonRule,
    Gamma,
    GammaRule,
    IdentityRule,
    LayerLRP,
    PropagationRule,
    ZPlus,
)

captum_attr = pytest.importorskip("captum.attr")
captum_rules = pytest.importorskip("captum.attr._utils.lrp_rules")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
CLOSE = dict(rtol=1e-5, atol=1e-6)


class TwoLayer(nn.Module):
    """x -> Linear(3, 3) -> ReLU -> Linear(3, 1), no biases, hand-set weights."""

    def __init__(self, dropout: nn.Module | None = None):
        super().__init__()
        self.first, self.relu, self.second = nn.Linear(3, 3, bias=False), nn.ReLU(), nn.Linear(3, 1, bias=False)
        self.drop = dropout or nn.Identity()
        with torch.no_grad():
            self.first.weight.copy_(torch.tensor([[1.0, -1.0, 2.0], [2.0, 1.0, 0.0], [0.0, 1.0, 1.0]]))
            self.second.weight.copy_(torch.tensor([[1.0, 2.0, 1.0]]))

    def forward(self, x):
        return self.drop(self.second(self.relu(self.first(x))))


X = torch.tensor([[1.0, 2.0, 3.0]])
# z1 = W1 x = (5, 4, 5) (all active), out = (1, 2, 1) . z1 = 18. The second layer hands
# back R1 = a_j w_j = (5, 8, 5); the first splits R1_j over x_i by its rule's z_ij / z_j.


def with_rules(model, **rules):
    for name, rule in rules.items():
        getattr(model, name).rule = rule
    return model


@pytest.mark.parametrize(
    "first_rule, expected",
    [
        # epsilon: rows (1,-2,6)*5/5 + (2,2,0)*8/4 + (0,2,3)*5/5
        (EpsilonRule(), [5.0, 4.0, 9.0]),
        # gamma=1: W + W+ = [[2,-1,4],[4,2,0],[0,2,2]], z' = (12, 8, 10):
        # (2,-2,12)*5/12 + (4,4,0)*8/8 + (0,4,6)*5/10
        (GammaRule(gamma=1.0), [29 / 6, 31 / 6, 8.0]),
        # alpha1-beta0: W+ = [[1,0,2],[2,1,0],[0,1,1]], z+ = (7, 4, 5): (1,0,6)*5/7 + (2,2,0)*2 + (0,2,3)
        (Alpha1_Beta0_Rule(), [33 / 7, 6.0, 51 / 7]),
        # identity: the relevance of the layer's output, unchanged
        (IdentityRule(), [5.0, 8.0, 5.0]),
    ],
    ids=["epsilon", "gamma", "alpha1beta0", "identity"],
)
def test_rules_set_on_modules_by_hand(first_rule, expected):
    model = with_rules(TwoLayer(), first=first_rule, second=EpsilonRule(epsilon=0.0))
    relevance, delta = LRP(model).attribute(X, return_convergence_delta=True)
    torch.testing.assert_close(relevance, torch.tensor([expected]))
    if not isinstance(first_rule, IdentityRule):  # bias-free: relevance is conserved
        torch.testing.assert_close(delta, torch.zeros(1), atol=1e-5, rtol=0)


def test_alpha1_beta0_keeps_the_input_whole_and_the_bias():
    """Captum's Alpha1_Beta0_Rule: z = W+ x + b with x whole (unlike z+). Linear(2, 1),
    w = (2, 1), b = 1, x = (-1, 3): out = z+ = 2, R_x = x w+ R / z+ = (-2, 3); with the
    bias zeroed z+ = 1 and R_x = (-4, 6); z+ (ZPlus) keeps only the positive product:
    (0, 3 * 2 / 3)."""
    layer = nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[2.0, 1.0]]))
        layer.bias.fill_(1.0)
    x = torch.tensor([[-1.0, 3.0]])
    layer.rule = Alpha1_Beta0_Rule()
    torch.testing.assert_close(LRP(layer).attribute(x), torch.tensor([[-2.0, 3.0]]))
    layer.rule = Alpha1_Beta0_Rule(set_bias_to_zero=True)
    torch.testing.assert_close(LRP(layer).attribute(x), torch.tensor([[-4.0, 6.0]]))
    layer.rule = ZPlus()
    torch.testing.assert_close(LRP(layer).attribute(x), torch.tensor([[0.0, 2.0]]))
    twin = nn.Sequential(copy.deepcopy(layer))  # (Captum finds rules on a model's children only)
    twin[0].rule = captum_rules.Alpha1_Beta0_Rule()  # Captum agrees, and its own object is read too
    theirs = captum_attr.LRP(copy.deepcopy(twin)).attribute(x)
    torch.testing.assert_close(theirs.detach(), torch.tensor([[-2.0, 3.0]]))
    torch.testing.assert_close(LRP(twin).attribute(x), theirs.detach())


def test_gamma_on_a_conv_by_hand():
    """Conv1d w = (2, -1) on x = (2, 1, 1): z = (3, 1), summed by a ones layer under
    LRP-0 so R = z. Gamma 0.5: w' = (3, -1), z' = (5, 2):
    R_x = (6, -1) * 3/5 on (x0, x1) + (3, -1) * 1/2 on (x1, x2) = (3.6, 0.9, -0.5)."""
    conv, total = nn.Conv1d(1, 1, 2, bias=False), nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[2.0, -1.0]]]))
        total.weight.fill_(1.0)
    model = nn.Sequential(conv, nn.Flatten(), total)
    conv.rule, total.rule = GammaRule(gamma=0.5), EpsilonRule(epsilon=0.0)
    relevance = LRP(model).attribute(torch.tensor([[[2.0, 1.0, 1.0]]]))
    torch.testing.assert_close(relevance, torch.tensor([[[3.6, 0.9, -0.5]]]))


def test_captum_rule_names_and_arguments():
    """Every public rule of captum.attr._utils.lrp_rules, under Captum's name, takes
    Captum's constructor arguments with Captum's defaults."""
    names = [n for n, v in vars(captum_rules).items()
             if inspect.isclass(v) and issubclass(v, captum_rules.PropagationRule)]
    assert {"PropagationRule", "EpsilonRule", "GammaRule", "Alpha1_Beta0_Rule", "IdentityRule"} <= set(names)
    for name in names:
        ours, theirs = getattr(te, name), getattr(captum_rules, name)
        for p in list(inspect.signature(theirs).parameters.values()):
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            assert inspect.signature(ours).parameters[p.name].default == p.default, (name, p.name)
    assert isinstance(EpsilonRule(), PropagationRule) and isinstance(GammaRule(), PropagationRule)
    assert GammaRule(gamma=0.25, set_bias_to_zero=False).gamma == 0.25
    assert EpsilonRule(epsilon=1e-9).STABILITY_FACTOR == 1e-9


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.relu1, self.pool = nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
        self.conv2, self.relu2, self.avg = nn.Conv2d(4, 4, 3), nn.ReLU(), nn.AvgPool2d(2)
        self.fc1, self.relu3, self.fc2 = nn.Linear(16, 6), nn.ReLU(), nn.Linear(6, 3)

    def forward(self, x):  # modules only, each used once: where Captum is right
        x = self.relu2(self.conv2(self.pool(self.relu1(self.conv1(x)))))
        return self.fc2(self.relu3(self.fc1(self.avg(x).flatten(1))))


def captum_rule_set():
    return {"conv1": captum_rules.GammaRule(gamma=0.5), "conv2": captum_rules.Alpha1_Beta0_Rule(),
            "fc1": captum_rules.EpsilonRule(epsilon=0.1), "fc2": captum_rules.EpsilonRule(epsilon=0.0)}


def our_rule_set():
    return {"conv1": GammaRule(gamma=0.5), "conv2": Alpha1_Beta0_Rule(), "fc1": EpsilonRule(epsilon=0.1),
            "fc2": EpsilonRule(epsilon=0.0)}


@pytest.mark.parametrize("make_rules", [captum_rule_set, our_rule_set], ids=["captum-objects", "our-objects"])
def test_rule_attributes_match_captum(make_rules):
    net, x = Net().eval(), torch.rand(2, 3, 12, 12)
    theirs, their_delta = captum_attr.LRP(with_rules(copy.deepcopy(net), **captum_rule_set())).attribute(
        x, target=[0, 2], return_convergence_delta=True)
    ours, delta = LRP(with_rules(net, **make_rules())).attribute(x, target=[0, 2], return_convergence_delta=True)
    torch.testing.assert_close(ours, theirs.detach(), **CLOSE)
    torch.testing.assert_close(delta, their_delta.detach(), **CLOSE)


def test_custom_rules_in_captums_style():
    """A PropagationRule subclass defining Captum's ``_manipulate_weights`` (here:
    doubled weights, bias kept): ours, and the same subclass of Captum's base read from
    the module, both give Captum's result and the one-line formula."""

    def double(self, module, inputs, outputs):
        module.weight.data = 2 * module.weight.data

    ours_cls = type("Doubled", (PropagationRule,), {"_manipulate_weights": double})
    theirs_cls = type("Doubled", (captum_rules.PropagationRule,), {"_manipulate_weights": double})
    torch.manual_seed(8)
    model, x = nn.Sequential(nn.Linear(5, 3), nn.ReLU(), nn.Linear(3, 1, bias=False)), torch.rand(2, 5)
    w, b = model[0].weight.detach().clone(), model[0].bias.detach().clone()
    model[2].rule = EpsilonRule(epsilon=0.0)
    twin = copy.deepcopy(model)
    model[0].rule, twin[0].rule, twin[2].rule = ours_cls(), theirs_cls(), captum_rules.EpsilonRule(epsilon=0.0)
    r = (torch.relu(x @ w.T + b) * model[2].weight.detach()).detach()  # relevance of the hidden units
    expected = x * ((r / (x @ (2 * w).T + b)) @ (2 * w))
    torch.testing.assert_close(LRP(model).attribute(x), expected, **CLOSE)
    torch.testing.assert_close(LRP(twin).attribute(x), expected, **CLOSE)
    theirs = captum_attr.LRP(copy.deepcopy(twin)).attribute(x)
    torch.testing.assert_close(theirs.detach(), expected, **CLOSE)
    torch.testing.assert_close(model[0].weight, w)  # copies were doubled, not the model's


def test_captum_rule_objects_in_the_rules_argument():
    net, x = Net().eval(), torch.rand(2, 3, 12, 12)
    by_attribute = LRP(with_rules(copy.deepcopy(net), **captum_rule_set())).attribute(x, target=1)
    torch.testing.assert_close(LRP(net, rules=captum_rule_set()).attribute(x, target=1), by_attribute)
    with pytest.raises(TypeError, match=r"rules\['fc1'\]"):
        LRP(net, rules={"fc1": None})


def test_model_unchanged_no_rule_written_or_removed():
    net = with_rules(Net().eval(), **our_rule_set())
    rules = {n: m.__dict__["rule"] for n, m in net.named_modules() if "rule" in m.__dict__}
    state = copy.deepcopy(net.state_dict())
    LRP(net).attribute(torch.rand(1, 3, 12, 12), target=1)
    LayerLRP(net, net.conv2).attribute(torch.rand(1, 3, 12, 12), target=1)
    with pytest.raises(ValueError):  # and on an error path
        LRP(net).attribute(torch.rand(1, 3, 12, 12), target=7)
    assert {n: m.__dict__["rule"] for n, m in net.named_modules() if "rule" in m.__dict__} == rules
    assert all(rules[n] is m.rule for n, m in net.named_modules() if n in rules)
    plain = Net()
    LRP(plain).attribute(torch.rand(1, 3, 12, 12), target=0)
    assert not any("rule" in m.__dict__ or hasattr(m, "activations") for m in plain.modules())
    for name, value in net.state_dict().items():
        assert torch.equal(value, state[name])
    assert all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in net.modules())


def test_precedence_rules_argument_attribute_composite():
    """Innermost module first; on one module ``rules`` wins over its attribute, and an
    attribute wins over a composite and over a ``rules`` entry for an outer module."""
    net, x = Net().eval(), torch.rand(2, 3, 12, 12)
    expected = LRP(net, rules={"conv1": Gamma(0.5)}).attribute(x, target=1)
    net.conv1.rule = EpsilonRule()
    torch.testing.assert_close(LRP(net, rules={"conv1": Gamma(0.5)}).attribute(x, target=1), expected)
    torch.testing.assert_close(LRP(net, rules={nn.Conv2d: Gamma(0.5)}).attribute(x, target=1),
                               LRP(net, rules={"conv1": Gamma(0.5), "conv2": Gamma(0.5)}).attribute(x, target=1))
    net.conv1.rule = Gamma(0.5)
    torch.testing.assert_close(LRP(net, rules={"": Epsilon(0.1)}).attribute(x, target=1),
                               LRP(Net().eval(), rules={"": Epsilon(0.1), "conv1": Gamma(0.5)}).attribute(x, target=1))
    torch.testing.assert_close(
        LRP(net, composite=te.EpsilonPlus()).attribute(x, target=1),
        LRP(Net().eval(), rules={"conv1": Gamma(0.5), "conv2": ZPlus(), nn.Linear: Epsilon(1e-6)}).attribute(x, target=1),
    )
    assert not torch.allclose(expected, LRP(Net().eval()).attribute(x, target=1))


def test_a_rule_attribute_that_is_no_rule_is_refused():
    net = Net()
    net.conv1.rule = 1
    with pytest.raises(TypeError, match=r"conv1\.rule"):
        LRP(net)
    with pytest.raises(TypeError, match=r"conv1\.rule"):
        LayerLRP(net, net.conv2)
    net = Net()
    lrp = LRP(net)
    net.fc1.rule = "epsilon"  # set after construction: refused when attributing
    with pytest.raises(TypeError, match=r"fc1\.rule"):
        lrp.attribute(torch.rand(1, 3, 12, 12), target=0)
    net.fc1.rule = None  # None is "no rule", as in Captum
    LRP(net).attribute(torch.rand(1, 3, 12, 12), target=0)


@pytest.mark.parametrize("drop", [nn.Dropout(0.5), nn.Dropout(0.5, inplace=True), "functional"],
                         ids=["module", "inplace", "functional"])
def test_dropout_in_training_mode_conserves_relevance(drop):
    """Relevance passes dropout unchanged, and output and relevance come from one pass:
    LRP-0 on a bias-free net sums to the output of that pass, whatever the mask."""

    class Dropped(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(2)
            self.fc1, self.fc2 = nn.Linear(8, 16, bias=False), nn.Linear(16, 3, bias=False)

        def forward(self, x):
            h = self.fc1(x)
            h = F.dropout(h, 0.5, self.training) if drop == "functional" else drop(h)
            return self.fc2(torch.relu(h))

    model = Dropped().train()
    if drop != "functional":
        drop.train()
    torch.manual_seed(3)
    x = torch.rand(4, 8)
    relevance, delta = LRP(model, rules={nn.Module: Epsilon(0.0)}).attribute(x, target=1, return_convergence_delta=True)
    output = relevance.sum(1) + delta
    assert output.abs().min() > 1e-3 and model.training
    torch.testing.assert_close(delta, torch.zeros(4), atol=1e-5 * float(output.abs().max()), rtol=0)
    # without dropout's 1/(1-p) in the relevance, a kept unit's relevance would double:
    # the eval-mode relevance differs, so the mask did act
    assert not torch.allclose(relevance, LRP(copy.deepcopy(model).eval(), rules={nn.Module: Epsilon(0.0)})
                              .attribute(x, target=1))


def test_dropout_lrp_equals_input_x_gradient_of_the_same_mask():
    """With p so small that the mask keeps everything, train-mode LRP (epsilon) of a
    bias-free ReLU net equals input x gradient, 1/(1-p) included (Captum's equivalence)."""
    model = TwoLayer(nn.Dropout(1e-6)).train()
    ours = LRP(model).attribute(X)
    torch.testing.assert_close(ours, te.InputXGradient(model).attribute(X))
    torch.testing.assert_close(ours.sum(), model(X).sum())


# --------------------------------------------------------------------------- LayerLRP


@pytest.mark.parametrize("layer, to_input", [("conv2", False), ("fc1", True), ("pool", False)])
def test_layer_lrp_matches_captum(layer, to_input):
    net, x = Net().eval(), torch.rand(3, 3, 12, 12)
    ref = with_rules(copy.deepcopy(net), **captum_rule_set())
    theirs, their_delta = captum_attr.LayerLRP(ref, getattr(ref, layer)).attribute(
        x, target=[0, 1, 2], attribute_to_layer_input=to_input, return_convergence_delta=True)
    ours, delta = LayerLRP(with_rules(net, **our_rule_set()), layer).attribute(
        x, target=[0, 1, 2], attribute_to_layer_input=to_input, return_convergence_delta=True)
    assert isinstance(ours, torch.Tensor) and ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs.detach(), **CLOSE)
    torch.testing.assert_close(delta, their_delta.detach(), **CLOSE)


def test_layer_lrp_list_of_layers_and_consistency_with_lrp():
    net, x = Net().eval(), torch.rand(2, 3, 12, 12)
    layers = [net.conv1, net.fc1]
    ref = copy.deepcopy(net)
    theirs, their_delta = captum_attr.LayerLRP(ref, [ref.conv1, ref.fc1]).attribute(
        x, target=2, attribute_to_layer_input=True, return_convergence_delta=True)
    ours, delta = LayerLRP(net, layers).attribute(x, target=2, attribute_to_layer_input=True,
                                                  return_convergence_delta=True)
    assert isinstance(ours, list) and isinstance(delta, list) and len(ours) == len(delta) == 2
    for a, b in zip(ours + delta, list(theirs) + list(their_delta)):
        torch.testing.assert_close(a, b.detach(), **CLOSE)
    # the first layer's input relevance is LRP's input relevance, chunked or not
    torch.testing.assert_close(ours[0], LRP(net).attribute(x, target=2, internal_batch_size=1), **CLOSE)


def test_layer_lrp_reused_layer_needs_layer_call():
    model = Reused(reuse=True)
    with pytest.raises(ValueError, match="layer_call"):
        LayerLRP(model, model.lin).attribute(torch.rand(2, 3), target=0)
    twin = Reused(reuse=False)
    twin.load_state_dict(model.state_dict(), strict=False)
    for call, layer in ((0, twin.lin), (1, twin.lin2)):
        got = LayerLRP(model, model.lin, layer_call=call).attribute(torch.ones(2, 3), target=0)
        torch.testing.assert_close(got, LayerLRP(twin, layer).attribute(torch.ones(2, 3), target=0))


# --------------------------------------------------------------------------- where Captum is wrong


class Reused(nn.Module):
    """Linear -> ReLU -> the same Linear -> ReLU (``reuse``), or a twin with two
    Linear modules holding the same weights (where Captum is right)."""

    def __init__(self, reuse: bool):
        super().__init__()
        torch.manual_seed(4)
        self.lin, self.relu = nn.Linear(3, 3), nn.ReLU()
        self.lin2 = self.lin if reuse else copy.deepcopy(self.lin)

    def forward(self, x):
        return self.relu(self.lin2(self.relu(self.lin(x))))


def test_reused_module_equals_captum_on_the_distinct_twin():
    """Captum raises 'used more than once' on a reused Linear; torchexplain computes
    it, and the result is Captum's own on the twin with two copies of the module."""
    reused, twin = Reused(reuse=True), Reused(reuse=False)
    x = torch.rand(2, 3) + 0.5
    with pytest.raises(RuntimeError, match="more than once"):
        captum_attr.LRP(copy.deepcopy(reused)).attribute(x, target=0)
    theirs, their_delta = captum_attr.LRP(twin).attribute(x, target=0, return_convergence_delta=True)
    ours, delta = LRP(reused).attribute(x, target=0, return_convergence_delta=True)
    assert theirs.abs().sum() > 0
    torch.testing.assert_close(ours, theirs.detach(), **CLOSE)
    torch.testing.assert_close(delta, their_delta.detach(), **CLOSE)


class SumThenNet(nn.Module):
    """forward(x, extra) = net(x + extra): a functional ``+`` of two inputs."""

    def __init__(self):
        super().__init__()
        self.lin1, self.relu, self.lin2 = nn.Linear(3, 4, bias=False), nn.ReLU(), nn.Linear(4, 1, bias=False)
        with torch.no_grad():
            self.lin1.weight.fill_(1.0)
            self.lin2.weight.fill_(1.0)

    def forward(self, x, extra=None):
        return self.lin2(self.relu(self.lin1(x if extra is None else x + extra)))


def test_functional_addition_splits_relevance_instead_of_double_counting():
    """x = (1, 2, 3), extra = 3x: the net sees s = (4, 8, 12), out = 4 * 24 = 96, and
    LRP-0 gives s the relevance (16, 32, 48). The ``+`` splits it by share: x gets a
    quarter (4, 8, 12), extra the rest (12, 24, 36), the total is the output (delta 0).
    Captum hands each input the whole (16, 32, 48): 192 for an output of 96."""
    model, x = SumThenNet(), torch.tensor([[1.0, 2.0, 3.0]])
    rules = {nn.Module: Epsilon(0.0)}
    (rx, re), delta = LRP(model, rules=rules).attribute((x, 3 * x), return_convergence_delta=True)
    torch.testing.assert_close(rx, torch.tensor([[4.0, 8.0, 12.0]]))
    torch.testing.assert_close(re, torch.tensor([[12.0, 24.0, 36.0]]))
    torch.testing.assert_close(rx + re, LRP(model, rules=rules).attribute(4 * x))  # relevance of the sum
    torch.testing.assert_close(delta, torch.zeros(1))
    (cx, ce), their_delta = captum_attr.LRP(copy.deepcopy(model)).attribute((x, 3 * x), return_convergence_delta=True)
    torch.testing.assert_close(cx.detach(), torch.tensor([[16.0, 32.0, 48.0]]))
    torch.testing.assert_close(their_delta.detach(), torch.tensor([-96.0]))


def test_an_unused_or_unknown_module_type_is_no_obstacle():
    """Captum refuses a model holding an nn.Sigmoid it has no rule for; torchexplain's
    rules work on ops, so an unused one changes nothing and a used one passes relevance
    unchanged (as Captum does for Tanh)."""
    net, x = Net().eval(), torch.rand(2, 3, 12, 12)
    expected = LRP(net).attribute(x, target=0)
    net.add_module("sigmoid", nn.Sigmoid())
    with pytest.raises(TypeError):
        captum_attr.LRP(copy.deepcopy(net)).attribute(x, target=0)
    torch.testing.assert_close(LRP(net).attribute(x, target=0), expected)
    model = nn.Sequential(nn.Linear(3, 3, bias=False), nn.Sigmoid(), nn.Linear(3, 1, bias=False))
    relevance, delta = LRP(model, rules={nn.Module: Epsilon(0.0)}).attribute(X, return_convergence_delta=True)
    torch.testing.assert_close(delta, torch.zeros(1), atol=1e-6, rtol=0)
