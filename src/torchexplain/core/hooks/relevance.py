"""The relevance engine behind LRP, as one context manager.

Inside :func:`relevance_rules`, what flows backward through the model is relevance,
not gradient. Every op that mixes values (dense and convolutional layers, batch norm,
pooling, sums and means, additions, products, matrix products) is intercepted at the
function level (a ``TorchFunctionMode``) and its backward replaced by an LRP rule;
elementwise activations and dropout (in training mode, its mask drawn as usual) pass
relevance through unchanged; ops that only move values
around (views, concatenation, indexing, padding) keep their ordinary backward, which
routes relevance to where each value came from. Functional, in-place, reused and
forward-created ops are all seen, and user modules are never touched.

A rule is data, read duck-typed from the object ``choose(kind, first)`` returns:

* ``eps``: the stabiliser added (with the sign of ``z``) to every denominator;
* ``groups(x, weight, bias)``: for layers, a list of ``(coefficient, [Term, ...])``;
  each group's terms sum to a ``z`` and contribute
  ``coefficient * sum(term.input * d(z)/d(term.input) . R / stabilised(z))``;
* ``identity``: when true, relevance passes unchanged (shape-preserving ops only);
* ``plain`` (optional): when true, ``groups`` is always the one term ``(x, weight, bias)``
  (the epsilon rule), so ``z`` is the layer's own output.

Ops without weights (pooling, sums, additions, products with a constant) always use
the epsilon formula ``R_in = x * J^T (R / stabilised(f(x)))`` with the rule's ``eps``.
That formula (and a plain rule's) is evaluated without recomputing anything: the
forward records ``z``'s graph and denominator, and backward takes ``J^T`` from that
graph. Other rules build their terms, and their graphs, in backward.
A product of two input-dependent factors (a gate, e.g. squeeze-excitation) gives all
relevance to the larger factor (split evenly on a tie); a division gives it to the
numerator.
"""

from __future__ import annotations

import contextlib
from functools import partial
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.overrides import TorchFunctionMode

from .functions import ELEMENTWISE_KINDS, FunctionRules

#: the op kinds a rule can be chosen for
KINDS = ("linear", "conv", "norm", "pool", "sum", "add", "product", "matmul")


class Term(NamedTuple):
    """One summand of a rule's ``z``: ``sign * op(input, weight, bias)``."""

    input: Tensor
    weight: Tensor
    bias: Tensor | None = None
    sign: float = 1.0


def stabilize(z: Tensor, eps: float) -> Tensor:
    """``z + eps * sign(z)``, with sign(0) = +1, so no denominator is zero; ``z`` itself
    when ``eps`` is 0. The sign is ``z``'s sign bit (one fused op), so -0.0 gets
    ``-eps``: a -0.0 sum only comes from zero terms, which carry no relevance anyway."""
    if eps == 0:
        return z
    return torch.copysign(z.new_full((), eps), z).add_(z)


def _ratio(relevance: Tensor, den: Tensor, eps: float) -> Tensor:
    """``R / den``; where ``eps`` cannot keep ``den`` off zero (0, or below the dtype's
    normal range), the relevance over a zero denominator is dropped."""
    s = relevance / den
    return s if eps >= torch.finfo(den.dtype).tiny else torch.where(den == 0, 0.0, s)


def _times_inputs(xs, grads) -> list[Tensor]:
    return [x * g if g is not None else torch.zeros_like(x) for x, g in zip(xs, grads)]


# --------------------------------------------------------------------------- backward rules


class _RelevanceFn(torch.autograd.Function):
    """Computes ``forward_fn(*xs)``; its backward maps output relevance to ``xs``."""

    @staticmethod
    def forward(ctx, forward_fn, relevance_fn, *xs):
        ctx.relevance_fn = relevance_fn
        ctx.save_for_backward(*xs)
        out = forward_fn(*xs)
        return out.clone() if any(out is x for x in xs) else out

    @staticmethod
    @once_differentiable
    def backward(ctx, relevance):
        return (None, None, *ctx.relevance_fn(ctx.saved_tensors, relevance))


