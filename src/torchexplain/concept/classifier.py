"""Linear classifiers whose weights are the concept activation vectors.

:class:`Classifier` is Captum's contract: ``train_and_eval(dataloader, **kwargs)``
trains on ``(activations (b, F), labels (b,))`` batches and returns statistics
(``{"accs": ...}`` or None); ``weights()`` is the ``(C, F)`` weight matrix (one row
per class, in the order of ``classes()``, the concept ids). TCAV accepts any object
with these three methods (Captum's own classifiers too).

:class:`DefaultClassifier` is the linear SVM of Captum's default classifier
(scikit-learn's ``SGDClassifier(alpha=0.01)``: ``alpha/2 ||w||^2 + mean hinge loss``,
one-vs-rest for more than two concepts), solved exactly in its dual (:mod:`.svm`)
instead of by stochastic gradient steps on CPU: the Gram matrix of the training
rows is accumulated block by block from the loader (in memory when the
activations fit the budget, else re-read block by block), on the activations'
device, and the weights are assembled the same way. Memory grows with the number
of examples squared, not with the layer's size. The one random draw, the
train/test split, comes from a generator seeded with ``seed``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

from .. import config
from .svm import smo

#: largest Gram matrix (bytes, float64) DefaultClassifier builds
MAX_GRAM_BYTES = 2 << 30


class Classifier(ABC):
    """Captum's classifier contract (see the module docstring)."""

    @abstractmethod
    def __init__(self) -> None:
        pass

    @abstractmethod
    def train_and_eval(self, dataloader, **kwargs) -> dict | None:
        """Train on ``dataloader``'s ``(inputs, labels)`` batches; statistics or None."""

    @abstractmethod
    def weights(self) -> Tensor:
        """The ``(C, F)`` weights, one row per class of :meth:`classes`."""

    @abstractmethod
    def classes(self) -> list[int]:
        """The classes (concept ids) in the order of the rows of :meth:`weights`."""


def check_ratio(value, name: str = "test_split_ratio") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1); got {value!r}")
    return float(value)


def binary_rows(w: Tensor) -> Tensor:
    """A binary classifier's one weight row ``w`` (towards the second class) as two
    rows ``[-w, w]``, one per class."""
    return torch.stack([-w[0], w[0]])


class Gathered:
    """A classifier's view of its data: the labels of every row, and the rows
    themselves when they fit ``budget`` bytes (else the loader is read again for
    every pass). :meth:`blocks` yields ``(x, positions)`` of chosen rows."""

    def __init__(self, dataloader, budget: int | None, block: int):
        kept, labels, size, x = [], [], 0, None
        self.dataloader, self.block = dataloader, block
        for x, y in dataloader:
            x = x.reshape(x.shape[0], -1)
            if budget is None:
                budget = 4 * config.resolve_memory_budget(x.device)
            labels.append(y.reshape(-1).long().cpu())
            size += x.numel() * x.element_size()
            if kept is not None:
                kept.append(x)
                if size > budget:
                    kept = None
        if x is None:
            raise ValueError("the classifier's dataloader yielded no batches")
        self.labels = torch.cat(labels)
        self.x = torch.cat(kept) if kept is not None else None
        self.device, self.features = x.device, x.shape[1]
        self.dtype = x.dtype if x.is_floating_point() else torch.float32

    def blocks(self, rows: Tensor):
        """``(x, pos)`` blocks covering ``rows`` (global indices): ``x`` the rows'
        activations in float64, ``pos`` their positions in ``rows``."""
        where = torch.full((self.labels.numel(),), -1, dtype=torch.long)
        where[rows] = torch.arange(rows.numel())
        if self.x is not None:
            for a in range(0, rows.numel(), self.block):
                idx = rows[a:a + self.block]
                yield self.x[idx.to(self.device)].double(), where[idx]
            return
        start = 0
        for x, _ in self.dataloader:
            x = x.reshape(x.shape[0], -1)
            local = (where[start:start + x.shape[0]] >= 0).nonzero().flatten()
            if local.numel():
                yield x[local.to(x.device)].double(), where[local + start]
            start += x.shape[0]

    def gram(self, rows: Tensor) -> Tensor:
        """``X X^T`` of ``rows``, float64 on CPU, accumulated block by block."""
        n = rows.numel()
        if n * n * 8 > MAX_GRAM_BYTES:
            raise ValueError(f"DefaultClassifier solves the SVM on the {n} x {n} Gram matrix of the training rows, "
                             "which is too large; use classifier='fastcav' or a scikit-learn estimator")
        out = torch.zeros(n, n, dtype=torch.float64)
        for xi, pi in self.blocks(rows):
            for xj, pj in self.blocks(rows):
                out[pi.unsqueeze(1), pj.unsqueeze(0)] = (xi @ xj.T).cpu()
        return out

    def combine(self, rows: Tensor, coef: Tensor) -> Tensor:
        """``coef^T X`` for ``coef`` (len(rows), M): the weights ``(M, F)``."""
        out = torch.zeros(coef.shape[1], self.features, dtype=torch.float64, device=self.device)
        coef = coef.to(self.device)
        for x, pos in self.blocks(rows):
            out += coef[pos.to(self.device)].T @ x
        return out


