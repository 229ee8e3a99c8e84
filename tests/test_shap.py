"""torchexplain.shap: expected gradients (inputs and layers), Deep SHAP and the image
plot, against hand-derived values, shap and Captum.

Sampled estimates are compared with tolerances from their sampling variance: the
per-sample variance is measured with ``nsamples=1`` on the examples repeated many
times (each copy gets independent draws), so the standard error of an
``nsamples``-sample mean is ``sqrt(var / nsamples)``. Seeds are fixed, so the tests
are deterministic; the bounds say how far a correct estimator may stray.
"""

from __future__ import annotations

import copy
import functools

import matplotlib
import numpy as np
import pytest
import shap
import torch
import torch.nn.functional as F
import torchvision
from captum.attr import DeepLiftShap as CaptumDeepLiftShap
from captum.attr import LayerIntegratedGradients
from test_model_unchanged import assert_unchanged, make_cnn, snapshot
from torch import nn

import helpers
import torchexplain.shap as tes
from torchexplain.shap import layer as shap_layer


def small_cnn(activation=nn.Softplus, classes=3):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), activation(), nn.Conv2d(4, 4, 3, padding=1), activation(),
        nn.Flatten(), nn.Linear(4 * 6 * 6, classes),
    )


images = functools.partial(helpers.images, size=6)


def single_sample_variance(explainer, x, copies=300, **kwargs):
    """Per-sample variance of each value: ``copies`` one-sample estimates per example."""
    v = explainer.shap_values(x.repeat(copies, *([1] * (x.dim() - 1))), nsamples=1, rseed=123, **kwargs)
    v = v[0] if isinstance(v, tuple) else v
    return v.reshape((copies, x.shape[0]) + v.shape[1:]).var(0)


def single_sample_total_variance(explainer, x, copies=300):
    """Per-sample variance of each example's total (sum over features), per output."""
    v = explainer.shap_values(x.repeat(copies, *([1] * (x.dim() - 1))), nsamples=1, rseed=321)
    totals = v.reshape(v.shape[0], -1, v.shape[-1]).sum(1)
    return totals.reshape((copies, x.shape[0], v.shape[-1])).var(0)


# --------------------------------------------------------------------------- exact values on linear models


@pytest.mark.parametrize("smoothing", [0.0, 0.5])
def test_linear_model_gives_w_times_x_minus_mean_background(smoothing):
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    background = torch.randn(30, 5)
    x = background.mean(0) + torch.tensor([[3.0, -4.0, 3.5, -3.0, 5.0], [-3.0, 4.0, 3.0, 6.0, -3.5]])
    samples = 2000
    values = tes.GradientExplainer(model, background, local_smoothing=smoothing).shap_values(x, nsamples=samples, rseed=0)
    w = model.weight.detach()
    exact = (w[None] * (x - background.mean(0))[:, None, :]).permute(0, 2, 1).numpy()  # (N, features, outputs)
    assert values.shape == exact.shape
    # each value is W_ki times the mean of (x_i + noise - b_i) over the samples: its
    # standard error is |W_ki| sqrt((var(b_i) + smoothing^2) / samples)
    spread = background.var(0, unbiased=False) + smoothing ** 2
    stderr = (w.abs()[None] * (spread / samples).sqrt()[None, None, :]).permute(0, 2, 1).numpy()
    assert np.all(np.abs(values - exact) <= 4.5 * stderr)
    assert np.all(np.abs(values - exact) <= 0.02 * np.abs(exact))


