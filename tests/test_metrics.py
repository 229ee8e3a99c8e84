"""Faithfulness metrics: hand-derived values, Captum's infidelity and sensitivity_max,
the randomization check on the digits model, and evaluate()."""

from __future__ import annotations

import csv
import io

import captum.attr as ca
import captum.metrics as cm
import pytest
import torch
from test_model_unchanged import assert_unchanged, snapshot
from torch import nn

import torchexplain.attr as te
from torchexplain import evaluate
from torchexplain.metrics import (
    MetricResult,
    completeness,
    deletion,
    gaussian_blur,
    infidelity,
    infidelity_perturb_func_decorator,
    insertion,
    randomization_check,
    sensitivity_max,
    sparseness,
    spearman,
)


class Linear4(nn.Module):
    """f(x) = w . x over 4 features (one output)."""

    def __init__(self, w):
        super().__init__()
        self.fc = nn.Linear(4, 1, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([w]))

    def forward(self, x):
        return self.fc(x.reshape(x.shape[0], -1))


def small_cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 5)
    ).eval()


# --------------------------------------------------------------------------- deletion / insertion


@pytest.mark.parametrize("shape", [(1, 4), (1, 1, 2, 2)])
def test_deletion_and_insertion_by_hand(shape):
    """x = 1, w = (4, 3, 2, 1): deleting in the order of w leaves 10, 6, 3, 1, 0; the
    normalised trapezoid area over 4 steps is (20 - 10 / 2) / 4 = 3.75. Insertion on a
    zero baseline rises 0, 4, 7, 9, 10: (30 - 5) / 4 = 6.25. The reversed order swaps
    the two."""
    model = Linear4([4.0, 3.0, 2.0, 1.0])
    x = torch.ones(shape)
    good = torch.tensor([4.0, 3.0, 2.0, 1.0]).reshape(shape)
    kw = dict(target=0, steps=4, apply_softmax=False)
    auc, curve = deletion(model, x, good, return_curves=True, **kw)
    torch.testing.assert_close(curve[0], torch.tensor([10.0, 6.0, 3.0, 1.0, 0.0], dtype=curve.dtype))
    assert auc.item() == pytest.approx(3.75)
    assert insertion(model, x, good, baseline=0.0, **kw).item() == pytest.approx(6.25)
    reverse = good.flatten().flip(0).reshape(shape)
    assert deletion(model, x, reverse, **kw).item() == pytest.approx(6.25)
    assert insertion(model, x, reverse, baseline=0.0, **kw).item() == pytest.approx(3.75)


def test_curves_move_channels_of_a_pixel_together_and_chunking_is_invisible():
    model = small_cnn()
    torch.manual_seed(1)
    x = torch.randn(3, 3, 8, 8)
    attr = torch.randn(3, 3, 8, 8)
    ref, curves = deletion(model, x, attr, steps=8, return_curves=True, perturbations_per_eval=None)
    assert curves.shape == (3, 9)
    probs = torch.softmax(model(x), 1)
    torch.testing.assert_close(curves[:, 0].float(), probs.max(1).values, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(curves[:, -1].float(), torch.softmax(model(torch.zeros_like(x)), 1)[range(3), probs.argmax(1)])
    for chunk in (1, 2, "auto"):
        torch.testing.assert_close(deletion(model, x, attr, steps=8, perturbations_per_eval=chunk), ref)
    # a map summed over channels ranks the same pixels: same result
    torch.testing.assert_close(deletion(model, x, attr.sum(1, keepdim=True), steps=8), ref)
    ins, curves = insertion(model, x, attr, steps=8, return_curves=True)
    blurred = torch.softmax(model(gaussian_blur(x)), 1)[range(3), probs.argmax(1)]
    torch.testing.assert_close(curves[:, 0].float(), blurred)
    torch.testing.assert_close(curves[:, -1].float(), probs.max(1).values)


def test_gaussian_blur_keeps_constant_interiors_and_mass():
    x = torch.ones(1, 2, 31, 31)
    blurred = gaussian_blur(x, 11, 5.0)
    torch.testing.assert_close(blurred[..., 10:21, 10:21], torch.ones(1, 2, 11, 11))
    point = torch.zeros(1, 1, 21, 21)
    point[..., 10, 10] = 1.0
    assert gaussian_blur(point, 11, 2.0).sum().item() == pytest.approx(1.0, abs=1e-5)


# --------------------------------------------------------------------------- infidelity, sensitivity


def test_infidelity_of_exact_linear_attributions_is_zero():
    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    x = torch.randn(4, 6)
    target = torch.tensor([0, 2, 1, 2])
    exact = model.weight.detach()[target]  # the gradient: attributions . I = f(x) - f(x - I)

    def perturb(inputs):
        noise = torch.randn_like(inputs)
        return noise, inputs - noise

    values = infidelity(model, perturb, x, exact, target=target, n_perturb_samples=20)
    assert values.shape == (4,) and float(values.abs().max()) < 1e-10
    assert float(infidelity(model, perturb, x, exact.flip(1), target=target).min()) > 1e-3


def _noise_perturb(inputs):
    noise = 0.1 * torch.randn_like(inputs)
    return noise, inputs - noise


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("max_examples", [None, 4, 7])
def test_infidelity_matches_captum(normalize, max_examples):
    model = small_cnn()
    torch.manual_seed(1)
    x = torch.randn(3, 3, 8, 8)
    target = [0, 3, 4]
    attr = te.Saliency(model).attribute(x, target=target, abs=False)
    kw = dict(target=target, n_perturb_samples=5, max_examples_per_batch=max_examples, normalize=normalize)
    torch.manual_seed(7)
    ours = infidelity(model, _noise_perturb, x, attr, **kw)
    torch.manual_seed(7)
    theirs = cm.infidelity(model, _noise_perturb, x, attr, **kw)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-9)


