"""The user's model is borrowed, not edited.

After ``attribute`` returns, and after it raises part-way (the model's forward or
backward raises on a later call, or the target turns out to be out of range once the
output is known), the model must be exactly as it was: parameter values and objects,
buffers (BatchNorm in train mode would update its running statistics), per-module
training flags, requires_grad flags, parameter ``.grad``, hook dictionaries, module
attributes, and no global hook, torch-function mode or saved-tensor hook left behind.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torchexplain.attr as attr
from helpers import assert_unchanged, snapshot

LRP = getattr(attr, "LRP", None)
METHODS = [
    "Saliency", "InputXGradient", "GuidedBackprop", "Deconvolution", "IntegratedGradients",
    "GradientShap", "NoiseTunnel", "DeepLift", "DeepLiftShap", "LRP",
]
N_CLASSES = 3


def method_param(name):
    if name == "LRP" and LRP is None:
        return pytest.param(name, marks=pytest.mark.skip(reason="torchexplain.attr.LRP not available yet"))
    return name


PARAMS = [method_param(m) for m in METHODS]


def run(name, model, x, target):
    """Attribute with settings that make several forward calls where the method can."""
    rows = lambda k: torch.linspace(-0.5, 0.5, k).view(-1, *([1] * (x.dim() - 1))).expand(k, *x.shape[1:])  # noqa: E731
    if name in ("Saliency", "InputXGradient", "GuidedBackprop", "Deconvolution"):
        return getattr(attr, name)(model).attribute(x, target=target)
    if name == "IntegratedGradients":
        return attr.IntegratedGradients(model).attribute(x, target=target, n_steps=4, internal_batch_size=2)
    if name == "GradientShap":
        return attr.GradientShap(model).attribute(
            x, baselines=rows(3), target=target, n_samples=3, stdevs=0.1, internal_batch_size=2,
            generator=torch.Generator().manual_seed(0),
        )
    if name == "NoiseTunnel":
        return attr.NoiseTunnel(attr.Saliency(model)).attribute(
            x, nt_samples=3, nt_samples_batch_size=1, stdevs=0.1, target=target,
            generator=torch.Generator().manual_seed(0),
        )
    if name == "DeepLift":
        return attr.DeepLift(model).attribute(x, baselines=0.1, target=target, internal_batch_size=1)
    if name == "DeepLiftShap":
        return attr.DeepLiftShap(model).attribute(x, baselines=rows(3), target=target, internal_batch_size=2)
    if name == "LRP":
        return LRP(model).attribute(x, target=target)
    raise AssertionError(name)


# --------------------------------------------------------------------------- the model


class Tripwire(nn.Module):
    """Identity that, when armed, raises in forward (or in backward) on the n-th call.
    Its state lives in one dict created in __init__, so attribute keys never change."""

    def __init__(self):
        super().__init__()
        self.state = {"calls": 0, "fire_at": None, "where": "forward"}

    def forward(self, x):
        s = self.state
        s["calls"] += 1
        if s["fire_at"] == s["calls"]:
            if s["where"] == "forward":
                raise RuntimeError("tripwire: forward failed")
            return _RaiseInBackward.apply(x)
        return x


class _RaiseInBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("tripwire: backward failed")


class CNN(nn.Module):
    """BatchNorm, one in-place ReLU module used twice, MaxPool and a functional F.relu."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(6)
        self.trip = Tripwire()
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(6 * 4 * 4, 10)
        self.fc2 = nn.Linear(10, N_CLASSES)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))  # the same in-place ReLU again
        x = self.trip(x)  # after both BatchNorms have updated their running stats
        x = self.pool(x)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def make_cnn():
    torch.manual_seed(0)
    model = CNN()
    with torch.no_grad():  # non-default running statistics, so a reset would show
        for bn in (model.bn1, model.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 1.5)
            bn.num_batches_tracked.fill_(7)
    model.train()  # forward would update the running statistics
    model.bn2.eval()  # mixed per-module flags
    model.conv1.bias.requires_grad_(False)  # a frozen parameter
    model.fc2.weight.grad = torch.full_like(model.fc2.weight, 0.25)  # a known .grad
    model.fc1.register_forward_hook(lambda m, i, o: None)  # the user's own hook stays
    return model


@pytest.fixture
def inputs():
    torch.manual_seed(1)
    return torch.randn(2, 3, 8, 8)