def test_linear_layer_additive_and_shap_formulas():
    """Layer = the second of two linear maps, h = A x + c its input, F(h) = W h + d.
    Additive: W (h(x) - mean h(bg)). shap's formula: W * E[h(x_t)] = W (h(x) + mean h(bg)) / 2."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 2))
    background = torch.randn(20, 4)
    x = torch.randn(2, 4) * 3
    samples = 3000
    with torch.no_grad():
        h_x, h_bg = model[0](x), model[0](background)
    w = model[1].weight
    additive = tes.GradientExplainer((model, model[1]), background).shap_values(x, nsamples=samples, rseed=0)
    ours_shap = tes.GradientExplainer((model, "1"), background, compat="shap").shap_values(x, nsamples=samples, rseed=0)
    exact_additive = (w[None] * (h_x - h_bg.mean(0))[:, None, :]).permute(0, 2, 1).detach().numpy()
    exact_shap = (w[None] * ((h_x + h_bg.mean(0)) / 2)[:, None, :]).permute(0, 2, 1).detach().numpy()
    # additive: only the background picks vary; shap's: picks and t
    se_add = (w.abs()[None] * (h_bg.var(0, unbiased=False) / samples).sqrt()).permute(0, 2, 1).detach().numpy()
    assert np.all(np.abs(additive - exact_additive) <= 4.5 * se_add)
    var_shap = single_sample_variance(tes.GradientExplainer((model, model[1]), background, compat="shap"), x)
    assert np.all(np.abs(ours_shap - exact_shap) <= 4.5 * np.sqrt(var_shap / samples) + 1e-6)
    # the two formulas really differ here
    assert np.abs(exact_additive - exact_shap).max() > 20 * se_add.max()


# --------------------------------------------------------------------------- additivity


@pytest.mark.parametrize("form", ["inputs", "layer"])
def test_values_add_up_to_output_minus_expected_value(form):
    model = small_cnn()
    background, x = images(8, seed=1), images(2, seed=2)
    target = model if form == "inputs" else (model, model[2])
    explainer = tes.GradientExplainer(target, background)
    samples = 1000
    values = explainer.shap_values(x, nsamples=samples, rseed=0)
    with torch.no_grad():
        gap = (model(x) - model(background).mean(0)).numpy()
    np.testing.assert_allclose(explainer.expected_value, model(background).mean(0).detach().numpy(), rtol=1e-5)
    totals = values.reshape(2, -1, 3).sum(1)
    stderr = np.sqrt(single_sample_total_variance(explainer, x) / samples)
    assert np.all(np.abs(totals - gap) <= 4.5 * stderr + 1e-5)


def test_shap_formula_does_not_add_up():
    model = small_cnn()
    background, x = images(8, seed=1), images(2, seed=2)
    values = tes.GradientExplainer((model, model[2]), background, compat="shap").shap_values(x, nsamples=400, rseed=0)
    with torch.no_grad():
        gap = (model(x) - model(background).mean(0)).numpy()
    assert np.abs(values.reshape(2, -1, 3).sum(1) - gap).max() > 0.05


# --------------------------------------------------------------------------- agreement with shap


@pytest.mark.parametrize("form", ["inputs", "layer"])
@pytest.mark.slow
def test_agrees_with_shap_gradient_explainer_in_expectation(form):
    model = small_cnn(nn.ReLU)
    background, x = images(8, seed=3), images(2, seed=4)
    target = model if form == "inputs" else (model, model[2])
    ours = tes.GradientExplainer(target, background, local_smoothing=0.2, compat="shap")
    theirs = shap.GradientExplainer(copy.deepcopy(target) if form == "inputs" else target, background, local_smoothing=0.2)
    samples = 600
    values, ranks = ours.shap_values(x, nsamples=samples, ranked_outputs=2, rseed=0)
    their_values, their_ranks = theirs.shap_values(x, nsamples=samples, ranked_outputs=2, rseed=0)
    assert torch.equal(ranks, their_ranks.long())
    assert values.shape == their_values.shape == (2, 4 if form == "layer" else 3, 6, 6, 2)
    var = single_sample_variance(ours, x, ranked_outputs=2)
    z = (values - their_values) / np.sqrt(2 * var / samples + 1e-12)
    assert np.mean(z ** 2) < 1.5  # about 1 for two unbiased estimates of the same value
    assert np.abs(z).max() < 6


# --------------------------------------------------------------------------- the layer shortcut


class Residual(nn.Module):
    """The layer (conv2) is not a cut: the input also reaches the output around it."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 36, 2)

    def forward(self, x):
        return self.fc((self.conv2(torch.tanh(self.conv1(x))) + x).flatten(1))


