"""torchexplain.influence (TracIn): Captum differential tests, hand-derived values, axioms, errors.

Captum is imported here only, as an oracle. Models are tiny and in float64 so that
agreement can be asserted to 1e-5 / rtol 1e-4.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import torchexplain.influence as ti
from helpers import assert_unchanged, snapshot

captum_influence = pytest.importorskip("captum.influence")

N_TRAIN, N_TEST, IN, HIDDEN, OUT = 20, 6, 5, 4, 3
LRS = (0.5, 1.0, 2.0)
TOL = dict(rtol=1e-4, atol=1e-5)


class TwoLayer(nn.Module):
    """linear1 -> tanh -> linear2 (the final fully-connected layer's output is the output)."""

    def __init__(self, bias: bool = True, squash: bool = False):
        super().__init__()
        self.linear1 = nn.Linear(IN, HIDDEN)
        self.linear2 = nn.Linear(HIDDEN, OUT, bias=bias)
        self.squash = squash

    def forward(self, x):
        out = self.linear2(torch.tanh(self.linear1(x)))
        return torch.tanh(out) if self.squash else out


class SmallCNN(nn.Module):
    """conv -> batch-norm -> relu -> pool -> linear: exercises vmap through conv and BN."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3, OUT)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x)))
        return self.fc(h.mean(dim=(2, 3)))


def load_with_lr(model, path):
    """A checkpoints_load_func both libraries accept: the file holds the state dict and a learning rate."""
    state = torch.load(path, weights_only=True)
    lr = state.pop("learning_rate")
    model.load_state_dict(state)
    return lr


def save_checkpoints(model, folder, seed=0, lrs=LRS, scale=1.0):
    """len(lrs) checkpoints of ``model`` with random weights, each storing its learning rate."""
    gen = torch.Generator().manual_seed(seed)
    folder.mkdir(exist_ok=True)
    for i, lr in enumerate(lrs):
        state = {k: (torch.randn(v.shape, generator=gen, dtype=v.dtype) * scale if v.is_floating_point() else v)
                 for k, v in model.state_dict().items()}
        for k in state:
            if k.endswith("running_var"):
                state[k] = state[k].abs() + 0.5
        state["learning_rate"] = lr
        torch.save(state, folder / f"ckpt-{i}.pt")
    return folder


def data(seed=0, n=N_TRAIN, shape=(IN,)):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=gen, dtype=torch.float64)
    y = torch.randn(n, OUT, generator=gen, dtype=torch.float64)
    return x, y


@pytest.fixture
def setup(tmp_path):
    torch.manual_seed(0)
    model = TwoLayer().double()
    folder = save_checkpoints(model, tmp_path / "ckpts")
    train = TensorDataset(*data(1))
    test = data(2, N_TEST)
    return model, folder, train, test


def make_pair(cls_name, model, train, folder, reduction, batch_size=4, **kw):
    """(ours, Captum's) instances with the same arguments. Captum's TracInCP needs
    reduction="none" with its per-example loop and "sum"/"mean" with its sample-wise trick."""
    ours = getattr(ti, cls_name)
    theirs = getattr(captum_influence, cls_name)
    extra = {}
    if cls_name == "TracInCP":
        extra["sample_wise_grads_per_batch"] = reduction != "none"
    loss = nn.MSELoss(reduction=reduction)
    args = (model, kw.pop("final_fc_layer")) if "final_fc_layer" in kw else (model,)
    a = ours(*args, train, str(folder), load_with_lr, loss_fn=loss, batch_size=batch_size, **kw)
    b = theirs(*args, train, str(folder), load_with_lr, loss_fn=loss, batch_size=batch_size, **kw, **extra)
    return a, b


# ----------------------------------------------------------------------------- Captum agreement


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("layers", [None, ["linear1"]])
def test_tracincp_matches_captum(setup, reduction, layers):
    model, folder, train, test = setup
    ours, theirs = make_pair("TracInCP", model, train, folder, reduction, layers=layers)
    torch.testing.assert_close(ours.influence(test), theirs.influence(test), **TOL)
    torch.testing.assert_close(ours.self_influence(), theirs.self_influence(), **TOL)
    torch.testing.assert_close(ours.self_influence(test, outer_loop_by_checkpoints=True),
                               theirs.self_influence(test, outer_loop_by_checkpoints=True), **TOL)


@pytest.mark.parametrize("proponents", [True, False])
def test_tracincp_k_most_influential_matches_captum(setup, proponents):
    model, folder, train, test = setup
    ours, theirs = make_pair("TracInCP", model, train, folder, "none")
    idx, scores = ours.influence(test, k=4, proponents=proponents)
    cidx, cscores = theirs.influence(test, k=4, proponents=proponents)
    assert torch.equal(idx, cidx)
    torch.testing.assert_close(scores, cscores, **TOL)
    full = ours.influence(test)
    torch.testing.assert_close(scores, full.gather(1, idx), **TOL)  # the returned scores are the entries


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_tracincp_fast_matches_captum(setup, reduction):
    model, folder, train, test = setup
    ours, theirs = make_pair("TracInCPFast", model, train, folder, reduction, final_fc_layer=model.linear2)
    torch.testing.assert_close(ours.influence(test), theirs.influence(test), **TOL)
    torch.testing.assert_close(ours.self_influence(), theirs.self_influence(), **TOL)
    idx, scores = ours.influence(test, k=3, proponents=False)
    cidx, cscores = theirs.influence(test, k=3, proponents=False)
    assert torch.equal(idx, cidx)
    torch.testing.assert_close(scores, cscores, **TOL)


def test_randproj_without_projection_is_exact(setup):
    model, folder, train, test = setup
    fast = captum_influence.TracInCPFast(model, model.linear2, train, str(folder), load_with_lr,
                                         loss_fn=nn.MSELoss(reduction="sum"), batch_size=4)
    ours = ti.TracInCPFastRandProj(model, "linear2", train, str(folder), load_with_lr,
                                   loss_fn=nn.MSELoss(reduction="sum"), batch_size=4)
    expected = fast.influence(test)
    torch.testing.assert_close(ours.influence(test, k=None), expected, **TOL)
    idx, scores = ours.influence(test, k=5)
    cidx, cscores = fast.influence(test, k=5)
    assert torch.equal(idx, cidx)
    torch.testing.assert_close(scores, cscores, **TOL)
    assert ours.src_intermediate_quantities.shape == (N_TRAIN, OUT * HIDDEN * len(LRS))


def test_randproj_is_unbiased(setup):
    """With projection_dim=4 (d1 = d2 = 2 of 3 and 4), each draw differs from the exact
    scores; their mean over 200 seeds is within 5 standard errors of them, entry by entry."""
    model, folder, train, test = setup
    kw = dict(loss_fn=nn.MSELoss(reduction="sum"), batch_size=N_TRAIN)
    exact = ti.TracInCPFast(model, "linear2", train, str(folder), load_with_lr, **kw).influence(test)
    draws = torch.stack([
        ti.TracInCPFastRandProj(model, "linear2", train, str(folder), load_with_lr, projection_dim=4, seed=s,
                                **kw).influence(test, k=None)
        for s in range(200)
    ])
    assert (draws[0] - exact).abs().max() > 1e-3 * exact.abs().max()
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(len(draws))
    assert bool(((mean - exact).abs() <= 5 * se + 1e-9).all())
    again = ti.TracInCPFastRandProj(model, "linear2", train, str(folder), load_with_lr, projection_dim=4, seed=0, **kw)
    torch.testing.assert_close(again.influence(test, k=None), draws[0], rtol=0, atol=0)  # seeded, global RNG unused


# ----------------------------------------------------------------------------- axioms and hand-derived values


def hand_self_influence(model, folder, x, y, loss_fn, params=None):
    """sum over checkpoints of lr * ||grad of each example's loss||^2, one plain autograd call per example."""
    total = torch.zeros(len(x), dtype=torch.float64)
    for path in sorted(folder.iterdir()):
        copy = type(model)().double()
        lr = load_with_lr(copy, path)
        copy.eval()
        chosen = list(copy.parameters()) if params is None else [dict(copy.named_parameters())[n] for n in params]
        for i in range(len(x)):
            grads = torch.autograd.grad(loss_fn(copy(x[i:i + 1]), y[i:i + 1]), chosen)
            total[i] += lr * sum(float((g * g).sum()) for g in grads)
    return total


def test_self_influence_is_sum_of_lr_times_squared_gradient_norms(tmp_path):
    torch.manual_seed(0)
    model = SmallCNN().double().eval()
    folder = save_checkpoints(model, tmp_path / "c")
    x, y = data(3, 10, (1, 6, 6))
    loss = nn.MSELoss(reduction="sum")
    tracin = ti.TracInCP(model, TensorDataset(x, y), str(folder), load_with_lr, loss_fn=loss, batch_size=4)
    torch.testing.assert_close(tracin.self_influence(), hand_self_influence(model, folder, x, y, loss), **TOL)
    only_fc = ti.TracInCP(model, TensorDataset(x, y), str(folder), load_with_lr, layers=[model.fc], loss_fn=loss,
                          batch_size=4)
    torch.testing.assert_close(only_fc.self_influence(),
                               hand_self_influence(model, folder, x, y, loss, ["fc.weight", "fc.bias"]), **TOL)


def test_regression_hand_derived_scores(tmp_path):
    """y = w x, loss (w x - t)^2 with t = x: the gradient is 2 x^2 (w - 1), so the score of
    training example i on j is sum_c lr_c 4 x_i^2 x_j^2 (w_c - 1)^2."""
    model = nn.Sequential(nn.Linear(1, 1, bias=False)).double()
    weights, lrs = (0.4, 0.9, 1.3), (0.5, 1.0, 2.0)
    folder = tmp_path / "r"
    folder.mkdir()
    for i, (w, lr) in enumerate(zip(weights, lrs)):
        torch.save({"0.weight": torch.tensor([[w]], dtype=torch.float64), "learning_rate": lr}, folder / f"c{i}.pt")
    x = torch.arange(1.0, 6.0, dtype=torch.float64).unsqueeze(1)
    train = TensorDataset(x, x.clone())
    expected = sum(lr * 4 * (w - 1) ** 2 for w, lr in zip(weights, lrs)) * (x ** 2) @ (x ** 2).T
    for cls in (ti.TracInCP, ti.TracInCPFast):
        args = (model,) if cls is ti.TracInCP else (model, "0")
        tracin = cls(*args, train, str(folder), loss_fn=nn.MSELoss(reduction="sum"), batch_size=2)  # default loader
        torch.testing.assert_close(tracin.influence((x, x)), expected, **TOL)
        torch.testing.assert_close(tracin.self_influence(), expected.diagonal(), **TOL)


@pytest.mark.parametrize("squash", [False, True])
def test_fast_equals_tracincp_on_the_final_layer(tmp_path, squash):
    """TracInCPFast's closed form is TracInCP restricted to a bias-free final layer's weight,
    also when a nonlinearity follows the layer (the loss is differentiated at the layer's output)."""
    torch.manual_seed(1)
    model = TwoLayer(bias=False, squash=squash).double()
    folder = save_checkpoints(model, tmp_path / "c")
    train, test = TensorDataset(*data(1)), data(2, N_TEST)
    kw = dict(loss_fn=nn.MSELoss(reduction="mean"), batch_size=6)
    fast = ti.TracInCPFast(model, "linear2", train, str(folder), load_with_lr, **kw)
    full = ti.TracInCP(model, train, str(folder), load_with_lr, layers=["linear2"], **kw)
    torch.testing.assert_close(fast.influence(test), full.influence(test), **TOL)
    torch.testing.assert_close(fast.self_influence(), full.self_influence(), **TOL)


def test_train_vs_train_influence_is_symmetric_with_self_influence_on_the_diagonal(setup):
    model, folder, train, _ = setup
    tracin = ti.TracInCP(model, train, str(folder), load_with_lr, loss_fn=nn.MSELoss(reduction="none"), batch_size=7)
    scores = tracin.influence(DataLoader(train, batch_size=6))
    torch.testing.assert_close(scores, scores.T, **TOL)
    torch.testing.assert_close(scores.diagonal(), tracin.self_influence(), **TOL)
    torch.testing.assert_close(tracin.influence(DataLoader(train, batch_size=6), aggregate=True),
                               scores.sum(0, keepdim=True), **TOL)


def test_intermediate_quantities_dot_products_are_the_scores(setup):
    """With learning rates 0.5, 1 and 2: rows are sqrt(lr) * gradients, so their dot products are the scores."""
    model, folder, train, test = setup
    tracin = ti.TracInCP(model, train, str(folder), load_with_lr, loss_fn=nn.MSELoss(reduction="sum"), batch_size=8)
    q_test, q_train = tracin.compute_intermediate_quantities(test), tracin.compute_intermediate_quantities(
        DataLoader(train, batch_size=8))
    torch.testing.assert_close(q_test @ q_train.T, tracin.influence(test), **TOL)
    torch.testing.assert_close(tracin.compute_intermediate_quantities(test, aggregate=True),
                               q_test.sum(0, keepdim=True), **TOL)
    n_params = sum(p.numel() for p in model.parameters())
    assert q_test.shape == (N_TEST, n_params * len(LRS))


def test_default_load_func_reads_and_strips_the_learning_rate(tmp_path):
    torch.manual_seed(2)
    model = TwoLayer().double()
    one = save_checkpoints(model, tmp_path / "one", lrs=(1.0,))
    three = save_checkpoints(model, tmp_path / "three", lrs=(3.0,))
    train, test = TensorDataset(*data(1)), data(2, N_TEST)
    a = ti.TracInCP(model, train, str(one), loss_fn=nn.MSELoss(reduction="sum"), batch_size=5).influence(test)
    b = ti.TracInCP(model, train, str(three), loss_fn=nn.MSELoss(reduction="sum"), batch_size=5).influence(test)
    torch.testing.assert_close(b, 3 * a, **TOL)


def test_checkpoints_directory_glob_and_list_are_sorted_naturally(tmp_path):
    model = TwoLayer().double()
    for i in (10, 2, 1):
        torch.save(model.state_dict(), tmp_path / f"ckpt-{i}.pt")
    (tmp_path / "notes").mkdir()
    train = TensorDataset(*data(1))
    expected = [str(tmp_path / f"ckpt-{i}.pt") for i in (1, 2, 10)]
    assert ti.TracInCP(model, train, str(tmp_path)).checkpoints == expected
    assert ti.TracInCP(model, train, str(tmp_path / "ckpt-*.pt")).checkpoints == expected
    assert ti.TracInCP(model, train, list(reversed(expected))).checkpoints == expected


# ----------------------------------------------------------------------------- borrowing the model


def counting(load):
    calls = []

    def wrapped(model, path):
        calls.append(path)
        return load(model, path)

    return wrapped, calls


def test_each_checkpoint_is_loaded_once_per_pass(setup):
    model, folder, train, test = setup
    load, calls = counting(load_with_lr)
    loss = nn.MSELoss(reduction="sum")
    tests = DataLoader(TensorDataset(*test), batch_size=2)
    for tracin in (ti.TracInCP(model, train, str(folder), load, loss_fn=loss, batch_size=3),
                   ti.TracInCPFast(model, "linear2", train, str(folder), load, loss_fn=loss, batch_size=3)):
        for method, kwargs in (("influence", {}), ("influence", {"k": 2}), ("self_influence", {}),
                               ("self_influence", {"outer_loop_by_checkpoints": True})):
            calls.clear()
            getattr(tracin, method)(tests if method == "influence" else None, **kwargs)
            assert sorted(calls) == sorted(str(p) for p in folder.iterdir()), calls  # 7 training batches, 3 loads
    calls.clear()
    randproj = ti.TracInCPFastRandProj(model, "linear2", train, str(folder), load, loss_fn=loss, batch_size=3,
                                       projection_dim=4)
    assert sorted(calls) == sorted(str(p) for p in folder.iterdir()), calls  # construction: one pass
    calls.clear()
    randproj.influence(tests, k=2)
    assert sorted(calls) == sorted(str(p) for p in folder.iterdir()), calls


def test_model_is_given_back_unchanged(setup):
    model, folder, train, test = setup
    model.linear1.bias.requires_grad_(False)
    model.train()
    before = snapshot(model)
    loss = nn.MSELoss(reduction="none")
    tracin = ti.TracInCP(model, train, str(folder), load_with_lr, layers=["linear2"], loss_fn=loss, batch_size=5)
    tracin.influence(test)
    tracin.self_influence()
    tracin.compute_intermediate_quantities(test)
    ti.TracInCPFastRandProj(model, "linear2", train, str(folder), load_with_lr, loss_fn=nn.MSELoss(reduction="sum"),
                            batch_size=5, projection_dim=4).influence(test, k=2)
    assert_unchanged(model, before)


def test_model_is_restored_when_a_checkpoint_fails(setup):
    model, folder, train, test = setup
    before = snapshot(model)
    seen = []

    def fails_on_second(m, path):
        seen.append(path)
        if len(seen) == 2:
            raise RuntimeError("disk error")
        return load_with_lr(m, path)

    tracin = ti.TracInCP(model, train, str(folder), fails_on_second, loss_fn=nn.MSELoss(reduction="sum"))
    with pytest.raises(RuntimeError, match="disk error"):
        tracin.influence(test)
    assert_unchanged(model, before)


def test_train_mode_batch_norm_falls_back_and_matches_captums_loop(tmp_path):
    """In train mode batch-norm uses the batch's statistics, so an example's gradient depends
    on its batch: vmap over single examples cannot express that; the fallback does, as Captum's loop."""
    torch.manual_seed(3)
    model = SmallCNN().double().train()
    folder = save_checkpoints(model, tmp_path / "c")
    x, y = data(4, 8, (1, 5, 5))
    train = TensorDataset(x, y)
    loss = nn.MSELoss(reduction="none")
    before = snapshot(model)
    ours = ti.TracInCP(model, train, str(folder), load_with_lr, loss_fn=loss, batch_size=4)
    with pytest.warns(UserWarning, match="batch-norm"):
        scores = ours.self_influence()
    assert_unchanged(model, before)
    theirs = captum_influence.TracInCP(model, train, str(folder), load_with_lr, loss_fn=loss, batch_size=4)
    torch.testing.assert_close(scores, theirs.self_influence(), **TOL)


class Branchy(nn.Module):
    """Data-dependent control flow (the same branch for a batch and its examples): vmap cannot trace it."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(IN, OUT)

    def forward(self, x):
        out = self.linear(x)
        return out * 2 if float(x.detach().abs().max()) < 1e6 else out


def test_vmap_fallback_for_data_dependent_control_flow(tmp_path):
    torch.manual_seed(4)
    model = Branchy().double()
    folder = save_checkpoints(model, tmp_path / "c", lrs=(1.0, 0.5))
    x, y = data(5, 6)
    loss = nn.MSELoss(reduction="sum")
    tracin = ti.TracInCP(model, TensorDataset(x, y), str(folder), load_with_lr, loss_fn=loss, batch_size=3)
    with pytest.warns(UserWarning, match="vmap cannot be used"):
        got = tracin.self_influence()
    torch.testing.assert_close(got, hand_self_influence(model, folder, x, y, loss), **TOL)


class ExactNeighbors:
    """A user-supplied index with Captum's NearestNeighbors interface."""

    def setup(self, data):
        self.data = data

    def get_nearest_neighbors(self, query, k):
        scores, indices = torch.topk(query @ self.data.T, k, dim=1)
        return indices, scores


def test_randproj_user_nearest_neighbors_and_chunked_topk(setup):
    model, folder, train, test = setup
    kw = dict(loss_fn=nn.MSELoss(reduction="sum"), batch_size=5, projection_dim=6)
    index = ExactNeighbors()
    with_index = ti.TracInCPFastRandProj(model, "linear2", train, str(folder), load_with_lr, nearest_neighbors=index,
                                         **kw)
    assert index.data is with_index.src_intermediate_quantities
    plain = ti.TracInCPFastRandProj(model, "linear2", train, str(folder), load_with_lr, **kw)
    for proponents in (True, False):
        a = with_index.influence(test, k=4, proponents=proponents)
        b = plain.influence(test, k=4, proponents=proponents)
        assert torch.equal(a.indices, b.indices)
        torch.testing.assert_close(a.influence_scores, b.influence_scores, **TOL)
    from torchexplain.influence._topk import chunked_top_k
    q, s = torch.randn(3, 7, dtype=torch.float64), torch.randn(50, 7, dtype=torch.float64)
    idx, val = chunked_top_k(q, s, 6, proponents=False, chunk_elements=8)  # chunks of 2 stored rows
    ref_val, ref_idx = torch.topk(-(q @ s.T), 6, dim=1)
    assert torch.equal(idx, ref_idx) and torch.allclose(val, -ref_val)
    with pytest.raises(NotImplementedError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain.self_influence()


# ----------------------------------------------------------------------------- SimilarityInfluence


class ThreeLayer(nn.Module):
    """fc1 (no bias) -> relu1 -> fc2 (no bias): the zero input's activations are zero vectors at every layer."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 5, bias=False)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(5, 1, bias=False)

    def forward(self, x):
        return self.fc2(self.relu1(self.fc1(x)))


@pytest.mark.parametrize("metric, direction", [("cosine", "max"), ("euclidean", "min"), ("euclidean", "max")])
def test_similarity_influence_matches_captum(tmp_path, metric, direction):
    torch.manual_seed(5)
    model = ThreeLayer()
    src = torch.randn(23, 4)
    inputs = torch.randn(4, 4)
    ours_metric = ti.similarity.cosine_similarity if metric == "cosine" else ti.similarity.euclidean_distance
    from captum.influence._core import similarity_influence as cs
    theirs_metric = cs.cosine_similarity if metric == "cosine" else cs.euclidean_distance
    ours = ti.SimilarityInfluence(model, ["fc1", "relu1"], src, str(tmp_path / "a"), batch_size=5,
                                  similarity_metric=ours_metric, similarity_direction=direction).influence(inputs, 3)
    theirs = captum_influence.SimilarityInfluence(model, ["fc1", "relu1"], src, str(tmp_path / "b"), batch_size=5,
                                                  similarity_metric=theirs_metric,
                                                  similarity_direction=direction).influence(inputs, top_k=3)
    for layer in ("fc1", "relu1"):
        assert torch.equal(ours[layer][0], theirs[layer][0]), layer
        torch.testing.assert_close(ours[layer][1], theirs[layer][1], rtol=1e-5, atol=1e-6)


def test_similarity_reports_zero_activations_at_every_layer(tmp_path):
    """Example 0 of the source data is the zero vector, so (no biases) its activations are zero at
    fc1, relu1 and fc2 and its cosine similarity with anything is undefined: every input pairs with it
    at every layer. Captum reports the pairs only where its replaced similarity happens to equal
    replace_nan (here fc2, one-dimensional), not at relu1."""
    model = ThreeLayer()
    with torch.no_grad():
        model.fc1.weight.fill_(0.02)
        model.fc2.weight.fill_(0.02)
    src = torch.arange(16.0).repeat(4, 1).T  # rows 0, 1, ..., 15 repeated over 4 features
    inputs = src[[1, 8, 14]]
    with pytest.warns(RuntimeWarning, match="zero activation"):
        ours = ti.SimilarityInfluence(model, ["relu1", "fc2"], src, str(tmp_path / "a"), batch_size=8).influence(
            inputs, top_k=3)
    for layer in ("relu1", "fc2"):
        assert ours[f"zero_acts-{layer}"].tolist() == [[0, 0], [1, 0], [2, 0]]
        assert 0 not in ours[layer][0]  # the zero vector ranks last (replace_nan = -2 for "max")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = captum_influence.SimilarityInfluence(model, ["relu1", "fc2"], src, str(tmp_path / "b"),
                                                      batch_size=8).influence(inputs, top_k=3)
    assert "zero_acts-fc2" in theirs and "zero_acts-relu1" not in theirs


# ----------------------------------------------------------------------------- names and errors


IMPLEMENTED = ["DataInfluence", "SimilarityInfluence", "TracInCPBase", "TracInCP", "TracInCPFast",
               "TracInCPFastRandProj"]
LEFT_OUT = {"NaiveInfluenceFunction"}  # influence functions with a Hessian: outside the TracIn issue


def test_captum_names_are_importable():
    assert set(captum_influence.__all__) == set(IMPLEMENTED) | LEFT_OUT
    for name in IMPLEMENTED:
        assert isinstance(getattr(ti, name), type), name
    assert issubclass(ti.TracInCPFastRandProj, ti.TracInCPFast)
    assert issubclass(ti.TracInCPFast, ti.TracInCPBase) and issubclass(ti.TracInCP, ti.TracInCPBase)
    assert issubclass(ti.TracInCPBase, ti.DataInfluence) and ti.TracInCP.get_name() == "TracInCP"
    with pytest.raises(NotImplementedError, match="not implemented"):
        ti.NaiveInfluenceFunction(nn.Linear(1, 1), None, "x")


def test_errors_name_the_argument(setup, tmp_path):
    model, folder, train, test = setup
    empty = tmp_path / "empty"
    empty.mkdir()
    loss = nn.MSELoss(reduction="sum")
    cases = [
        ("checkpoints", lambda: ti.TracInCP(model, train, str(empty))),
        ("checkpoints", lambda: ti.TracInCP(model, train, [])),
        ("layers", lambda: ti.TracInCP(model, train, str(folder), layers=["linear9"])),
        ("layers", lambda: ti.TracInCP(model, train, str(folder), layers=[nn.Linear(2, 2)])),
        ("layers", lambda: ti.TracInCP(model, train, str(folder), layers="linear1")),
        ("loss_fn", lambda: ti.TracInCP(model, train, str(folder), loss_fn=nn.KLDivLoss(reduction="batchmean"))),
        ("test_loss_fn", lambda: ti.TracInCP(model, train, str(folder), test_loss_fn=nn.L1Loss(reduction="max"))),
        ("loss_fn", lambda: ti.TracInCPFast(model, "linear2", train, str(folder))),
        ("final_fc_layer", lambda: ti.TracInCPFast(model, "nope", train, str(folder), loss_fn=loss)),
        ("final_fc_layer", lambda: ti.TracInCPFast(model, nn.Linear(4, 3), train, str(folder), loss_fn=loss)),
        ("projection_dim", lambda: ti.TracInCPFastRandProj(model, "linear2", train, str(folder), loss_fn=loss,
                                                           projection_dim=0)),
        ("nearest_neighbors", lambda: ti.TracInCPFastRandProj(model, "linear2", train, str(folder), loss_fn=loss,
                                                              nearest_neighbors=object())),
        ("batch_size", lambda: ti.TracInCP(model, train, str(folder), batch_size=None)),
        ("train_dataset", lambda: ti.TracInCP(model, [1, 2], str(folder))),
        ("model", lambda: ti.TracInCP(lambda x: x, train, str(folder))),
        ("layers", lambda: ti.SimilarityInfluence(model, ["linear7"], train, str(tmp_path / "s"))),
        ("similarity_direction", lambda: ti.SimilarityInfluence(model, "linear1", train, str(tmp_path / "s"),
                                                                similarity_direction="up")),
        ("top_k", lambda: ti.SimilarityInfluence(model, "linear1", train, str(tmp_path / "s")).influence(
            test[0], top_k=0)),
    ]
    tracin = ti.TracInCP(model, train, str(folder), load_with_lr, loss_fn=loss, batch_size=5)
    cases += [
        ("k", lambda: tracin.influence(test, k=0)),
        ("k", lambda: tracin.influence(test, k=2.5)),
        ("inputs", lambda: tracin.influence(None)),
        ("inputs", lambda: tracin.influence(test[0])),
        ("inputs", lambda: tracin.influence((test[0],))),
    ]
    for name, call in cases:
        with pytest.raises(ValueError, match=name):
            call()
    with pytest.raises(ValueError, match="Invalid checkpoints provided for TracIn class"):
        ti.TracInCP(model, train, str(empty))
