"""Captum's less common forms, checked against values derived by hand:

* forward functions returning one value for the whole batch (a loss: a Python number,
  a 0-d or one-element tensor) or an output whose first dimension is not the batch;
* ``target=None`` on a model with several outputs: every output element attributed;
* ``attribute_future`` for forward functions returning ``torch.futures.Future``;
* input forms: inputs of different first dimensions (a sparse index list), boolean
  and promoted baselines, whole-number float masks, baseline callables without
  arguments, per-example masks under NoiseTunnel, int-valued models.
"""

from __future__ import annotations

import pytest
import torch
from torch.futures import Future

from torchexplain.attr import (
    DeepLiftShap,
    FeatureAblation,
    FeaturePermutation,
    GradientShap,
    IntegratedGradients,
    NoiseTunnel,
    Occlusion,
    Saliency,
    ShapleyValues,
    ShapleyValueSampling,
)

DT = torch.float64
W = torch.tensor([1.0, -2.0, 3.0], dtype=DT)
X = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=DT)


def loss(x):
    """One value for the whole batch: sum_i w . x_i."""
    return (x @ W).sum()


# ------------------------------------------------------------------ whole-batch outputs


@pytest.mark.parametrize("form", ["tensor_0d", "tensor_1", "float", "int"])
def test_feature_ablation_of_a_whole_batch_output(form):
    wrap = {
        "tensor_0d": lambda v: v,
        "tensor_1": lambda v: v.reshape(1),
        "float": lambda v: float(v),
        "int": lambda v: int(v),
    }[form]
    attr = FeatureAblation(lambda x: wrap(loss(x))).attribute(X)
    # ablating feature j in every example removes w_j * sum_i x_ij: one row for the batch
    expected = (W * X.sum(0)).unsqueeze(0)
    assert attr.shape == (1, 3)
    torch.testing.assert_close(attr.double(), expected)
    if form == "int":
        assert attr.dtype == torch.int64  # the model's dtype, as Captum


def test_shapley_values_of_a_whole_batch_output_are_exact():
    # an additive whole-batch model: each (shared) feature's Shapley value is its own term
    mask = torch.tensor([[0, 0, 1]])
    # feature 0 (columns 0, 1): sum_i x_i0 - 2 x_i1 = 5 - 14; feature 1 (column 2): 3 * (3 + 6)
    expected = torch.tensor([[-9.0, -9.0, 27.0]], dtype=DT)
    exact = ShapleyValues(loss).attribute(X, feature_mask=mask)
    sampled = ShapleyValueSampling(loss).attribute(X, feature_mask=mask, n_samples=3, seed=0)
    torch.testing.assert_close(exact, expected)
    torch.testing.assert_close(sampled, expected)


def test_an_output_without_a_batch_dimension_is_attributed_per_element():
    # three values for a batch of two: Captum's "aggregate" mode with an output of shape (3,)
    def f(x):
        return torch.stack([loss(x), x.sum(), x[0, 0] * 0])

    attr = FeatureAblation(f).attribute(X)
    expected = torch.stack([W * X.sum(0), X.sum(0), torch.zeros(3, dtype=DT)])
    torch.testing.assert_close(attr, expected)
    shap = ShapleyValues(f).attribute(X)  # additive model: the same, in Shapley's (*output, *input) form
    torch.testing.assert_close(shap, expected)


def test_whole_batch_models_refuse_what_cannot_be_done():
    with pytest.raises(ValueError, match="perturbations_per_eval must be 1"):
        FeatureAblation(loss).attribute(X, perturbations_per_eval=2)
    per_example = torch.tensor([[0, 0, 1], [0, 1, 1]])
    with pytest.raises(ValueError, match="feature_mask must be shared"):
        ShapleyValues(loss).attribute(X, feature_mask=per_example)
    with pytest.raises(ValueError, match="target must be None or one index"):
        FeatureAblation(lambda x: torch.stack([loss(x), loss(x)]).unsqueeze(0)).attribute(X, target=[0, 1])