class Masked(nn.Module):
    """A cut for autograd, but the input's sign (no gradient) selects the output."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 36, 2)

    def forward(self, x):
        mask = (x.flatten(1).sum(1, keepdim=True) > 0).float()
        return self.fc(self.conv(x).flatten(1)) * mask


@pytest.mark.parametrize("make, cut", [(small_cnn, True), (Residual, False), (Masked, False)])
def test_shortcut_is_taken_only_when_the_layer_is_a_cut(make, cut):
    torch.manual_seed(0)
    model = make()
    layer = {Residual: "conv2", Masked: "conv"}.get(make, "2")
    background, x = images(4, seed=5), torch.cat([images(1, seed=6, shift=3.0), images(1, seed=7, shift=-3.0)])
    explainer = tes.GradientExplainer((model, layer), background)
    tap = shap_layer.LayerTap(explainer.layer, to_input=True)
    feeds = shap_layer.probe_feeds((x,), (background,))
    values = shap_layer.layer_inputs(model, tap, (torch.cat([x[:1], background[:1]]),), None)
    assert shap_layer.output_passes_through(model, tap, feeds, values) is cut


def test_shortcut_gives_the_values_of_feeding_every_row(monkeypatch):
    model = small_cnn()
    background, x = images(6, seed=8), images(3, seed=9)
    explainer = tes.GradientExplainer((model, model[2]), background, batch_size=7)
    fast, ranks = explainer.shap_values(x, nsamples=20, ranked_outputs=2, rseed=4)
    calls = []
    monkeypatch.setattr("torchexplain.shap.gradient.output_passes_through", lambda *a: calls.append(1) or False)
    slow, slow_ranks = explainer.shap_values(x, nsamples=20, ranked_outputs=2, rseed=4)
    assert calls and torch.equal(ranks, slow_ranks)
    np.testing.assert_allclose(fast, slow, rtol=1e-4, atol=1e-6)


def test_layer_that_is_not_a_cut_is_explained_as_captum_layer_integrated_gradients():
    """With one background row and a suffix linear in the layer's input, expected
    gradients are exactly integrated gradients; the skip path sees the example."""
    torch.manual_seed(0)
    model = Residual()
    background, x = images(1, seed=20), images(2, seed=21)
    values = tes.GradientExplainer((model, "conv2"), background).shap_values(x, nsamples=3, rseed=0)
    lig = LayerIntegratedGradients(model, model.conv2)
    for k in range(2):
        theirs = lig.attribute(x, baselines=background, target=k, attribute_to_layer_input=True, n_steps=4)
        np.testing.assert_allclose(values[..., k], theirs.detach().numpy(), rtol=1e-4, atol=1e-6)


class ViewNet(nn.Module):
    """small_cnn's modules, flattened with .view (which channels-last input breaks)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        n = self.net
        h = n[3](n[2](n[1](n[0](x))))
        return n[5](h.view(h.shape[0], -1))


def test_model_that_needs_contiguous_layer_input_gives_the_same_values():
    model = small_cnn()
    background, x = images(4, seed=22), images(2, seed=23)
    kwargs = dict(nsamples=12, ranked_outputs=2, rseed=5)
    expected, ranks = tes.GradientExplainer((model, model[2]), background, batch_size=8).shap_values(x, **kwargs)
    wrapped = ViewNet(model)
    values, view_ranks = tes.GradientExplainer((wrapped, model[2]), background, batch_size=8).shap_values(x, **kwargs)
    assert torch.equal(ranks, view_ranks)
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- forms, ranks, seeds


