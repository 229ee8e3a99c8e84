"""The class hierarchy of a neural-backed decision tree (Wan et al., ICLR 2021).

A :class:`Hierarchy` is a rooted tree whose leaves are the classifier's classes.
:func:`induce_hierarchy` builds one from the final linear layer: its weight rows (one
per class) are clustered agglomeratively into a binary tree. Trees are saved and
loaded as JSON in node-link form; :meth:`Hierarchy.from_json` also accepts trees
written by hand, with any branching factor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .naming import default_namer

LINKAGES = ("ward", "average", "complete", "single")


@dataclass
class Hierarchy:
    """``children[i]``: the child node ids of node ``i``; ``classes[i]``: the class
    index of a leaf (None for inner nodes); ``names[i]``: its display name."""

    children: list[list[int]]
    classes: list[int | None]
    names: list[str]
    root: int
    class_names: list[str] = field(default_factory=list)

    def __post_init__(self):
        _check_tree(self.children, self.classes, self.root, len(self.class_names) or None)
        if not self.class_names:
            self.class_names = [str(i) for i in range(self.n_classes)]

    @property
    def n_classes(self) -> int:
        return sum(c is not None for c in self.classes)

    @property
    def n_nodes(self) -> int:
        return len(self.children)

    def is_leaf(self, node: int) -> bool:
        return self.classes[node] is not None

    def leaf_of(self, class_index: int) -> int:
        return self.classes.index(class_index)

    def leaves(self, node: int) -> list[int]:
        """The class indices under ``node``, in tree order."""
        if self.is_leaf(node):
            return [self.classes[node]]
        return [c for child in self.children[node] for c in self.leaves(child)]

    def path(self, class_index: int) -> list[int]:
        """Node ids from the root to the leaf of ``class_index``."""
        parent = {c: p for p, kids in enumerate(self.children) for c in kids}
        node, out = self.leaf_of(class_index), []
        while node != self.root:
            out.append(node)
            node = parent[node]
        return [self.root] + out[::-1]

    def depth(self) -> int:
        return max(len(self.path(c)) - 1 for c in range(self.n_classes))

    def representatives(self, weight: Tensor) -> Tensor:
        """One row per node: the mean of the weight rows of the classes under it."""
        return torch.stack([weight[self.leaves(node)].mean(0) for node in range(self.n_nodes)])

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict:
        nodes = []
        for i, name in enumerate(self.names):
            node = {"id": i, "label": name}
            if self.is_leaf(i):
                node["class"] = self.classes[i]
            nodes.append(node)
        links = [{"source": p, "target": c} for p, kids in enumerate(self.children) for c in kids]
        return {"directed": True, "multigraph": False, "graph": {"root": self.root, "class_names": self.class_names},
                "nodes": nodes, "links": links}

    def to_json(self, path: str | Path | None = None) -> str:
        """The tree as node-link JSON; written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, source, class_names: Sequence[str] | None = None) -> "Hierarchy":
        """A tree from node-link JSON (a path, a JSON string or a dict; nodes with
        ``id`` and ``label``, leaves with ``class`` or a ``label``, ``name`` or ``id``
        found in ``class_names``, as networkx's ``node_link_data`` writes a tree
        whose leaves are the class names) or from a nested ``{"name": ..., "children": [...]}`` dict.
        Inner nodes with one child are pruned."""
        data = _read_json(source)
        if isinstance(data, dict) and "nodes" in data:
            return _from_node_link(data, class_names)
        if isinstance(data, dict) and ("children" in data or "name" in data):
            return _from_nested(data, class_names)
        raise ValueError("tree JSON must be node-link ({'nodes': [...], 'links': [...]}) or nested "
                         "({'name': ..., 'children': [...]})")

    # ------------------------------------------------------------------ rendering

    def to_text(self, decisions: Sequence[dict] | None = None) -> str:
        from .render import tree_text

        return tree_text(self, decisions)

    def to_html(self, path: str | Path | None = None, decisions: Sequence[dict] | None = None,
                title: str = "Neural-backed decision tree") -> str:
        """A self-contained HTML page of the tree (an outline with one sample's
        ``decisions``, from ``forward_with_decisions``, open with their probabilities and
        the rest collapsed, opened by a click); written to ``path`` when given."""
        from .render import tree_html

        html = tree_html(self, decisions, title)
        if path is not None:
            Path(path).write_text(html, encoding="utf-8")
        return html


def _check_tree(children, classes, root: int, n_classes: int | None) -> None:
    n = len(children)
    if len(classes) != n:
        raise ValueError("children and classes must have one entry per node")
    if not 0 <= root < n:
        raise ValueError(f"root {root} is not a node id")
    seen, stack = set(), [root]
    while stack:
        node = stack.pop()
        if node in seen:
            raise ValueError(f"node {node} is reached twice: the tree has a cycle or a shared child")
        seen.add(node)
        if classes[node] is not None and children[node]:
            raise ValueError(f"node {node} has a class and children; only leaves carry classes")
        if classes[node] is None and not children[node]:
            raise ValueError(f"node {node} has neither children nor a class")
        stack.extend(children[node])
    if len(seen) != n:
        raise ValueError(f"{n - len(seen)} node(s) are not reachable from the root")
    found = sorted(c for c in classes if c is not None)
    expected = n_classes if n_classes is not None else len(found)
    repeated = sorted({c for c in found if found.count(c) > 1})
    if repeated:
        raise ValueError(f"classes {repeated} appear in more than one leaf")
    missing = sorted(set(range(expected)) - set(found))
    if missing:
        raise ValueError(f"the tree has no leaf for classes {missing}")
    extra = sorted(set(found) - set(range(expected)))
    if extra:
        raise ValueError(f"leaf classes {extra} are out of range for {expected} classes")


