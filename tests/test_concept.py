"""torchexplain.concept (TCAV): agreement with Captum on small models, a planted
concept direction, the exact SVM against scikit-learn, the activation cache, the
t-test against scipy, and the errors at the public boundary."""

from __future__ import annotations

import math
import warnings

import captum.concept
import numpy as np
import pytest
import scipy.stats
import torch
from captum.concept import TCAV as CaptumTCAV
from sklearn.linear_model import SGDClassifier
from sklearn.svm import SVC
from torch import nn
from torch.utils.data import DataLoader

import torchexplain.concept as tc
from torchexplain.concept import TCAV, Classifier, Concept, DefaultClassifier, FastCAVClassifier


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 6, 3))
        self.relu = nn.ReLU()
        self.fc1 = nn.Linear(6 * 6 * 6, 10)
        self.fc2 = nn.Linear(10, 3)

    def forward(self, x):
        h = self.relu(self.conv(x))
        return self.fc2(torch.relu(self.fc1(h.flatten(1))))


def make_net(seed=0):
    torch.manual_seed(seed)
    return Net().eval()


def image_concepts(count=24, shifts=(1.0, 0.0, -1.0)):
    g = torch.Generator().manual_seed(5)
    data = [torch.randn(count, 1, 10, 10, generator=g) + s for s in shifts]
    return data


def ours_and_captums(data):
    ours = [Concept(i, f"c{i}", DataLoader(d, batch_size=10)) for i, d in enumerate(data)]
    theirs = [captum.concept.Concept(i, f"c{i}", DataLoader(d, batch_size=10)) for i, d in enumerate(data)]
    return ours, theirs


class MeansClassifier(Classifier):
    """Deterministic and order-free: row k is the mean activation of class k."""

    def __init__(self):
        self._rows, self._classes = None, []

    def train_and_eval(self, dataloader, **kwargs):
        sums, counts = {}, {}
        for x, y in dataloader:
            for label in y.unique().tolist():
                part = x[y == label].double()
                sums[label] = sums.get(label, 0) + part.sum(0)
                counts[label] = counts.get(label, 0) + part.shape[0]
        self._classes = sorted(sums)
        self._rows = torch.stack([sums[c] / counts[c] for c in self._classes]).float()
        return {"accs": torch.tensor(1.0)}

    def weights(self):
        return self._rows

    def classes(self):
        return self._classes


LAYERS = ["conv.2", "fc1"]
SETS = [[0, 1], [0, 2], [2, 1, 0]]


def both_scores(tmp_path, make_classifier, inputs, target=0):
    data = image_concepts()
    ours_c, theirs_c = ours_and_captums(data)
    model = make_net()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = TCAV(model, LAYERS, classifier=make_classifier(), save_path=str(tmp_path / "ours"))
        theirs = CaptumTCAV(model, LAYERS, classifier=make_classifier(), save_path=str(tmp_path / "captum"))
        a = ours.interpret(inputs, [[ours_c[i] for i in s] for s in SETS], target=target)
        b = theirs.interpret(inputs, [[theirs_c[i] for i in s] for s in SETS], target=target)
    return a, b


@pytest.mark.parametrize("make_classifier", [FastCAVClassifier, MeansClassifier], ids=["fastcav", "means"])
def test_matches_captum_with_the_same_classifier(tmp_path, make_classifier):
    inputs = torch.randn(13, 1, 10, 10, generator=torch.Generator().manual_seed(2))
    ours, theirs = both_scores(tmp_path, make_classifier, inputs, target=[0, 1, 2] * 4 + [0])
    assert set(ours) == set(theirs) == {"0-1", "0-2", "2-1-0"}
    for key in theirs:
        for layer in LAYERS:
            for score in ("sign_count", "magnitude"):
                torch.testing.assert_close(ours[key][layer][score], theirs[key][layer][score], atol=1e-5, rtol=1e-5)
    if make_classifier is FastCAVClassifier:  # opposite rows: a two-concept set's sign counts sum to one
        assert torch.allclose(ours["0-1"]["fc1"]["sign_count"].sum(), torch.tensor(1.0))