class _EpsilonFn(torch.autograd.Function):
    """The epsilon rule ``x * J^T (R / stabilised z)`` for ``z = fn(*xs)``. ``z`` is
    computed once, in forward, and its graph kept: backward takes ``J^T`` from it
    instead of recomputing the op. The op's output is ``z``, or ``output(*xs)`` when
    given (e.g. batch norm, whose ``z`` is its affine form)."""

    @staticmethod
    def forward(ctx, fn, output, eps, *xs):
        with torch.enable_grad():
            leaves = [x.detach().requires_grad_(True) for x in xs]
            z = fn(*leaves)
        plain = z.detach()
        den = stabilize(plain, eps)
        if output is not None:
            out = output(*xs)
        else:  # the output may be changed in place later: it must not be den nor an input
            out = plain.clone() if den is plain or any(z is leaf for leaf in leaves) else plain
        ctx.eps, ctx.graph = eps, (z, leaves)
        ctx.save_for_backward(den, *xs)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, relevance):
        if ctx.graph is None:
            raise RuntimeError("relevance can be propagated back through an op only once")
        (z, leaves), ctx.graph = ctx.graph, None
        den, *xs = ctx.saved_tensors
        grads = torch.autograd.grad(z, leaves, _ratio(relevance, den, ctx.eps), allow_unused=True)
        return (None, None, None, *_times_inputs(xs, grads))


def _input_relevance(z: Tensor, leaves: list[Tensor], relevance: Tensor, eps: float) -> list[Tensor]:
    """``leaf * d(z)/d(leaf) . (R / stabilised z)`` for every leaf."""
    s = _ratio(relevance, stabilize(z.detach(), eps), eps)
    return _times_inputs([leaf.detach() for leaf in leaves], torch.autograd.grad(z, leaves, s, allow_unused=True))


def layer_relevance(op: Callable, weight: Tensor, bias: Tensor | None, rule) -> Callable:
    """A rule's groups for a layer ``op(x, weight, bias)``, evaluated in backward."""

    def relevance_fn(xs, relevance):
        (x,) = xs
        total = None
        for coefficient, terms in rule.groups(x, weight, bias):
            with torch.enable_grad():
                leaves = [torch.broadcast_to(t.input, x.shape).detach().requires_grad_(True) for t in terms]
                parts = [op(leaf, t.weight, t.bias) for t, leaf in zip(terms, leaves)]
                z = _signed_sum([t.sign for t in terms], parts)
            group = _signed_sum([1.0] * len(terms), _input_relevance(z, leaves, relevance, rule.eps))
            group = group if coefficient == 1 else coefficient * group
            total = group if total is None else total + group
        return [torch.zeros_like(x) if total is None else total]

    return relevance_fn


def _signed_sum(signs: list[float], parts: list[Tensor]) -> Tensor:
    total = None
    for sign, p in zip(signs, parts):
        p = p if sign == 1 else sign * p
        total = p if total is None else total + p
    return total


def identity_relevance(xs, relevance):
    """Relevance passes unchanged (the identity rule)."""
    return [relevance]


def gate_relevance(signal: list[bool]) -> Callable:
    """All relevance to the ``signal`` factors (split evenly), none to the others."""

    def relevance_fn(xs, relevance):
        share = 1.0 / max(1, sum(signal))
        return [
            relevance.sum_to_size(x.shape) * share if s else torch.zeros_like(x) for x, s in zip(xs, signal)
        ]

    return relevance_fn


# --------------------------------------------------------------------------- intercepted ops


def _needs(a) -> bool:
    return isinstance(a, Tensor) and a.requires_grad and a.is_floating_point()


def _layer_args(input, weight, bias=None, *rest, **kwargs):
    return input, weight, bias, rest, kwargs


