"""Forms beyond Captum: forward_kwargs, tuple/dict model outputs with output_selector,
callable targets, non-batched extra arguments, result device/dtype and the
tensor-in/tensor-out, tuple-in/tuple-out contract.

Oracles: the same attribution computed on an equivalent plain model (or one example
at a time), and for the randomised methods a scale identity with identical draws.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchexplain.attr import DeepLift, GradientShap, IntegratedGradients, NoiseTunnel, Saliency

METHODS = ["Saliency", "IntegratedGradients", "DeepLift", "GradientShap", "NoiseTunnel"]
DETERMINISTIC = ["Saliency", "IntegratedGradients", "DeepLift"]
RANDOMISED = ["GradientShap", "NoiseTunnel"]
TOL = dict(rtol=1e-5, atol=1e-6)


def baseline_rows(inputs):
    """A small deterministic baseline distribution (3 rows) for each input."""

    def rows(x):
        shape = (1,) + tuple(x.shape[1:])
        return torch.cat(
            [torch.zeros(shape), torch.full(shape, 0.5), torch.full(shape, -0.3)]
        ).to(device=x.device, dtype=x.dtype)

    if isinstance(inputs, tuple):
        return tuple(rows(x) for x in inputs)
    return rows(inputs)


def attribute(name, model, inputs, *, output_selector=None, seed=0, gs_stdevs=0.05, **kw):
    """Run method ``name`` with small, reproducible settings."""
    gen = torch.Generator().manual_seed(seed)
    if name == "Saliency":
        return Saliency(model, output_selector=output_selector).attribute(inputs, **kw)
    if name == "IntegratedGradients":
        return IntegratedGradients(model, output_selector=output_selector).attribute(inputs, n_steps=8, **kw)
    if name == "DeepLift":
        return DeepLift(model, output_selector=output_selector).attribute(inputs, **kw)
    if name == "GradientShap":
        kw.setdefault("baselines", baseline_rows(inputs))
        return GradientShap(model, output_selector=output_selector).attribute(
            inputs, n_samples=4, stdevs=gs_stdevs, generator=gen, **kw
        )
    if name == "NoiseTunnel":
        nt = NoiseTunnel(Saliency(model, output_selector=output_selector))
        return nt.attribute(inputs, nt_samples=3, stdevs=0.1, generator=gen, **kw)
    raise AssertionError(name)


def assert_same_form(result, reference):
    if isinstance(reference, tuple):
        assert isinstance(result, tuple) and len(result) == len(reference)
        for r, e in zip(result, reference):
            torch.testing.assert_close(r, e, **TOL)
    else:
        assert isinstance(result, torch.Tensor)
        torch.testing.assert_close(result, reference, **TOL)


class Net(nn.Module):
    """A small non-linear classifier, 5 features -> 3 classes."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.l1 = nn.Linear(5, 8)
        self.l2 = nn.Linear(8, 3)

    def body(self, x, shift=0.0):
        return self.l2(F.relu(torch.tanh(self.l1(x) + shift)))

    def forward(self, x):
        return self.body(x)


@pytest.fixture
def net():
    return Net().eval()


@pytest.fixture
def x():
    torch.manual_seed(1)
    return torch.randn(3, 5)


# --------------------------------------------------------------------------- forward_kwargs


class KwNet(Net):
    """forward(x, *, shift, scale): keyword-only, per-example tensors."""

    def forward(self, x, *, shift, scale, negate=False):
        out = self.body(x, shift) * scale
        return -out if negate else out


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_forward_kwargs_batched_tensors_follow_their_example(name, x):
    net = KwNet().eval()
    shift = torch.tensor([[0.5], [-1.0], [0.0]])
    scale = torch.tensor([[1.0], [-2.0], [3.0]])
    target = [0, 2, 1]
    got = attribute(name, net, x, target=target, forward_kwargs={"shift": shift, "scale": scale})
    # oracle: each example alone, its kwargs fixed in a closure
    expected = []
    for i in range(3):
        alone = lambda t, i=i: net(t, shift=shift[i : i + 1], scale=scale[i : i + 1])  # noqa: E731
        expected.append(attribute(name, alone, x[i : i + 1], target=target[i]))
    assert isinstance(got, torch.Tensor)
    torch.testing.assert_close(got, torch.cat(expected), **TOL)
    assert got.abs().sum() > 0


