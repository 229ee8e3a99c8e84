"""Neural-backed decision trees: induction, inference, JSON, rendering, fine-tuning."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from torchexplain.nbdt import (
    HardNBDT,
    Hierarchy,
    SoftNBDT,
    SoftTreeSupLoss,
    agglomerate,
    decision_line,
    finetune,
    induce_hierarchy,
)

NAMES = ["cat", "dog", "car", "truck"]
CLUSTERED = torch.tensor([[10.0, 0.0, 0.5], [10.2, 0.3, 0.4], [0.1, 9.8, -0.2], [0.3, 10.1, 0.0]])


def partition(h: Hierarchy, node=None) -> frozenset:
    """The tree as nested frozensets of class names (order-free)."""
    node = h.root if node is None else node
    if h.is_leaf(node):
        return h.class_names[h.classes[node]]
    return frozenset(partition(h, c) for c in h.children[node])


class Head(nn.Module):
    """A tiny classifier: features -> linear."""

    def __init__(self, weight, bias=None):
        super().__init__()
        self.body = nn.Linear(3, 3)
        self.fc = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.fc.weight.copy_(weight)
            self.fc.bias.copy_(torch.zeros(weight.shape[0]) if bias is None else bias)

    def forward(self, x):
        return self.fc(torch.tanh(self.body(x)))


# --------------------------------------------------------------------------- induction


def test_two_clear_clusters_give_the_root_two_children():
    h = induce_hierarchy(CLUSTERED, NAMES)
    assert partition(h) == frozenset({frozenset({"cat", "dog"}), frozenset({"car", "truck"})})
    assert h.n_classes == 4 and h.depth() == 2


def test_induction_is_independent_of_row_order():
    reference = partition(induce_hierarchy(CLUSTERED, NAMES))
    for perm in ([3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]):
        h = induce_hierarchy(CLUSTERED[perm], [NAMES[i] for i in perm])
        assert partition(h) == reference


@pytest.mark.parametrize("linkage", ["ward", "average", "complete", "single"])
def test_agglomerate_matches_scipy(linkage):
    hierarchy = pytest.importorskip("scipy.cluster.hierarchy")
    points = np.random.default_rng(0).normal(size=(12, 5))
    ours = agglomerate(points, linkage)
    theirs = hierarchy.linkage(points, method=linkage)
    members = lambda merges: [frozenset(_members(merges, len(points), len(points) + k)) for k in range(len(merges))]  # noqa: E731
    assert members(ours) == members([(int(a), int(b)) for a, b in theirs[:, :2]])


def _members(merges, n, cluster):
    if cluster < n:
        return {cluster}
    a, b = merges[cluster - n]
    return _members(merges, n, a) | _members(merges, n, b)


def test_representatives_are_means_of_leaf_rows():
    h = induce_hierarchy(CLUSTERED, NAMES)
    reps = h.representatives(CLUSTERED)
    for node in range(h.n_nodes):
        torch.testing.assert_close(reps[node], CLUSTERED[h.leaves(node)].mean(0))


def test_found_in_a_model_and_named_without_wordnet():
    model = Head(CLUSTERED)
    h = induce_hierarchy(model, ["dog_husky", "dog_pug", "car", "truck"])
    names = {h.names[c] for c in h.children[h.root]}
    assert names == {"dog", "{car, truck}"}
    custom = induce_hierarchy(model, NAMES, namer=lambda labels: "+".join(sorted(labels)))
    assert {custom.names[c] for c in custom.children[custom.root]} == {"cat+dog", "car+truck"}


# --------------------------------------------------------------------------- JSON


def test_json_round_trip(tmp_path):
    h = induce_hierarchy(CLUSTERED, NAMES)
    path = tmp_path / "tree.json"
    h.to_json(path)
    back = Hierarchy.from_json(path)
    assert (back.children, back.classes, back.names, back.class_names) == (h.children, h.classes, h.names, h.class_names)
    assert json.loads(path.read_text())["links"]


def test_user_tree_any_branching_and_single_child_pruning():
    tree = {"name": "root", "children": [
        {"name": "animals", "children": [{"name": "cat"}, {"name": "dog"}, {"name": "bird"}]},
        {"name": "only-child", "children": [{"name": "vehicles", "children": [{"name": "car"}, {"name": "truck"}]}]},
    ]}
    h = Hierarchy.from_json(json.dumps(tree), class_names=["cat", "dog", "bird", "car", "truck"])
    assert "only-child" not in h.names
    assert sorted(len(h.children[c]) for c in h.children[h.root]) == [2, 3]
    assert h.path(4) == [h.root, h.names.index("vehicles"), h.names.index("truck")]


@pytest.mark.parametrize("leaves, message", [
    (["cat", "dog"], r"no leaf for classes \[2\]"),
    (["cat", "dog", "dog", "car"], r"classes \[1\] appear in more than one leaf"),
    (["cat", "dog", "horse"], "'horse' is a leaf but not one of class_names"),
])
def test_user_tree_errors(leaves, message):
    tree = {"name": "root", "children": [{"name": n} for n in leaves]}
    with pytest.raises(ValueError, match=message):
        Hierarchy.from_json(tree, class_names=["cat", "dog", "car"])


def test_bad_induction_inputs():
    with pytest.raises(ValueError, match="no nn.Linear layer; pass its final layer's weight"):
        induce_hierarchy(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()))
    with pytest.raises(ValueError, match="class_names has 3 entries but the weight has 4 classes"):
        induce_hierarchy(CLUSTERED, NAMES[:3])
    with pytest.raises(ValueError, match="linkage must be one of"):
        induce_hierarchy(CLUSTERED, NAMES, linkage="centroid")


# --------------------------------------------------------------------------- inference


@pytest.fixture
def tree_model():
    torch.manual_seed(0)
    weight = torch.randn(7, 3)
    model = Head(weight, torch.randn(7)).eval()
    names = [f"c{i}" for i in range(7)]
    return model, induce_hierarchy(model, names), torch.randn(5, 3)


def _child_probs(h, logits, node):
    scores = torch.stack([logits[h.leaves(c)].mean() for c in h.children[node]])
    return dict(zip(h.children[node], torch.softmax(scores, 0).tolist()))


def test_soft_probabilities_are_path_products_and_sum_to_one(tree_model):
    model, h, x = tree_model
    with torch.no_grad():
        probs = SoftNBDT(model, h)(x)
        logits = model(x)
    torch.testing.assert_close(probs.sum(1), torch.ones(5))
    for i in range(5):
        for cls in range(7):
            path = h.path(cls)
            expected = math.prod(_child_probs(h, logits[i], a)[b] for a, b in zip(path, path[1:]))
            assert probs[i, cls].item() == pytest.approx(expected, rel=1e-5)


def test_depth_one_tree_is_the_softmax(tree_model):
    model, _, x = tree_model
    flat = Hierarchy.from_json({"name": "all", "children": [{"name": f"c{i}"} for i in range(7)]},
                               class_names=[f"c{i}" for i in range(7)])
    with torch.no_grad():
        torch.testing.assert_close(SoftNBDT(model, flat)(x), torch.softmax(model(x), 1))


def test_hard_follows_argmax_decisions_and_each_sample_has_its_own(tree_model):
    model, h, x = tree_model
    with torch.no_grad():
        out, decisions = HardNBDT(model, h).forward_with_decisions(x)
        logits = model(x)
    for i in range(5):
        node, steps = h.root, []
        while not h.is_leaf(node):
            probs = _child_probs(h, logits[i], node)
            node = max(probs, key=probs.get)
            steps.append((node, probs[node]))
        assert int(out[i].argmax()) == h.classes[node]
        assert [d["node"] for d in decisions[i]] == [s[0] for s in steps]
        assert [d["prob"] for d in decisions[i]] == pytest.approx([s[1] for s in steps], rel=1e-5)
        assert out[i].max().item() == pytest.approx(math.prod(s[1] for s in steps), rel=1e-5)
        single = HardNBDT(model, h).forward_with_decisions(x[i:i + 1])[1][0]
        assert [d["node"] for d in single] == [d["node"] for d in decisions[i]]
    assert len({tuple(d["node"] for d in row) for row in decisions}) > 1  # the batch is not all sample 0


def test_soft_decisions_are_each_samples_own(tree_model):
    model, h, x = tree_model
    with torch.no_grad():
        probs, decisions = SoftNBDT(model, h).forward_with_decisions(x)
        for i in range(5):
            single_probs, single = SoftNBDT(model, h).forward_with_decisions(x[i:i + 1])
            assert [d["node"] for d in single[0]] == [d["node"] for d in decisions[i]]
            assert [d["prob"] for d in single[0]] == pytest.approx([d["prob"] for d in decisions[i]], rel=1e-5)
            assert h.names.index(decisions[i][-1]["name"]) == h.leaf_of(int(probs[i].argmax()))
    line = decision_line(h.class_names, int(probs[0].argmax()), decisions[0])
    assert line.startswith(f"Prediction: {h.class_names[int(probs[0].argmax())]} // Decisions: ")
    assert line.count("%") == len(decisions[0])


def test_tree_loss_is_cross_entropy_plus_tree_nll(tree_model):
    model, h, x = tree_model
    y = torch.tensor([0, 3, 6, 2, 2])
    logits = model(x)
    loss = SoftTreeSupLoss(nn.CrossEntropyLoss(), h, tree_supervision_weight=0.5)(logits, y)
    soft = SoftNBDT(model, h)(x)
    expected = nn.functional.cross_entropy(logits, y) - 0.5 * soft[range(5), y].log().mean()
    torch.testing.assert_close(loss, expected)


def test_rendering(tree_model, tmp_path):
    model, h, x = tree_model
    decisions = SoftNBDT(model, h).forward_with_decisions(x[:1])[1][0]
    page = h.to_html(tmp_path / "tree.html", decisions)
    assert (tmp_path / "tree.html").read_text() == page
    assert "<svg" in page and "<script" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert page.count('stroke="#d62728"') == len(decisions)  # one highlighted edge per decision
    text = h.to_text(decisions)
    assert text.count("*") == len(decisions) and text.splitlines()[0] == h.names[h.root]


# --------------------------------------------------------------------------- the digits model


def test_digits_soft_nbdt_after_finetuning_is_within_a_point(capsys):
    pytest.importorskip("sklearn")
    from torchexplain import models

    model, _, names = models.load("digits")
    x_train, y_train = models.digits_data("train")
    x_test, y_test = models.digits_data("test")
    h = induce_hierarchy(model, names)

    def accuracy(m):
        with torch.no_grad():
            return (m(x_test).argmax(1) == y_test).float().mean().item()

    base, soft, hard = accuracy(model), accuracy(SoftNBDT(model, h)), accuracy(HardNBDT(model, h))
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x_train, y_train), batch_size=64, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    tuned = copy.deepcopy(model)
    finetune(tuned, h, loader)
    tuned.eval()
    soft_after, hard_after = accuracy(SoftNBDT(tuned, h)), accuracy(HardNBDT(tuned, h))
    with capsys.disabled():
        print(f"\ndigits: network {base:.2%}; before fine-tuning soft {soft:.2%}, hard {hard:.2%}; "
              f"after soft {soft_after:.2%}, hard {hard_after:.2%}")
    assert soft_after >= base - 0.01
    assert soft_after > soft
