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
    Softmax: see :func:`softmax_multipliers`.
    Only the input half's gradient is meaningful; the reference half gets zeros.
    """

    kinds = tuple(ELEMENTWISE_KINDS) + ("max_pool", "softmax")

    def __init__(self, eps: float = 1e-10):
        self.eps = eps

    def backward(self, kind: str, saved: Saved, grad: Tensor) -> Tensor:
        x, x0 = saved.x.chunk(2)
        y, y0 = saved.y.chunk(2)
        g = grad.chunk(2)[0]
        out = torch.empty_like(saved.x)  # the gradient for the op's input
        head = out[: len(g)]
        if kind == "softmax":
            if saved.dim == 0:  # a softmax over the batch mixes inputs and references
                out.copy_(saved.local_grad(grad))
                return out
            head.copy_(softmax_multipliers(saved, g, self.eps))
            out[len(g):].zero_()
            return out
        if kind == "max_pool":
            top = torch.maximum(y, y0)
            moved = scatter_to_input(torch.cat([g * (top - y0), g * (y - top)]), saved)
            torch.add(moved[: len(g)], moved[len(g):], out=head)
        else:
            torch.mul(g, y - y0, out=head)
        dx = x - x0
        small = dx.abs() < self.eps
        head.div_(dx.masked_fill_(small, 1.0))
        if bool(small.any()):
            head.copy_(torch.where(small, self._ordinary(kind, saved, g), head))
        out[len(g):].zero_()
        return out

    @staticmethod
    def _ordinary(kind: str, saved: Saved, g: Tensor) -> Tensor:
        """The ordinary gradient at the inputs' half (closed forms where cheap)."""
        if kind == "relu":
            return g * (saved.x[: len(g)] > 0)
        padded = torch.cat([g, torch.zeros_like(g)])
        if kind == "max_pool":
            return scatter_to_input(padded, saved)[: len(g)]
        return saved.local_grad(padded)[: len(g)]


def softmax_multipliers(saved: Saved, g: Tensor, eps: float) -> Tensor:
    """DeepLIFT multipliers of a softmax ``y = softmax(x)`` along ``saved.dim``, per row,
    for downstream multipliers ``g`` (computed in float64).

    Captum's rule for ``nn.Softmax`` rescales elementwise, ``u = g * dy / dx`` (the
    ordinary gradient where ``|dx| < eps``), and subtracts the mean of ``u`` (over the
    whole batch; here per row), so the multipliers sum to zero as softmax ignores a
    shift of all its inputs. That leaves ``sum(m * dx) = sum(g * dy)`` short by
    ``mean(u) * sum(dx)``. The remainder is added along the centred input difference
    ``v = dx - mean(dx)``, ``m = u - mean(u) + r * v / sum(v * v)``, which keeps the sum
    of the multipliers zero and makes ``sum(m * dx) = sum(g * dy)`` exact, so the
    attributions of a softmax network sum to the change of its output. Where Captum's
    centred multipliers are already exact (``r = 0``), these are Captum's.

    Nothing is added where the input difference is (nearly) a pure shift, ``|v| <=
    100 sqrt(K) eps |dx|`` (``eps`` of the model's dtype, ``K`` classes): there the
    softmax's change is rounding noise of its inputs (a shift leaves it unchanged), and
    a multiplier along ``v`` could not be carried back through the layers below in the
    model's precision (its rounding would be amplified by the shift).
    """
    dim = saved.dim
    n = len(g)
    x, x0 = saved.x.double().chunk(2)
    y, y0 = saved.y.double().chunk(2)
    g64 = g.double()
    dx, dy = x - x0, y - y0
    small = dx.abs() < eps
    u = g64 * dy / dx.masked_fill(small, 1.0)
    if bool(small.any()):
        ordinary = saved.local_grad(torch.cat([g, torch.zeros_like(g)]))[:n].double()
        u = torch.where(small, ordinary, u)
    m = u - u.mean(dim, keepdim=True)
    v = dx - dx.mean(dim, keepdim=True)
    q = (v * v).sum(dim, keepdim=True)
    r = (g64 * dy).sum(dim, keepdim=True) - (m * dx).sum(dim, keepdim=True)
    limit = 100 * torch.finfo(saved.x.dtype).eps
    moved = q > limit * limit * dx.shape[dim] * (dx * dx).sum(dim, keepdim=True)
    m = m + torch.where(moved, r / q.masked_fill(~moved, 1.0), 0.0) * v
    return m.to(saved.x.dtype)