def _read_json(source):
    if isinstance(source, dict):
        return source
    if isinstance(source, Path) or (isinstance(source, str) and not source.lstrip().startswith(("{", "["))):
        try:
            return json.loads(Path(source).read_text())
        except OSError as err:
            raise ValueError(f"cannot read tree JSON {source}: {err.strerror}") from None
    if isinstance(source, str):
        return json.loads(source)
    raise TypeError(f"source must be a path, a JSON string or a dict; got {type(source).__name__}")


def _class_of(node: dict, lookup: dict[str, int], where: str) -> int | None:
    if node.get("class") is not None:
        return int(node["class"])
    keys = [node.get(k) for k in ("label", "name", "id") if node.get(k) is not None]
    for key in keys:  # networkx's node-link form names a leaf's class in its "id"
        if str(key) in lookup:
            return lookup[str(key)]
    if not node.get("children") and lookup:
        raise ValueError(f"{where} {keys[0] if keys else None!r} is a leaf but not one of class_names")
    return None


def _from_node_link(data: dict, class_names) -> Hierarchy:
    graph = data.get("graph", {}) or {}
    class_names = list(class_names or graph.get("class_names") or [])
    lookup = {name: i for i, name in enumerate(class_names)}
    ids = [node["id"] for node in data["nodes"]]
    index = {node_id: i for i, node_id in enumerate(ids)}
    children: list[list[int]] = [[] for _ in ids]
    has_parent = set()
    for link in data.get("links", data.get("edges", [])):  # networkx >= 3.4 writes "edges"
        children[index[link["source"]]].append(index[link["target"]])
        has_parent.add(index[link["target"]])
    roots = [i for i in range(len(ids)) if i not in has_parent]
    if "root" in graph:
        roots = [index[graph["root"]]]
    if len(roots) != 1:
        raise ValueError(f"tree JSON must have exactly one root; found {len(roots)}")
    nodes = [dict(node, children=children[i]) for i, node in enumerate(data["nodes"])]
    classes = [_class_of(n, lookup, "node") if not n["children"] else None for n in nodes]
    names = [str(n.get("label", n["id"])) for n in nodes]
    return _pruned(children, classes, names, roots[0], class_names)


def _from_nested(data: dict, class_names) -> Hierarchy:
    class_names = list(class_names or [])
    lookup = {name: i for i, name in enumerate(class_names)}
    children, classes, names = [], [], []

    def add(node: dict) -> int:
        i = len(names)
        children.append([])
        names.append(str(node.get("name", node.get("label", i))))
        classes.append(_class_of(node, lookup, "node") if not node.get("children") else None)
        children[i] = [add(child) for child in node.get("children", [])]
        return i

    return _pruned(children, classes, names, add(data), class_names)


def _pruned(children, classes, names, root, class_names) -> Hierarchy:
    """Drop inner nodes with exactly one child (their child takes their place) and
    renumber the nodes depth-first."""
    new_children, new_classes, new_names = [], [], []

    def walk(node: int) -> int:
        while classes[node] is None and len(children[node]) == 1:
            node = children[node][0]
        i = len(new_names)
        new_children.append([])
        new_classes.append(classes[node])
        new_names.append(names[node])
        new_children[i] = [walk(child) for child in children[node]]
        return i

    _check_tree(children, classes, root, len(class_names) or None)
    walk(root)
    return Hierarchy(new_children, new_classes, new_names, 0, list(class_names))


# --------------------------------------------------------------------------- induction