class TwoInputs(nn.Module):
    """a(x) + b(y); with ``squeeze`` a single output comes back as shape (batch,)."""

    def __init__(self, outputs, squeeze):
        super().__init__()
        self.a, self.b = nn.Linear(4, outputs), nn.Linear(3, outputs, bias=False)
        self.squeeze = squeeze

    def forward(self, x, y):
        out = self.a(x) + self.b(y)
        return out[:, 0] if self.squeeze else out


@pytest.mark.parametrize("explainer", ["gradient", "deep"])
@pytest.mark.parametrize("outputs, squeeze", [(3, False), (1, False), (1, True)], ids=["3 outputs", "(N,1)", "(N,)"])
@pytest.mark.parametrize("ranked", [None, 2])
def test_return_forms_and_values_for_one_and_two_inputs(explainer, outputs, squeeze, ranked):
    torch.manual_seed(0)
    model = TwoInputs(outputs, squeeze)
    bx, by = torch.randn(10, 4), torch.randn(10, 3)
    x, y = torch.rand(2, 4) + 3, -torch.rand(2, 3) - 3
    make = {"gradient": tes.GradientExplainer, "deep": tes.DeepExplainer}[explainer]
    kwargs = {"nsamples": 1500, "rseed": 0} if explainer == "gradient" else {}
    k = min(outputs, ranked or outputs)

    two = make(model, [bx, by]).shap_values([x, y], ranked_outputs=ranked, **kwargs)
    values, ranks = two if ranked else (two, None)
    assert isinstance(values, list) and [v.shape for v in values] == [(2, 4, k), (2, 3, k)]
    if ranked:
        assert ranks.shape == (2, k) and ranks.dtype == torch.long
        if outputs == 1:
            assert not ranks.any()
    # linear model: W (x - mean background) per input; exact for DeepLIFT; for expected
    # gradients the mean of 1500 background picks has a standard error of about
    # 1/sqrt(1500) = 2.6% of the background's spread (1), so 5% of |x - mean| >= 2 is >= 4 of them
    columns = ranks if ranked else torch.arange(k).expand(2, k)
    for v, (lin, inp, bg) in zip(values, [(model.a, x, bx), (model.b, y, by)]):
        exact = (lin.weight.detach()[columns] * (inp - bg.mean(0))[:, None, :]).permute(0, 2, 1).numpy()
        np.testing.assert_allclose(v, exact, rtol=0.05, atol=1e-6)

    one_model = nn.Sequential(nn.Linear(4, outputs), *( [nn.Flatten(0)] if squeeze else []))
    one = make(one_model, bx).shap_values(x, ranked_outputs=ranked, **kwargs)
    one_values = one[0] if ranked else one
    assert isinstance(one_values, np.ndarray) and one_values.shape == (2, 4, k)
    expected = make(one_model, bx).expected_value
    assert (np.ndim(expected), np.size(expected)) == ((0, 1) if squeeze else (1, outputs))


def test_rank_orders():
    model = small_cnn(classes=5)
    background, x = images(4, seed=10), images(3, seed=11)
    explainer = tes.GradientExplainer(model, background)
    full = explainer.shap_values(x, nsamples=8, rseed=1)
    with torch.no_grad():
        out = model(x)
    for order, key in [("max", out), ("min", -out), ("max_abs", out.abs())]:
        values, ranks = explainer.shap_values(x, nsamples=8, ranked_outputs=3, output_rank_order=order, rseed=1)
        assert torch.equal(ranks, key.argsort(1, descending=True)[:, :3])
        np.testing.assert_allclose(values, np.take_along_axis(full, ranks.numpy()[:, None, None, None, :], -1), atol=1e-6)
    values, ranks = explainer.shap_values(x, nsamples=8, ranked_outputs=[4, 0], output_rank_order="custom", rseed=1)
    assert ranks.tolist() == [[4, 0]] * 3
    np.testing.assert_allclose(values, full[..., [4, 0]], atol=1e-6)


