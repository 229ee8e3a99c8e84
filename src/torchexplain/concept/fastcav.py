"""FastCAV and scikit-learn-style classifiers, and how TCAV picks its classifier.

:class:`FastCAVClassifier` (Schmalwasser et al., ICML 2025; Captum issue 1619)
trains nothing: the CAV of concept ``k`` is the mean of its activations minus the
mean of all activations, ``v_k = mean(a | k) - mean(a)``, scaled to unit length
(``normalize=True``). ``mean(a | k) - mean(a)`` is ``mean(a | k) - mean(a | not k)``
times ``n_not_k / n``: the direction is that of the difference from the other
concepts' mean, and for two concepts the two unit rows are opposite, ``[-v, v]``. One pass
over the data (two with the accuracy), streamed, sums in float64.

:class:`SklearnClassifier` wraps an object with ``fit(X, y)`` and ``coef_`` (e.g.
``sklearn.linear_model.SGDClassifier``), duck-typed; it needs all activations in
memory as NumPy arrays, as scikit-learn does.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .classifier import Classifier, DefaultClassifier, binary_rows, check_ratio

CLASSIFIER_NAMES = ("default", "fastcav")


class FastCAVClassifier(Classifier):
    """Mean-difference CAVs (module docstring). ``accs`` in the statistics is the
    training accuracy of ``argmax_k v_k . (a - mean(a))`` (FastCAV holds out nothing;
    ``test_split_ratio`` is accepted and ignored)."""

    def __init__(self, normalize: bool = True) -> None:
        self.normalize = bool(normalize)
        self._rows: Tensor | None = None
        self._center: Tensor | None = None
        self._classes: list[int] = []

    def train_and_eval(self, dataloader, **kwargs) -> dict:
        sums: dict[int, Tensor] = {}
        counts: dict[int, int] = {}
        dtype = None
        for x, y in dataloader:
            x = x.reshape(x.shape[0], -1)
            dtype = x.dtype if x.is_floating_point() else torch.float32
            x64, y = x.to(torch.float64), y.reshape(-1).to(x.device)
            for label in y.unique().tolist():
                mask = y == label
                part = x64[mask].sum(0)
                sums[int(label)] = sums[int(label)] + part if int(label) in sums else part
                counts[int(label)] = counts.get(int(label), 0) + int(mask.sum())
        if len(sums) < 2:
            raise ValueError(f"FastCAV needs examples of at least 2 concepts; got {sorted(sums)}")
        self._classes = sorted(sums)
        total = sum(counts.values())
        center = sum(sums.values()) / total
        rows = torch.stack([sums[c] / counts[c] - center for c in self._classes])
        if self.normalize:
            rows = rows / rows.norm(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
        self._rows, self._center = rows.to(dtype), center.to(dtype)
        return {"accs": self._accuracy(dataloader)}

    def _accuracy(self, dataloader) -> Tensor:
        hits, n = 0, 0
        classes = torch.tensor(self._classes)
        for x, y in dataloader:
            x = x.reshape(x.shape[0], -1).to(self._rows.dtype)
            pick = ((x - self._center) @ self._rows.T).argmax(1)
            hits += int((classes[pick.cpu()] == y.reshape(-1).cpu()).sum())
            n += x.shape[0]
        return torch.tensor(hits / max(1, n))

    def weights(self) -> Tensor:
        if self._rows is None:
            raise RuntimeError("the classifier has no weights yet: call train_and_eval first")
        return self._rows.clone()

    def classes(self) -> list[int]:
        return list(self._classes)


class SklearnClassifier(Classifier):
    """A scikit-learn-style estimator (``fit(X, y)``, ``coef_``, optionally
    ``classes_`` and ``predict``) as a :class:`Classifier`; the split is seeded."""

    def __init__(self, estimator, seed: int = 0) -> None:
        if not (callable(getattr(estimator, "fit", None))):
            raise TypeError(f"estimator must have a fit(X, y) method; got {type(estimator).__name__}")
        self.estimator = estimator
        self.seed = seed
        self._classes: list[int] = []

    def train_and_eval(self, dataloader, test_split_ratio: float = 0.33, **kwargs) -> dict:
        ratio = check_ratio(test_split_ratio)
        xs, ys = [], []
        for x, y in dataloader:
            xs.append(x.reshape(x.shape[0], -1).detach().cpu())
            ys.append(y.reshape(-1).cpu())
        x, y = torch.cat(xs), torch.cat(ys)
        perm = torch.randperm(y.numel(), generator=torch.Generator().manual_seed(self.seed))
        n_test = int(ratio * y.numel())
        test, train = perm[:n_test], perm[n_test:]
        self.estimator.fit(x[train].numpy(), y[train].numpy())
        found = getattr(self.estimator, "classes_", None)
        self._classes = [int(c) for c in found] if found is not None else sorted(int(c) for c in y[train].unique())
        rows = test if n_test else train
        if callable(getattr(self.estimator, "predict", None)):
            pred = torch.as_tensor(self.estimator.predict(x[rows].numpy())).reshape(-1)
        else:
            scores = x[rows].to(torch.float64) @ self._coef().T.to(torch.float64)
            pick = (scores[:, 0] > 0).long() if scores.shape[1] == 1 else scores.argmax(1)
            pred = torch.tensor(self._classes)[pick]
        return {"accs": (pred.long() == y[rows].long()).float().mean()}

    def _coef(self) -> Tensor:
        coef = getattr(self.estimator, "coef_", None)
        if coef is None:
            raise RuntimeError("the estimator has no coef_: call train_and_eval first (or it is not linear)")
        coef = torch.as_tensor(coef)
        return coef.reshape(1, -1) if coef.dim() == 1 else coef

    def weights(self) -> Tensor:
        coef = self._coef()
        return binary_rows(coef) if coef.shape[0] == 1 and len(self._classes) == 2 else coef.clone()

    def classes(self) -> list[int]:
        return list(self._classes)


def as_classifier(classifier):
    """TCAV's ``classifier`` argument as an object with ``train_and_eval``, ``weights``
    and ``classes``: None or "default" -> :class:`DefaultClassifier`; "fastcav" ->
    :class:`FastCAVClassifier`; an object with ``fit`` and no ``train_and_eval`` ->
    :class:`SklearnClassifier`."""
    if classifier is None or classifier == "default":
        return DefaultClassifier()
    if isinstance(classifier, str):
        if classifier.lower() == "fastcav":
            return FastCAVClassifier()
        raise ValueError(f"classifier given by name must be one of {CLASSIFIER_NAMES}; got {classifier!r}")
    if all(callable(getattr(classifier, m, None)) for m in ("train_and_eval", "weights", "classes")):
        return classifier
    if callable(getattr(classifier, "fit", None)):
        return SklearnClassifier(classifier)
    raise TypeError(
        "classifier must be None, 'default', 'fastcav', a Classifier (train_and_eval, weights, classes) or a "
        f"scikit-learn-style estimator (fit, coef_); got {type(classifier).__name__}"
    )