def test_default_classifiers_agree_with_captum_loosely(tmp_path):
    # Captum's split (torch) and SGD (NumPy) draw from the global generators: pinned, so
    # that the tests run before this one cannot decide its outcome
    torch.manual_seed(0)
    np.random.seed(0)
    inputs = torch.randn(20, 1, 10, 10, generator=torch.Generator().manual_seed(3))
    ours, theirs = both_scores(tmp_path, lambda: None, inputs)
    # (in "2-1-0" the middle concept is not linearly separable from the other two: no
    # two SVM solvers need agree on it)
    for key in ("0-1", "0-2"):
        for layer in LAYERS:
            diff = (ours[key][layer]["sign_count"] - theirs[key][layer]["sign_count"]).abs().max()
            assert diff <= 0.3, (key, layer, ours[key][layer], theirs[key][layer])


class Planted(nn.Module):
    """f_0(x) = h_0 + |h_rest|^2 / 2 at h = layer(x) = x: its gradient at the layer is
    (1, h_1, ..., h_{d-1}), whose dot product with e_0 is always 1 and with a random
    direction is positive for about half of the inputs."""

    def __init__(self, d):
        super().__init__()
        self.layer = nn.Linear(d, d, bias=False)
        with torch.no_grad():
            self.layer.weight.copy_(torch.eye(d))

    def forward(self, x):
        h = self.layer(x)
        f = h[:, 0] + 0.5 * (h[:, 1:] ** 2).sum(1)
        return torch.stack([f, -f], 1)


def planted_setup(d=80, n=50, runs=6):
    g = torch.Generator().manual_seed(11)
    planted = torch.randn(n, d, generator=g) * 0.1
    planted[:, 0] += 20.0
    concept = Concept(100, "planted", DataLoader(planted, batch_size=25))
    randoms = [Concept(i, f"random{i}", DataLoader(torch.randn(n, d, generator=g), batch_size=25)) for i in range(runs)]
    inputs = torch.randn(200, d, generator=g) * 2
    return Planted(d).eval(), concept, randoms, inputs


@pytest.mark.filterwarnings("ignore:Precision loss occurred")
@pytest.mark.parametrize("classifier", [None, "fastcav"])
def test_planted_direction_scores_one_and_random_half(tmp_path, classifier):
    model, concept, randoms, inputs = planted_setup()
    tcav = TCAV(model, "layer", classifier=classifier, save_path=str(tmp_path))
    result = tcav.significance(inputs, concept, randoms, target=0)["100"]["layer"]
    assert torch.all(result["concept_scores"] > 0.97)
    assert abs(float(result["random_scores"].mean()) - 0.5) < 0.1
    assert torch.all((result["random_scores"] > 0.3) & (result["random_scores"] < 0.7))
    expected = scipy.stats.ttest_ind(result["concept_scores"].double().numpy(), result["random_scores"].double().numpy())
    assert math.isclose(float(result["p_value"]), expected.pvalue, rel_tol=1e-9, abs_tol=1e-300)
    assert math.isclose(float(result["t_statistic"]), expected.statistic, rel_tol=1e-9)
    assert result["significant"] and float(result["p_value"]) < 1e-6
    # a random concept tested the same way is far from it
    other = tcav.significance(inputs, randoms[1], [randoms[0]] + randoms[2:], target=0)["1"]["layer"]
    assert float(other["p_value"]) > 1e-3 and abs(float(other["concept_mean"]) - 0.5) < 0.1


@pytest.mark.parametrize("df", [1, 2, 3.5, 10, 57])
def test_student_t_cdf_matches_scipy(df):
    t = torch.tensor([-40.0, -3.1, -1.0, -0.2, 0.0, 0.5, 1.7, 6.0, 300.0])
    ours = tc.student_t_cdf(t, df)
    expected = torch.tensor(scipy.stats.t.cdf(t.numpy(), df), dtype=torch.float64)
    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-14)


def test_betainc_matches_scipy():
    import scipy.special

    for a, b, x in [(0.5, 0.5, 0.3), (2.0, 3.0, 0.9), (30.0, 0.5, 0.99), (0.7, 12.0, 1e-3), (5.0, 5.0, 0.5)]:
        assert math.isclose(tc.betainc(a, b, x), scipy.special.betainc(a, b, x), rel_tol=1e-11)