def test_seed_reproducible_chunk_independent_and_global_rng_untouched():
    model = small_cnn()
    background, x = images(5, seed=12), images(2, seed=13)
    state = torch.random.get_rng_state()
    a = tes.GradientExplainer((model, model[2]), background, batch_size=3, local_smoothing=0.3)
    b = tes.GradientExplainer((model, model[2]), background, batch_size=None, local_smoothing=0.3)
    first = a.shap_values(x, nsamples=10, rseed=7)
    assert torch.equal(torch.random.get_rng_state(), state)
    np.testing.assert_allclose(b.shap_values(x, nsamples=10, rseed=7), first, rtol=1e-5, atol=1e-7)
    assert np.array_equal(a.shap_values(x, nsamples=10, rseed=7), first)
    assert not np.allclose(a.shap_values(x, nsamples=10, rseed=8), first)


# --------------------------------------------------------------------------- DeepExplainer


def conv_net():
    torch.manual_seed(2)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4),
    ).double()


def test_deep_explainer_agrees_with_captum_and_shap():
    model = conv_net()
    background, x = images(5, seed=14, dtype=torch.float64), images(3, seed=15, dtype=torch.float64)
    explainer = tes.DeepExplainer(model, background)
    values, ranks = explainer.shap_values(x, ranked_outputs=2)
    captum = np.stack(
        [CaptumDeepLiftShap(model).attribute(x, baselines=background, target=ranks[:, k]).detach().numpy() for k in range(2)],
        -1,
    )
    np.testing.assert_allclose(values, captum, rtol=1e-5, atol=1e-10)
    theirs, their_ranks = shap.DeepExplainer(copy.deepcopy(model), background).shap_values(
        x, ranked_outputs=2, check_additivity=False
    )
    assert torch.equal(ranks, their_ranks)
    np.testing.assert_allclose(values, theirs, rtol=1e-5, atol=1e-10)
    np.testing.assert_allclose(explainer.expected_value, model(background).mean(0).detach().numpy(), rtol=1e-10)


