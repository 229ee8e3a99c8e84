"""The linear SVM of :class:`~.classifier.DefaultClassifier`, solved in its dual.

Primal (scikit-learn's ``SGDClassifier(alpha)`` objective, Captum's default):
``min_{w,b} alpha/2 ||w||^2 + 1/n sum_t max(0, 1 - y_t (w.x_t + b))``. Its dual, with
``C = 1 / (alpha n)``, ``K = X X^T`` and ``Q_st = y_s y_t K_st``, is

    min_a  1/2 a^T Q a - sum(a)   subject to  0 <= a_t <= C,  y^T a = 0,

and ``w = sum_t a_t y_t x_t``. It is solved by sequential minimal optimization with
second-order working-set selection (Fan, Chen and Lin 2005): each step moves the
pair of coefficients that violates the optimality conditions most, exactly, until
the violation is below ``tol``. Everything but the ``n x n`` Gram matrix works on
``n``-vectors, so the cost does not grow with the layer's size; the solution is
deterministic. On heavily overlapping low-dimensional data the dual is badly
conditioned and SMO needs very many steps (so does libsvm); after ``max_steps`` it
stops with a warning and the weights are approximate.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

_TAU = 1e-12


def smo(gram: Tensor, y: Tensor, c: float, tol: float = 1e-3, max_steps: int = 10_000) -> tuple[Tensor, float]:
    """``(a, b)`` for the dual above: ``gram`` (n, n) float64, ``y`` (n,) of +-1."""
    n = y.numel()
    a = torch.zeros(n, dtype=torch.float64)
    grad = -torch.ones(n, dtype=torch.float64)  # Q a - 1
    diag = gram.diagonal().clone()
    pos = y > 0
    gap = 0.0
    for _ in range(max_steps):
        up = (pos & (a < c)) | (~pos & (a > 0))
        low = (pos & (a > 0)) | (~pos & (a < c))
        score = -y * grad
        m_up = torch.where(up, score, torch.tensor(-torch.inf, dtype=torch.float64))
        i = int(m_up.argmax())
        m = float(m_up[i])
        low_scores = torch.where(low, score, torch.tensor(torch.inf, dtype=torch.float64))
        gap = m - float(low_scores.min())
        if gap < tol:
            break
        gain = m - low_scores  # > 0 where the pair (i, t) violates
        curve = (diag[i] + diag - 2 * gram[i]).clamp_min(_TAU)
        choice = torch.where(low & (gain > 0), -gain * gain / curve, torch.tensor(torch.inf, dtype=torch.float64))
        j = int(choice.argmin())
        # move a_i by y_i * d and a_j by -y_j * d (y^T a is unchanged), d >= 0
        d = float(gain[j] / curve[j])
        d = min(d, c - float(a[i]) if y[i] > 0 else float(a[i]), float(a[j]) if y[j] > 0 else c - float(a[j]))
        a[i] += float(y[i]) * d
        a[j] -= float(y[j]) * d
        grad += y * (gram[i] - gram[j]) * d
    else:
        warnings.warn(f"the SVM solver stopped after max_steps={max_steps} steps with its optimality gap at {gap:.3g} "
                      f"(tol={tol}): the CAV is approximate (overlapping concepts at a low-dimensional layer?)",
                      RuntimeWarning, stacklevel=3)
    return a.clamp_(0.0, c), _intercept(a, y, grad, c)


def _intercept(a: Tensor, y: Tensor, grad: Tensor, c: float) -> float:
    """``b`` from the optimality conditions: the mean of ``-y_t grad_t`` over the free
    coefficients (or the middle of its feasible interval when none is free)."""
    score = -y * grad
    free = (a > 1e-12 * c) & (a < c * (1 - 1e-12))
    if bool(free.any()):
        return float(score[free].mean())
    pos = y > 0
    up = (pos & (a < c)) | (~pos & (a > 0))
    low = (pos & (a > 0)) | (~pos & (a < c))
    hi = float(score[up].max()) if bool(up.any()) else 0.0
    lo = float(score[low].min()) if bool(low.any()) else 0.0
    return (hi + lo) / 2