# forward calls each method makes in ``run`` on 2 examples: one-pass methods evaluate
# both rows at once, the others are chunked (see ``run``) into several calls
CALLS = {
    "Saliency": 1, "InputXGradient": 1, "GuidedBackprop": 1, "Deconvolution": 1,
    "IntegratedGradients": 4,  # 4 steps x 2 examples, 2 rows a call
    "GradientShap": 3,  # 3 samples x 2 examples, 2 rows a call
    "NoiseTunnel": 3,  # one call per noise sample
    "DeepLift": 2,  # one example a call
    "DeepLiftShap": 3,  # 3 references x 2 examples, 2 rows a call
}


def fire_at(name):
    """The second forward where there is one, else the first (after the BatchNorms)."""
    return min(2, CALLS.get(name, 1))


# --------------------------------------------------------------------------- the tests


def test_the_setup_would_show_a_change(inputs):
    """A bare forward in train mode changes the buffers, so restoring them is tested."""
    model = make_cnn()
    before = snapshot(model)
    model(inputs)
    with pytest.raises(AssertionError, match="buffer changed"):
        assert_unchanged(model, before)


@pytest.mark.parametrize("name", PARAMS)
def test_unchanged_after_success(name, inputs):
    model = make_cnn()
    before = snapshot(model)
    result = run(name, model, inputs, target=[1, 2])
    assert_unchanged(model, before)
    assert isinstance(result, torch.Tensor) and result.shape == inputs.shape
    assert torch.isfinite(result).all() and result.abs().sum() > 0
    if name in CALLS:
        assert model.trip.state["calls"] == CALLS[name]


@pytest.mark.parametrize("name", PARAMS)
def test_unchanged_when_forward_raises_midway(name, inputs):
    model = make_cnn()
    model.trip.state["fire_at"] = fire_at(name)
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="tripwire: forward failed"):
        run(name, model, inputs, target=[1, 2])
    assert model.trip.state["calls"] == fire_at(name)
    assert_unchanged(model, before)


@pytest.mark.parametrize("name", PARAMS)
def test_unchanged_when_backward_raises_midway(name, inputs):
    model = make_cnn()
    model.trip.state.update(fire_at=fire_at(name), where="backward")
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="tripwire: backward failed"):
        run(name, model, inputs, target=[1, 2])
    assert_unchanged(model, before)


@pytest.mark.parametrize("target", [7, [0, 5]], ids=["int", "list"])
@pytest.mark.parametrize("name", PARAMS)
def test_unchanged_when_target_out_of_range(name, target, inputs):
    model = make_cnn()
    before = snapshot(model)
    with pytest.raises(ValueError, match="out of range"):
        run(name, model, inputs, target=target)
    assert model.trip.state["calls"] >= 1  # found only after a forward
    assert_unchanged(model, before)


@pytest.mark.parametrize("name", PARAMS)
def test_unchanged_under_no_grad_and_eval(name, inputs):
    """Called under torch.no_grad() on an eval model: still works, grad mode comes back off.

    SRC BUG: core/gradients.py row_gradients builds the graph inside torch.enable_grad()
    but calls input_gradients(scalars, chunk) after that block; there
    ``scalars.sum()`` is computed with grad disabled, so torch.autograd.grad raises
    "element 0 of tensors does not require grad" for every method when the caller is
    inside torch.no_grad() (Captum supports this). Fix: take the gradients inside
    torch.enable_grad() (e.g. wrap the body of input_gradients in it).
    """
    model = make_cnn().eval()
    before = snapshot(model)
    with torch.no_grad():
        result = run(name, model, inputs, target=0)
        assert not torch.is_grad_enabled()
    assert_unchanged(model, before)
    reference = run(name, copy.deepcopy(model), inputs, target=0)
    torch.testing.assert_close(result, reference)


@pytest.mark.slow
def test_resnet18_unchanged(inputs):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=5)
    model.train()
    model.conv1.weight.requires_grad_(False)
    model.fc.weight.grad = torch.full_like(model.fc.weight, -1.5)
    model.layer1[0].relu.register_forward_pre_hook(lambda m, i: None)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    before = snapshot(model)
    names = [m for m in METHODS if m != "LRP" or LRP is not None]
    for name in names:
        result = run(name, model, x, target=3)
        assert_unchanged(model, before)
        assert result.shape == x.shape and torch.isfinite(result).all() and result.abs().sum() > 0, name
    with pytest.raises(ValueError, match="out of range"):
        run("DeepLift", model, x, target=9)
    assert_unchanged(model, before)
