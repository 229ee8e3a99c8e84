"""LimeBase: exact coefficients on linear models, Captum's LimeBase on the same samples,
the chunking of samples, forwards with one value per batch, and the base classes."""

from __future__ import annotations

import pytest
import torch

from torchexplain.attr import (
    Attribution,
    GradientAttribution,
    KernelShap,
    Lime,
    LimeBase,
    PerturbationAttribution,
    get_exp_kernel_similarity_function,
)
from torchexplain.attr.lime_base import default_from_interp_rep_transform
from torchexplain.attr.surrogate import WeightedLinearRegression

W = torch.tensor([1.5, -2.0, 0.5, 3.0, 1.0])


def linear(x):
    return x @ W + 0.25


def z_stream(n: int, m: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    draws = (torch.rand(n, 1, m, generator=g) < 0.5).float()

    def perturb(original, **kwargs):
        yield from draws

    return perturb


def interp_lime(model=None, n_features: int = 5, seed: int = 0):
    return LimeBase(
        linear, model or WeightedLinearRegression(), get_exp_kernel_similarity_function("euclidean", 5.0),
        z_stream(200, n_features, seed), True, default_from_interp_rep_transform, None,
    )


def test_linear_model_gives_exact_coefficients_for_every_chunking():
    x, b = torch.tensor([[2.0, 1.0, -1.0, 0.5, 3.0]]), torch.tensor([[0.0, 1.0, 1.0, 0.0, -1.0]])
    mask = torch.tensor([[0, 1, 2, 3, 4]])
    expected = (W * (x - b)[0]).double()  # f is linear: each feature contributes w_j (x_j - b_j)
    for ppe in (1, 3, "auto"):
        coefs = interp_lime().attribute(x, n_samples=60, perturbations_per_eval=ppe, feature_mask=mask, baselines=b)
        torch.testing.assert_close(coefs, expected, rtol=1e-5, atol=1e-5)


def test_input_space_sampling_with_to_interp_transform():
    x, mask = torch.tensor([[2.0, 1.0, -1.0, 0.5, 3.0]]), torch.tensor([[0, 0, 1, 1, 2]])
    g = torch.Generator().manual_seed(1)

    def perturb(original, **kwargs):
        keep = (torch.rand(3, generator=g) < 0.5).float()
        return original * keep[mask]

    def to_interp(sample, original, **kwargs):
        return (sample == original).float()[0, [0, 2, 4]].view(1, 3)

    lime = LimeBase(linear, WeightedLinearRegression(), lambda *a, **k: 1.0, perturb, False, None, to_interp)
    coefs = lime.attribute(x, n_samples=50)
    per_feature = W * x[0]
    torch.testing.assert_close(coefs.float(), torch.stack([per_feature[:2].sum(), per_feature[2:4].sum(),
                                                           per_feature[4]]), rtol=1e-4, atol=1e-4)


def test_same_samples_as_captum_limebase():
    from captum._utils.models.linear_model import SkLearnLinearRegression
    from captum.attr import LimeBase as CaptumLimeBase

    net = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    torch.manual_seed(0)
    x = torch.randn(1, 5)
    kwargs = dict(feature_mask=torch.tensor([[0, 1, 2, 3, 4]]), baselines=torch.zeros(1, 5))
    args = (get_exp_kernel_similarity_function("cosine", 2.0), z_stream(80, 5, 3), True,
            default_from_interp_rep_transform, None)
    ours = LimeBase(net, SkLearnLinearRegression(), *args).attribute(x, target=1, n_samples=80, **kwargs)
    theirs = CaptumLimeBase(net, SkLearnLinearRegression(), *args).attribute(x, target=1, n_samples=80, **kwargs)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_batch_scalar_forward_and_lime_on_it():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, -1.0, 0.5]])
    w = torch.tensor([2.0, -1.0, 0.5])

    def loss(inp):  # one value for the whole batch
        return float((inp @ w).sum())

    lime = LimeBase(loss, WeightedLinearRegression(), lambda *a, **k: 1.0, z_stream(30, 3), True,
                    default_from_interp_rep_transform, None)
    kwargs = dict(feature_mask=torch.tensor([[0, 1, 2]]), baselines=torch.zeros(1, 3))
    expected = (w * x.sum(0)).double()  # a shared feature j moves the loss by w_j * sum_i x_ij
    torch.testing.assert_close(lime.attribute(x, n_samples=30, **kwargs), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="one model output per perturbed sample"):
        lime.attribute(x, n_samples=30, perturbations_per_eval=2, **kwargs)
    # Lime (a LimeBase) fits one surrogate for the batch, as Captum's Lime does
    attr = Lime(loss).attribute(x, feature_mask=kwargs["feature_mask"], n_samples=40, seed=0)
    assert attr.shape == (1, 3)
    torch.testing.assert_close(attr, expected.float().view(1, 3), rtol=1e-4, atol=1e-4)
    shap = KernelShap(lambda inp: (inp @ w).sum()).attribute(x, n_samples=40, seed=0, return_input_shape=False)
    torch.testing.assert_close(shap, expected.float().view(1, 3), rtol=1e-4, atol=1e-4)


