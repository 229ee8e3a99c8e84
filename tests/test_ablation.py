"""Perturbation methods: Occlusion, FeatureAblation, FeaturePermutation,
ShapleyValueSampling and ShapleyValues.

Oracles: Captum (exact methods; its seeded sampling where our draws follow the same
stream), values derived by hand on tiny models, and the linearity axiom (Shapley
values of ``w.x + c`` are ``w_i (x_i - b_i)`` for every sample of orders).
Models are float64 unless stated; Captum returns float32 for Occlusion and Shapley
values, so those comparisons are at float32 precision.
"""

from __future__ import annotations

import functools

import captum.attr as ca
import pytest
import torch
from torch import nn

import helpers
from torchexplain.attr.ablation import FeatureAblation, FeaturePermutation
from torchexplain.attr.occlusion import Occlusion
from torchexplain.attr.shapley import ShapleyValues, ShapleyValueSampling

DT = torch.float64
N = 3


close = functools.partial(helpers.close, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- models


def cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 5), nn.Softmax(-1)
    ).to(DT).eval()


class TwoInputs(nn.Module):
    """f(a, b) with a (N, 4, 5), b (N, 6): interactions inside and across the inputs."""

    def forward(self, a, b, scale=None):
        inner = torch.tanh(a.flatten(1) @ torch.linspace(-1, 1, 20, dtype=a.dtype)).unsqueeze(1)
        out = torch.cat([inner * b[:, :1], (b**2)[:, 1:4] + a[:, 0, :3], b[:, 4:] * inner], dim=1)
        return out if scale is None else out * scale.unsqueeze(1)


def image(seed=1, n=N, size=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g, dtype=DT)


def pair(seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, 4, 5, generator=g, dtype=DT), torch.randn(N, 6, generator=g, dtype=DT)