def test_feature_permutation_of_a_loss():
    # permuting a feature across the batch leaves a sum over the batch unchanged...
    attr = FeaturePermutation(loss).attribute(X, seed=0)
    torch.testing.assert_close(attr, torch.zeros(1, 3, dtype=DT))
    # ... but not a squared error against per-example labels: two examples, one swap
    labels = torch.tensor([10.0, -3.0], dtype=DT)

    def mse(x):
        return ((x @ W - labels) ** 2).mean()

    attr = FeaturePermutation(mse).attribute(X, seed=0)
    for j in range(3):
        swapped = X.clone()
        swapped[:, j] = X.flip(0)[:, j]
        assert torch.isclose(attr[0, j], mse(X) - mse(swapped))


# ------------------------------------------------------------------ several outputs, target=None


def test_target_none_attributes_every_output_element():
    weights = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 4.0]], dtype=DT)  # 2 outputs

    def f(x):
        return x @ weights.t()

    fa = FeatureAblation(f).attribute(X)
    # Captum's form: one row per (example, output), example-major; FA(i, k, j) = W[k, j] x_ij
    expected = (X.unsqueeze(1) * weights.unsqueeze(0))  # (2 examples, 2 outputs, 3 features)
    torch.testing.assert_close(fa, expected.reshape(4, 3))
    shap = ShapleyValueSampling(f).attribute(X, n_samples=2, seed=0)
    torch.testing.assert_close(shap, expected)  # Shapley's form: (examples, outputs, features)
    with pytest.raises(ValueError, match="target is required"):
        Saliency(f).attribute(X.clone().requires_grad_())  # a gradient needs one value per example


# ------------------------------------------------------------------ futures


class DeferredModel:
    """Returns futures: the first call's completed at once (its output tells the
    model's form), the others only when :meth:`complete` is called."""

    def __init__(self, fn):
        self.fn, self.pending, self.calls = fn, [], 0

    def __call__(self, *args):
        self.calls += 1
        future = Future()
        if self.calls == 1:
            future.set_result(self.fn(*args))
        else:
            self.pending.append((future, self.fn(*args)))
        return future

    def complete(self):
        for future, value in self.pending:
            future.set_result(value)


@pytest.mark.parametrize("method, kwargs", [
    (FeatureAblation, {}),
    (FeaturePermutation, {"seed": 1}),
    (ShapleyValueSampling, {"n_samples": 4, "seed": 1}),
    (ShapleyValues, {}),
])
@pytest.mark.parametrize("forward", [lambda x: x @ W, loss], ids=["per-example", "whole-batch"])
def test_attribute_future_dispatches_everything_before_waiting(method, kwargs, forward):
    model = DeferredModel(forward)
    mask = torch.tensor([[0, 1, 1]])
    result = method(model).attribute_future(X, feature_mask=mask, perturbations_per_eval=1, **kwargs)
    assert model.calls > 2 and not result.done()  # every perturbed batch was sent; none is back yet
    model.complete()
    torch.testing.assert_close(result.wait(), method(forward).attribute(X, feature_mask=mask, **kwargs))


def test_futures_are_refused_where_they_do_not_belong():
    def future_forward(x):
        done = Future()
        done.set_result(x @ W)
        return done

    with pytest.raises(TypeError, match="call attribute_future"):
        FeatureAblation(future_forward).attribute(X)
    with pytest.raises(TypeError, match="needs a forward_func that returns a torch.futures.Future"):
        FeatureAblation(lambda x: x @ W).attribute_future(X)
    for method in (Saliency, IntegratedGradients, Occlusion):
        with pytest.raises(NotImplementedError, match="has no attribute_future"):
            method(future_forward).attribute_future(X)


# ------------------------------------------------------------------ input forms


class SparseModel(torch.nn.Module):
    """A batch of dense rows beside an index list of its own length (a whole-batch output)."""

    def forward(self, dense, indices):
        return (dense @ W).sum() + (indices[0] if indices.numel() else 0)


