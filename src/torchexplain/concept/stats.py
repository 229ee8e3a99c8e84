"""The statistical test of the TCAV paper (Kim et al. 2018, section 3.3).

A concept's TCAV scores over several runs against different random concepts are
compared with the scores of random concepts against random concepts by a
two-sided, two-sample Student's t-test (pooled variance, as
``scipy.stats.ttest_ind`` with its defaults): the concept is significant at level
``alpha`` when ``p < alpha``.

The t distribution's tail comes from the regularized incomplete beta function,
``P(|T| > |t|) = I_x(df/2, 1/2)`` with ``x = df / (df + t^2)``, which is evaluated
by its continued fraction (modified Lentz's method), on the side of ``x`` where
the fraction converges fast.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_EPS = 1e-15
_TINY = 1e-300
_MAX_TERMS = 500


def _fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of ``I_x(a, b)``: ``1 / (1 + d1 / (1 + d2 / (1 + ...)))``
    with ``d_{2m} = m (b - m) x / ((a + 2m - 1)(a + 2m))`` and
    ``d_{2m+1} = -(a + m)(a + b + m) x / ((a + 2m)(a + 2m + 1))``."""

    def guard(v: float) -> float:
        return v if abs(v) > _TINY else _TINY

    c = 1.0
    d = 1.0 / guard(1.0 - (a + b) * x / (a + 1.0))
    f = d
    for m in range(1, _MAX_TERMS + 1):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 / guard(1.0 + num * d)
            c = guard(1.0 + num / c)
            f *= c * d
        if abs(c * d - 1.0) < _EPS:
            break
    return f


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function ``I_x(a, b)`` for ``a, b > 0``."""
    if math.isnan(x):
        return math.nan
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _fraction(b, a, 1.0 - x) / b


def _two_sided(t: float, df: float) -> float:
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def student_t_cdf(t, df) -> Tensor:
    """``P(T <= t)`` for Student's t with ``df`` degrees of freedom (elementwise,
    float64; ``t`` a number or tensor)."""
    if not (isinstance(df, (int, float)) and not isinstance(df, bool) and df > 0):
        raise ValueError(f"df must be a positive number; got {df!r}")
    values = torch.as_tensor(t, dtype=torch.float64)
    out = [0.5 * _two_sided(v, df) if v <= 0 or math.isnan(v) else 1.0 - 0.5 * _two_sided(v, df)
           for v in values.reshape(-1).tolist()]
    return torch.tensor(out, dtype=torch.float64).reshape(values.shape)


def _sample(values, name: str) -> Tensor:
    x = torch.as_tensor(values).detach().to("cpu", torch.float64).reshape(-1)
    if x.numel() < 2:
        raise ValueError(f"{name} needs at least 2 scores (one per run) for a variance; got {x.numel()}")
    return x


def ttest_ind(a, b) -> tuple[Tensor, Tensor]:
    """Two-sided two-sample Student's t-test with pooled variance: ``(t, p)`` as
    0-d float64 tensors (as ``scipy.stats.ttest_ind(a, b)``)."""
    x, y = _sample(a, "a"), _sample(b, "b")
    nx, ny = x.numel(), y.numel()
    df = nx + ny - 2
    pooled = ((nx - 1) * x.var() + (ny - 1) * y.var()) / df
    diff = float(x.mean() - y.mean())
    se = math.sqrt(float(pooled) * (1.0 / nx + 1.0 / ny))
    if se == 0.0:
        t = math.nan if diff == 0.0 else math.copysign(math.inf, diff)
    else:
        t = diff / se
    return torch.tensor(t, dtype=torch.float64), torch.tensor(_two_sided(t, df), dtype=torch.float64)


def significance_test(concept_scores, random_scores, alpha: float = 0.05) -> dict:
    """The TCAV paper's test of one concept at one layer: ``concept_scores`` (its
    TCAV score against each random concept) against ``random_scores`` (random
    concepts' scores against random concepts). Returns ``{"t_statistic", "p_value"
    (0-d tensors; p is 1 when both samples are the same constant, where the t
    statistic is undefined), "significant" (p < alpha), "concept_mean",
    "random_mean"}``."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be a number in (0, 1); got {alpha!r}")
    t, p = ttest_ind(concept_scores, random_scores)
    if torch.isnan(p):  # both samples one and the same constant: no difference to find (scipy says nan)
        p = torch.ones_like(p)
    return {
        "t_statistic": t,
        "p_value": p,
        "significant": bool(p < alpha),
        "concept_mean": _sample(concept_scores, "concept_scores").mean(),
        "random_mean": _sample(random_scores, "random_scores").mean(),
    }