QUADS = (torch.arange(8).view(8, 1) // 4 * 2 + torch.arange(8).view(1, 8) // 4).view(1, 1, 8, 8)  # 4 ids
TARGETS = [2, [0, 1, 4], torch.tensor([3, 0, 1])]


# --------------------------------------------------------------------------- Occlusion vs Captum


@pytest.mark.parametrize("target", TARGETS, ids=["int", "list", "tensor"])
@pytest.mark.parametrize(
    "kw",
    [
        dict(sliding_window_shapes=(3, 3, 3)),
        dict(sliding_window_shapes=(1, 4, 3), strides=(1, 2, 3), baselines=0.3),
        dict(sliding_window_shapes=(3, 2, 2), strides=2, baselines="batch1"),
        dict(sliding_window_shapes=(2, 5, 5), strides=(1, 3, 4), baselines="full"),
        dict(sliding_window_shapes=(3, 8, 8)),
    ],
    ids=["3x3", "scalar-base", "batch1-base", "full-base-cutoff", "whole"],
)
def test_occlusion_matches_captum(kw, target):
    model, x = cnn(), image()
    kw = dict(kw)
    g = torch.Generator().manual_seed(3)
    if kw.get("baselines") == "batch1":
        kw["baselines"] = torch.randn(1, 3, 8, 8, generator=g, dtype=DT)
    elif kw.get("baselines") == "full":
        kw["baselines"] = torch.randn(N, 3, 8, 8, generator=g, dtype=DT)
    ours = Occlusion(model).attribute(x, target=target, **kw)
    theirs = ca.Occlusion(model).attribute(x, target=target, **kw)
    assert ours.dtype == DT and ours.shape == x.shape
    close(ours, theirs)


def test_occlusion_tuple_inputs_and_extra_args_match_captum():
    a, b = pair()
    scale = torch.tensor([1.0, -2.0, 0.5], dtype=DT)
    kw = dict(
        sliding_window_shapes=((2, 2), (3,)),
        strides=((1, 2), 2),
        baselines=(0.1, torch.linspace(0, 1, 6, dtype=DT).view(1, 6)),
        additional_forward_args=(scale,),
        target=1,
    )
    ours = Occlusion(TwoInputs()).attribute((a, b), perturbations_per_eval=3, **kw)
    theirs = ca.Occlusion(TwoInputs()).attribute((a, b), **kw)
    assert isinstance(ours, tuple)
    close(ours, theirs)


def test_occlusion_overlap_normalisation_by_hand():
    # f = x1*x2 + x3, windows of 2 with stride 1: {x1,x2}, {x2,x3}; baseline 0
    f = lambda x: x[:, 0] * x[:, 1] + x[:, 2]  # noqa: E731
    x = torch.tensor([[2.0, 3.0, 5.0]], dtype=DT)
    attr = Occlusion(f).attribute(x, sliding_window_shapes=(2,))
    w1, w2 = 6.0, 6.0 + 5.0  # F(x) - F(x occluded) per window
    assert attr.tolist() == [[w1, (w1 + w2) / 2, w2]]


# --------------------------------------------------------------------------- FeatureAblation vs Captum


@pytest.mark.parametrize("target", TARGETS, ids=["int", "list", "tensor"])
@pytest.mark.parametrize(
    "mask, baselines",
    [
        (None, None),
        (QUADS, 0.25),
        (QUADS + 4 * torch.tensor([0, 0, 1]).view(1, 3, 1, 1), "batch1"),
        ("per-example", "full"),
        (QUADS[0, 0] * 3 + 7, None),  # (H, W), non-consecutive ids
    ],
    ids=["default", "quads", "channel-split", "per-example", "hw-mask"],
)
def test_feature_ablation_matches_captum(mask, baselines, target):
    model, x = cnn(), image()
    g = torch.Generator().manual_seed(4)
    if isinstance(mask, str):
        mask = torch.randint(0, 5, (N, 1, 8, 8), generator=g)
    if baselines == "batch1":
        baselines = torch.randn(1, 3, 8, 8, generator=g, dtype=DT)
    elif baselines == "full":
        baselines = torch.randn(N, 3, 8, 8, generator=g, dtype=DT)
    kw = dict(target=target, feature_mask=mask, baselines=baselines)
    close(FeatureAblation(model).attribute(x, **kw), ca.FeatureAblation(model).attribute(x, **kw), rtol=1e-10, atol=1e-12)


def test_feature_ablation_cross_tensor_ids_match_captum():
    a, b = pair()
    mask_a = (torch.arange(20).view(1, 4, 5) // 5).long()  # ids 0..3 by row
    mask_b = torch.tensor([[3, 3, 4, 4, 5, 0]])  # ids 3 and 0 span both inputs
    kw = dict(feature_mask=(mask_a, mask_b), baselines=(0.5, 0.0), target=[0, 2, 5])
    ours = FeatureAblation(TwoInputs()).attribute((a, b), perturbations_per_eval=2, **kw)
    close(ours, ca.FeatureAblation(TwoInputs()).attribute((a, b), **kw), rtol=1e-10, atol=1e-12)


def test_feature_ablation_on_token_ids_matches_captum():
    torch.manual_seed(0)
    emb = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(4 * 6, 3)).to(DT).eval()
    tokens = torch.randint(1, 10, (N, 6), generator=torch.Generator().manual_seed(5))
    mask = torch.tensor([[0, 0, 1, 1, 2, 2]])
    kw = dict(baselines=0, feature_mask=mask, target=1)
    ours = FeatureAblation(emb).attribute(tokens, **kw)
    close(ours, ca.FeatureAblation(emb).attribute(tokens, **kw), rtol=1e-10, atol=1e-12)
    assert ours.dtype == DT


def test_feature_ablation_by_hand():
    f = lambda x: x[:, 0] * x[:, 1] + x[:, 2]  # noqa: E731
    x = torch.tensor([[2.0, 3.0, 5.0], [-1.0, 4.0, 0.5]], dtype=DT)
    b = torch.tensor([[1.0, 1.0, 1.0]], dtype=DT)
    attr = FeatureAblation(f).attribute(x, baselines=b)
    # ablating x1: f(x) - (b1 x2 + x3) = (x1 - b1) x2; x2: x1 (x2 - b2); x3: x3 - b3
    expected = torch.stack([(x[:, 0] - 1) * x[:, 1], x[:, 0] * (x[:, 1] - 1), x[:, 2] - 1], dim=1)
    assert torch.allclose(attr, expected, rtol=0, atol=1e-15)


# --------------------------------------------------------------------------- FeaturePermutation


def test_feature_permutation_matches_captum_with_the_same_seed():
    model, x = cnn(), image(n=4)
    torch.manual_seed(7)
    theirs = ca.FeaturePermutation(model).attribute(x, target=1, feature_mask=QUADS)
    ours = FeaturePermutation(model).attribute(x, target=1, feature_mask=QUADS, seed=7)
    close(ours, theirs, rtol=1e-10, atol=1e-12)


def test_feature_permutation_by_definition_on_tuple_inputs():
    a, b = pair()
    mask_a = torch.zeros(1, 4, 5, dtype=torch.long)
    mask_b = torch.tensor([[0, 0, 1, 1, 1, 1]])  # feature 0 spans both inputs
    model = TwoInputs()
    ours = FeaturePermutation(model).attribute((a, b), target=0, feature_mask=(mask_a, mask_b), seed=3)
    # the same draws: one permutation per feature, in id order, never the identity
    g = torch.Generator().manual_seed(3)
    perms = []
    for _ in range(2):
        p = torch.randperm(N, generator=g)
        while bool((p == torch.arange(N)).all()):
            p = torch.randperm(N, generator=g)
        perms.append(p)
    full = model(a, b)[:, 0]
    a0, b0 = a[perms[0]], b.clone()
    b0[:, :2] = b[perms[0], :2]
    b1 = b.clone()
    b1[:, 2:] = b[perms[1], 2:]
    drop0, drop1 = full - model(a0, b0)[:, 0], full - model(a, b1)[:, 0]
    assert torch.allclose(ours[0], drop0.view(N, 1, 1).expand(N, 4, 5), rtol=1e-12, atol=1e-14)
    assert torch.allclose(ours[1], torch.stack([drop0, drop0] + [drop1] * 4, dim=1), rtol=1e-12, atol=1e-14)


def test_feature_permutation_custom_perm_func():
    f = lambda x: (x * torch.tensor([1.0, 2.0, 3.0], dtype=DT)).sum(1)  # noqa: E731
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=DT)
    roll = lambda t, mask: torch.where(mask, t.roll(1, 0), t)  # noqa: E731
    attr = FeaturePermutation(f, perm_func=roll).attribute(x)
    # swapping the two rows of feature i changes f by w_i (x_i - x'_i)
    expected = torch.tensor([[-3.0, -6.0, -9.0], [3.0, 6.0, 9.0]], dtype=DT)
    assert torch.equal(attr, expected)


