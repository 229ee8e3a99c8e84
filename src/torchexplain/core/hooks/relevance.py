"""The relevance engine behind LRP, as one context manager.

Inside :func:`relevance_rules`, what flows backward through the model is relevance,
not gradient. Every op that mixes values (dense and convolutional layers, batch, layer
and RMS norms, pooling, sums and means, additions, products, matrix products, softmax,
attention) is intercepted at the function level (a ``TorchFunctionMode``) and its
backward replaced by an LRP rule; elementwise activations, elementwise math (``-x``,
``x ** p``, ``sqrt``, ``rsqrt``, ``exp``, ``log``, ``abs``, ``erf``, ``clamp``, ...) and
dropout (in training mode, its mask drawn as usual) pass relevance through unchanged;
ops that only move values around (views, concatenation, indexing, padding, dtype
casts) keep their ordinary backward, which routes relevance to where each value came
from. Functional, in-place, reused and forward-created ops are all seen, and user
modules are never touched.

A rule is data, read duck-typed from the object ``choose(kind, first)`` returns:

* ``eps``: the stabiliser added (with the sign of ``z``) to every denominator;
* ``groups(x, weight, bias)``: for layers, a list of ``(coefficient, [Term, ...])``;
  each group's terms sum to a ``z`` and contribute
  ``coefficient * sum(term.input * d(z)/d(term.input) . R / stabilised(z))``;
* ``identity``: when true, relevance passes unchanged (shape-preserving ops only);
* ``plain`` (optional): when true, ``groups`` is always the one term ``(x, weight, bias)``
  (the epsilon rule), so ``z`` is the layer's own output;
* ``constant`` (optional, softmax only): when true, the op's output is a constant
  (detached), so no relevance flows through it (CP-LRP's attention probabilities).

Ops without weights (pooling, sums, additions, products with a constant) always use
the epsilon formula ``R_in = x * J^T (R / stabilised(f(x)))`` with the rule's ``eps``.
That formula (and a plain rule's) is evaluated without recomputing anything: the
forward records ``z``'s graph and denominator, and backward takes ``J^T`` from that
graph. Other rules build their terms, and their graphs, in backward.

A matrix product (``matmul``, ``bmm``, ``einsum``, ...) of two (or ``n``)
input-dependent factors, e.g. ``q @ k^T`` or ``attn @ v``, is kind "attention": each
factor gets ``1/n`` of the epsilon formula (AttnLRP's uniform rule; conservative, see
:mod:`.propagation`). An elementwise product of two input-dependent factors (a gate,
e.g. squeeze-excitation or SwiGLU) gives all relevance to the larger factor (split
evenly on a tie, which for same-shape factors is the uniform rule); a division gives
it to the numerator. Softmax, ``scaled_dot_product_attention`` and
``multi_head_attention_forward`` are in :mod:`.attention`.

Layer norm and RMS norm (``F.layer_norm``, ``F.rms_norm``; kind "norm") treat the
standard deviation (root mean square) as a constant computed in the forward pass and
apply the rule to the rest, a linear map: ``z = (x - mean(x)) * c * w + b`` (``c =
1/std``, AttnLRP's identity rule on the normalisation). At ``eps = 0`` without bias
this conserves relevance; the bias absorbs its share as in a dense layer. A norm
written out with elementwise ops (Hugging Face's ``LlamaRMSNorm``: ``x *
rsqrt(mean(x ** 2) + eps) * w``) gets the same: the product gives everything to the
larger factor ``x``, nothing to the ``rsqrt`` branch.
"""

from __future__ import annotations

import contextlib
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from . import attention
from .functions import ELEMENTWISE_KINDS, FunctionRules
from .propagation import (
    Term,
    apply_rule,
    by_rule,
    epsilon_rule,
    gate_relevance,
    identity_relevance,
    needs,
    stabilize,
)

__all__ = ["KINDS", "RelevanceMode", "Term", "relevance_rules", "stabilize"]

#: the op kinds a rule can be chosen for
KINDS = ("linear", "conv", "norm", "pool", "sum", "add", "product", "matmul", "attention", "softmax")

#: the kinds a ``constant`` rule may be chosen for
_CONSTANT_KINDS = ("softmax",)