class FunctionalReused(nn.Module):
    """conv_net's arithmetic with F.relu and one in-place ReLU module used twice."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        n = self.net
        h = self.relu(n[2](F.relu(n[0](x))))
        return n[7](self.relu(n[5](h.flatten(1))))


def test_deep_explainer_on_functional_and_reused_activations_matches_module_form():
    model = conv_net()
    background, x = images(4, seed=16, dtype=torch.float64), images(2, seed=17, dtype=torch.float64)
    oracle = np.stack(
        [CaptumDeepLiftShap(model).attribute(x, baselines=background, target=k).detach().numpy() for k in range(4)], -1
    )
    wrapped = FunctionalReused(model)
    before = snapshot(wrapped)
    values = tes.DeepExplainer(wrapped, background).shap_values(x)
    np.testing.assert_allclose(values, oracle, rtol=1e-5, atol=1e-10)
    assert_unchanged(wrapped, before)


@pytest.mark.slow
def test_deep_explainer_on_resnet18_adds_up_and_leaves_no_trace():
    torch.manual_seed(3)
    model = torchvision.models.resnet18(num_classes=6)
    model.train()
    background, x = torch.randn(3, 3, 32, 32), torch.randn(2, 3, 32, 32)
    before = snapshot(model)
    explainer = tes.DeepExplainer(model, background)
    values, ranks = explainer.shap_values(x, ranked_outputs=2)  # check_additivity on
    assert_unchanged(model, before)
    model.eval()
    with torch.no_grad():
        out = model(x)
        gap = out.gather(1, ranks) - model(background).mean(0)[ranks]
    np.testing.assert_allclose(values.reshape(2, -1, 2).sum(1), gap.numpy(), atol=2e-3, rtol=1e-3)


def test_deep_explainer_additivity_check_raises_on_unsupported_operation():
    class Square(nn.Module):
        def forward(self, x):
            return (x * x).sum(1, keepdim=True)

    background, x = torch.randn(4, 3), torch.randn(2, 3) + 2
    explainer = tes.DeepExplainer(Square(), background)
    with pytest.raises(tes.AdditivityError, match="check_additivity=False"):
        explainer.shap_values(x)
    values = explainer.shap_values(x, check_additivity=False)
    # no rule for the product: multipliers are the gradient 2x at the input
    expected = (2 * x[:, None, :] * (x[:, None, :] - background[None])).mean(1)
    np.testing.assert_allclose(values[..., 0], expected.numpy(), rtol=1e-5)


# --------------------------------------------------------------------------- the model is borrowed


@pytest.mark.parametrize("form", ["inputs", "layer", "deep"])
def test_model_unchanged_after_success_and_after_errors(form):
    model = make_cnn()
    background, x = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)

    def explain():
        if form == "deep":
            return tes.DeepExplainer(model, background).shap_values(x, ranked_outputs=2)
        target = model if form == "inputs" else (model, model.conv2)
        return tes.GradientExplainer(target, background, batch_size=2).shap_values(x, nsamples=5, ranked_outputs=2)

    before = snapshot(model)
    explain()
    assert_unchanged(model, before)
    # calls: 1 the expected value, 2 the ranking, then the first chunk of rows; for the
    # layer, after 3 probes of whether it is a cut (x[0], x[1], a background row); for
    # deep the chunk is fed channels-last, so a forward error there would be retried
    first_chunk = {"inputs": 3, "layer": 6, "deep": 3}[form]
    for where, call in [("forward", 2 if form == "deep" else first_chunk), ("backward", first_chunk)]:
        model.trip.state.update(calls=0, fire_at=call, where=where)
        before = snapshot(model)
        with pytest.raises(RuntimeError, match=f"tripwire: {where} failed"):
            explain()
        assert_unchanged(model, before)


# --------------------------------------------------------------------------- errors at the boundary


def test_clear_errors():
    model = small_cnn()
    background, x = images(4, seed=18), images(2, seed=19)
    with pytest.raises(ValueError, match="compat"):
        tes.GradientExplainer(model, background, compat="captum")
    with pytest.raises(ValueError, match="local_smoothing"):
        tes.GradientExplainer(model, background, local_smoothing=-1)
    explainer = tes.GradientExplainer(model, background)
    with pytest.raises(TypeError, match="one tensor"):
        explainer.shap_values([x])
    with pytest.raises(ValueError, match=r"shape \(N, 3, 6, 6\)"):
        explainer.shap_values(x[:, :, :5])
    with pytest.raises(ValueError, match="only 3 outputs"):
        explainer.shap_values(x, ranked_outputs=4)
    with pytest.raises(ValueError, match="output_rank_order"):
        explainer.shap_values(x, ranked_outputs=1, output_rank_order="top")
    with pytest.raises(ValueError, match="nsamples"):
        explainer.shap_values(x, nsamples=0)
    with pytest.raises(ValueError, match=r"\(batch, outputs\)"):
        tes.GradientExplainer(nn.Conv2d(3, 2, 3), background)
    with pytest.raises(ValueError, match="not a module"):
        tes.GradientExplainer((model, "features.7"), background)


# --------------------------------------------------------------------------- image_plot


def _panels(figure):
    """(data, clim) of every image drawn, per axis, in drawing order."""
    return [[(np.asarray(im.get_array()), im.get_clim()) for im in ax.get_images()] for ax in figure.axes if ax.get_images()]


def test_image_plot_draws_as_shap_does():
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 1, (2, 6, 6, 3))
    per_output = [rng.normal(size=(2, 6, 6, 3)) for _ in range(2)]
    labels = np.array([["cat", "dog"], ["car", "bus"]])
    shap.image_plot(per_output, pixels, labels, show=False)
    theirs = _panels(plt.gcf())
    plt.close("all")
    stacked = np.stack(per_output, -1)  # (N, H, W, C, K)
    forms = [
        (per_output, pixels),  # shap's: a list of NHWC arrays
        ([torch.from_numpy(v).permute(0, 3, 1, 2) for v in per_output], torch.from_numpy(pixels).permute(0, 3, 1, 2)),
        (np.moveaxis(stacked, 3, 1), pixels),  # the explainers' (N, C, H, W, K)
    ]
    scale = np.percentile(np.abs(np.stack([v.sum(-1) for v in per_output])), 99.9)
    for values, images_ in forms:
        figure = tes.image_plot(values, images_, labels, show=False)
        assert isinstance(figure, matplotlib.figure.Figure) and figure is plt.gcf()
        ours = _panels(figure)
        assert len(ours) == len(theirs) == 6
        for our_axis, their_axis in zip(ours, theirs):
            for (a, _), (b, _) in zip(our_axis, their_axis):
                if a.ndim == 2:  # grey copy and values; the first column is the image itself
                    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
            if len(our_axis) == 2:  # a values panel: the same symmetric scale as shap's
                assert np.allclose(our_axis[1][1], their_axis[1][1]) and np.allclose(our_axis[1][1], (-scale, scale))
        titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
        assert titles == ["cat", "dog", "car", "bus"]
        plt.close(figure)


def test_image_plot_shows_by_default_and_returns_nothing_as_shap(monkeypatch):
    import matplotlib.pyplot as plt

    shown = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: shown.append(plt.gcf()))
    rng = np.random.default_rng(1)
    values, pixels = rng.normal(size=(1, 6, 6, 3)), rng.uniform(0, 1, (1, 6, 6, 3))
    before = set(plt.get_fignums())
    assert tes.image_plot(values, pixels) is None
    assert len(shown) == 1 and len(shown[0].axes) == 3  # image, values, colour bar
    assert tes.image_plot(values, pixels, show=False) is plt.gcf() and len(shown) == 1
    for number in set(plt.get_fignums()) - before:
        plt.close(number)


# --------------------------------------------------------------------------- explainer(X), the layer form of Deep


@pytest.mark.parametrize("explainer", ["gradient", "deep"])
def test_explainers_are_callable_and_return_shaps_explanation_fields(explainer):
    model = conv_net()
    background, x = images(5, seed=30, dtype=torch.float64), images(2, seed=31, dtype=torch.float64)
    ours = (tes.GradientExplainer if explainer == "gradient" else tes.DeepExplainer)(model, background)
    torch.manual_seed(5)
    explanation = ours(x)
    torch.manual_seed(5)  # __call__ draws from the global RNG, as shap's does
    values = ours.shap_values(x)
    assert isinstance(explanation.values, np.ndarray) and explanation.values.shape == (2, 3, 6, 6, 4)
    np.testing.assert_array_equal(explanation.values, values)
    assert explanation.data is x and explanation.output_names == [f"Output {k}" for k in range(4)]
    with torch.no_grad():
        out = model(x).numpy()
    expected = model(background).mean(0).detach().numpy()
    np.testing.assert_allclose(explanation.base_values, np.broadcast_to(expected, (2, 4)))
    if explainer == "deep":  # exact for DeepLIFT: values + base values give the output
        totals = explanation.values.reshape(2, -1, 4).sum(1)
        np.testing.assert_allclose(totals + explanation.base_values, out, atol=1e-10)
        theirs = shap.DeepExplainer(copy.deepcopy(model), background)(x)
        np.testing.assert_allclose(explanation.values, theirs.values, rtol=1e-5, atol=1e-10)
    first = explanation[1]
    assert first.values.shape == (3, 6, 6, 4) and torch.equal(first.data, x[1])
    np.testing.assert_array_equal(first.base_values, explanation.base_values[1])


def test_image_plot_takes_an_explanation(monkeypatch):
    import matplotlib.pyplot as plt

    model = conv_net()
    explanation = tes.DeepExplainer(model, images(3, seed=32, dtype=torch.float64))(images(2, seed=33, dtype=torch.float64))
    figure = tes.image_plot(explanation, show=False)
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert titles == ["Output 0", "Output 1", "Output 2", "Output 3"]
    maps = [np.asarray(ax.get_images()[1].get_array()) for ax in figure.axes[:10] if len(ax.get_images()) == 2]
    np.testing.assert_allclose(maps[0], explanation.values[0, ..., 0].sum(0))
    plt.close(figure)


def test_deep_explainer_on_a_layer_agrees_with_shap_and_adds_up():
    """shap's layer form: multipliers at the layer's input times its change; the input
    of conv_net's second conv is a cut, so the values add up to f(x) - E[f(bg)]."""
    model = conv_net()
    background, x = images(5, seed=34, dtype=torch.float64), images(3, seed=35, dtype=torch.float64)
    before = snapshot(model)
    ours = tes.DeepExplainer((model, model[2]), background)
    values, ranks = ours.shap_values(x, ranked_outputs=2)
    assert_unchanged(model, before)
    twin = copy.deepcopy(model)
    # (shap's own additivity check compares ranked values with the first outputs)
    theirs, their_ranks = shap.DeepExplainer((twin, twin[2]), background).shap_values(
        x, ranked_outputs=2, check_additivity=False
    )
    assert torch.equal(ranks, their_ranks) and values.shape == (3, 4, 6, 6, 2)
    np.testing.assert_allclose(values, theirs, rtol=1e-5, atol=1e-12)
    with torch.no_grad():
        gap = model(x).gather(1, ranks) - model(background).mean(0)[ranks]
    np.testing.assert_allclose(values.reshape(3, -1, 2).sum(1), gap.numpy(), atol=1e-10)
    by_name = tes.DeepExplainer((model, "2"), background).shap_values(x)
    picked = np.take_along_axis(by_name, ranks.numpy()[:, None, None, None, :], -1)
    np.testing.assert_allclose(picked, values, atol=1e-12)


