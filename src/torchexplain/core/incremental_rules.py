"""The incremental rules: per function, how a :class:`~.incremental.Changed` batch
goes through it.

Each rule takes the function and its arguments as the model passed them and returns
the result (a :class:`Changed` batch, or a plain tensor when the change covers most
of the output), or ``NotImplemented`` for a form it does not cover (the call then
runs on the rows in full). Four kinds cover the common CNN vocabulary:

* sliding windows (convolutions, max and average pooling, divisible adaptive
  pooling): the output box is the input box's projective field, and the patch is the
  function applied, without padding, to the region it reads (padding filled in);
* pointwise functions (activations, batch norm in eval mode, dropout in eval mode,
  arithmetic with a constant): the same box;
* arithmetic between changed batches (residual additions): the union of the boxes;
* concatenation along channels (dense blocks): the union of the boxes.
"""

from __future__ import annotations

import inspect
import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils._pytree import tree_flatten

from .incremental import Changed, union, window_box  # imported by .incremental once Changed exists


def _usable(x) -> bool:
    return isinstance(x, Changed) and x.full is None


def _changed_in(*values) -> bool:
    return any(isinstance(v, Changed) for v in tree_flatten(values)[0])


def _base(func, input: Changed, *args, **kwargs) -> Tensor:
    """``func`` on the unperturbed activation (cached by the engine)."""
    return input.engine.base_of(func, (input,) + args, kwargs, lambda: func(input.base, *args, **kwargs))


def _same_box(func, input: Changed, *args, **kwargs) -> Changed:
    """A function of each position alone: the result changes where the input did."""
    return input.with_patch(_base(func, input, *args, **kwargs), func(input.patch, *args, **kwargs))


def _tuple(v, k: int) -> tuple[int, ...]:
    if isinstance(v, numbers.Integral):
        return (int(v),) * k
    v = tuple(int(u) for u in v)
    return v * k if len(v) == 1 else v


def _stride(stride, kernel: tuple[int, ...]) -> tuple[int, ...]:
    """A pooling stride: the kernel's when not given (None or empty)."""
    if stride is None or (not isinstance(stride, numbers.Integral) and len(stride) == 0):
        return kernel
    return _tuple(stride, len(kernel))


def _window(x: Changed, base: Tensor, kernel, stride, pad, dilation, fill, on_region, whole):
    """A sliding-window function: ``on_region(region)`` is the function, without
    padding, on each row's input region."""
    extent = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
    lo, hi = window_box(x.lo, x.hi, extent, stride, pad, tuple(base.shape[2:]))
    s = torch.tensor(stride, device=lo.device)
    p = torch.tensor(pad, device=lo.device)

    def compute(start: Tensor, size):
        region = [(n - 1) * st + e for n, st, e in zip(size, stride, extent)]
        return on_region(x.read(start * s - p, tuple(region), fill))

    return x.engine.produce(x, base, lo, hi, compute, whole)


def _conv_padding(padding, kernel, dilation) -> tuple[int, ...] | None:
    if padding == "valid":
        return (0,) * len(kernel)
    if padding == "same":
        return tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
    if isinstance(padding, str):
        return None
    return _tuple(padding, len(kernel))