class DefaultClassifier(Classifier):
    """The default CAV classifier: a linear SVM solved exactly (module docstring).

    ``alpha``: the L2 penalty (Captum's 0.01); ``tol`` (libsvm's default) and ``max_steps``: when SMO stops;
    ``block``: rows per block of the Gram matrix; ``memory_budget`` (bytes): the
    activations are kept in memory when they fit it (default: four times
    ``torchexplain.config``'s chunk budget for the device)."""

    def __init__(self, alpha: float = 0.01, tol: float = 1e-3, seed: int = 0, block: int = 256,
                 memory_budget: int | None = None, max_steps: int = 10_000) -> None:
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
            raise ValueError(f"alpha must be a positive number; got {alpha!r}")
        if isinstance(block, bool) or not isinstance(block, int) or block < 1:
            raise ValueError(f"block must be a positive int; got {block!r}")
        self.alpha, self.tol, self.seed, self.block = float(alpha), float(tol), seed, block
        self.memory_budget, self.max_steps = memory_budget, max_steps
        self._w: Tensor | None = None
        self._b: Tensor | None = None
        self._classes: list[int] = []

    def train_and_eval(self, dataloader, test_split_ratio: float = 0.33, **kwargs) -> dict:
        """Train on a seeded ``1 - test_split_ratio`` share of the rows; ``{"accs":
        accuracy on the rest}`` (on the training rows when the test share is empty)."""
        ratio = check_ratio(test_split_ratio)
        data = Gathered(dataloader, self.memory_budget, self.block)
        self._classes = sorted(int(c) for c in data.labels.unique())
        if len(self._classes) < 2:
            raise ValueError(f"the classifier needs examples of at least 2 concepts; got only {self._classes}")
        n = data.labels.numel()
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        n_test = int(ratio * n)
        test, train = perm[:n_test], perm[n_test:]
        self._fit(data, train)
        return {"accs": self._accuracy(data, test if n_test else train)}

    def _fit(self, data: Gathered, train: Tensor) -> None:
        gram = data.gram(train)
        labels = data.labels[train]
        classes = self._classes[1:] if len(self._classes) == 2 else self._classes
        c = 1.0 / (self.alpha * train.numel())
        coef, bias = [], []
        for k in classes:
            y = (labels == k).double() * 2 - 1
            a, b = smo(gram, y, c, self.tol, self.max_steps)
            coef.append(a * y)
            bias.append(b)
        self._w = data.combine(train, torch.stack(coef, 1)).to(data.dtype)
        self._b = torch.tensor(bias, dtype=data.dtype, device=data.device)

    def _accuracy(self, data: Gathered, rows: Tensor) -> Tensor:
        hits = 0
        classes = torch.tensor(self._classes)
        labels = data.labels[rows]
        for x, pos in data.blocks(rows):
            scores = x @ self._w.T.double() + self._b.double()
            pick = (scores[:, 0] > 0).long() if scores.shape[1] == 1 else scores.argmax(1)
            hits += int((classes[pick.cpu()] == labels[pos]).sum())
        return torch.tensor(hits / max(1, rows.numel()))

    def _trained(self) -> Tensor:
        if self._w is None:
            raise RuntimeError("the classifier has no weights yet: call train_and_eval first")
        return self._w

    def weights(self) -> Tensor:
        w = self._trained()
        return binary_rows(w) if w.shape[0] == 1 else w.clone()

    def intercepts(self) -> Tensor:
        """The biases, one per class (``[-b, b]`` for two classes)."""
        self._trained()
        b = self._b
        return torch.stack([-b[0], b[0]]) if b.shape[0] == 1 else b.clone()

    def classes(self) -> list[int]:
        return list(self._classes)