@pytest.mark.parametrize("name", RANDOMISED)
def test_forward_kwargs_batched_scale_with_identical_draws(name, x, net):
    """f(x; s_i) = s_i * g(x): with identical random draws the attributions of f are
    s_i times those of g (|s_i| for Saliency-based NoiseTunnel)."""
    scale = torch.tensor([1.0, -2.0, 3.0])

    def scaled(t, *, scale, negate):
        assert negate is False  # non-tensor kwargs pass through unchanged
        return net(t) * scale[:, None]

    got = attribute(name, scaled, x, target=[0, 2, 1], forward_kwargs={"scale": scale, "negate": False})
    plain = attribute(name, net, x, target=[0, 2, 1])
    factor = scale.abs() if name == "NoiseTunnel" else scale
    torch.testing.assert_close(got, plain * factor[:, None], **TOL)
    assert plain.abs().sum() > 0


def test_forward_kwargs_must_be_a_dict(net, x):
    with pytest.raises(TypeError, match="forward_kwargs must be a dict"):
        Saliency(net).attribute(x, target=0, forward_kwargs=[("scale", 1.0)])


# --------------------------------------------------------------------------- tuple / dict outputs


class TupleNet(Net):
    def forward(self, x):
        logits = self.body(x)
        return logits, torch.sigmoid(logits).sum(1)


class AuxFirstNet(Net):
    def forward(self, x):
        logits = self.body(x)
        return x.pow(2).sum(1), logits


class DictNet(Net):
    def forward(self, x):
        logits = self.body(x)
        return {"aux": logits.exp(), "logits": logits}


SELECTORS = [
    (TupleNet, 0),
    (TupleNet, -2),
    (AuxFirstNet, 1),
    (DictNet, "logits"),
    (TupleNet, lambda out: out[0]),
    (DictNet, lambda out: out["logits"]),
]


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("cls,selector", SELECTORS, ids=lambda v: getattr(v, "__name__", repr(v)))
def test_output_selector_matches_plain_model(name, cls, selector, x):
    plain = Net().eval()
    multi = cls().eval()
    multi.load_state_dict(plain.state_dict())
    expected = attribute(name, plain, x, target=[2, 0, 1])
    got = attribute(name, multi, x, target=[2, 0, 1], output_selector=selector)
    assert isinstance(got, torch.Tensor)
    torch.testing.assert_close(got, expected, **TOL)
    assert expected.abs().sum() > 0


def test_output_selector_with_scalar_per_example_output(x):
    """Selecting a (N,) output needs no target."""
    net = AuxFirstNet().eval()
    got = Saliency(net, output_selector=0).attribute(x, abs=False)
    torch.testing.assert_close(got, 2 * x)


# --------------------------------------------------------------------------- callable target