def conv(func, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    if not _usable(input) or _changed_in(weight, bias):
        return NotImplemented
    kernel = tuple(weight.shape[2:])
    d, s = _tuple(dilation, len(kernel)), _tuple(stride, len(kernel))
    pad = _conv_padding(padding, kernel, d)
    if pad is None:
        return NotImplemented
    args = (weight, bias, stride, padding, dilation, groups)
    return _window(input, _base(func, input, *args), kernel, s, pad, d, 0.0,
                   lambda r: func(r, weight, bias, s, 0, d, groups), lambda: func(input.materialize(), *args))


def max_pool(func, input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    if not _usable(input) or return_indices:
        return NotImplemented
    k = input.dim() - 2
    kernel = _tuple(kernel_size, k)
    s = _stride(stride, kernel)
    d, pad = _tuple(dilation, k), _tuple(padding, k)
    args = (kernel_size, stride, padding, dilation, ceil_mode)
    return _window(input, _base(func, input, *args), kernel, s, pad, d, -math.inf,
                   lambda r: func(r, kernel, s, 0, d, False), lambda: func(input.materialize(), *args))


def avg_pool(func, input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
             divisor_override=None):
    if not _usable(input):
        return NotImplemented
    k = input.dim() - 2
    pad = _tuple(padding, k)
    # the divisor must be the kernel's size (or the override) for every window
    if divisor_override is None and (ceil_mode or (any(pad) and not count_include_pad)):
        return NotImplemented
    kernel = _tuple(kernel_size, k)
    s = _stride(stride, kernel)
    args = (kernel_size, stride, padding, ceil_mode, count_include_pad)
    extra = (divisor_override,) if divisor_override is not None else ()
    return _window(input, _base(func, input, *args, *extra), kernel, s, pad, (1,) * k, 0.0,
                   lambda r: func(r, kernel, s, 0, False, True, *extra),
                   lambda: func(input.materialize(), *args, *extra))


def adaptive_pool(func, input, output_size, *rest):
    """Adaptive pooling is a plain window when every bin has the same size."""
    if not _usable(input) or rest:
        return NotImplemented
    base = _base(func, input, output_size)
    sizes, out = tuple(input.shape[2:]), tuple(base.shape[2:])
    if sizes == out:
        return input.with_patch(base, input.patch)  # a new tensor, as PyTorch's: in place on it leaves the input
    if any(n % o for n, o in zip(sizes, out)):
        return NotImplemented
    kernel = tuple(n // o for n, o in zip(sizes, out))
    return _window(input, base, kernel, kernel, (0,) * len(kernel), (1,) * len(kernel), 0.0,
                   lambda r: func(r, tuple(r.shape[2 + d] // kernel[d] for d in range(len(kernel)))),
                   lambda: func(input.materialize(), output_size))


# --- pointwise ---------------------------------------------------------------

def _constant(v, like: Changed) -> bool:
    """Whether ``v`` is the same for every row and every position: a number, or a
    tensor that broadcasts over ``like`` with size 1 in its batch and spatial dims."""
    if isinstance(v, (numbers.Number, type(None), str, torch.dtype)):
        return True
    if isinstance(v, Changed) or not isinstance(v, Tensor):
        return False
    if v.dim() > like.dim():
        return False
    shape = (1,) * (like.dim() - v.dim()) + tuple(v.shape)
    return shape[0] == 1 and shape[1] in (1, like.shape[1]) and all(s == 1 for s in shape[2:])


def pointwise(func, input, *args, **kwargs):
    """A function of each position's channel vector (activation, eval-mode batch
    norm, arithmetic with a constant): the result changes where the input did."""
    if not _usable(input) or not all(_constant(v, input) for v in list(args) + list(kwargs.values())):
        return NotImplemented
    return _same_box(func, input, *args, **kwargs)


def _without_inplace(func):
    """A rule for a ``torch.nn.functional`` activation with an ``inplace`` argument:
    computed out of place, then written into the batch when ``inplace`` was set."""
    names = list(inspect.signature(func).parameters)

    def rule(f, *args, **kwargs):
        bound = dict(zip(names, args), **kwargs)
        inplace = bool(bound.pop("inplace", False))
        input = bound.pop(names[0], None)
        out = pointwise(f, input, **bound)
        return input.become(out) if inplace and isinstance(out, Changed) else out

    return rule


def _in_place(out_of_place):
    """A rule for an in-place method (``relu_``, ``add_``): the out-of-place rule's
    result, written into the batch."""

    def rule(f, input, *args, **kwargs):
        if not _usable(input):
            return NotImplemented
        out = RULES[out_of_place](out_of_place, input, *args, **kwargs)
        if out is NotImplemented:
            return out
        if not isinstance(out, Changed):  # computed whole: the batch becomes those rows
            input.full = out
            return out
        return input.become(out)

    return rule


def batch_norm(func, input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
               eps=1e-5):
    """Batch norm with running statistics (eval mode) is a per-channel affine map."""
    if training or running_mean is None or not _usable(input) or _changed_in(running_mean, running_var, weight, bias):
        return NotImplemented
    return _same_box(func, input, running_mean, running_var, weight, bias, False, momentum, eps)


def dropout(func, input, p=0.5, training=True, inplace=False):
    return input if not training and _usable(input) else NotImplemented


# --- several changed batches -------------------------------------------------

def binary(func, a, b, *args, **kwargs):
    """Arithmetic: with a constant, pointwise; between two changed batches of one
    shape, on the union of their boxes."""
    if isinstance(b, Changed) and not isinstance(a, Changed):
        return NotImplemented
    if not isinstance(b, Changed):
        if not _usable(a) or not _constant(b, a):
            return NotImplemented
        return _same_box(func, a, b, *args, **kwargs)
    if not (_usable(a) and _usable(b)) or a.shape != b.shape or a.example is not b.example:
        return NotImplemented
    if not all(_constant(v, a) for v in list(args) + list(kwargs.values())):
        return NotImplemented
    base = a.engine.base_of(func, (a, b) + args, kwargs, lambda: func(a.base, b.base, *args, **kwargs))
    lo, hi = union([a.box(), b.box()])
    return a.engine.produce(
        a, base, lo, hi,
        lambda start, size: func(a.read(start, size), b.read(start, size), *args, **kwargs),
        lambda: func(a.materialize(), b.materialize(), *args, **kwargs),
    )


def cat(func, tensors, dim=0, **kwargs):
    """Concatenation along the channels of changed batches of one spatial shape."""
    tensors = list(tensors)
    if kwargs or not tensors or not all(_usable(t) for t in tensors):
        return NotImplemented
    first = tensors[0]
    k = first.dim()
    if (dim + k if dim < 0 else dim) != 1 or any(
        t.shape[2:] != first.shape[2:] or t.example is not first.example for t in tensors
    ):
        return NotImplemented
    base = first.engine.base_of(func, (tensors, dim), {}, lambda: func([t.base for t in tensors], 1))
    lo, hi = union([t.box() for t in tensors])
    return first.engine.produce(
        first, base, lo, hi,
        lambda start, size: func([t.read(start, size) for t in tensors], 1),
        lambda: func([t.materialize() for t in tensors], 1),
    )


def contiguous(func, input, *args, **kwargs):
    return input  # the layout of a Changed batch is its own business


def detach(func, input):
    if not _usable(input):
        return NotImplemented
    return input.with_patch(input.base, input.patch.detach())


def requires_grad_(func, input, requires_grad=True):
    """Gradients of a changed batch flow to its patch (the chunk sizing measures
    what autograd would save for it)."""
    if not _usable(input):
        return NotImplemented
    input.patch.requires_grad_(requires_grad)
    return input


PASS_THROUGH = {
    Tensor.dim, Tensor.size, Tensor.numel, Tensor.nelement, Tensor.ndimension, Tensor.__len__,
    Tensor.is_floating_point, Tensor.is_complex, Tensor.element_size, Tensor.is_contiguous,
    Tensor.get_device, Tensor.is_inference,
    Tensor.shape.__get__, Tensor.dtype.__get__, Tensor.device.__get__, Tensor.ndim.__get__,
    Tensor.requires_grad.__get__, Tensor.is_cuda.__get__, Tensor.layout.__get__, Tensor.is_sparse.__get__,
    Tensor.is_quantized.__get__, Tensor.is_meta.__get__, Tensor.grad_fn.__get__,
}

_POINTWISE = [
    torch.relu, Tensor.relu, torch.sigmoid, Tensor.sigmoid, torch.tanh, Tensor.tanh, F.gelu, F.softplus,
    torch.clamp, Tensor.clamp, torch.clip, Tensor.clip, torch.neg, Tensor.neg, Tensor.__neg__,
    F.logsigmoid, torch.exp, Tensor.exp, torch.abs, Tensor.abs,
]
_INPLACE_ACTIVATIONS = [
    F.relu, F.relu6, F.hardtanh, F.hardswish, F.hardsigmoid, F.silu, F.mish, F.elu, F.selu, F.celu, F.leaky_relu,
]
_BINARY = [
    torch.add, Tensor.add, Tensor.__add__, Tensor.__radd__, torch.sub, Tensor.sub, Tensor.__sub__,
    Tensor.__rsub__, torch.mul, Tensor.mul, Tensor.__mul__, Tensor.__rmul__, torch.div, Tensor.div,
    Tensor.__truediv__,
]
_IN_PLACE = {
    torch.relu_: torch.relu, Tensor.relu_: Tensor.relu, Tensor.sigmoid_: Tensor.sigmoid,
    Tensor.tanh_: Tensor.tanh, Tensor.clamp_: Tensor.clamp,
    Tensor.add_: Tensor.add, Tensor.__iadd__: Tensor.add, Tensor.sub_: Tensor.sub,
    Tensor.__isub__: Tensor.sub, Tensor.mul_: Tensor.mul, Tensor.__imul__: Tensor.mul,
    Tensor.div_: Tensor.div, Tensor.__itruediv__: Tensor.div,
}

RULES: dict = {f: pointwise for f in _POINTWISE}
RULES.update({f: _without_inplace(f) for f in _INPLACE_ACTIVATIONS})
RULES.update({f: binary for f in _BINARY})
RULES.update({f: _in_place(g) for f, g in _IN_PLACE.items()})
RULES.update({f: conv for f in (torch.conv1d, torch.conv2d, torch.conv3d)})
RULES.update({f: max_pool for f in (F.max_pool1d, F.max_pool2d, F.max_pool3d, torch.max_pool1d, torch.max_pool2d)})
RULES.update({f: avg_pool for f in (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)})
RULES.update({f: adaptive_pool for f in (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)})
RULES.update({F.batch_norm: batch_norm, torch.cat: cat, torch.concat: cat, torch.concatenate: cat})
RULES.update({f: dropout for f in (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout)})
RULES.update({Tensor.contiguous: contiguous, Tensor.detach: detach, torch.detach: detach,
              Tensor.requires_grad_: requires_grad_})