class FirstInputOnly(nn.Module):
    """Two inputs; only the first reaches the output (shap's "disconnected" model)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, x, y):
        return self.linear(x)


@pytest.mark.parametrize("explainer", ["gradient", "deep"])
def test_an_input_that_does_not_reach_the_output_gets_zeros(explainer):
    torch.manual_seed(0)
    model = FirstInputOnly()
    background = [torch.randn(6, 4), torch.randn(6, 3)]
    x, y = torch.randn(2, 4) + 2, torch.randn(2, 3) + 2
    make = {"gradient": tes.GradientExplainer, "deep": tes.DeepExplainer}[explainer]
    kwargs = {"nsamples": 50, "rseed": 0} if explainer == "gradient" else {}
    vx, vy = make(model, background).shap_values([x, y], **kwargs)
    assert vy.shape == (2, 3, 2) and not vy.any()
    # linear: exactly W (x - mean background) when every background row is used (Deep)
    exact = (model.linear.weight.detach()[None] * (x - background[0].mean(0))[:, None, :]).permute(0, 2, 1).numpy()
    if explainer == "deep":
        np.testing.assert_allclose(vx, exact, rtol=1e-5, atol=1e-6)
    else:  # the draws (background picks, path points) do not depend on the number of inputs
        alone = make(model.linear, background[0]).shap_values(x, **kwargs)
        np.testing.assert_allclose(vx, alone, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(vx, exact, rtol=0.5)  # 50 samples: near W (x - mean background)


def test_deep_explainer_model_forms_are_checked():
    model = conv_net()
    background = images(2, seed=36, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"\(model, layer\) pair"):
        tes.DeepExplainer((model, model[2], 1), background)
    with pytest.raises(ValueError, match="not a module of the model"):
        tes.DeepExplainer((model, "head"), background)
    with pytest.raises(TypeError, match="model must be callable"):
        tes.DeepExplainer(3, background)