def test_feature_permutation_of_one_example_is_zero_with_a_warning():
    # one example cannot be permuted: Captum gives every feature 0 and says so; so do we
    with pytest.warns(UserWarning, match="cannot be permuted"):
        attr = FeaturePermutation(cnn()).attribute(image(n=1), target=0, feature_mask=QUADS)
    assert attr.shape == image(n=1).shape and not bool(attr.any())
    strict = FeaturePermutation(cnn())
    strict._min_examples_per_batch_grouped = 1  # Captum's knob: then it is an error
    with pytest.raises(ValueError, match="at least 2"):
        strict.attribute(image(n=1), target=0)


# --------------------------------------------------------------------------- Shapley values


SIX = QUADS + 4 * (torch.tensor([0, 0, 1]).view(1, 3, 1, 1) * (QUADS < 2))  # 6 features, some span channels


@pytest.mark.parametrize(
    "baselines", [None, 0.5, "batch1", "full"], ids=["none", "scalar", "batch1", "full"]
)
@pytest.mark.slow
def test_shapley_values_match_captum(baselines):
    model, x = cnn(), image(n=2)
    g = torch.Generator().manual_seed(6)
    if baselines == "batch1":
        baselines = torch.randn(1, 3, 8, 8, generator=g, dtype=DT)
    elif baselines == "full":
        baselines = torch.randn(2, 3, 8, 8, generator=g, dtype=DT)
    kw = dict(target=[0, 3], feature_mask=SIX, baselines=baselines)
    ours = ShapleyValues(model).attribute(x, **kw)
    theirs = ca.ShapleyValues(model).attribute(x, **kw)
    close(ours, theirs, rtol=1e-5, atol=1e-6)  # Captum sums its n! orders in float32


