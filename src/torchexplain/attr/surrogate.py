"""Interpretable (surrogate) models for Lime and KernelShap.

The default is :class:`WeightedLinearRegression`, a torch-native weighted least-squares
fit with an intercept and a tiny ridge, solved in closed form in float64 and batched
over examples. Any other model can be passed as ``interpretable_model`` if it follows
one of two protocols:

* scikit-learn style: ``fit(X, y, sample_weight=w)`` with ``X`` ``(n_samples,
  n_features)`` binary, ``y`` and ``w`` ``(n_samples,)``; then ``coef_`` (or
  ``representation()``) holds one coefficient per feature. scikit-learn estimators get
  NumPy arrays, other objects get float32 tensors on the inputs' device.
* Captum style (``captum._utils.models.Model``): ``fit(train_data)`` takes a
  ``DataLoader`` whose single batch is ``(X, y, w)``; then ``representation()`` returns
  the coefficients.
"""

from __future__ import annotations

import inspect
import numbers

import torch
from torch import Tensor


class WeightedLinearRegression:
    """Weighted linear least squares ``min sum_i w_i (y_i - b - x_i . c)^2 + lam |c|^2``.

    ``lam = ridge * median(w)`` keeps the fit well posed when features outnumber
    samples (it then approaches the minimum-norm solution); ``ridge=0`` uses the
    pseudo-inverse instead. ``fit`` accepts a batch of problems: ``X`` ``(..., S, M)``,
    ``y`` and ``sample_weight`` ``(..., S)``, giving ``coef_`` ``(..., M)`` and
    ``intercept_`` ``(...)``.
    """

    def __init__(self, ridge: float = 1e-6, fit_intercept: bool = True):
        if isinstance(ridge, bool) or not isinstance(ridge, numbers.Real) or ridge < 0:
            raise ValueError(f"ridge must be a non-negative number; got {ridge!r}")
        self.ridge = float(ridge)
        self.fit_intercept = bool(fit_intercept)
        self.coef_: Tensor | None = None
        self.intercept_: Tensor | None = None

    def fit(self, X, y, sample_weight=None) -> "WeightedLinearRegression":
        X = torch.as_tensor(X).to(torch.float64)
        y = torch.as_tensor(y).to(device=X.device, dtype=torch.float64)
        if X.dim() < 2 or y.shape != X.shape[:-1]:
            raise ValueError(
                f"fit needs X of shape (..., S, M) and y of shape (..., S); got {tuple(X.shape)} and {tuple(y.shape)}"
            )
        w = torch.ones_like(y) if sample_weight is None else torch.as_tensor(sample_weight).to(y).expand_as(y)
        w = w.clamp_min(0)
        if self.fit_intercept:
            total = w.sum(-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
            x_mean = (w.unsqueeze(-1) * X).sum(-2, keepdim=True) / total.unsqueeze(-1)
            y_mean = (w * y).sum(-1, keepdim=True) / total
            X, y = X - x_mean, y - y_mean
        root = w.sqrt()
        a, b = X * root.unsqueeze(-1), (y * root).unsqueeze(-1)
        coef = self._solve(a, b, w).squeeze(-1)
        self.coef_ = coef
        if self.fit_intercept:
            self.intercept_ = (y_mean - (x_mean.squeeze(-2) * coef).sum(-1, keepdim=True)).squeeze(-1)
        else:
            self.intercept_ = torch.zeros(coef.shape[:-1], dtype=coef.dtype, device=coef.device)
        return self

    def _solve(self, a: Tensor, b: Tensor, w: Tensor) -> Tensor:
        if self.ridge == 0:
            return torch.linalg.pinv(a) @ b
        scale = w.median(-1).values
        scale = torch.where(scale > 0, scale, w.mean(-1))
        lam = (self.ridge * torch.where(scale > 0, scale, torch.ones_like(scale)))[..., None, None]
        n_samples, n_features = a.shape[-2:]
        if n_features <= n_samples:
            gram = a.transpose(-1, -2) @ a
            eye = torch.eye(n_features, dtype=a.dtype, device=a.device)
            return torch.linalg.solve(gram + lam * eye, a.transpose(-1, -2) @ b)
        kernel = a @ a.transpose(-1, -2)  # fewer samples than features: the dual form
        eye = torch.eye(n_samples, dtype=a.dtype, device=a.device)
        return a.transpose(-1, -2) @ torch.linalg.solve(kernel + lam * eye, b)

    def representation(self) -> Tensor:
        if self.coef_ is None:
            raise RuntimeError("the model has not been fitted yet")
        return self.coef_


def _positional_params(fn) -> int | None:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return None
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


def check_interpretable_model(model) -> None:
    if not callable(getattr(model, "fit", None)):
        raise TypeError(
            "interpretable_model must have a fit method: fit(X, y, sample_weight=w) (scikit-learn style) "
            f"or fit(train_data) (Captum's Model); got {type(model).__name__}"
        )


def fit_model(model, X: Tensor, y: Tensor, w: Tensor):
    """Fit ``model`` to one problem (``X`` ``(S, M)``, ``y`` and ``w`` ``(S,)``, as
    float32) through its protocol and return what describes it: ``representation()``
    when it has one (Captum's models), else ``coef_``."""
    X, y, w = X.float(), y.float(), w.float()
    if _positional_params(model.fit) == 1:
        from torch.utils.data import DataLoader, TensorDataset

        model.fit(DataLoader(TensorDataset(X, y, w), batch_size=X.shape[0]))
    elif type(model).__module__.startswith("sklearn."):
        model.fit(X.cpu().numpy(), y.cpu().numpy(), sample_weight=w.cpu().numpy())
    else:
        model.fit(X, y, sample_weight=w)
    if callable(getattr(model, "representation", None)):
        return model.representation()
    coef = getattr(model, "coef_", None)
    if coef is None:
        raise TypeError(
            f"interpretable_model {type(model).__name__} has neither representation() nor coef_ after fit; "
            "one of them must give the coefficients"
        )
    return coef


def fit_coefficients(model, X: Tensor, y: Tensor, w: Tensor) -> Tensor:
    """:func:`fit_model`, returning the ``M`` coefficients as float64 on ``X``'s device."""
    coef = fit_model(model, X, y, w)
    coef = coef.detach() if isinstance(coef, Tensor) else torch.as_tensor(coef)
    coef = coef.to(device=X.device, dtype=torch.float64).reshape(-1)
    if coef.numel() != X.shape[1]:
        raise ValueError(
            f"interpretable_model gave {coef.numel()} coefficients for {X.shape[1]} interpretable features"
        )
    return coef
