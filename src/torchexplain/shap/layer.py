"""A hidden layer's input, read without running the rest of the model, and the test
that decides whether the rest of the model can run on replaced values alone.

Expected gradients at a layer replace the layer's input by points between the
background's and the example's values. The model still runs everything before the
layer (its *prefix*) on whatever it is fed. When the layer's input is a cut of the
model (nothing else from the inputs reaches the output), the prefix's result is
thrown away, so the model can be fed one example row while the layer's input is
replaced by a whole chunk of rows: the prefix then runs once per chunk instead of
once per sample. :func:`output_passes_through` checks that on the model itself; no
assumption is made on how the model is built.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..core.batching import evaluate_rows
from ..core.forward import ForwardAdapter
from ..core.hooks import frozen_parameters
from ..core.hooks.layers import LayerTap


class _ReachedLayer(Exception):
    """Raised in the layer's pre-hook to stop a forward pass there."""


def layer_inputs(model, tap: LayerTap, inputs: Sequence[Tensor], batch_size) -> tuple[Tensor, ...]:
    """The layer's input for ``inputs``, without gradients; the forward pass stops at
    the layer. ``batch_size`` rows at a time (all at once when not an int)."""
    found: list = []

    def stop(module, args):
        if not all(isinstance(a, Tensor) for a in args):
            raise TypeError(f"layer {tap.name!r} takes inputs other than tensors; only tensor inputs can be explained")
        found.append(tuple(a.detach() for a in args))
        raise _ReachedLayer

    n = inputs[0].shape[0]
    adapter = ForwardAdapter(model, n)

    def run(a: int, b: int) -> None:
        before = len(found)
        try:
            adapter.call(tuple(x[a:b] for x in inputs), torch.arange(a, b))
        except _ReachedLayer:
            pass
        if len(found) != before + 1:
            raise ValueError(f"layer {tap.name!r} did not run in the model's forward pass")

    handle = tap.layer.register_forward_pre_hook(stop)
    try:
        with torch.no_grad():
            evaluate_rows(n, run, batch_size if isinstance(batch_size, int) else None)
    finally:
        handle.remove()
    return tuple(torch.cat([values[i] for values in found]) for i in range(len(found[0])))


def output_passes_through(model, tap: LayerTap, feeds: Sequence[Sequence[Tensor]], values: Sequence[Tensor]) -> bool:
    """Whether the model's output is a function of the layer's input alone: fed
    each of ``feeds`` (single rows that differ) with the layer's input replaced by
    ``values`` (two rows), the output must have two rows, no differentiable path
    from the fed inputs, and the same values every time."""
    outputs = []
    adapter, first = ForwardAdapter(model, 1), torch.zeros(1, dtype=torch.long)
    try:
        with frozen_parameters(model), torch.enable_grad():
            for feed in feeds:  # a probe of a few single rows, not an evaluation of rows
                fed = tuple(x.detach().requires_grad_().clone() if x.is_floating_point() else x for x in feed)
                with tap.recording(replace=lambda found: values):
                    out = adapter.call(fed, first)
                if not isinstance(out, Tensor) or out.dim() == 0 or out.shape[0] != 2 or out.requires_grad:
                    return False
                outputs.append(out.detach())
    except Exception:  # noqa: BLE001 - a model that cannot run this way is simply fed every row
        return False
    return all(o.shape == outputs[0].shape and torch.allclose(o, outputs[0], rtol=1e-5, atol=1e-7) for o in outputs)


def probe_feeds(inputs: Sequence[Tensor], background: Sequence[Tensor]) -> list[tuple[Tensor, ...]]:
    """Single-row feeds: the first example (the one the shortcut feeds), every other
    distinct example (whose rows the shortcut computes while feeding the first) and
    a background row."""
    flat = torch.cat([x.flatten(1).to(torch.float64) for x in inputs], 1)
    _, first_of = torch.unique(flat, dim=0, return_inverse=True)
    seen: set = set()
    rows = [i for i, u in enumerate(first_of.tolist()) if not (u in seen or seen.add(u))]
    feeds = [tuple(x[i:i + 1] for x in inputs) for i in rows]
    return feeds + [tuple(b[:1] for b in background)]


def split_model(model):
    """shap's ``model`` argument, ``model`` or ``(model, layer)``, as ``(model, layer or None)``."""
    layer = None
    if isinstance(model, tuple):
        if len(model) != 2:
            raise ValueError(f"model must be a model or a (model, layer) pair; got a tuple of {len(model)}")
        model, layer = model
    if not callable(model):
        raise TypeError(f"model must be callable (an nn.Module or function); got {type(model).__name__}")
    return model, layer