def test_infidelity_with_baselines_and_tuple_inputs_matches_captum():
    torch.manual_seed(0)
    a, b = nn.Linear(4, 2), nn.Linear(3, 2)
    model = lambda x1, x2: a(x1) * b(x2)  # noqa: E731
    x = (torch.randn(2, 4), torch.randn(2, 3))
    attr = (torch.randn(2, 4), torch.randn(2, 3))
    base = (torch.zeros(1, 4), 0.5)

    def perturb(inputs, baselines):
        noise = tuple(0.1 * torch.randn_like(t) for t in inputs)
        return noise, tuple(t - n for t, n in zip(inputs, noise))

    torch.manual_seed(3)
    ours = infidelity(model, perturb, x, attr, baselines=base, target=1, n_perturb_samples=4)
    torch.manual_seed(3)
    theirs = cm.infidelity(model, perturb, x, attr, baselines=base, target=1, n_perturb_samples=4)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("max_examples", [None, 5])
def test_sensitivity_max_matches_captum(max_examples):
    model = small_cnn()
    torch.manual_seed(1)
    x = torch.randn(3, 3, 8, 8)
    target = torch.tensor([0, 3, 4])
    kw = dict(n_perturb_samples=4, max_examples_per_batch=max_examples, target=target)
    torch.manual_seed(5)
    ours = sensitivity_max(te.Saliency(model).attribute, x, **kw)
    torch.manual_seed(5)
    theirs = cm.sensitivity_max(ca.Saliency(model).attribute, x, **kw)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-9)
    torch.manual_seed(5)
    ig = sensitivity_max(te.IntegratedGradients(model).attribute, x, perturb_radius=0.1, baselines=torch.zeros_like(x),
                         n_steps=5, **kw)
    torch.manual_seed(5)
    ig_c = cm.sensitivity_max(ca.IntegratedGradients(model).attribute, x, perturb_radius=0.1,
                              baselines=torch.zeros_like(x), n_steps=5, **kw)
    torch.testing.assert_close(ig, ig_c, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("multiply", [True, False])
def test_infidelity_perturb_func_decorator_by_hand_and_as_captum(multiply):
    x = torch.tensor([[2.0, 0.0, -1.0], [4.0, 1.0, 3.0]])
    base = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 3.0]])

    def shrink(inputs, baselines=None):
        return inputs * 0.5

    ours = infidelity_perturb_func_decorator(multiply)(shrink)
    perturbations, perturbed = ours(x, base)
    assert isinstance(perturbations, tuple) and torch.equal(perturbed[0], x * 0.5)
    # (x - x') / (x - baseline), a zero denominator counting as 1; or x - x'
    by_hand = torch.tensor([[1.0, 0.0, 0.25], [0.5, 0.5, 1.5]]) if multiply else x * 0.5
    torch.testing.assert_close(perturbations[0], by_hand)
    alone, _ = ours(x)  # no baselines: (x - x') / x
    torch.testing.assert_close(alone[0], torch.where(x != 0, torch.full_like(x, 0.5), x * 0.5) if multiply else x * 0.5)
    model = Linear4([1.0, -2.0, 3.0, 0.5])
    inputs, attr = torch.randn(3, 4), torch.randn(3, 4)
    theirs = cm.infidelity_perturb_func_decorator(multiply)(shrink)
    for kwargs in ({}, {"baselines": torch.full((3, 4), 0.25)}):
        got = infidelity(model, ours, inputs, attr, n_perturb_samples=3, **kwargs)
        expected = cm.infidelity(model, theirs, inputs, attr, n_perturb_samples=3, **kwargs)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