def test_generator_running_out_warns_and_fits_what_it_gave():
    x = torch.tensor([[2.0, 1.0, -1.0, 0.5, 3.0]])
    lime = LimeBase(linear, WeightedLinearRegression(), lambda *a, **k: 1.0, z_stream(12, 5), True,
                    default_from_interp_rep_transform, None)
    with pytest.warns(UserWarning, match="stopped after 12 of 40"):
        coefs = lime.attribute(x, n_samples=40, feature_mask=torch.tensor([[0, 1, 2, 3, 4]]), baselines=0.0)
    torch.testing.assert_close(coefs, (W * x[0]).double(), rtol=1e-4, atol=1e-4)


def test_progress_reaches_100_percent(capsys):
    x = torch.tensor([[2.0, 1.0, -1.0, 0.5, 3.0]])
    Lime(linear).attribute(x, n_samples=10, show_progress=True, perturbations_per_eval=3)
    interp_lime().attribute(x, n_samples=10, show_progress=True, feature_mask=torch.tensor([[0, 1, 2, 3, 4]]),
                            baselines=0.0)
    err = capsys.readouterr().err
    assert "Lime attribution: 100%" in err and "Lime Base attribution: 100%" in err


def test_bases_and_errors():
    lime = interp_lime()
    assert isinstance(lime, PerturbationAttribution) and isinstance(Lime(linear), LimeBase)
    assert not lime.multiplies_by_inputs and not Lime(linear).multiplies_by_inputs and not lime.has_convergence_delta()
    with pytest.raises(NotImplementedError):
        lime.attribute_future()
    with pytest.raises(ValueError, match="from_interp_rep_transform is required"):
        LimeBase(linear, WeightedLinearRegression(), lambda *a: 1.0, z_stream(1, 1), True, None, None)
    with pytest.raises(ValueError, match="to_interp_rep_transform is required"):
        LimeBase(linear, WeightedLinearRegression(), lambda *a: 1.0, z_stream(1, 1), False, None, None)
    with pytest.raises(TypeError, match="similarity_func must be callable"):
        LimeBase(linear, WeightedLinearRegression(), 3, z_stream(1, 1), True, default_from_interp_rep_transform, None)
    with pytest.raises(TypeError, match="fit method"):
        LimeBase(linear, object(), lambda *a: 1.0, z_stream(1, 1), True, default_from_interp_rep_transform, None)


def test_gradient_attribution_base():
    net = torch.nn.Linear(5, 3)
    base = GradientAttribution(net)
    assert isinstance(base, Attribution)
    x = torch.randn(4, 5)
    (grad,) = base.gradient_func(net, x, 2)
    torch.testing.assert_close(grad, net.weight[2].detach().expand(4, 5))
    attributions = (x * net.weight[2]).detach()  # exact for a linear model from a zero start
    delta = base.compute_convergence_delta(attributions, torch.zeros(4, 5), x, target=2)
    torch.testing.assert_close(delta, torch.zeros(4), atol=1e-5, rtol=0)
