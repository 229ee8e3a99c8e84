"""Backward rules for activations and pooling, as small data objects.

Each rule names the op kinds it overrides and returns the gradient for the op's
input given what the op saw (:class:`~torchexplain.core.hooks.Saved`) and the
incoming gradient. :class:`~torchexplain.core.hooks.FunctionRules` applies them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .hooks import ELEMENTWISE_KINDS, Saved, scatter_to_input


class GuidedReLU:
    """Guided backpropagation: pass positive gradients through active units."""

    kinds = ("relu",)
    needs_input = False

    def backward(self, kind: str, saved: Saved, grad: Tensor) -> Tensor:
        # the ReLU's own backward (zero where inactive), then only positive values
        return torch.ops.aten.threshold_backward(grad, saved.y, 0).clamp_(min=0)


class DeconvReLU:
    """Deconvolution: pass positive gradients, whatever the unit's input."""

    kinds = ("relu",)
    needs_input = False

    def backward(self, kind: str, saved: Saved, grad: Tensor) -> Tensor:
        return grad.clamp(min=0)


class Rescale:
    """DeepLIFT's rescale rule (Shrikumar et al. 2017) for a batch laid out as
    ``[inputs; references]``: the multiplier of an elementwise op is
    ``(f(x) - f(x0)) / (x - x0)``, the ordinary gradient where ``|x - x0| < eps``.
    Max-pooling shares each window's output difference between the input's and the
    reference's arg-max positions, so contributions sum to the output difference.
    Only the input half's gradient is meaningful; the reference half gets zeros.
    """

    kinds = tuple(ELEMENTWISE_KINDS) + ("max_pool",)

    def __init__(self, eps: float = 1e-10):
        self.eps = eps

    def backward(self, kind: str, saved: Saved, grad: Tensor) -> Tensor:
        x, x0 = saved.x.chunk(2)
        g = grad.chunk(2)[0]
        dx = x - x0
        small = dx.abs() < self.eps
        if kind == "max_pool":
            y, y0 = saved.y.chunk(2)
            top = torch.maximum(y, y0)
            shares = torch.cat([g * (top - y0), g * (y - top)])
            moved = scatter_to_input(shares, saved)
            contrib = moved[: len(x)] + moved[len(x):]
            multiplier = contrib / torch.where(small, torch.ones_like(dx), dx)
        else:
            y, y0 = saved.y.chunk(2)
            multiplier = g * (y - y0) / torch.where(small, torch.ones_like(dx), dx)
        if bool(small.any()):
            local = saved.local_grad(torch.cat([g, torch.zeros_like(g)])).chunk(2)[0]
            multiplier = torch.where(small, local, multiplier)
        return torch.cat([multiplier, torch.zeros_like(multiplier)])
