"""How the relevance engine evaluates a rule on one op: the autograd functions whose
backward hands relevance from an op's output to its inputs.

* :func:`epsilon_rule`: ``R_in = share * x * J^T (R / stabilised z)`` for ``z = f(*xs)``,
  with ``J^T`` taken from the graph the forward kept (nothing is recomputed). ``share``
  is 1 for an op linear in its one input-dependent argument (then the rule conserves
  ``sum R`` up to the stabiliser and any bias inside ``z``) and ``1/n`` for each factor
  of a product of ``n`` input-dependent factors (a matrix product ``a @ b``, an
  einsum): such a product is linear in each factor, so each factor's
  ``x * J^T (R / z)`` sums to ``sum R`` and the shares together conserve it
  (AttnLRP's uniform rule, Achtibat et al. 2024).
* :func:`by_rule`: a layer ``op(x, weight, bias)`` under a rule's groups of terms.
* :func:`apply_rule`: any forward with a hand-written relevance function
  (:func:`identity_relevance`, :func:`gate_relevance`, the softmax rule).

The engine's handlers (:mod:`.relevance`, :mod:`.attention`) build on these.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


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


def ratio(relevance: Tensor, den: Tensor, eps: float) -> Tensor:
    """``R / den``; where ``eps`` cannot keep ``den`` off zero (0, or below the dtype's
    normal range), the relevance over a zero denominator is dropped."""
    s = relevance / den
    return s if eps >= torch.finfo(den.dtype).tiny else torch.where(den == 0, 0.0, s)


def _times_inputs(xs, grads, shares: Sequence[float] | None = None) -> list[Tensor]:
    out = [x * g if g is not None else torch.zeros_like(x) for x, g in zip(xs, grads)]
    if shares is None:
        return out
    return [r if s == 1 else r * s for r, s in zip(out, shares)]


def needs(a) -> bool:
    """Whether ``a`` is an input-dependent floating-point tensor."""
    return isinstance(a, Tensor) and a.requires_grad and a.is_floating_point()


def is_identity(rule) -> bool:
    return bool(getattr(rule, "identity", False))


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
    """The epsilon rule ``share_k * x_k * J_k^T (R / stabilised z)`` for ``z = fn(*xs)``.
    ``z`` is computed once, in forward, and its graph kept: backward takes ``J^T`` from
    it instead of recomputing the op. The op's output is ``z``, or ``output(*xs)`` when
    given (e.g. batch norm, whose ``z`` is its affine form). ``shares`` (None: all 1)
    weighs each input's relevance."""

    @staticmethod
    def forward(ctx, fn, output, eps, shares, *xs):
        with torch.enable_grad():
            leaves = [x.detach().requires_grad_(True) for x in xs]
            z = fn(*leaves)
        plain = z.detach()
        den = stabilize(plain, eps)
        if output is not None:
            out = output(*xs)
        else:  # the output may be changed in place later: it must not be den nor an input
            out = plain.clone() if den is plain or any(z is leaf for leaf in leaves) else plain
        ctx.eps, ctx.shares, ctx.graph = eps, shares, (z, leaves)
        ctx.save_for_backward(den, *xs)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, relevance):
        if ctx.graph is None:
            raise RuntimeError("relevance can be propagated back through an op only once")
        (z, leaves), ctx.graph = ctx.graph, None
        den, *xs = ctx.saved_tensors
        grads = torch.autograd.grad(z, leaves, ratio(relevance, den, ctx.eps), allow_unused=True)
        return (None, None, None, None, *_times_inputs(xs, grads, ctx.shares))


def _input_relevance(z: Tensor, leaves: list[Tensor], relevance: Tensor, eps: float) -> list[Tensor]:
    """``leaf * d(z)/d(leaf) . (R / stabilised z)`` for every leaf."""
    s = ratio(relevance, stabilize(z.detach(), eps), eps)
    return _times_inputs([leaf.detach() for leaf in leaves], torch.autograd.grad(z, leaves, s, allow_unused=True))


def _signed_sum(signs: list[float], parts: list[Tensor]) -> Tensor:
    total = None
    for sign, p in zip(signs, parts):
        p = p if sign == 1 else sign * p
        total = p if total is None else total + p
    return total


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


def identity_relevance(xs, relevance):
    """Relevance passes unchanged (the identity rule)."""
    return [relevance]


def gate_relevance(signal: list[bool]) -> Callable:
    """All relevance to the ``signal`` factors (split evenly), none to the others; a
    broadcast factor gets the relevance of every output it took part in."""

    def relevance_fn(xs, relevance):
        share = 1.0 / max(1, sum(signal))
        return [
            relevance.sum_to_size(x.shape) * share if s else torch.zeros_like(x) for x, s in zip(xs, signal)
        ]

    return relevance_fn


def apply_rule(forward: Callable, relevance: Callable, xs: list[Tensor], identity: bool = False) -> Tensor:
    """``forward(*xs)`` whose backward is ``relevance(xs, R)``; ``identity`` checks the op
    keeps its one input's shape (the identity rule's precondition)."""
    out = _RelevanceFn.apply(forward, relevance, *xs)
    if identity and (len(xs) != 1 or out.shape != xs[0].shape):
        shapes = ", ".join(str(tuple(x.shape)) for x in xs)
        raise ValueError(
            f"the identity rule applies only to ops with one input-dependent argument and an output of its "
            f"shape; got inputs {shapes} and output {tuple(out.shape)}"
        )
    return out


def by_rule(rule, x: Tensor, op: Callable, weight: Tensor, bias: Tensor | None, output=None) -> Tensor:
    """The layer ``op(x, weight, bias)`` under ``rule``; its value is ``output(x)`` when
    given. A plain rule (its one term the layer itself) reuses the forward's graph."""
    z = lambda t: op(t, weight, bias)  # noqa: E731
    if is_identity(rule):
        return apply_rule(output or z, identity_relevance, [x], True)
    if getattr(rule, "plain", False):
        return _EpsilonFn.apply(z, output, rule.eps, None, x)
    return apply_rule(output or z, layer_relevance(op, weight, bias, rule), [x])


def epsilon_rule(rule, forward: Callable, xs: list[Tensor], shares: Sequence[float] | None = None) -> Tensor:
    """An op without weights: the epsilon rule with the rule's ``eps`` (each input's
    relevance weighed by ``shares``), or the identity."""
    if shares is None and is_identity(rule):
        return apply_rule(forward, identity_relevance, xs, True)
    return _EpsilonFn.apply(forward, None, rule.eps, None if shares is None else tuple(shares), *xs)
