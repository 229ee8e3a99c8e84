"""The user's model is borrowed: every public call runs inside :func:`borrowed`.

Loading checkpoints writes into the model's parameters and buffers, and a forward in
train mode updates batch-norm statistics. On every exit path, :func:`borrowed` puts
back the values the tensors held on entry (into the same tensor objects), each
parameter's ``requires_grad`` and each module's train/eval mode. Nothing here reads
or writes a parameter's ``.grad``.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


def _snapshot(model: nn.Module):
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    return [(t, t.detach().clone()) for _, t in tensors]


def _restore(saved) -> None:
    with torch.no_grad():
        for tensor, value in saved:
            if tensor.shape == value.shape and tensor.dtype == value.dtype and tensor.device == value.device:
                tensor.copy_(value)
            else:  # a load function swapped the tensor's data for one of another form
                tensor.data = value


@contextmanager
def borrowed(model: nn.Module):
    """Run the block, then restore ``model``'s values, ``requires_grad`` flags and modes."""
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    saved = _snapshot(model)
    try:
        yield model
    finally:
        _restore(saved)
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode
