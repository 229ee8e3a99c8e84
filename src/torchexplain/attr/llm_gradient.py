"""Every target token's layer gradient from one forward pass (causal models).

On a causal model the logits at position ``L - 1 + t`` of ``prompt + target[:-1]``
depend only on ``prompt + target[:t]``, so one forward over that sequence holds every
target token's log-probability, and a backward pass per token through that one graph
gives each token's gradient at the layer.
For LayerIntegratedGradients that is ``1`` forward of ``n_steps`` rows plus ``T``
backward passes, against ``T`` forward and backward passes token by token; the values
are the same (the layer's values at the target positions are the same at both ends of
the path, so they get no attribution).

:func:`shared_forward_attribution` returns None for what it does not cover (other
methods, layer inputs, lists of layers, convergence deltas, ...); the caller then runs
the method itself, one row per token.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..core.batching import check_chunk_size, evaluate_rows
from .approximation import path_tables
from .layer import LayerGradientXActivation
from .layer_path import LayerIntegratedGradients
from .llm_model import model_logits

__all__ = ["shared_forward_attribution"]

_OPTIONS = {LayerIntegratedGradients: {"baselines", "n_steps", "method", "internal_batch_size"},
            LayerGradientXActivation: set()}


def _layer_values(model, tap, seq: Tensor) -> Tensor:
    with torch.no_grad(), tap.recording() as record:
        model(seq)
    if len(record.values) != 1 or not record.values[0].is_floating_point():
        raise TypeError("the layer's output must be one floating-point tensor")
    return record.values[0]


def _token_grads(out: Tensor, points: Tensor) -> Tensor:
    """``(T, *points.shape)``: the gradient of ``out[:, t].sum()`` for every ``t``, one
    backward pass each through the one graph (measured faster on CPU than batching
    them with ``is_grads_batched``, whose vmapped backward ran 1.6x slower)."""
    t_len = out.shape[1]
    return torch.stack([torch.autograd.grad(out[:, t].sum(), points, retain_graph=t < t_len - 1)[0]
                        for t in range(t_len)])


def shared_forward_attribution(llm, method, inp, target: Tensor, kwargs: dict) -> Optional[Tensor]:
    """``(T, S, D)`` attributions at ``method.layer`` for every target token over
    ``prompt + target[:-1]`` (``S`` positions), or None when not covered."""
    options = _OPTIONS.get(type(method))
    if options is None or len(method._layers) != 1 or set(kwargs) - options or target.numel() < 2:
        return None
    model, device, tap = llm.model, llm.device, method._tap()
    z = inp.to_tensor().to(device).float()
    prompt = llm._format_model_input(inp.to_model_input(z))
    seq = torch.cat([prompt, target[:-1].reshape(1, -1).to(prompt)], 1)
    try:
        end = _layer_values(model, tap, seq)
        if type(method) is LayerIntegratedGradients:
            base = kwargs.get("baselines")
            base = torch.zeros_like(z) if base is None else torch.as_tensor(base, device=device).float().expand_as(z)
            start = _layer_values(model, tap, torch.cat([llm._format_model_input(inp.to_model_input(base)),
                                                           seq[:, prompt.shape[1]:]], 1))
            sizes, alphas = path_tables(kwargs.get("method", "gausslegendre"), kwargs.get("n_steps", 50))
        else:
            start, sizes, alphas = None, torch.ones(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    except (TypeError, ValueError):  # (the method itself then says what is wrong)
        return None
    if start is not None and start.shape != end.shape:
        return None
    positions = prompt.shape[1] - 1 + torch.arange(target.numel(), device=device)
    total = torch.zeros((target.numel(), *end.shape[1:]), dtype=end.dtype, device=device)
    stats = {"device": device, "row_bytes": end[0].numel() * end.element_size() * (2 + target.numel())}

    def run(a: int, b: int) -> None:
        a_ = alphas[a:b].to(device, end.dtype).reshape(-1, *([1] * (end.dim() - 1)))
        points = (end if start is None else start + a_ * (end - start)).expand(b - a, *end.shape[1:]).clone()
        points.requires_grad_(True)
        with torch.enable_grad(), tap.recording(replace=lambda values: (points,)):
            logits = model_logits(model(seq.expand(b - a, -1)))[:, positions]
            out = torch.log_softmax(logits.float(), -1).gather(-1, target.to(device).expand(b - a, -1)[..., None])
        grads = _token_grads(out.squeeze(-1), points)
        w = sizes[a:b].to(device, grads.dtype).reshape(1, -1, *([1] * (end.dim() - 1)))
        total.add_((grads * w).sum(1))

    chunk = check_chunk_size(kwargs.get("internal_batch_size", "auto"))
    evaluate_rows(len(alphas), run, chunk, stats=stats)
    if method.multiplies_by_inputs:
        total = total * (end if start is None else end - start)
    return total
