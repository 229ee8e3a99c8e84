"""Function-level backward rules for activations and pooling.

:class:`FunctionRules` overrides the backward of activation and pooling functions.
It intercepts at the function level (a ``TorchFunctionMode``), so functional
(``F.relu``), in-place (``relu_``), reused and forward-created activations are all
seen; user modules are never touched.

A rule is data: an object with ``kinds`` (the operations it overrides: elementwise
activations by name, "max_pool", "softmax"), a ``backward(kind, saved, grad_output)``
returning the gradient for the operation's input, and optionally
``needs_input = False`` when its backward reads only the output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

# --------------------------------------------------------------------------- intercepted ops

# kind -> the callables that compute it; in-place variants are recognised by name or flag
_ELEMENTWISE: dict[str, tuple] = {
    "relu": (torch.relu, torch.relu_, F.relu, F.relu_, Tensor.relu, Tensor.relu_),
    "sigmoid": (torch.sigmoid, torch.sigmoid_, Tensor.sigmoid, Tensor.sigmoid_),
    "tanh": (torch.tanh, torch.tanh_, Tensor.tanh, Tensor.tanh_),
    "elu": (F.elu, F.elu_),
    "leaky_relu": (F.leaky_relu, F.leaky_relu_),
    "softplus": (F.softplus,),
    "gelu": (F.gelu,),
    "silu": (F.silu,),
    "mish": (F.mish,),
    "hardswish": (F.hardswish,),
    "hardsigmoid": (F.hardsigmoid,),
    "relu6": (F.relu6,),
    "hardtanh": (F.hardtanh, F.hardtanh_),
    "selu": (F.selu, torch.selu, torch.selu_),
    "celu": (F.celu, torch.celu, torch.celu_),
    "prelu": (F.prelu, torch.prelu),
    "softsign": (F.softsign,),
    "logsigmoid": (F.logsigmoid,),
    "tanhshrink": (F.tanhshrink,),
    "softshrink": (F.softshrink,),
    "hardshrink": (F.hardshrink, torch.hardshrink, Tensor.hardshrink),
    "threshold": (F.threshold, F.threshold_),
}
ELEMENTWISE_KINDS = frozenset(_ELEMENTWISE)
_KIND_OF = {f: kind for kind, fns in _ELEMENTWISE.items() for f in fns}
# softmax callables (kind "softmax"); the rule sees the dimension as ``Saved.dim``
_SOFTMAX = frozenset((F.softmax, torch.softmax, Tensor.softmax))
# max-pooling callables -> (the functional form that can return indices, position of
# its return_indices argument)
_POOLS = {
    F.max_pool1d: (F.max_pool1d, 6), torch.max_pool1d: (F.max_pool1d, 6),
    F.max_pool2d: (F.max_pool2d, 6), torch.max_pool2d: (F.max_pool2d, 6),
    F.max_pool3d: (F.max_pool3d, 6), torch.max_pool3d: (F.max_pool3d, 6),
    F.adaptive_max_pool1d: (F.adaptive_max_pool1d, 2),
    F.adaptive_max_pool2d: (F.adaptive_max_pool2d, 2),
    F.adaptive_max_pool3d: (F.adaptive_max_pool3d, 2),
}


def _may_be_inplace(func, args, kwargs) -> bool:
    name = getattr(func, "__name__", "")
    return name.endswith("_") or bool(kwargs.get("inplace")) or any(a is True for a in args[1:])


@dataclass
class Saved:
    """What a rule sees in backward: the op's input and output (full batch), the
    out-of-place function (to take true local gradients), and pooling details."""

    x: Tensor | None
    y: Tensor
    fn: Callable[[Tensor], Tensor]
    indices: Tensor | None = None
    dim: int | None = None  # softmax: the (non-negative) dimension it normalises

    def local_grad(self, grad_output: Tensor) -> Tensor:
        """The ordinary gradient of the op at ``x`` for ``grad_output``."""
        with torch.enable_grad():
            x = self.x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.fn(x), x, grad_output)
        return g


class _Elementwise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, fn, call, rule, kind, inplace, dim=None):
        x_in = None if not getattr(rule, "needs_input", True) else (x.clone() if inplace else x)
        y = call(x)
        if y is x:
            ctx.mark_dirty(x)
        ctx.save_for_backward(x_in, y)
        ctx.fn, ctx.rule, ctx.kind, ctx.dim = fn, rule, kind, dim
        return y

    @staticmethod
    def backward(ctx, grad_output):
        x, y = ctx.saved_tensors
        grad = ctx.rule.backward(ctx.kind, Saved(x, y, ctx.fn, dim=ctx.dim), grad_output)
        return grad, None, None, None, None, None, None


def _softmax_dim(x: Tensor, args, kwargs) -> int:
    """The dimension a softmax call normalises (PyTorch's implicit choice for
    ``dim=None``: 0 for 0-, 1- and 3-d inputs, else 1), made non-negative."""
    dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
    if dim is None:
        dim = 0 if x.dim() in (0, 1, 3) else 1
    return dim % max(1, x.dim())


class _MaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, pool, rule):
        y, indices = pool(x)
        ctx.save_for_backward(x, y, indices)
        ctx.pool, ctx.rule = pool, rule
        return y

    @staticmethod
    def backward(ctx, grad_output):
        x, y, indices = ctx.saved_tensors
        saved = Saved(x, y, lambda t: ctx.pool(t)[0], indices)
        return ctx.rule.backward("max_pool", saved, grad_output), None, None


def scatter_to_input(values: Tensor, saved: Saved) -> Tensor:
    """Sum pooled-output ``values`` back onto the input positions given by the pooling
    indices (overlapping windows add up, as the gradient does)."""
    x, idx = saved.x, saved.indices
    flat = torch.zeros(x.shape[:2] + (x[0, 0].numel(),), dtype=values.dtype, device=values.device)
    flat.scatter_add_(2, idx.flatten(2), values.flatten(2))
    return flat.view_as(x)


def _pool_call(func, args, kwargs):
    """The pooling call as a function of its input returning (output, indices), or
    None when the caller already asked for indices (left alone)."""
    pool, flag_at = _POOLS[func]
    if kwargs.get("return_indices") or (len(args) > flag_at and args[flag_at]):
        return None
    rest = args[1:flag_at]
    kw = {k: v for k, v in kwargs.items() if k != "return_indices"}
    return lambda t: pool(t, *rest, return_indices=True, **kw)


class FunctionRules(TorchFunctionMode):
    """Within this block, the backward of every op whose kind ``rule`` lists is
    replaced by ``rule.backward``. Works on any module structure."""

    def __init__(self, rule):
        super().__init__()
        self.rule = rule
        self.kinds = frozenset(rule.kinds)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        x = args[0] if args else None
        if not isinstance(x, Tensor) or not x.requires_grad:
            return func(*args, **kwargs)
        kind = _KIND_OF.get(func)
        if kind is not None and kind in self.kinds:
            rest = args[1:]
            inplace = _may_be_inplace(func, args, kwargs)
            call = lambda t: func(t, *rest, **kwargs)  # noqa: E731
            plain = (lambda t: call(t.clone())) if inplace else call
            return _Elementwise.apply(x, plain, call, self.rule, kind, inplace)
        if func in _SOFTMAX and "softmax" in self.kinds:
            rest = args[1:]
            call = lambda t: func(t, *rest, **kwargs)  # noqa: E731
            return _Elementwise.apply(x, call, call, self.rule, "softmax", False, _softmax_dim(x, args, kwargs))
        if func in _POOLS and "max_pool" in self.kinds:
            pool = _pool_call(func, args, kwargs)
            if pool is not None:
                return _MaxPool.apply(x, pool, self.rule)
        return func(*args, **kwargs)