def test_shapley_values_tuple_inputs_match_captum():
    a, b = pair()
    mask_a = (torch.arange(20).view(1, 4, 5) // 10).long()  # ids 0, 1
    mask_b = torch.tensor([[2, 2, 3, 4, 1, 0]])
    kw = dict(feature_mask=(mask_a, mask_b), baselines=(0.0, 0.3), target=torch.tensor([0, 4, 5]))
    ours = ShapleyValues(TwoInputs()).attribute((a, b), perturbations_per_eval=5, **kw)
    close(ours, ca.ShapleyValues(TwoInputs()).attribute((a, b), **kw), rtol=1e-5, atol=1e-6)


def test_shapley_values_by_hand():
    # f = x1 x2 + x3: phi1 = (x1 - b1)(x2 + b2)/2, phi2 = (x2 - b2)(x1 + b1)/2, phi3 = x3 - b3
    f = lambda x: x[:, 0] * x[:, 1] + x[:, 2]  # noqa: E731
    x = torch.tensor([[2.0, 3.0, 5.0], [-1.0, 4.0, 0.5]], dtype=DT)
    b = torch.tensor([[0.5, -1.0, 2.0]], dtype=DT)
    phi = ShapleyValues(f).attribute(x, baselines=b)
    expected = torch.stack(
        [(x[:, 0] - 0.5) * (x[:, 1] - 1) / 2, (x[:, 1] + 1) * (x[:, 0] + 0.5) / 2, x[:, 2] - 2], dim=1
    )
    assert torch.allclose(phi, expected, rtol=0, atol=1e-14)
    # efficiency: the values add up to f(x) - f(b)
    assert torch.allclose(phi.sum(1), f(x) - f(b), rtol=0, atol=1e-14)


def test_shapley_sampling_matches_captum_with_the_same_seed():
    model, x = cnn(), image(n=2)
    kw = dict(target=1, feature_mask=SIX, baselines=0.1, n_samples=4)
    torch.manual_seed(11)
    theirs = ca.ShapleyValueSampling(model).attribute(x, **kw)
    ours = ShapleyValueSampling(model).attribute(x, seed=11, **kw)
    close(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n_samples", [1, 3])
def test_shapley_sampling_is_exact_for_linear_models(n_samples):
    g = torch.Generator().manual_seed(8)
    w, c = torch.randn(12, generator=g, dtype=DT), 0.7
    f = lambda x: x.flatten(1) @ w + c  # noqa: E731
    x, b = torch.randn(N, 3, 4, generator=g, dtype=DT), torch.randn(1, 3, 4, generator=g, dtype=DT)
    mask = torch.tensor([[0, 0, 1, 2], [3, 3, 3, 4], [5, 6, 6, 6]]).unsqueeze(0)
    phi = ShapleyValueSampling(f).attribute(x, baselines=b, feature_mask=mask, n_samples=n_samples, seed=n_samples)
    per_scalar = w.view(1, 3, 4) * (x - b)
    group_sums = torch.zeros(N, 7, dtype=DT).index_add_(1, mask.flatten(), per_scalar.flatten(1))
    assert torch.allclose(phi, group_sums[:, mask.flatten()].view(N, 3, 4), rtol=0, atol=1e-13)
    exact = ShapleyValues(f).attribute(x, baselines=b, feature_mask=mask)
    assert torch.allclose(exact, phi, rtol=0, atol=1e-13)


def test_shapley_sampling_reproducible_and_leaves_global_rng_alone():
    f = lambda x: torch.tanh(x[:, 0] * x[:, 1]) + x[:, 2] * x[:, 3] * x[:, 0]  # noqa: E731
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(9), dtype=DT)
    state = torch.random.get_rng_state()
    one = ShapleyValueSampling(f).attribute(x, n_samples=3, seed=5)
    two = ShapleyValueSampling(f).attribute(x, n_samples=3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(one, two)
    other = ShapleyValueSampling(f).attribute(x, n_samples=3, seed=6)
    assert not torch.equal(one, other)
    assert torch.allclose(one.sum(1), f(x) - f(torch.zeros_like(x)), rtol=0, atol=1e-13)  # efficiency per order


# --------------------------------------------------------------------------- batching, progress, inference mode


@pytest.mark.parametrize(
    "method, kw",
    [
        (Occlusion, dict(sliding_window_shapes=(3, 3, 3), strides=2)),
        (FeatureAblation, dict(feature_mask=QUADS)),
        (FeaturePermutation, dict(feature_mask=QUADS, seed=1)),
        (ShapleyValueSampling, dict(feature_mask=QUADS, n_samples=3, seed=1)),
        (ShapleyValues, dict(feature_mask=QUADS)),
    ],
)
def test_chunking_does_not_change_results(method, kw):
    model, x = cnn(), image()
    auto = method(model).attribute(x, target=1, **kw)
    for ppe in (1, 4, 1000):
        other = method(model).attribute(x, target=1, perturbations_per_eval=ppe, **kw)
        torch.testing.assert_close(other, auto, rtol=1e-12, atol=1e-14)
    shown = method(model).attribute(x, target=1, show_progress=True, **kw)
    torch.testing.assert_close(shown, auto, rtol=1e-12, atol=1e-14)


def test_forward_passes_run_batched_under_inference_mode():
    calls = []

    def f(x):
        calls.append((x.shape[0], torch.is_inference_mode_enabled()))
        return x.flatten(1).sum(1)

    x = torch.randn(2, 3, 4, dtype=DT)
    FeatureAblation(f).attribute(x, feature_mask=torch.arange(3).view(1, 3, 1), perturbations_per_eval=2)
    # the inputs first (their output tells the model's form, as Captum's initial evaluation),
    # then 3 perturbations of 2 examples, 2 perturbations (4 rows) per forward
    assert calls == [(2, True), (4, True), (2, True)]
    calls.clear()
    ShapleyValues(f).attribute(x, feature_mask=torch.arange(3).view(1, 3, 1), perturbations_per_eval=8)
    assert calls == [(2, True), (14, True)]


def test_model_left_unchanged():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    model.train()
    model[1].eval()
    model[4].weight.grad = torch.ones_like(model[4].weight)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [m.training for m in model.modules()]
    keys = [sorted(vars(m)) for m in model.modules()]
    x = torch.randn(2, 3, 8, 8)
    for method, kw in [
        (Occlusion, dict(sliding_window_shapes=(3, 4, 4), strides=4)),
        (FeatureAblation, dict(feature_mask=QUADS)),
        (FeaturePermutation, dict(feature_mask=QUADS, seed=0)),
        (ShapleyValueSampling, dict(feature_mask=QUADS, n_samples=2, seed=0)),
        (ShapleyValues, dict(feature_mask=QUADS)),
    ]:
        method(model).attribute(x, target=0, **kw)
        assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items()), method.__name__
        assert [m.training for m in model.modules()] == flags
        assert [sorted(vars(m)) for m in model.modules()] == keys
        assert torch.equal(model[4].weight.grad, torch.ones_like(model[4].weight))
        assert all(p.grad is None for n, p in model.named_parameters() if n != "4.weight")


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda m, x: FeatureAblation(m).attribute(x, target=0, feature_mask=torch.zeros(1, 3, 8, 7, dtype=torch.long)), "feature_mask"),
        (lambda m, x: FeatureAblation(m).attribute(x, target=0, feature_mask=QUADS.float() + 0.5), "feature_mask"),
        (lambda m, x: ShapleyValues(m).attribute(x, target=0, feature_mask=torch.zeros(3, 1, 8, 8, dtype=torch.long)), "feature_mask"),
        (lambda m, x: Occlusion(m).attribute(x, target=0, sliding_window_shapes=(3, 9, 3)), "sliding_window_shapes"),
        (lambda m, x: Occlusion(m).attribute(x, target=0, sliding_window_shapes=(3, 3)), "sliding_window_shapes"),
        (lambda m, x: Occlusion(m).attribute(x, target=0, sliding_window_shapes=(3, 3, 3), strides=(2, 2)), "strides"),
        (lambda m, x: Occlusion(m).attribute(x, target=0, sliding_window_shapes=(3, 3, 3), strides=(1, 4, 1)), "strides"),
        (lambda m, x: Occlusion(m).attribute(x, target=0, sliding_window_shapes=(3, 3, 3), strides=0), "strides"),
        (lambda m, x: ShapleyValueSampling(m).attribute(x, target=0, n_samples=0), "n_samples"),
        (lambda m, x: ShapleyValueSampling(m).attribute(x, target=0, n_samples=-3), "n_samples"),
        (lambda m, x: ShapleyValueSampling(m).attribute(x, target=0, n_samples=2.5), "n_samples"),
        (lambda m, x: FeatureAblation(m).attribute(x, target=0, perturbations_per_eval=0), "perturbations_per_eval"),
        (lambda m, x: ShapleyValueSampling(m).attribute(x, target=0, seed=1, generator=torch.Generator()), "seed"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_them(call, name):
    model, x = cnn(), image(n=2)
    with pytest.raises(ValueError, match=name):
        call(model, x)


def test_exact_shapley_refuses_many_features():
    x = torch.randn(1, 21, dtype=DT)
    with pytest.raises(ValueError, match="ShapleyValueSampling") as err:
        ShapleyValues(lambda t: t.sum(1)).attribute(x)
    assert "21" in str(err.value) and "20" in str(err.value)
