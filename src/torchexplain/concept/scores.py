"""TCAV scores, reduced chunk by chunk.

For the inputs ``x_i`` and a layer ``l``, the sensitivity of the explained output
``f`` to concept ``k`` is the directional derivative ``s_ik = grad_l f(x_i) . v_k``
along the concept's CAV ``v_k``. The scores (Captum's) are

* ``sign_count_k = mean_i [s_ik > 0]`` (the TCAV score of the paper);
* ``magnitude_k = mean_i s_ik``.

The gradients are computed over chunks of the inputs (through the one gradient
engine, every layer from the same forward and backward pass) and each chunk is
folded into the running count and sum of every CAV at once, so the gradients of
all inputs are never alive together. A user-supplied layer attribution method (e.g.
``LayerIntegratedGradients``) replaces the gradient: it is called per chunk and per
layer.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ..core.batching import evaluate_rows
from ..core.forward import ForwardAdapter
from ..core.gradients import layer_gradients
from ..core.hooks import model_guard
from ..core.hooks.layers import LayerTap
from ..core.inputs import argument_rows, format_additional_args, take


class ScoreSums:
    """Running ``[s > 0]`` counts and sums of ``s`` for one layer's stacked CAV rows."""

    def __init__(self, cavs: Tensor):
        self.cavs = cavs.float()
        self.positive: Tensor | None = None
        self.total: Tensor | None = None
        self.n = 0

    def add(self, sensitivities: Tensor) -> None:
        flat = sensitivities.reshape(sensitivities.shape[0], -1).float()
        if flat.shape[1] != self.cavs.shape[1]:
            raise ValueError(
                f"the layer gives {flat.shape[1]} values per example but its CAVs have {self.cavs.shape[1]}; "
                "were they trained for another model or layer?"
            )
        s = flat @ self.cavs.to(flat.device).T
        positive, total = (s > 0).sum(0), s.sum(0)
        self.positive = positive if self.positive is None else self.positive + positive
        self.total = total if self.total is None else self.total + total
        self.n += flat.shape[0]

    def scores(self) -> tuple[Tensor, Tensor]:
        """(sign_count, magnitude) of every CAV row."""
        return self.positive.float() / self.n, self.total / self.n


def gradient_scores(model: nn.Module, taps: Sequence[LayerTap], sums: Sequence[ScoreSums], inputs: tuple,
                    target, additional_forward_args, chunk, grad_kwargs=None) -> None:
    """Fold the target's gradient at every tapped layer into ``sums`` (one per layer);
    ``grad_kwargs`` go to ``torch.autograd.grad``."""
    n = inputs[0].shape[0]
    adapter = ForwardAdapter(model, n, target, additional_forward_args)

    def build(rows, examples):
        return tuple(take(x, examples) for x in inputs)

    def consume(rows, examples, grads, values, scalars):
        if len(grads) != len(sums):
            raise TypeError("every TCAV layer must give one tensor (a layer returned a tuple of tensors)")
        for acc, g in zip(sums, grads):
            acc.add(g)

    with model_guard(model):
        layer_gradients(adapter, taps, n, build, consume, chunk=chunk, grad_kwargs=grad_kwargs)


def chunk_target(target, rows: Tensor, n: int):
    """The part of a Captum-form ``target`` that belongs to the examples ``rows``."""
    if isinstance(target, Tensor) and target.dim() > 0 and target.shape[0] == n and target.numel() > 1:
        return target[rows.to(target.device)]
    if isinstance(target, list) and len(target) == n:
        return [target[int(r)] for r in rows]
    return target


def method_scores(method, model: nn.Module, modules: Sequence[nn.Module], sums: Sequence[ScoreSums], inputs: tuple,
                  target, additional_forward_args, to_input: bool, chunk, kwargs: dict) -> None:
    """Fold ``method.attribute`` (a layer attribution, pointed at each layer in turn
    as Captum does) over chunks of the inputs into ``sums``."""
    if not callable(getattr(method, "attribute", None)):
        raise TypeError(f"layer_attr_method must be a layer attribution with attribute(); got {type(method).__name__}")
    n = inputs[0].shape[0]
    args = format_additional_args(additional_forward_args)
    saved = {name: method.__dict__[name] for name in ("layer", "_layers") if name in method.__dict__}

    def run(a: int, b: int) -> None:
        rows = torch.arange(a, b)
        chunk_inputs = tuple(take(x, rows) for x in inputs)
        chunk_args = tuple(argument_rows(v, rows, n) for v in args) or None
        for module, acc in zip(modules, sums):
            method.layer = module
            if "_layers" in saved:
                method._layers = [module]
            out = method.attribute(chunk_inputs if len(inputs) > 1 else chunk_inputs[0],
                                   target=chunk_target(target, rows, n), additional_forward_args=chunk_args,
                                   attribute_to_layer_input=to_input, **kwargs)
            out = out if isinstance(out, (tuple, list)) else (out,)
            acc.add(torch.cat([o.reshape(o.shape[0], -1) for o in out], dim=1))

    try:
        with model_guard(model):
            evaluate_rows(n, run, chunk, probe_rows=min(n, 8))
    finally:
        method.__dict__.update(saved)