def final_linear_weight(model_or_weight) -> Tensor:
    """The (classes x features) weight of a model's final linear layer (the last
    ``nn.Linear`` it registers), or the given weight."""
    if isinstance(model_or_weight, Tensor):
        if model_or_weight.dim() != 2 or model_or_weight.shape[0] < 2:
            raise ValueError(f"weight must be a (classes, features) matrix with >= 2 classes; "
                             f"got shape {tuple(model_or_weight.shape)}")
        return model_or_weight.detach()
    if isinstance(model_or_weight, nn.Module):
        linears = [m for m in model_or_weight.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError("model_or_weight: the model has no nn.Linear layer; pass its final layer's "
                             "weight (a classes x features tensor) instead")
        return linears[-1].weight.detach()
    raise TypeError(f"model_or_weight must be an nn.Module or a weight tensor; got {type(model_or_weight).__name__}")


def agglomerate(points: np.ndarray, linkage: str = "ward") -> list[tuple[int, int]]:
    """Agglomerative clustering of ``points`` (rows): the merges, scipy-style (cluster
    ids ``0..n-1`` are the points, merge ``k`` creates cluster ``n + k``). Distances
    are Euclidean, updated by the Lance-Williams formula of ``linkage``; ties go to
    the first pair in row-major order."""
    if linkage not in LINKAGES:
        raise ValueError(f"linkage must be one of {', '.join(LINKAGES)}; got {linkage!r}")
    x = np.asarray(points, dtype=np.float64)
    n = len(x)
    sq = (x * x).sum(1)
    dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0))
    np.fill_diagonal(dist, np.inf)
    sizes = np.ones(n)
    cluster = list(range(n))  # slot -> cluster id
    merges = []
    for step in range(n - 1):
        i, j = sorted(np.unravel_index(int(np.argmin(dist)), dist.shape))
        d_ij, d_i, d_j = dist[i, j], dist[i].copy(), dist[j].copy()
        n_i, n_j = sizes[i], sizes[j]
        if linkage == "single":
            new = np.minimum(d_i, d_j)
        elif linkage == "complete":
            new = np.maximum(d_i, d_j)
        elif linkage == "average":
            new = (n_i * d_i + n_j * d_j) / (n_i + n_j)
        else:
            total = n_i + n_j + sizes
            new = np.sqrt(np.maximum(((n_i + sizes) * d_i**2 + (n_j + sizes) * d_j**2 - sizes * d_ij**2) / total, 0))
        merges.append((cluster[i], cluster[j]))
        dist[i, :], dist[:, i] = new, new
        dist[j, :], dist[:, j] = np.inf, np.inf
        dist[i, i] = np.inf
        sizes[i] += n_j
        cluster[i] = n + step
    return merges


def induce_hierarchy(
    model_or_weight,
    class_names: Sequence[str] | None = None,
    linkage: str = "ward",
    namer: Callable[[list[str]], str] | None = None,
) -> Hierarchy:
    r"""A binary hierarchy over the classes from agglomerative clustering of the final
    linear layer's weight rows (found automatically in a model, or given), as the
    induced hierarchies of NBDT (Wan et al., ICLR 2021).
    ``namer(leaf_class_names) -> str`` names inner nodes (default: the longest common
    prefix of the labels, else ``{a, b}``). Deterministic for given weights.
    ``linkage`` is one of "ward" (default), "average", "complete" or "single".

    Formula:
        Start from one cluster per class \(k\), its weight row \(w_k\), with Euclidean
        distances \(d(\{k\}, \{l\}) = \lVert w_k - w_l \rVert\); repeatedly merge the closest
        pair \(A, B\) into a new inner node and update the distances to every other
        cluster \(D\) by the Lance-Williams formula of ``linkage``, for Ward's

        $$d(A \cup B, D) = \sqrt{\frac{(n_A + n_D)\, d(A, D)^2 + (n_B + n_D)\, d(B, D)^2 - n_D\, d(A, B)^2}
        {n_A + n_B + n_D}}$$

        (\(n\): cluster sizes; "average": \(\frac{n_A d(A, D) + n_B d(B, D)}{n_A + n_B}\),
        "complete": the max, "single": the min of \(d(A, D), d(B, D)\)). Ties go to the
        first pair in row-major order. The \(C - 1\) merges of \(C\) classes make the
        inner nodes; the last one is the root.

    Cost:
        No forward or backward pass: a model is only read for its last ``nn.Linear``
        weight. \(C - 1\) merges, each an arg-min over the \(C \times C\) distance
        matrix: \(O(C^3)\) time and \(O(C^2)\) memory, in float64 NumPy on the CPU.

    Examples:
        >>> import torch
        >>> from torchexplain.nbdt import induce_hierarchy
        >>> weight = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
        >>> tree = induce_hierarchy(weight, ["cat", "dog", "car", "truck"])
        >>> print(tree.to_text())
        {car, cat, dog, truck}
          {cat, dog}
            cat
            dog
          {car, truck}
            car
            truck
        >>> model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 6))
        >>> tree = induce_hierarchy(model)  # from model[2].weight, classes named "0" .. "5"
        >>> tree.n_classes, tree.n_nodes
        (6, 11)
    """
    weight = final_linear_weight(model_or_weight)
    n = weight.shape[0]
    class_names = [str(i) for i in range(n)] if class_names is None else [str(c) for c in class_names]
    if len(class_names) != n:
        raise ValueError(f"class_names has {len(class_names)} entries but the weight has {n} classes (rows)")
    namer = namer or default_namer
    children: list[list[int]] = [[] for _ in range(n)]
    for a, b in agglomerate(weight.float().cpu().numpy(), linkage):
        children.append(sorted((a, b), key=lambda c: min(_leaves(children, c, n))))
    classes = list(range(n)) + [None] * (len(children) - n)
    inner = [namer([class_names[c] for c in _leaves(children, i, n)]) for i in range(n, len(children))]
    names = list(class_names) + inner
    return _pruned(children, classes, names, len(children) - 1, class_names)


def _leaves(children, node: int, n: int) -> list[int]:
    return [node] if node < n else [c for child in children[node] for c in _leaves(children, child, n)]
