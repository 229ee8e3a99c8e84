"""Neural-backed decision trees: induction, inference, JSON, rendering, fine-tuning."""

from __future__ import annotations

import copy
import json
import math
import re

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
        # nbdt's shape: the root first (probability 1), then the decisions
        assert decisions[i][0] == {"node": h.root, "name": "root", "prob": 1.0, "parent": None}
        assert [d["node"] for d in decisions[i][1:]] == [s[0] for s in steps]
        assert [d["prob"] for d in decisions[i][1:]] == pytest.approx([s[1] for s in steps], rel=1e-5)
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
    assert decisions[0][0]["parent"] is None and decisions[0][0]["node"] == h.root
    assert line.count("%") == len(decisions[0]) - 1 and "root" not in line


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
    assert "http:" not in page and "https:" not in page and "default-src 'none'" in page  # no network
    # the path open (root and every decision), each sibling along it collapsed, nothing else drawn
    path = [d["node"] for d in decisions]
    assert page.count('class="nbdt-node nbdt-path') == len(decisions)
    siblings = [c for p in path if not h.is_leaf(p) for c in h.children[p] if c not in path]
    view = page.split('<script type="application/json"')[0]
    shown = [int(n) for n in re.findall(r'data-node="(\d+)"', view)]
    assert sorted(shown) == sorted(path + siblings)
    assert view.count('aria-expanded="false"') == sum(not h.is_leaf(c) for c in siblings)
    for d in decisions[1:]:
        assert f"{100 * d['prob']:.1f}%" in page
    data = json.loads(re.search(r'<script type="application/json" id="[^"]+">(.*?)</script>', page).group(1))
    assert data["names"] == h.names and data["children"] == h.children
    assert data["classes"] == [len(h.leaves(n)) for n in range(h.n_nodes)]
    text = h.to_text(decisions)
    assert text.count("*") == len(decisions) - 1 and text.splitlines()[0] == h.names[h.root]


@pytest.mark.slow
def test_a_thousand_class_tree_shows_its_path_and_siblings_only():
    def balanced(lo, hi):
        if hi - lo == 1:
            return {"name": f"c{lo}"}
        mid = (lo + hi) // 2
        return {"name": f"n{lo}-{hi}", "children": [balanced(lo, mid), balanced(mid, hi)]}

    names = [f"c{i}" for i in range(1000)]
    h = Hierarchy.from_json(balanced(0, 1000), class_names=names)
    torch.manual_seed(0)
    model = nn.Linear(8, 1000)
    with torch.no_grad():
        decisions = SoftNBDT(model, h).forward_with_decisions(torch.randn(1, 8))[1][0]
    from torchexplain.nbdt.render import tree_view

    view = tree_view(h, decisions, "t")
    depth = len(decisions) - 1
    assert view.count("<li") == 1 + 2 * depth  # the root, each decision and its one sibling
    assert len(view) < 400 * (1 + 2 * depth)


def test_tree_decisions_round_trip_through_json(tree_model):
    from torchexplain.nbdt import TreeDecisions
    from torchexplain.report import tree_page

    model, h, x = tree_model
    with torch.no_grad():
        _, decisions = SoftNBDT(model, h).forward_with_decisions(x[:2])
    tree = TreeDecisions(h, [("a", decisions[0]), ("b", decisions[1])])
    back = TreeDecisions.from_dict(json.loads(tree.to_json()))
    assert (back.hierarchy.children, back.hierarchy.names, back.hierarchy.classes) == (h.children, h.names, h.classes)
    assert back.rows == tree.rows and back.prediction(1) == tree.prediction(1)
    assert tree.prediction(0) == h.class_names[int(SoftNBDT(model, h)(x[:1]).argmax())]
    page = tree_page(back).html()
    assert page.count('class="tree-row"') == 2 and 'open><summary><b>a</b>' in page


def test_default_names_are_sorted_and_hide_more_than_one_label():
    from torchexplain.nbdt import default_namer

    assert default_namer(["4", "7", "5", "9"]) == "{4, 5, 7, 9}"  # no "+1 more": the name it would hide
    assert default_namer(["10", "2", "1", "33", "4"]) == "{1, 2, 4, +2 more}"  # numbers in natural order
    assert default_namer(["owl", "cat"]) == "{cat, owl}"


# --------------------------------------------------------------------------- the digits model


@pytest.mark.slow
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


# --------------------------------------------------------------------------- nbdt's own forms


def cifar_model():
    torch.manual_seed(1)
    return Head(torch.randn(10, 3), torch.randn(10)).eval()


def test_nbdt_constructor_forms_give_the_same_tree_and_outputs(tmp_path):
    from torchexplain.nbdt import model as nbdt_model
    from torchexplain.nbdt.utils import DATASET_TO_CLASSES

    model, x = cifar_model(), torch.randn(4, 3)
    names = DATASET_TO_CLASSES["CIFAR10"]
    tree = induce_hierarchy(model, names)
    path = tmp_path / "graph-induced.json"
    tree.to_json(path)
    ours = HardNBDT(model, tree)
    forms = [
        nbdt_model.HardNBDT(pretrained=False, dataset="CIFAR10", arch="ResNet18", model=model, hierarchy=str(path)),
        nbdt_model.HardNBDT(dataset="CIFAR10", model=model, path_graph=path),
        nbdt_model.HardNBDT("CIFAR10", model, "ResNet18"),  # nbdt's positional order; induced, as nbdt's default
        HardNBDT(model=model, dataset="CIFAR10", hierarchy="induced-ResNet18"),
        HardNBDT(model, classes=names),
    ]
    with torch.no_grad():
        expected, expected_decisions = ours.forward_with_decisions(x)
        for nbdt in forms:
            assert nbdt.hierarchy.class_names == names and nbdt.hierarchy.children == tree.children
            out, decisions = nbdt.forward_with_decisions(x)
            torch.testing.assert_close(out, expected)
            assert decisions == expected_decisions
    assert nbdt_model.SoftNBDT is SoftNBDT and model.training is False


