"""Soft and hard inference of a neural-backed decision tree, batched on the device.

At an inner node, each child scores the mean of the model's logits over the classes
under it (the inner product of the penultimate features with the child's
representative, the mean of its leaves' weight rows, plus their mean bias); a softmax
over the children gives the decision probabilities. Soft inference multiplies them
along each root-to-leaf path; hard inference descends greedily. Every step is a
tensor operation over the whole batch: the tree's shape is precomputed into tables
(children padded to the largest branching factor).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .compat import nbdt_arguments
from .hierarchy import Hierarchy


class TreeTables(nn.Module):
    """The tree as tensors (buffers, so they follow ``.to(device)``):

    * ``child_means`` (inner x width, classes): row ``(i, s)`` averages the logits of
      the classes under child ``s`` of inner node ``i`` (zero rows pad);
    * ``padding`` (inner, width): which child slots are padding;
    * ``child_node`` (inner, width): the node id in each slot (-1 for padding);
    * ``leaf_path`` (classes, depth): the flat slots ``i * width + s`` on the path to
      each leaf, padded with the index of an extra always-zero log-probability.
    """

    def __init__(self, hierarchy: Hierarchy):
        super().__init__()
        self.hierarchy = hierarchy
        inner = [i for i in range(hierarchy.n_nodes) if not hierarchy.is_leaf(i)]
        self.inner_index = {node: k for k, node in enumerate(inner)}
        width = max(len(hierarchy.children[i]) for i in inner)
        c = hierarchy.n_classes
        means = torch.zeros(len(inner) * width, c)
        padding = torch.ones(len(inner), width, dtype=torch.bool)
        child_node = torch.full((len(inner), width), -1, dtype=torch.long)
        for k, node in enumerate(inner):
            for s, child in enumerate(hierarchy.children[node]):
                leaves = hierarchy.leaves(child)
                means[k * width + s, leaves] = 1.0 / len(leaves)
                padding[k, s] = False
                child_node[k, s] = child
        slot = {
            int(child_node[k, s]): k * width + s for k in range(len(inner)) for s in range(width) if not padding[k, s]
        }
        paths = [[slot[node] for node in hierarchy.path(cls)[1:]] for cls in range(c)]
        depth = max(len(p) for p in paths)
        zero = len(inner) * width
        leaf_path = torch.tensor([p + [zero] * (depth - len(p)) for p in paths], dtype=torch.long)
        self.width = width
        self.register_buffer("child_means", means, persistent=False)
        self.register_buffer("padding", padding, persistent=False)
        self.register_buffer("child_node", child_node, persistent=False)
        self.register_buffer("leaf_path", leaf_path, persistent=False)

    def decision_log_probs(self, logits: Tensor) -> Tensor:
        """(N, inner, width) log-probabilities of each child at each inner node."""
        if logits.dim() != 2 or logits.shape[1] != self.hierarchy.n_classes:
            raise ValueError(
                f"the model must output (N, {self.hierarchy.n_classes}) logits, one per class of the "
                f"hierarchy; got shape {tuple(logits.shape)}"
            )
        scores = (logits @ self.child_means.to(logits.dtype).t()).view(logits.shape[0], -1, self.width)
        return F.log_softmax(scores.masked_fill(self.padding, float("-inf")), dim=-1)

    def leaf_log_probs(self, decisions: Tensor) -> Tensor:
        """(N, classes) log-probability of each leaf: the sum of the decision
        log-probabilities along its path."""
        flat = decisions.flatten(1).masked_fill(self.padding.flatten(), 0.0)
        flat = torch.cat([flat, flat.new_zeros(flat.shape[0], 1)], dim=1)
        return flat[:, self.leaf_path].sum(-1)

    def greedy(self, decisions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Hard descent from the root: (leaf class per sample, chosen flat slots per
        step (N, depth), their probabilities (N, depth)); finished samples repeat the
        zero slot with probability 1."""
        h = self.hierarchy
        n = decisions.shape[0]
        probs = decisions.exp().masked_fill(self.padding, 0.0)
        node_to_inner = torch.full((h.n_nodes,), -1, dtype=torch.long, device=decisions.device)
        for node, k in self.inner_index.items():
            node_to_inner[node] = k
        leaf_class = torch.tensor([-1 if c is None else c for c in h.classes], device=decisions.device)
        rows = torch.arange(n, device=decisions.device)
        current = torch.full((n,), self.inner_index[h.root], dtype=torch.long, device=decisions.device)
        done = torch.zeros(n, dtype=torch.bool, device=decisions.device)
        result = torch.zeros(n, dtype=torch.long, device=decisions.device)
        slots, step_probs = [], []
        for _ in range(self.leaf_path.shape[1]):
            here = probs[rows, current.clamp_min(0)]
            choice = here.argmax(-1)
            slot = current.clamp_min(0) * self.width + choice
            slots.append(torch.where(done, torch.full_like(slot, self.padding.numel()), slot))
            step_probs.append(torch.where(done, torch.ones_like(here[:, 0]), here[rows, choice]))
            child = self.child_node[current.clamp_min(0), choice]
            reached = ~done & (node_to_inner[child] < 0)
            result = torch.where(reached, leaf_class[child], result)
            done = done | reached
            current = torch.where(done, current, node_to_inner[child])
        return result, torch.stack(slots, 1), torch.stack(step_probs, 1)