class Seg(nn.Module):
    """A segmentation-like model: (N, 2, 6, 6) -> (N, 3, 6, 6)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.c1 = nn.Conv2d(2, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 3, 1)

    def forward(self, x):
        return self.c2(F.relu(self.c1(x)))


@pytest.mark.parametrize("name", METHODS)
def test_callable_target_equals_plain_scalar_model(name):
    seg = Seg().eval()
    torch.manual_seed(4)
    img = torch.randn(2, 2, 6, 6)
    fn = lambda out: out[:, 1].sum((1, 2))  # noqa: E731
    got = attribute(name, seg, img, target=fn)
    expected = attribute(name, lambda t: seg(t)[:, 1].sum((1, 2)), img)
    torch.testing.assert_close(got, expected, **TOL)
    assert expected.abs().sum() > 0
    # and it differs from explaining another channel, so the callable was really used
    other = attribute(name, seg, img, target=lambda out: out[:, 2].sum((1, 2)))
    assert not torch.allclose(other, got)


def test_callable_target_ig_completeness():
    seg = Seg().double().eval()
    torch.manual_seed(5)
    img = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    fn = lambda out: out[:, 0].mean((1, 2))  # noqa: E731
    attr, delta = IntegratedGradients(seg).attribute(
        img, target=fn, n_steps=64, return_convergence_delta=True
    )
    gap = fn(seg(img)) - fn(seg(torch.zeros_like(img)))
    torch.testing.assert_close(attr.sum((1, 2, 3)), gap.detach(), rtol=1e-3, atol=1e-6)
    assert delta.abs().max() < 1e-3 * gap.abs().max()


# --------------------------------------------------------------------------- additional_forward_args


@pytest.mark.parametrize("name", METHODS)
def test_non_batched_additional_args_passed_unchanged(name, net, x):
    weights = torch.tensor([1.0, -0.5, 2.0, 0.25, 1.5])  # shape (5,), batch is 3
    temperature = torch.tensor(0.7)  # 0-d
    seen = []

    def model(t, w, temp, mode):
        seen.append((w, temp, mode))
        assert mode == "scaled"
        return net(t * w) / temp

    got = attribute(name, model, x, target=[1, 1, 0], additional_forward_args=(weights, temperature, "scaled"))
    expected = attribute(name, lambda t: net(t * weights) / temperature, x, target=[1, 1, 0])
    assert seen and all(w is weights and temp is temperature for w, temp, _ in seen)
    torch.testing.assert_close(got, expected, **TOL)
    assert expected.abs().sum() > 0


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_batched_additional_args_follow_their_example(name, net, x):
    shift = torch.tensor([[0.3], [-0.7], [1.1]])
    got = attribute(name, lambda t, s: net.body(t, s), x, target=1, additional_forward_args=shift)
    expected = torch.cat(
        [attribute(name, lambda t, i=i: net.body(t, shift[i : i + 1]), x[i : i + 1], target=1) for i in range(3)]
    )
    torch.testing.assert_close(got, expected, **TOL)


# --------------------------------------------------------------------------- device and dtype


@pytest.mark.parametrize("name", METHODS)
def test_float64_results_stay_float64(name, x):
    net32 = Net().eval()
    net64 = Net().double().eval()
    if name in RANDOMISED:
        # random draws differ between dtypes; on a linear model (and no input noise
        # for GradientShap) the result does not depend on them
        net32, net64 = net32.l1, net64.l1
    got = attribute(name, net64, x.double(), target=[0, 1, 2], gs_stdevs=0.0)
    ref = attribute(name, net32, x, target=[0, 1, 2], gs_stdevs=0.0)
    assert got.dtype == torch.float64 and got.device == x.device
    torch.testing.assert_close(got, ref.double(), rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", METHODS)
def test_cuda_results_stay_on_cuda(name, x):
    net = Net().eval()
    ref = attribute(name, net, x, target=[0, 1, 2])
    got = attribute(name, net.cuda(), x.cuda(), target=torch.tensor([0, 1, 2], device="cuda"))
    assert got.device.type == "cuda" and got.dtype == torch.float32
    if name not in RANDOMISED:  # random draws may differ between devices
        torch.testing.assert_close(got.cpu(), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("double_first", [False, True], ids=["f32_f64", "f64_f32"])
def test_mixed_dtype_tuple_inputs_keep_each_dtype(name, double_first):
    # SRC BUG 1 (fails for DeepLift and GradientShap with float32 first): RowTotals in
    # attr/base.py allocates its per-row totals with inputs[0].dtype, so
    # `self.rows[rows] = row_sums(attributions)` raises "Index put requires the source
    # and destination dtypes match" when a tuple mixes float32 and float64 inputs.
    # SRC BUG 2 (fails for IntegratedGradients and GradientShap with float64 first): the
    # alphas are one tensor of inputs[0].dtype, so `b + alpha * (x - b)` promotes a
    # float32 input's rows to float64 (the model is fed the wrong dtype) and
    # `index_add_` then raises "self (Float) and source (Double) must have the same
    # scalar type".
    torch.manual_seed(6)
    a = torch.randn(2, 3)
    b = torch.randn(2, 2, dtype=torch.float64)
    net = Net().double().eval()
    if name in RANDOMISED:  # linear model: the result does not depend on dtype-specific draws
        net = net.l1
    if double_first:
        inputs = (b, a)
        model = lambda q, p: net(torch.cat([p.double(), q], 1))  # noqa: E731
    else:
        inputs = (a, b)
        model = lambda p, q: net(torch.cat([p.double(), q], 1))  # noqa: E731
    got = attribute(name, model, inputs, target=1, gs_stdevs=0.0)
    ref = attribute(name, model, tuple(t.double() for t in inputs), target=1, gs_stdevs=0.0)
    assert isinstance(got, tuple) and len(got) == 2
    for g, r, t in zip(got, ref, inputs):
        assert g.dtype == t.dtype
        torch.testing.assert_close(g, r.to(t.dtype), rtol=1e-4, atol=1e-5)
    assert sum(r.abs().sum() for r in ref) > 0


# --------------------------------------------------------------------------- tuple in, tuple out


@pytest.mark.parametrize("name", ["Saliency", "IntegratedGradients", "DeepLift", "GradientShap"])
def test_tuple_inputs_equal_concatenated_input(name, net, x):
    a, b = x[:, :2], x[:, 2:]
    split_model = lambda p, q: net(torch.cat([p, q], 1))  # noqa: E731
    got = attribute(name, split_model, (a, b), target=[0, 1, 2], gs_stdevs=0.0)
    whole = attribute(name, net, x, target=[0, 1, 2], gs_stdevs=0.0)
    assert isinstance(got, tuple) and len(got) == 2
    torch.testing.assert_close(torch.cat(got, 1), whole, **TOL)


@pytest.mark.parametrize("nt_type,expected", [("smoothgrad", "w"), ("smoothgrad_sq", "w2"), ("vargrad", "zero")])
def test_noise_tunnel_tuple_inputs_on_linear_model(nt_type, expected):
    """A linear model's gradient does not depend on the noise: exact values."""
    wa = torch.tensor([1.0, -2.0])
    wb = torch.tensor([0.5, 3.0, -1.0])
    model = lambda p, q: (p * wa).sum(1) + (q * wb).sum(1)  # noqa: E731
    torch.manual_seed(7)
    a, b = torch.randn(4, 2), torch.randn(4, 3)
    nt = NoiseTunnel(Saliency(model))
    got = nt.attribute((a, b), nt_type=nt_type, nt_samples=4, stdevs=0.5, abs=False, generator=torch.Generator().manual_seed(0))
    assert isinstance(got, tuple) and len(got) == 2
    for g, w in zip(got, (wa, wb)):
        want = {"w": w, "w2": w * w, "zero": torch.zeros_like(w)}[expected].expand_as(g)
        torch.testing.assert_close(g, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", METHODS)
def test_one_element_tuple_gives_tuple_and_tensor_gives_tensor(name, net, x):
    as_tensor = attribute(name, net, x, target=0)
    as_tuple = attribute(name, net, (x,), target=0)
    assert isinstance(as_tensor, torch.Tensor)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 1
    torch.testing.assert_close(as_tuple[0], as_tensor, **TOL)
    assert as_tensor.abs().sum() > 0
