"""The borrowed model: BatchNormFolding folds and restores exactly; LRP leaves the model
as it found it, after success and after an exception raised mid-forward."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from helpers import assert_unchanged, snapshot
from torchexplain.attr.lrp import LRP, EpsilonPlus, Gamma
from torchexplain.core.hooks.canonizers import BatchNormFolding, batchnorm_pairs


class Raiser(nn.Module):
    """Raises in the middle of the relevance pass (not in the no-grad tracing pass),
    noting whether batch norms were folded at that moment."""

    def __init__(self, probe):
        super().__init__()
        self.probe, self.folded = probe, []

    def forward(self, x):
        if torch.is_grad_enabled() and x.requires_grad:
            self.folded.append(self.probe.bias is not None)
            raise RuntimeError("boom")
        return x


@pytest.mark.parametrize("fail", [False, True], ids=["success", "exception"])
@pytest.mark.slow
def test_model_unchanged(fail):
    tvm = pytest.importorskip("torchvision.models")
    torch.manual_seed(7)
    model = tvm.resnet18(num_classes=10)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
    model.eval().layer1[0].bn2.train()  # one batch norm in training mode: never folded
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    model.conv1.weight.requires_grad_(False)
    raiser = Raiser(model.layer1[1].conv1)
    if fail:
        model.layer2 = nn.Sequential(model.layer2, raiser)
    before = snapshot(model)
    lrp = LRP(model, composite=EpsilonPlus(), rules={"layer4": Gamma()}, fold_batchnorm=True)
    if fail:
        with pytest.raises(RuntimeError, match="boom"):
            lrp.attribute(torch.randn(2, 3, 32, 32), target=1)
        assert raiser.folded == [True]  # it raised while the canonizer and the rules were active
    else:
        relevance = lrp.attribute(torch.randn(2, 3, 32, 32), target=1)
        assert bool(torch.isfinite(relevance).all())
    assert_unchanged(model, before)
    assert torch._C._len_torch_function_stack() == 0  # no mode left behind


def bn_model():
    torch.manual_seed(8)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 5, 3), nn.BatchNorm2d(5), nn.ReLU(), nn.Flatten(),
        nn.Linear(5 * 4 * 4, 6), nn.BatchNorm1d(6),
    )  # fmt: skip
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return model.eval()


def test_canonizer_folds_and_restores_exactly():
    model, x = bn_model(), torch.randn(2, 3, 8, 8)
    before, expected = snapshot(model), model(x).detach()
    folding = BatchNormFolding.traced(model, x)
    assert [(type(a).__name__, type(b).__name__) for a, b in folding.pairs] == [
        ("Conv2d", "BatchNorm2d"), ("Conv2d", "BatchNorm2d"), ("Linear", "BatchNorm1d"),
    ]  # fmt: skip
    with folding:
        assert model[0].bias is not None
        h = torch.randn(2, 4, 6, 6)
        assert torch.equal(model[1](h), h)  # the batch norm is the exact identity
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)
    assert model[0].bias is None
    assert_unchanged(model, before)
    with pytest.raises(KeyError), folding:
        raise KeyError("inside")
    assert_unchanged(model, before)


def test_canonizer_skips_unsafe_pairs():
    conv, conv2 = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1)
    bn, bn_first = nn.BatchNorm2d(3).eval(), nn.BatchNorm2d(3).eval()

    class Unsafe(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.bn_first, self.conv2 = conv, bn, bn_first, conv2

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y + self.conv2(self.bn_first(x))  # y read twice; bn before conv

    model = Unsafe()
    assert batchnorm_pairs(model, lambda: model(torch.randn(1, 3, 4, 4))) == []
    model = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3))  # training mode
    assert batchnorm_pairs(model, lambda: model(torch.randn(2, 3, 4, 4))) == []
    with pytest.raises(ValueError, match="eval mode"):
        BatchNormFolding([(model[0], model[1])])
    with pytest.raises(TypeError, match=r"pairs\[0\]\[0\]"):
        BatchNormFolding([(nn.ReLU(), model[1])])


def test_lrp_with_folding_equals_lrp_of_folded_model():
    model, x = bn_model(), torch.randn(2, 3, 8, 8)
    with BatchNormFolding.traced(model, x):
        folded = nn.Sequential(*[copy.deepcopy(m) for m in model if not isinstance(m, nn.modules.batchnorm._BatchNorm)])
    for composite in (None, EpsilonPlus()):
        expected = LRP(folded, composite=composite).attribute(x, target=[0, 5])
        got = LRP(model, composite=composite, fold_batchnorm=True).attribute(x, target=[0, 5])
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-7)
        unfolded = LRP(model, composite=composite).attribute(x, target=[0, 5])
        # epsilon on a layer then on its batch norm is epsilon on the folded layer; z+ is not
        assert torch.allclose(unfolded, expected, rtol=1e-3, atol=1e-7) == (composite is None)