def test_sensitivity_max_passes_a_baseline_set_through_unchanged():
    """GradientShap's baselines are a set to draw from, not one per example: the
    explanation function sees the same 7 rows for the 3 examples and their perturbations."""
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]])
    dist = torch.arange(14.0).reshape(7, 2) / 10
    seen = []

    def explain(inputs, baselines):
        seen.append(baselines)
        return (inputs[0] if isinstance(inputs, tuple) else inputs) - baselines.mean(0)

    values = sensitivity_max(explain, x, perturb_func=lambda t: t + 0.1, n_perturb_samples=3, baselines=dist)
    assert all(b is dist for b in seen) and len(seen) == 2
    # ||e(x + 0.1) - e(x)|| / ||e(x)|| = ||(0.1, 0.1)|| / ||x - mean(dist)||
    torch.testing.assert_close(values, (0.02 ** 0.5) / (x - dist.mean(0)).norm(dim=1))
    model = small_cnn()
    torch.manual_seed(2)
    images, dist = torch.randn(2, 3, 8, 8), torch.randn(5, 3, 8, 8)
    stable = sensitivity_max(te.GradientShap(model).attribute, images, baselines=dist, target=1, n_samples=4,
                             n_perturb_samples=2)
    assert stable.shape == (2,) and bool((stable > 0).all())


def test_sensitivity_of_a_constant_explanation_is_zero():
    x = torch.randn(3, 5)
    values = sensitivity_max(lambda inp: torch.ones((inp[0] if isinstance(inp, tuple) else inp).shape[0], 5), x)
    torch.testing.assert_close(values, torch.zeros(3))


# --------------------------------------------------------------------------- completeness, sparseness


def test_completeness_of_integrated_gradients_and_saliency():
    model = small_cnn()
    torch.manual_seed(2)
    x = torch.randn(2, 3, 8, 8)
    ig = te.IntegratedGradients(model).attribute(x, target=1, n_steps=300)
    gap = (model(x) - model(torch.zeros_like(x)))[:, 1].detach()
    assert float((completeness(ig, model, x, 0.0, target=1).abs() / gap.abs()).max()) < 1e-2
    sal = te.Saliency(model).attribute(x, target=1)
    assert float((completeness(sal, model, x, 0.0, target=1).abs() / gap.abs()).min()) > 0.1


def test_sparseness_by_hand():
    one_hot = torch.tensor([[0.0, -2.0, 0.0, 0.0]])
    flat = torch.ones(1, 4)
    assert sparseness(one_hot).item() == pytest.approx(0.75)  # (2 * 4 - 5) * 2 / (4 * 2)
    assert sparseness(flat).item() == pytest.approx(0.0)
    # a = (1, 2, 3, 4): sum_i (2i - 5) a_i = -3 - 2 + 3 + 12 = 10 -> 10 / (4 * 10)
    assert sparseness(torch.tensor([[4.0, 1.0, 3.0, 2.0]])).item() == pytest.approx(0.25)
    assert sparseness(torch.zeros(1, 3)).item() == 0.0


def test_metric_result_and_spearman():
    r = MetricResult("m", torch.tensor([1.0, 2.0, 3.0, 4.0]), higher_is_better=True)
    assert r.mean == 2.5 and r.stderr == pytest.approx(torch.tensor([1.0, 2, 3, 4]).std().item() / 2)
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    torch.testing.assert_close(spearman(a, a * 10 + 1), torch.tensor([1.0], dtype=torch.float64))
    torch.testing.assert_close(spearman(a, -a), torch.tensor([-1.0], dtype=torch.float64))


# --------------------------------------------------------------------------- randomization


@pytest.fixture(scope="module")
def digits():
    from torchexplain import models

    model, preprocess, names = models.load("digits")
    return model, torch.stack([preprocess(p) for p in models.sample_images()])


@pytest.mark.slow
def test_randomization_check_on_digits(digits, capsys):
    model, x = digits
    before = snapshot(model)
    results = {m.__name__: randomization_check(m, model, x) for m in (te.Saliency, te.IntegratedGradients,
                                                                      te.GuidedBackprop)}
    assert_unchanged(model, before)
    sal, ig, gbp = (results[k].mean for k in ("Saliency", "IntegratedGradients", "GuidedBackprop"))
    assert results["Saliency"].layers[0] == "head.2" and results["Saliency"].layers[-1] == "features.0"
    # the maps of methods that depend on the model fall away from the original
    assert float(sal.max()) < 0.5 and float(sal[-1]) < float(sal[0])
    assert float(ig[-1]) < float(ig[0]) < 0.6
    with capsys.disabled():
        print("\nrandomization (mean Spearman, top layer first): "
              + "; ".join(f"{k} " + ", ".join(f"{v:.2f}" for v in r.mean.tolist()) for k, r in results.items()))
    # Guided Backprop, whatever it shows, is reported; here it stays closer to the
    # original after the top layers are randomised than Saliency does
    assert float(gbp[0]) > float(sal[0])