# --------------------------------------------------------------------------- layers and norms


def _layer_args(input, weight, bias=None, *rest, **kwargs):
    return input, weight, bias, rest, kwargs


def _norm_args(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    return running_mean, running_var, weight, bias, training, eps


def _affine(t: Tensor, scale: Tensor, shift: Tensor | None) -> Tensor:
    """Batch norm in eval mode as a per-channel affine map (channels on dim 1)."""
    shape = (1, -1) + (1,) * (t.dim() - 2)
    out = t * scale.reshape(shape)
    return out if shift is None else out + shift.reshape(shape)


def _layer(mode, func, args, kwargs, kind):
    x, weight, bias, rest, kw = _layer_args(*args, **kwargs)
    if not needs(x):
        return NotImplemented
    op = lambda t, w, b: func(t, w, b, *rest, **kw)  # noqa: E731
    return by_rule(mode.rule(kind, mode.first_layer()), x, op, weight, bias)


def _addmm_args(input, mat1, mat2, *, beta=1, alpha=1):
    return input, mat1, mat2, beta, alpha


def _addmm(mode, func, args, kwargs):
    """``beta * input + alpha * mat1 @ mat2``: a dense layer (kind "linear", e.g.
    Hugging Face's ``Conv1D``) when only ``mat1`` depends on the input; otherwise the
    epsilon formula with ``input`` whole and the input-dependent factors sharing."""
    bias, x, weight, beta, alpha = _addmm_args(*args, **kwargs)
    if needs(x) and not needs(bias) and not needs(weight):

        def op(t, w, b):
            if b is None:
                return torch.mm(t, w) if alpha == 1 else alpha * torch.mm(t, w)
            return torch.addmm(b, t, w, beta=beta, alpha=alpha)

        return by_rule(mode.rule("linear", mode.first_layer()), x, op, weight, bias)
    return attention.product(mode, func, args, kwargs, additive=(0,))


def _norm(mode, func, args, kwargs, kind):
    x = args[0]
    if not needs(x):
        return NotImplemented
    mean, var, weight, bias, training, eps = _norm_args(*args, **kwargs)
    rule = mode.rule(kind, False)
    forward = lambda t: func(t, *args[1:], **kwargs)  # noqa: E731
    if training or mean is None or var is None:  # batch statistics: z is the op itself, run once
        return epsilon_rule(rule, forward, [x])
    scale = torch.rsqrt(var + eps)
    scale = scale if weight is None else weight * scale
    shift = -mean * scale if bias is None else bias - mean * scale
    return by_rule(rule, x, _affine, scale.detach(), shift.detach(), forward)


def _layer_norm_args(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    return normalized_shape, weight, bias, eps


def _rms_norm_args(input, normalized_shape, weight=None, eps=None):
    return normalized_shape, weight, None, eps


def _last_dims(shape) -> tuple[int, ...]:
    n = 1 if isinstance(shape, int) else len(shape)
    return tuple(range(-n, 0))


def _normalised(mode, func, args, kwargs, centre: bool):
    """Layer norm (``centre``) or RMS norm with the standard deviation (root mean
    square) a constant: ``z = (x - mean(x)) * c * w + b`` under the "norm" rule."""
    x = args[0]
    if not needs(x):
        return NotImplemented
    shape, weight, bias, eps = (_layer_norm_args if centre else _rms_norm_args)(*args, **kwargs)
    dims = _last_dims(shape)
    with torch.no_grad():
        t = x.detach()
        if centre:
            spread = t.var(dims, unbiased=False, keepdim=True)
        else:
            spread = t.pow(2).mean(dims, keepdim=True)
            eps = torch.finfo(x.dtype).eps if eps is None else eps
        c = torch.rsqrt(spread + eps)
    weight = x.new_ones(x.shape[len(x.shape) - len(dims):]) if weight is None else weight

    def op(t, w, b):
        t = (t - t.mean(dims, keepdim=True)) if centre else t
        t = t * c * w
        return t if b is None else t + b

    forward = lambda t: func(t, *args[1:], **kwargs)  # noqa: E731
    return by_rule(mode.rule("norm", False), x, op, weight, bias, forward)


# --------------------------------------------------------------------------- ops without weights


def _dropout_args(input, p=0.5, training=True, inplace=False):
    return p, training, inplace


def _dropout(mode, func, args, kwargs):
    """Dropout (any variant) in training mode: the forward draws its mask as usual and
    relevance passes unchanged (the identity rule), so the relevance of a pass sums to
    that pass's own output. In eval mode dropout is the identity anyway."""
    x = args[0]
    p, training, inplace = _dropout_args(*args, **kwargs)
    if not needs(x) or not training:
        return NotImplemented
    out = apply_rule(lambda t: func(t, p, True, False), identity_relevance, [x.clone() if inplace else x], True)
    return x.copy_(out) if inplace else out


def _elementwise(mode, func, args, kwargs):
    """Elementwise math of one input-dependent argument (``-x``, ``x ** 3``, ``rsqrt``):
    relevance passes unchanged, as through an activation (summed over broadcasting)."""
    positions = [i for i, a in enumerate(args) if needs(a)]
    if len(positions) != 1:
        return NotImplemented
    (p,) = positions

    def forward(t):
        a = list(args)
        a[p] = t
        return func(*a, **kwargs)

    return apply_rule(forward, gate_relevance([True]), [args[p]])


def _returns_indices(func, args, kwargs) -> bool:
    position = _INDICES_AT.get(func)
    if position is None:
        return False
    return bool(kwargs.get("return_indices")) or (len(args) > position and bool(args[position]))


def _gate(func, args, positions) -> list[bool] | None:
    """Which input-dependent factors of a product are the signal, or None when the
    product is linear in its one input-dependent factor."""
    if func in _DIVISIONS:
        return [p == 0 for p in positions] if 1 in positions else None
    if len(positions) < 2:
        return None
    sizes = [args[p].numel() for p in positions]
    return [s == max(sizes) for s in sizes]


def _linear_op(mode, func, args, kwargs, kind, oop=None, inplace=False):
    positions = [i for i, a in enumerate(args) if needs(a)]
    if not positions or _returns_indices(func, args, kwargs):
        return NotImplemented
    if kind == "add" and len(positions) < 2:
        return NotImplemented
    if kind == "matmul" and len(positions) > 1:
        return attention.product(mode, func, args, kwargs)
    oop = oop or func

    def forward(*ts):
        a = list(args)
        for i, t in zip(positions, ts):
            a[i] = t
        return oop(*a, **kwargs)

    signal = _gate(func, args, positions) if kind == "product" else None
    xs = [args[i] for i in positions]
    if inplace and positions[0] == 0:
        xs[0] = xs[0].clone()
    if signal is not None:
        out = apply_rule(forward, gate_relevance(signal), xs)
    else:
        out = epsilon_rule(mode.rule(kind, False), forward, xs)
    if not inplace:
        return out
    return args[0].copy_(out)


# --------------------------------------------------------------------------- the table


def _table() -> dict:
    table = {}
    table[F.linear] = partial(_layer, kind="linear")
    table[torch.addmm] = table[Tensor.addmm] = _addmm
    for f in (F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d):
        table[f] = partial(_layer, kind="conv")
    table[F.batch_norm] = partial(_norm, kind="norm")
    table[F.layer_norm] = partial(_normalised, centre=True)
    table[F.rms_norm] = partial(_normalised, centre=False)
    for f in (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout):
        table[f] = _dropout
    pools = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
             F.adaptive_avg_pool3d, F.max_pool1d, F.max_pool2d, F.max_pool3d, F.adaptive_max_pool1d,
             F.adaptive_max_pool2d, F.adaptive_max_pool3d)  # fmt: skip
    table.update({f: partial(_linear_op, kind="pool") for f in pools})
    table.update({f: partial(_linear_op, kind="sum") for f in (torch.sum, Tensor.sum, torch.mean, Tensor.mean)})
    binary = {
        "add": (torch.add, (torch.add, Tensor.add, Tensor.__add__, Tensor.__radd__), (Tensor.add_, Tensor.__iadd__)),
        "sub": (torch.sub, (torch.sub, Tensor.sub, Tensor.__sub__), (Tensor.sub_, Tensor.__isub__)),
        "mul": (torch.mul, (torch.mul, Tensor.mul, Tensor.__mul__, Tensor.__rmul__), (Tensor.mul_, Tensor.__imul__)),
        "div": (torch.div, (torch.div, Tensor.div, Tensor.__truediv__), (Tensor.div_, Tensor.__itruediv__)),
    }
    for name, (oop, plain, inplace) in binary.items():
        kind = "add" if name in ("add", "sub") else "product"
        table.update({f: partial(_linear_op, kind=kind, oop=oop) for f in plain})
        table.update({f: partial(_linear_op, kind=kind, oop=oop, inplace=True) for f in inplace})
    table[Tensor.__rsub__] = partial(_linear_op, kind="add", oop=torch.rsub)
    matmuls = (torch.matmul, Tensor.matmul, Tensor.__matmul__, torch.mm, Tensor.mm, torch.bmm, Tensor.bmm)
    table.update({f: partial(_linear_op, kind="matmul") for f in matmuls})
    table.update({f: _elementwise for f in _ELEMENTWISE_MATH})
    table.update(attention.HANDLERS)
    return table


_ELEMENTWISE_MATH = (
    torch.neg, torch.negative, Tensor.neg, Tensor.negative, Tensor.__neg__,
    torch.pow, Tensor.pow, Tensor.__pow__, Tensor.__rpow__, torch.square, Tensor.square,
    torch.sqrt, Tensor.sqrt, torch.rsqrt, Tensor.rsqrt, torch.exp, Tensor.exp, torch.log, Tensor.log,
    torch.reciprocal, Tensor.reciprocal, torch.abs, Tensor.abs, Tensor.__abs__, torch.erf, Tensor.erf,
    torch.sin, Tensor.sin, torch.cos, Tensor.cos, torch.clamp, Tensor.clamp, torch.clip, Tensor.clip,
)  # fmt: skip
_INDICES_AT = {F.max_pool1d: 6, F.max_pool2d: 6, F.max_pool3d: 6,
               F.adaptive_max_pool1d: 2, F.adaptive_max_pool2d: 2, F.adaptive_max_pool3d: 2}  # fmt: skip
_DIVISIONS = frozenset((torch.div, Tensor.div, Tensor.__truediv__, Tensor.div_, Tensor.__itruediv__))
_HANDLERS = _table()


class RelevanceMode(TorchFunctionMode):
    """Replaces the backward of every intercepted op by the rule ``choose(kind, first)``
    returns; ``first`` is true for the first dense or convolutional layer of the pass."""

    def __init__(self, choose: Callable):
        super().__init__()
        self.choose = choose
        self._layers = 0

    def first_layer(self) -> bool:
        self._layers += 1
        return self._layers == 1

    def rule(self, kind: str, first: bool):
        """The rule chosen for an op of ``kind``, checked where only some kinds take it."""
        rule = self.choose(kind, first)
        if getattr(rule, "constant", False) and kind not in _CONSTANT_KINDS:
            raise ValueError(
                f"{rule!r} (the op's output treated as a constant) applies to {', '.join(_CONSTANT_KINDS)} ops "
                f"only; it was chosen for a {kind} op"
            )
        return rule

    def dispatch(self, func, args=(), kwargs=None):
        """``func(*args, **kwargs)`` under the rules. Ops run inside a handler are not
        seen by this mode (it is off while its ``__torch_function__`` runs), so
        decompositions (attention) route their ops through here explicitly."""
        kwargs = kwargs or {}
        handler = _HANDLERS.get(func)
        if handler is not None and "out" not in kwargs and torch.is_grad_enabled() and any(map(needs, args)):
            out = handler(self, func, args, kwargs)
            if out is not NotImplemented:
                return out
        return func(*args, **kwargs)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return self.dispatch(func, args, kwargs)


class _PassActivations:
    """Elementwise activations hand relevance on unchanged."""

    kinds = tuple(ELEMENTWISE_KINDS)
    needs_input = False

    def backward(self, kind, saved, grad):
        return grad


@contextlib.contextmanager
def relevance_rules(choose: Callable):
    """Within this block, backward passes carry relevance under the rules ``choose``
    picks; see the module docstring."""
    with FunctionRules(_PassActivations()), RelevanceMode(choose):
        yield