class _NBDT(nn.Module):
    """``NBDT(model, hierarchy)``, or nbdt's own form ``NBDT(dataset, model, arch, ...)``
    / ``NBDT(pretrained=False, dataset="CIFAR10", arch=..., model=model,
    hierarchy=...)``: ``hierarchy`` a :class:`Hierarchy`, a tree JSON path (or
    nbdt's ``path_graph=``), or None / ``"induced"`` / ``"induced-ARCH"`` for the tree
    induced from the model's final linear layer; ``dataset`` ("CIFAR10", "CIFAR100",
    "Imagenet1000") or ``classes=`` names the classes. ``pretrained=True`` is an error:
    nothing is downloaded. The model's training flag is left as it is.

    ``forward_with_decisions(x)`` returns ``(outputs, decisions)``; ``decisions[i]`` is
    sample ``i``'s path in nbdt's shape: the root first (``{"node": root, "name":
    "root", "prob": 1.0, "parent": None}``), then one ``{"node", "name", "prob",
    "parent"}`` per decision, so ``decisions[i][1:]`` are the real decisions."""

    def __init__(self, *args, **kwargs):
        super().__init__()
        model, hierarchy = nbdt_arguments(args, kwargs)
        self.model = model
        self.tables = TreeTables(hierarchy)
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.tables.to(device)

    @property
    def hierarchy(self) -> Hierarchy:
        return self.tables.hierarchy

    def _steps(self, slots: Tensor, probs: Tensor) -> list[list[dict]]:
        """Per sample, the decisions along its path: {node, name, prob, parent}."""
        width, pad = self.tables.width, self.tables.padding.numel()
        inner = list(self.tables.inner_index)
        child_node = self.tables.child_node.flatten().tolist()
        names = self.hierarchy.names
        root = self.hierarchy.root
        out = []
        for row_slots, row_probs in zip(slots.tolist(), probs.tolist()):
            steps = [{"node": root, "name": "root", "prob": 1.0, "parent": None}]
            for slot, p in zip(row_slots, row_probs):
                if slot == pad:
                    break
                node = child_node[slot]
                steps.append({"node": node, "name": names[node], "prob": p, "parent": inner[slot // width]})
            out.append(steps)
        return out


class SoftNBDT(_NBDT):
    r"""Soft inference of a neural-backed decision tree (Wan et al., ICLR 2021):
    ``forward(x)`` returns (N, classes) leaf probabilities (each the product of the
    decision probabilities along its path; rows sum to 1).

    Built as ``SoftNBDT(model, hierarchy)`` or in nbdt's own forms (see the
    ``torchexplain.nbdt`` package); ``forward_with_decisions(x)`` also returns each
    sample's path to its most probable leaf.

    Formula:
        $$s_c(x) = \frac{1}{|L(c)|} \sum_{k \in L(c)} z_k(x), \qquad
        p(c \mid n, x) = \frac{e^{s_c(x)}}{\sum_{c' \in \operatorname{ch}(n)} e^{s_{c'}(x)}}, \qquad
        P(k \mid x) = \prod_{(n, c) \in \operatorname{path}(k)} p(c \mid n, x)$$

        with \(z(x)\) the model's logits, \(L(c)\) the classes under node \(c\),
        \(\operatorname{ch}(n)\) the children of inner node \(n\) and
        \(\operatorname{path}(k)\) the (node, child) steps from the root to the leaf of
        class \(k\). For a final linear layer \(z = W h + b\), \(s_c\) is the inner
        product of \(h\) with the mean of the rows \(W_k, k \in L(c)\), plus their mean
        bias. The leaf probabilities sum to 1: \(\sum_k P(k \mid x) = 1\).

    Cost:
        One forward pass of the model per example (no backward pass), batched as
        given; then one (N, classes) x (classes, inner nodes x widest branching)
        matrix product, a log-softmax and a gather, all on the model's device.
        ``forward_with_decisions`` adds Python dicts of the path per sample.

    Examples:
        >>> import torch
        >>> from torchexplain.nbdt import SoftNBDT, induce_hierarchy
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
        >>> tree = induce_hierarchy(model, ["cat", "dog", "car", "truck"])
        >>> soft = SoftNBDT(model, tree)
        >>> x = torch.randn(3, 5)
        >>> probs = soft(x)
        >>> probs.shape, bool(torch.allclose(probs.sum(1), torch.ones(3)))
        (torch.Size([3, 4]), True)
        >>> probs, decisions = soft.forward_with_decisions(x)
        >>> path = decisions[0]  # the root first, then one step per decision
        >>> path[0]["name"], bool(abs(torch.tensor([d["prob"] for d in path]).prod() - probs[0].max()) < 1e-5)
        ('root', True)
    """

    def forward(self, *args, **kwargs) -> Tensor:
        return self.tables.leaf_log_probs(self.tables.decision_log_probs(self.model(*args, **kwargs))).exp()

    def forward_with_decisions(self, *args, **kwargs) -> tuple[Tensor, list[list[dict]]]:
        """(leaf probabilities, decisions): for each sample, the path to its most
        probable leaf with each decision's probability."""
        decisions = self.tables.decision_log_probs(self.model(*args, **kwargs))
        leaf = self.tables.leaf_log_probs(decisions)
        slots = self.tables.leaf_path[leaf.argmax(1)]
        flat = torch.cat([decisions.flatten(1), decisions.new_zeros(decisions.shape[0], 1)], 1)
        probs = flat.gather(1, slots).exp()
        return leaf.exp(), self._steps(slots, probs)


class HardNBDT(_NBDT):
    r"""Hard inference of a neural-backed decision tree (Wan et al., ICLR 2021): from
    the root, take the most probable child until a leaf.
    ``forward(x)`` returns (N, classes): the product of the path's decision
    probabilities at the leaf reached, 0 elsewhere (its argmax is the prediction).

    Built as ``HardNBDT(model, hierarchy)`` or in nbdt's own forms (see the
    ``torchexplain.nbdt`` package); ``forward_with_decisions(x)`` also returns each
    sample's path, root first.

    Formula:
        $$n_0 = \text{root}, \qquad n_{j+1} = \arg\max_{c \in \operatorname{ch}(n_j)} p(c \mid n_j, x),
        \qquad \hat{P}(k \mid x) = [\,k = \ell\,] \prod_{j=0}^{J-1} p(n_{j+1} \mid n_j, x)$$

        with \(p(c \mid n, x)\) the softmax over the children of \(n\) of their mean
        logits \(s_c(x) = \frac{1}{|L(c)|} \sum_{k \in L(c)} z_k(x)\) (as in
        :class:`SoftNBDT`), \(\ell\) the class of the leaf \(n_J\) reached and
        \([\cdot]\) 1 when true, else 0: one entry per row, the leaf reached, is non-zero.

    Cost:
        One forward pass of the model per example (no backward pass), batched as
        given; then the decision probabilities (one matrix product and a
        log-softmax) and one batched greedy step per level of the tree (its depth),
        all on the model's device.

    Examples:
        >>> import torch
        >>> from torchexplain.nbdt import HardNBDT, induce_hierarchy
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
        >>> hard = HardNBDT(model, induce_hierarchy(model, ["cat", "dog", "car", "truck"]))
        >>> out = hard(torch.randn(3, 5))
        >>> out.shape, (out > 0).sum(1).tolist()
        (torch.Size([3, 4]), [1, 1, 1])
    """

    def _descend(self, *args, **kwargs):
        decisions = self.tables.decision_log_probs(self.model(*args, **kwargs))
        leaf, slots, probs = self.tables.greedy(decisions)
        out = decisions.new_zeros(decisions.shape[0], self.hierarchy.n_classes)
        out[torch.arange(len(leaf), device=out.device), leaf] = probs.prod(1)
        return out, slots, probs

    def forward(self, *args, **kwargs) -> Tensor:
        return self._descend(*args, **kwargs)[0]

    def forward_with_decisions(self, *args, **kwargs) -> tuple[Tensor, list[list[dict]]]:
        out, slots, probs = self._descend(*args, **kwargs)
        return out, self._steps(slots, probs)


def decision_steps(steps: list[dict]) -> list[dict]:
    """The real decisions of a path: without nbdt's root entry (``parent`` None)."""
    return [s for s in steps if s.get("parent") is not None]


def decision_line(class_names, prediction: int, steps: list[dict]) -> str:
    """The seed's line: ``Prediction: cat // Decisions: animal (99.34%), ...`` (the
    root entry is skipped)."""
    decisions = ", ".join(f"{s['name']} ({100 * s['prob']:.2f}%)" for s in decision_steps(steps))
    return f"Prediction: {class_names[prediction]} // Decisions: {decisions}"