def test_randomization_independent_and_named_layers(digits):
    model, x = digits
    r = randomization_check("saliency", model, x[:3], layers="independent")
    assert r.mode == "independent" and r.correlations.shape == (7, 3)
    named = randomization_check(te.Saliency, model, x[:3], layers=["head.2"])
    torch.testing.assert_close(named.correlations[0], r.correlations[0])
    with pytest.raises(ValueError, match="not modules of the model"):
        randomization_check(te.Saliency, model, x[:3], layers=["head.9"])


# --------------------------------------------------------------------------- evaluate


@pytest.mark.slow
def test_evaluate_ranks_methods_and_exports(digits):
    model, x = digits
    before = snapshot(model)
    table = evaluate(model, x[:4], methods=["saliency", "integrated_gradients"],
                     metrics=["deletion", "insertion", "completeness", "sparseness"], steps=16)
    assert_unchanged(model, before)
    assert [row["method"] for row in table.rows] == ["saliency", "integrated_gradients"]
    assert table.best("completeness") == "integrated_gradients"
    for metric in table.metrics:
        assert sorted(row[f"{metric}_rank"] for row in table.rows) == [1, 2]
    ig = te.IntegratedGradients(model).attribute(x[:4], target=model(x[:4]).argmax(1), return_convergence_delta=False)
    expected = deletion(model, x[:4], ig, steps=16).mean().item()
    assert table.rows[1]["deletion"] == pytest.approx(expected, rel=1e-5)
    target = model(x[:4]).argmax(1)
    with torch.no_grad():
        gap = model(x[:4])[range(4), target] - model(torch.zeros_like(x[:4]))[range(4), target]
    relative = completeness(ig, model, x[:4], 0.0, target).abs() / gap.abs()
    assert table.rows[1]["completeness"] == pytest.approx(relative.mean().item(), rel=1e-4)
    parsed = list(csv.DictReader(io.StringIO(table.to_csv())))
    assert float(parsed[0]["seconds"]) > 0 and parsed[1]["method"] == "integrated_gradients"
    assert table.to_markdown().count("\n") == 3 and "<table" in table.to_html()
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate(model, x[:2], methods=["saliency"], metrics=["accuracy"])


def test_bad_metric_inputs():
    model = Linear4([1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match="attributions of shape"):
        deletion(model, torch.ones(1, 4), torch.ones(2, 4), target=0)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        deletion(model, torch.ones(1, 4), torch.ones(1, 4), target=0, steps=0)
    with pytest.raises(ValueError, match='baseline="blur" needs'):
        insertion(model, torch.ones(1, 4), torch.ones(1, 4), target=0)
    with pytest.raises(ValueError, match=r"attributions\[0\] has shape"):
        infidelity(model, _noise_perturb, torch.ones(1, 4), torch.ones(1, 3), target=0)


def test_evaluate_broadcasts_a_cams_map_for_input_shaped_metrics():
    model = small_cnn()
    torch.manual_seed(3)
    x = torch.randn(2, 3, 8, 8)
    table = evaluate(model, x, methods=["saliency", "grad_cam"], metrics=["infidelity", "sparseness"])
    assert table.notes == ["grad_cam: its one-channel map is broadcast over the input's 3 channels for infidelity"]
    from torchexplain.cam import GradCAM
    from torchexplain.metrics.evaluate import _gaussian_perturbation

    target = model(x).argmax(1)
    cam = GradCAM(model).attribute(x, target=target)
    assert cam.shape == (2, 1, 8, 8)
    expected = infidelity(model, _gaussian_perturbation(0), x, cam.expand_as(x), target=target, n_perturb_samples=10)
    assert table.rows[1]["infidelity"] == pytest.approx(expected.mean().item(), rel=1e-5)
    assert table.rows[1]["sparseness"] == pytest.approx(sparseness(cam).mean().item(), rel=1e-5)  # the map itself
    assert "broadcast over the input" in table.to_html()


def test_evaluate_refuses_an_unusable_shape_before_any_metric_runs(monkeypatch):
    import importlib

    evaluate_module = importlib.import_module("torchexplain.metrics.evaluate")  # (the package exports the function)
    calls = []
    spec = evaluate_module.METRICS["deletion"]
    monkeypatch.setitem(evaluate_module.METRICS, "deletion",
                        evaluate_module.MetricSpec("deletion", lambda c: calls.append(c) or spec.score(c), False, ""))
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"method 'grad_cam' gives attributions of shape \(2, 1, 4, 4\), but metric "
                                         r"'infidelity' needs the input's shape \(2, 3, 8, 8\)"):
        evaluate(small_cnn(), x, methods=["grad_cam"], metrics=["deletion", "infidelity"], upsample=False)
    assert not calls