def test_ttest_matches_scipy_and_degenerate_cases():
    g = torch.Generator().manual_seed(0)
    for na, nb in [(2, 2), (5, 9), (30, 30)]:
        a, b = torch.rand(na, generator=g).double(), torch.rand(nb, generator=g).double() + 0.2
        t, p = tc.ttest_ind(a, b)
        expected = scipy.stats.ttest_ind(a.numpy(), b.numpy())
        assert math.isclose(float(t), expected.statistic, rel_tol=1e-9)
        assert math.isclose(float(p), expected.pvalue, rel_tol=1e-9)
    t, p = tc.ttest_ind([0.5, 0.5, 0.5], [0.5, 0.5])
    assert math.isnan(float(t)) and math.isnan(float(p))
    t, p = tc.ttest_ind([1.0, 1.0], [0.5, 0.5])
    assert float(t) == math.inf and float(p) == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        tc.ttest_ind([1.0], [0.5, 0.4])
    with pytest.raises(ValueError, match="alpha"):
        tc.significance_test([1.0, 0.9], [0.5, 0.4], alpha=1.5)


def separable(n=30, d=40, classes=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(n, d, generator=g) * 3 + 4 * torch.randn(d, generator=g) for _ in range(classes)]
    x = torch.cat(xs)
    y = torch.arange(classes).repeat_interleave(n) + 7
    return x, y


@pytest.mark.parametrize("budget", [None, 1], ids=["in-memory", "streamed"])
def test_default_classifier_is_the_exact_svm(budget):
    x, y = separable()
    loader = [(x[i:i + 16], y[i:i + 16]) for i in range(0, len(y), 16)]
    clf = DefaultClassifier(memory_budget=budget, tol=1e-7)
    stats = clf.train_and_eval(loader, test_split_ratio=0.0)
    svc = SVC(kernel="linear", C=1 / (0.01 * len(y)), tol=1e-8).fit(x.double().numpy(), y.numpy())
    w = torch.tensor(svc.coef_[0], dtype=torch.float32)
    torch.testing.assert_close(clf.weights()[1], w, rtol=2e-3, atol=2e-3 * float(w.abs().max()))
    torch.testing.assert_close(clf.weights()[0], -clf.weights()[1])
    assert math.isclose(float(clf.intercepts()[1]), svc.intercept_[0], rel_tol=2e-3, abs_tol=1e-3)
    assert clf.classes() == [7, 8] and float(stats["accs"]) == 1.0


def test_default_classifier_one_vs_rest_and_seeded_split():
    x, y = separable(classes=3)
    loader = [(x, y)]
    clf = DefaultClassifier()
    acc = clf.train_and_eval(loader)["accs"]
    assert clf.weights().shape == (3, 40) and clf.classes() == [7, 8, 9] and float(acc) > 0.9
    again = DefaultClassifier()
    again.train_and_eval(loader)
    assert torch.equal(clf.weights(), again.weights())
    other = DefaultClassifier(seed=1)
    other.train_and_eval(loader)
    assert not torch.equal(clf.weights(), other.weights())