def test_the_seed_tutorial_line_keeps_the_first_real_decision():
    from torchexplain.nbdt.utils import DATASET_TO_CLASSES

    model, x = cifar_model(), torch.randn(1, 3)
    nbdt = SoftNBDT(pretrained=False, dataset="CIFAR10", arch="wrn28_10_cifar10", model=model)
    with torch.no_grad():
        outputs, decisions = nbdt.forward_with_decisions(x)
    _, predicted = outputs.max(1)
    cls = DATASET_TO_CLASSES["CIFAR10"][predicted[0]]
    line = "Prediction: " + cls + " // Decisions: " + ", ".join(
        f"{info['name']} ({info['prob'] * 100:.2f}%)" for info in decisions[0][1:])
    h = nbdt.hierarchy
    first_child = decisions[0][1]["node"]
    assert first_child in h.children[h.root] and line.split("Decisions: ")[1].startswith(h.names[first_child])
    assert line == decision_line(h.class_names, int(predicted[0]), decisions[0])
    assert decisions[0][-1]["name"] == cls


@pytest.mark.parametrize("kwargs, error, message", [
    ({"pretrained": True, "dataset": "CIFAR10", "arch": "ResNet18"}, ValueError, "downloads nothing.*pretrained=False"),
    ({"dataset": "MNIST"}, ValueError, "dataset must be one of 'CIFAR10'.*classes="),
    ({"hierarchy": "wordnet"}, ValueError, "pass a tree JSON path, a Hierarchy, or 'induced'"),
    ({"model": "ResNet18"}, TypeError, "model must be an nn.Module"),
    ({"dataset": "CIFAR100"}, ValueError, "class_names has 100 entries but the weight has 10"),
    ({"path_wnids": "wnids.txt"}, ValueError, "path_wnids"),
    ({"lr": 0.1}, TypeError, "unexpected keyword argument"),
])
def test_nbdt_constructor_errors(kwargs, error, message):
    kwargs = {"model": cifar_model(), **kwargs}
    with pytest.raises(error, match=message):
        HardNBDT(**kwargs)


def test_dataset_class_names_ship_offline():
    torchvision = pytest.importorskip("torchvision")
    from torchexplain.nbdt.utils import DATASET_TO_CLASSES

    assert DATASET_TO_CLASSES["CIFAR10"][3] == "cat" and len(DATASET_TO_CLASSES["CIFAR10"]) == 10
    cifar100 = DATASET_TO_CLASSES["CIFAR100"]
    assert len(set(cifar100)) == 100 and cifar100 == sorted(cifar100) and cifar100[:2] == ["apple", "aquarium_fish"]
    imagenet = DATASET_TO_CLASSES["Imagenet1000"]
    assert imagenet == torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    assert DATASET_TO_CLASSES["ImageNet"] == imagenet
    assert imagenet[0] == "tench" and imagenet[999] == "toilet tissue"
    DATASET_TO_CLASSES["CIFAR10"].append("x")  # callers get their own list
    assert len(DATASET_TO_CLASSES["CIFAR10"]) == 10


def test_load_image_from_path_reads_files_and_file_urls(tmp_path):
    from PIL import Image

    from torchexplain.loading import LoadError
    from torchexplain.nbdt.utils import load_image_from_path

    pixels = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    path = tmp_path / "im.png"
    Image.fromarray(pixels).save(path)
    for source in (path, str(path), path.as_uri()):
        assert np.array_equal(np.asarray(load_image_from_path(source)), pixels)
    with pytest.raises(LoadError, match="image not found"):
        load_image_from_path(tmp_path / "missing.png")
    with pytest.raises(LoadError, match=r"cannot fetch image http://127\.0\.0\.1:9/im\.png"):
        load_image_from_path("http://127.0.0.1:9/im.png")


@pytest.mark.parametrize("edges", ["links", "edges"])
def test_networkx_node_link_json_with_classes_in_id(edges):
    nx = pytest.importorskip("networkx")
    graph = nx.DiGraph([("root", "animal"), ("root", "vehicle"), ("animal", "cat"), ("animal", "dog"),
                        ("vehicle", "car"), ("vehicle", "truck")])
    data = nx.node_link_data(graph, edges=edges)
    assert all(set(node) == {"id"} for node in data["nodes"])  # leaves name their class in "id" only
    h = Hierarchy.from_json(json.dumps(data), class_names=NAMES)
    assert partition(h) == frozenset({frozenset({"cat", "dog"}), frozenset({"car", "truck"})})
    assert h.names[h.root] == "root" and h.class_names == NAMES