def _norm_args(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    return running_mean, running_var, weight, bias, training, eps


def _affine(t: Tensor, scale: Tensor, shift: Tensor | None) -> Tensor:
    """Batch norm in eval mode as a per-channel affine map (channels on dim 1)."""
    shape = (1, -1) + (1,) * (t.dim() - 2)
    out = t * scale.reshape(shape)
    return out if shift is None else out + shift.reshape(shape)


def _is_identity(rule) -> bool:
    return bool(getattr(rule, "identity", False))


def _apply(forward, relevance, xs, identity: bool = False) -> Tensor:
    out = _RelevanceFn.apply(forward, relevance, *xs)
    if identity and (len(xs) != 1 or out.shape != xs[0].shape):
        shapes = ", ".join(str(tuple(x.shape)) for x in xs)
        raise ValueError(
            f"the identity rule applies only to ops with one input-dependent argument and an output of its "
            f"shape; got inputs {shapes} and output {tuple(out.shape)}"
        )
    return out


def _by_rule(rule, x: Tensor, op: Callable, weight: Tensor, bias: Tensor | None, output=None) -> Tensor:
    """The layer ``op(x, weight, bias)`` under ``rule``; its value is ``output(x)`` when
    given. A plain rule (its one term the layer itself) reuses the forward's graph."""
    z = lambda t: op(t, weight, bias)  # noqa: E731
    if _is_identity(rule):
        return _apply(output or z, identity_relevance, [x], True)
    if getattr(rule, "plain", False):
        return _EpsilonFn.apply(z, output, rule.eps, x)
    return _apply(output or z, layer_relevance(op, weight, bias, rule), [x])


def _epsilon(rule, forward: Callable, xs: list[Tensor]) -> Tensor:
    """An op without weights: the epsilon rule with the rule's ``eps``, or the identity."""
    if _is_identity(rule):
        return _apply(forward, identity_relevance, xs, True)
    return _EpsilonFn.apply(forward, None, rule.eps, *xs)


def _layer(mode, func, args, kwargs, kind):
    x, weight, bias, rest, kw = _layer_args(*args, **kwargs)
    if not _needs(x):
        return NotImplemented
    op = lambda t, w, b: func(t, w, b, *rest, **kw)  # noqa: E731
    return _by_rule(mode.choose(kind, mode.first_layer()), x, op, weight, bias)


def _norm(mode, func, args, kwargs, kind):
    x = args[0]
    if not _needs(x):
        return NotImplemented
    mean, var, weight, bias, training, eps = _norm_args(*args, **kwargs)
    rule = mode.choose(kind, False)
    forward = lambda t: func(t, *args[1:], **kwargs)  # noqa: E731
    if training or mean is None or var is None:  # batch statistics: z is the op itself, run once
        return _epsilon(rule, forward, [x])
    scale = torch.rsqrt(var + eps)
    scale = scale if weight is None else weight * scale
    shift = -mean * scale if bias is None else bias - mean * scale
    return _by_rule(rule, x, _affine, scale.detach(), shift.detach(), forward)


def _dropout_args(input, p=0.5, training=True, inplace=False):
    return p, training, inplace


def _dropout(mode, func, args, kwargs):
    """Dropout (any variant) in training mode: the forward draws its mask as usual and
    relevance passes unchanged (the identity rule), so the relevance of a pass sums to
    that pass's own output. In eval mode dropout is the identity anyway."""
    x = args[0]
    p, training, inplace = _dropout_args(*args, **kwargs)
    if not _needs(x) or not training:
        return NotImplemented
    out = _apply(lambda t: func(t, p, True, False), identity_relevance, [x.clone() if inplace else x], True)
    return x.copy_(out) if inplace else out


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
    positions = [i for i, a in enumerate(args) if _needs(a)]
    if not positions or _returns_indices(func, args, kwargs):
        return NotImplemented
    if (kind == "add" and len(positions) < 2) or (kind == "matmul" and len(positions) > 1):
        return NotImplemented
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
        out = _apply(forward, gate_relevance(signal), xs)
    else:
        out = _epsilon(mode.choose(kind, False), forward, xs)
    if not inplace:
        return out
    return args[0].copy_(out)


def _table() -> dict:
    table = {}
    for f in (F.linear,):
        table[f] = partial(_layer, kind="linear")
    for f in (F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d):
        table[f] = partial(_layer, kind="conv")
    table[F.batch_norm] = partial(_norm, kind="norm")
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
    return table


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

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        handler = _HANDLERS.get(func)
        if handler is not None and "out" not in kwargs and torch.is_grad_enabled() and any(map(_needs, args)):
            out = handler(self, func, args, kwargs)
            if out is not NotImplemented:
                return out
        return func(*args, **kwargs)


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
