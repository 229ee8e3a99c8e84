"""What the shap-style explainers share: argument forms, output ranking and the
shap >= 0.45 return forms.

* inputs are one tensor or a list of tensors (shap's multi-input form, fixed by the
  form of the background ``data``);
* the model returns one row of outputs per example: ``(batch, outputs)`` or, beyond
  shap, ``(batch,)`` for a single output;
* values come back as NumPy arrays ``(N, *features, K)`` (K explained outputs), one
  array per explained tensor, a list when there are several.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..core.batching import evaluate_rows
from ..core.forward import ForwardAdapter
from ..core.hooks import model_guard
from ..core.inputs import as_tuple


def background_tensors(data, name: str = "data") -> tuple[tuple[Tensor, ...], bool]:
    """``data`` as a tuple of tensors sharing their first dimension, and whether it
    was given as a list (shap's multi-input form)."""
    items, multi = as_tuple(data, name)
    for t in items:
        if t.dim() == 0 or t.shape[0] == 0:
            raise ValueError(f"{name} must have a batch dimension with at least one row; got shape {tuple(t.shape)}")
    rows = {t.shape[0] for t in items}
    if len(rows) > 1:
        raise ValueError(f"every tensor of {name} must have the same number of rows; got {sorted(rows)}")
    return tuple(t.detach() for t in items), multi


def explained_inputs(X, background: Sequence[Tensor], multi: bool, *, floating: bool) -> tuple[Tensor, ...]:
    """``X`` in the background's form: a list of tensors when the explainer was given
    a list, else one tensor; each with the background's per-example shape."""
    if multi != isinstance(X, (list, tuple)):
        want = f"a list of {len(background)} tensors" if multi else "one tensor"
        raise TypeError(f"X must be {want}, as the background data was given; got {type(X).__name__}")
    items = tuple(X) if multi else (X,)
    if len(items) != len(background):
        raise ValueError(f"X must hold {len(background)} tensors, one per model input; got {len(items)}")
    sizes = set()
    for i, (x, b) in enumerate(zip(items, background)):
        where = f"X[{i}]" if multi else "X"
        if not isinstance(x, Tensor):
            raise TypeError(f"{where} must be a torch.Tensor; got {type(x).__name__}")
        if x.dim() != b.dim() or x.shape[1:] != b.shape[1:]:
            raise ValueError(
                f"{where} must have shape (N, {', '.join(map(str, b.shape[1:]))}) like the background data; "
                f"got {tuple(x.shape)}"
            )
        if floating and not x.is_floating_point():
            raise TypeError(f"{where} must be a floating-point tensor to take gradients; got dtype {x.dtype}")
        if x.is_floating_point() and bool(torch.isnan(x).any()):
            raise ValueError(f"{where} contains NaN values")
        sizes.add(x.shape[0])
    if len(sizes) > 1:
        raise ValueError(f"all tensors of X must share the batch size; got {sorted(sizes)}")
    if 0 in sizes:
        raise ValueError("X must hold at least one example")
    return tuple(x.detach().to(b.device) for x, b in zip(items, background))


@contextlib.contextmanager
def borrowed(model):
    """Evaluate ``model`` in eval mode, as shap does, but leave it as found."""
    with model_guard(model):
        if isinstance(model, nn.Module):
            model.eval()
        yield


def checked_output(out, n_rows: int) -> Tensor:
    """The model's output for ``n_rows`` rows, checked: a tensor (rows,) or (rows, outputs)."""
    if not isinstance(out, Tensor):
        raise TypeError(
            f"the model must return a tensor of shape (batch, outputs) or (batch,); got {type(out).__name__}"
        )
    if out.dim() not in (1, 2) or out.shape[0] != n_rows:
        raise ValueError(
            f"the model must return a tensor of shape (batch, outputs) or (batch,); got shape {tuple(out.shape)} "
            f"for a batch of {n_rows}"
        )
    return out


def model_outputs(model, inputs: Sequence[Tensor], batch_size) -> Tensor:
    """The model's outputs for ``inputs`` without gradients, through the forward
    adapter and the chunked evaluator: ``batch_size`` rows at a time (all at once
    when it is not an int)."""
    n = inputs[0].shape[0]
    adapter = ForwardAdapter(model, n)
    parts = []

    def run(a: int, b: int) -> None:
        out = adapter.call(tuple(x[a:b] for x in inputs), torch.arange(a, b))
        parts.append(checked_output(out, b - a).detach())

    with torch.no_grad():
        evaluate_rows(n, run, batch_size if isinstance(batch_size, int) else None)
    return torch.cat(parts)


def expected_value(outputs: Tensor):
    """The mean output over the background: an array (outputs,), or a float for a
    model with one-dimensional output."""
    mean = outputs.double().mean(0).cpu().numpy()
    return float(mean) if outputs.dim() == 1 else mean


def rank_scalars(out: Tensor, ranks: Tensor) -> Tensor:
    """(rows, K): for each row of ``out``, its outputs at the row's ``ranks`` (rows, K)."""
    if out.dim() == 1:
        return out.unsqueeze(1)
    return out.gather(1, ranks.to(out.device))


def shap_form(per_tensor: Sequence[Tensor]):
    """Values (N, K, *features) per explained tensor as shap >= 0.45 returns them:
    NumPy (N, *features, K), a list when several tensors are explained."""
    arrays = [np.ascontiguousarray(np.moveaxis(v.detach().cpu().numpy(), 1, -1)) for v in per_tensor]
    return arrays[0] if len(arrays) == 1 else arrays


def with_ranks(values, ranks: Tensor, ranked_outputs):
    """shap's return: ``(values, indexes)`` when ranked outputs were asked for."""
    return values if ranked_outputs is None else (values, ranks)
