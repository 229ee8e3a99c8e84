"""Quadrature rules for path integrals: (step sizes, alphas) on [0, 1], as Captum."""

from __future__ import annotations

import numbers

import numpy as np
import torch

METHODS = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")


def approximation_parameters(method: str, n_steps: int) -> tuple[list[float], list[float]]:
    """Step sizes and interpolation coefficients for ``n_steps`` of ``method``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if method == "gausslegendre":
        points, weights = np.polynomial.legendre.leggauss(n_steps)
        return list(0.5 * weights), list(0.5 * (points + 1))
    if n_steps < 2:
        raise ValueError(f"n_steps must be at least 2 for {method}; got {n_steps}")
    sizes = [1.0 / n_steps] * n_steps
    if method == "riemann_trapezoid":
        sizes[0] /= 2
        sizes[-1] /= 2
        return sizes, list(np.linspace(0, 1, n_steps))
    lo, hi = {
        "riemann_left": (0.0, 1 - 1 / n_steps),
        "riemann_right": (1 / n_steps, 1.0),
        "riemann_middle": (1 / (2 * n_steps), 1 - 1 / (2 * n_steps)),
    }[method]
    return sizes, list(np.linspace(lo, hi, n_steps))


def path_tables(method: str, n_steps) -> tuple[torch.Tensor, torch.Tensor]:
    """(step sizes, alphas) of ``method`` as float64 tensors, after checking that
    ``n_steps`` is a positive int."""
    if isinstance(n_steps, bool) or not isinstance(n_steps, numbers.Integral) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive int; got {n_steps!r}")
    sizes, alphas = approximation_parameters(method, int(n_steps))
    return torch.tensor(sizes, dtype=torch.float64), torch.tensor(alphas, dtype=torch.float64)