def test_fastcav_is_the_normalised_mean_difference():
    x, y = separable()
    clf = FastCAVClassifier()
    clf.train_and_eval([(x[:7], y[:7]), (x[7:], y[7:])])
    v = x[y == 8].mean(0) - x.mean(0)
    torch.testing.assert_close(clf.weights()[1], v / v.norm(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(clf.weights()[0], -v / v.norm(), rtol=1e-5, atol=1e-6)


class Counting(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model
        self.rows = []

    def forward(self, x):
        self.rows.append(x.shape[0])
        return self.model(x)


class CountingClassifier(FastCAVClassifier):
    calls = 0

    def train_and_eval(self, dataloader, **kwargs):
        CountingClassifier.calls += 1
        return super().train_and_eval(dataloader, **kwargs)


def test_cache_reuses_activations_and_cavs_for_the_same_model(tmp_path):
    data = image_concepts()
    c = [Concept(i, f"c{i}", DataLoader(d, batch_size=10)) for i, d in enumerate(data)]
    model = Counting(make_net())
    layers = ["model.conv.2", "model.fc1"]
    first = TCAV(model, layers, classifier=CountingClassifier(), save_path=str(tmp_path))
    first.compute_cavs([[c[0], c[1]]])
    assert sum(model.rows) == 48 and CountingClassifier.calls == 2  # one forward pass for both layers
    model.rows.clear()
    second = TCAV(model, layers, classifier=CountingClassifier(), save_path=str(tmp_path))
    cavs = second.compute_cavs([[c[0], c[1]], [c[1], c[0]]])
    assert model.rows == [] and CountingClassifier.calls == 4  # "1-0" trained from cached activations
    torch.testing.assert_close(cavs["0-1"]["model.fc1"].stats["weights"], first.cavs["0-1"]["model.fc1"].stats["weights"])
    second.compute_cavs([[c[0], c[1]]], force_train=True)
    assert sum(model.rows) == 48 and CountingClassifier.calls == 6
    model.rows.clear()
    with torch.no_grad():
        model.model.fc1.weight[0, 0] += 1.0  # a changed model reuses nothing
    third = TCAV(model, layers, classifier=CountingClassifier(), save_path=str(tmp_path))
    third.compute_cavs([[c[0], c[1]]])
    assert sum(model.rows) == 48 and CountingClassifier.calls == 8
    files = sorted(p.name for p in (tmp_path / "av" / "default_model_id" / "c0-0" / "model.fc1").iterdir())
    assert len({name.split("-")[0].split(".")[0] for name in files}) == 2  # two model hashes side by side
    assert not [p for p in tmp_path.rglob("*.tmp-*")]


def test_streamed_scores_equal_one_chunk_and_chunks_are_small(tmp_path):
    data = image_concepts()
    c = [Concept(i, f"c{i}", DataLoader(d, batch_size=10)) for i, d in enumerate(data)]
    inputs = torch.randn(11, 1, 10, 10, generator=torch.Generator().manual_seed(4))
    model = Counting(make_net())
    whole = TCAV(model, ["model.fc1"], save_path=str(tmp_path), internal_batch_size=None)
    expected = whole.interpret(inputs, [[c[0], c[1], c[2]]], target=1)
    model.rows.clear()
    chunked = TCAV(model, ["model.fc1"], save_path=str(tmp_path), internal_batch_size=3)
    got = chunked.interpret(inputs, [[c[0], c[1], c[2]]], target=1)
    assert model.rows == [3, 3, 3, 2]
    for score in ("sign_count", "magnitude"):
        torch.testing.assert_close(got["0-1-2"]["model.fc1"][score], expected["0-1-2"]["model.fc1"][score])


def test_model_is_left_as_found(tmp_path):
    data = image_concepts()
    c = [Concept(i, f"c{i}", DataLoader(d, batch_size=10)) for i, d in enumerate(data)]
    model = make_net().train()
    model.fc2.weight.requires_grad_(False)
    TCAV(model, "fc1", save_path=str(tmp_path)).interpret(torch.randn(4, 1, 10, 10), [[c[0], c[1]]], target=0)
    assert model.training and all(m.training for m in model.modules())
    assert not model.fc2.weight.requires_grad and model.fc1.weight.requires_grad
    assert all(p.grad is None for p in model.parameters())


def test_sklearn_estimator_and_layer_method(tmp_path):
    data = image_concepts()
    c = [Concept(i, f"c{i}", DataLoader(d, batch_size=10)) for i, d in enumerate(data)]
    model = make_net()
    sgd = SGDClassifier(alpha=0.01, max_iter=1000, tol=1e-3, random_state=0)
    tcav = TCAV(model, "fc1", classifier=sgd, save_path=str(tmp_path / "a"))
    tcav.compute_cavs([[c[0], c[1]]])
    coef = torch.as_tensor(sgd.coef_[0]).float()
    torch.testing.assert_close(tcav.cavs["0-1"]["fc1"].stats["weights"].float(), torch.stack([-coef, coef]))
    # a layer attribution method, as in Captum: LayerGradientXActivation without inputs = the gradient
    from torchexplain.attr import LayerGradientXActivation

    inputs = torch.randn(6, 1, 10, 10)
    method = LayerGradientXActivation(model, model.fc1, multiply_by_inputs=False)
    plain = TCAV(model, "fc1", classifier="fastcav", save_path=str(tmp_path / "b")).interpret(inputs, [c[:2]], target=2)
    via = TCAV(model, "fc1", classifier="fastcav", layer_attr_method=method, save_path=str(tmp_path / "b"),
               internal_batch_size=4).interpret(inputs, [c[:2]], target=2)
    torch.testing.assert_close(via["0-1"]["fc1"]["magnitude"], plain["0-1"]["fc1"]["magnitude"])


def test_bad_experimental_sets(tmp_path):
    data = image_concepts()
    c = [Concept(i, f"c{i}", DataLoader(d, batch_size=10)) for i, d in enumerate(data)]
    tcav = TCAV(make_net(), "fc1", save_path=str(tmp_path))
    twin = Concept(0, "twin", None)
    with pytest.raises(ValueError, match=r"experimental_sets: concept id 0 is used by two different concepts"):
        tcav.compute_cavs([[c[0], c[1]], [twin, c[2]]])
    with pytest.raises(ValueError, match=r"experimental_sets\[0\] must hold at least 2 concepts \(a classifier separates them\); got 1"):
        tcav.compute_cavs([[c[0]]])
    with pytest.raises(ValueError, match=r"experimental_sets\[1\] repeats concept id\(s\) 2"):
        tcav.interpret(torch.randn(2, 1, 10, 10), [[c[0], c[1]], [c[2], c[2]]])
    with pytest.raises(TypeError, match="experimental_sets must be a list"):
        tcav.compute_cavs(c[0])
    with pytest.raises(ValueError, match="random_concepts must hold at least 3"):
        tcav.significance(torch.randn(2, 1, 10, 10), c[0], c[1:])
    with pytest.raises(ValueError, match="attribute_to_layer_input is a TCAV constructor argument"):
        tcav.interpret(torch.randn(2, 1, 10, 10), [c[:2]], attribute_to_layer_input=True)


def test_bad_layers_and_arguments(tmp_path):
    model = make_net()
    with pytest.raises(ValueError, match=r"layers\[1\] 'fc3' is not a module of the model; close matches: fc2, fc1"):
        TCAV(model, ["fc1", "fc3"], save_path=str(tmp_path))
    with pytest.raises(ValueError, match=r"layers 'zzz' is not a module of the model; its modules include: conv, conv.0"):
        TCAV(model, "zzz", save_path=str(tmp_path))
    with pytest.raises(ValueError, match="not a submodule"):
        TCAV(model, nn.Linear(2, 2), save_path=str(tmp_path))
    with pytest.raises(ValueError, match="model_id must be a non-empty string"):
        TCAV(model, "fc1", model_id="", save_path=str(tmp_path))
    with pytest.raises(ValueError, match="classifier given by name"):
        TCAV(model, "fc1", classifier="svm", save_path=str(tmp_path))
    with pytest.raises(TypeError, match="Concept id must be an int"):
        Concept("a", "x", None)
    tcav = TCAV(model, [model.conv[2]], save_path=str(tmp_path))
    assert tcav.layers == ["conv.2"]
    with pytest.raises(ValueError, match="has data_iter=None"):
        tcav.compute_cavs([[Concept(0, "a", None), Concept(1, "b", None)]])


def test_captum_names_are_importable():
    missing = [name for name in captum.concept.__all__ if not hasattr(tc, name)]
    assert missing == []
    for name in captum.concept.__all__:
        assert name in tc.__all__


def test_significance_of_constant_scores():
    """Equal constant samples carry no difference (p = 1, where scipy's t-test gives
    nan); different constants are as different as can be (t infinite, p = 0)."""
    same = tc.significance_test(torch.ones(3), torch.ones(4))
    assert float(same["p_value"]) == 1.0 and same["significant"] is False
    apart = tc.significance_test(torch.ones(3), torch.zeros(4))
    assert float(apart["p_value"]) == 0.0 and apart["significant"] is True and float(apart["t_statistic"]) == math.inf