def test_inputs_of_different_first_dimensions():
    indices = torch.tensor([4, 7, 2, 9, 5])
    dense_attr, index_attr = FeatureAblation(SparseModel()).attribute((X, indices))
    torch.testing.assert_close(dense_attr, (W * X.sum(0)).unsqueeze(0))
    assert index_attr.tolist() == [4]  # ablating the whole list (one feature) removes indices[0]
    empty_attr = FeatureAblation(SparseModel()).attribute((X, torch.tensor([], dtype=torch.long)))[1]
    assert empty_attr.shape == (1,) and empty_attr.tolist() == [0]
    # a per-example model with such an input: each perturbed batch runs whole
    per_example = lambda dense, extra: dense @ W + extra.sum()  # noqa: E731
    extra = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=DT)
    dense_attr, extra_attr = FeatureAblation(per_example).attribute((X, extra))
    torch.testing.assert_close(dense_attr, X * W)
    torch.testing.assert_close(extra_attr, torch.full((2,), 15.0, dtype=DT))
    with pytest.raises(ValueError, match="must share the batch size"):  # gradients are taken per example
        IntegratedGradients(per_example).attribute((X, extra))


def test_baselines_are_promoted_never_truncated():
    tokens = torch.tensor([[3, 1, 4], [1, 5, 9]])
    f = lambda t: (t.to(DT) @ W)  # noqa: E731
    attr = FeatureAblation(f).attribute(tokens, baselines=0.5)
    torch.testing.assert_close(attr, (tokens.to(DT) - 0.5) * W)  # not (tokens - 0) * W
    flags = torch.tensor([[True, False, True]])
    g = lambda b: b.to(DT) @ W  # noqa: E731
    torch.testing.assert_close(FeatureAblation(g).attribute(flags, baselines=False), flags.to(DT) * W)
    torch.testing.assert_close(FeatureAblation(g).attribute(flags, baselines=True), (flags.to(DT) - 1) * W)


def test_an_int_model_keeps_its_dtype():
    tokens = torch.tensor([[3, 1, 4], [1, 5, 9]])
    attr = FeatureAblation(lambda t: t.sum(1)).attribute(tokens)
    assert attr.dtype == torch.int64 and torch.equal(attr, tokens)


def test_whole_number_float_masks_are_feature_ids():
    model = lambda x: (x @ W) ** 2  # noqa: E731
    ids = torch.tensor([[0, 0, 1]])
    for method in (FeatureAblation, ShapleyValues):
        torch.testing.assert_close(method(model).attribute(X, feature_mask=ids.double()),
                                   method(model).attribute(X, feature_mask=ids))
    with pytest.raises(ValueError, match="feature_mask must hold integer feature ids"):
        FeatureAblation(model).attribute(X, feature_mask=ids + 0.5)


def test_baseline_callables_may_take_no_arguments():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1)).double()
    rows = torch.tensor([[0.0, 0.0, 0.0], [1.0, -1.0, 0.5]], dtype=DT)
    for method, kwargs in ((DeepLiftShap, {}), (GradientShap, {"n_samples": 6})):
        torch.manual_seed(0)
        given = method(model).attribute(X, baselines=rows, target=0, **kwargs)
        torch.manual_seed(0)
        called = method(model).attribute(X, baselines=lambda: rows, target=0, **kwargs)
        torch.testing.assert_close(called, given)


def test_noise_tunnel_repeats_a_per_example_mask():
    model = lambda x: (x @ W) ** 2  # noqa: E731
    mask = torch.tensor([[0, 0, 1], [0, 1, 1]])
    plain = FeatureAblation(model).attribute(X, feature_mask=mask)
    tunnel = NoiseTunnel(FeatureAblation(model)).attribute(X, feature_mask=mask, nt_samples=3, stdevs=0.0)
    torch.testing.assert_close(tunnel, plain)


def test_progress_is_titled_as_captum(capsys):
    FeatureAblation(lambda x: x @ W).attribute(X, show_progress=True)
    err = capsys.readouterr().err
    assert "Feature Ablation attribution: 100%" in err
