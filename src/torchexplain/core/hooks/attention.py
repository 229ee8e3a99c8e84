"""Attention in the relevance engine: AttnLRP (Achtibat et al., ICML 2024) and CP-LRP
(Ali et al., ICML 2022).

* Products of input-dependent factors (``q @ k^T``, ``attn @ v``, an einsum, ``baddbmm``;
  kind "attention" when two or more factors depend on the input): AttnLRP's uniform
  rule, each of ``n`` factors ``a`` gets ``R_a = (1/n) * a * J_a^T (R / z)``. The product
  is linear in each factor, so every factor's ``a * J_a^T (R / z)`` sums to ``sum R``
  and the shares conserve it (up to the rule's stabiliser).
* Softmax (kind "softmax"): AttnLRP's rule, the epsilon formula at the softmax,
  ``R_in = x * J^T (R / s) = x * (R - s * sum_j R_j)`` (``s`` the softmax, sums over its
  dimension; the rule's ``eps`` stabilises ``s``). It does not conserve relevance:
  ``sum_i R_in_i = sum_i R_i * (x_i - sum_j s_j x_j)``, the relevance-weighted logits
  minus their softmax mean, so the rest, ``sum_i R_i * (1 - x_i + sum_j s_j x_j)``, is
  absorbed (the "bias" of the softmax's Taylor expansion). Masked logits (``-inf``, or
  the dtype's minimum) get no relevance and never NaN. ``log_softmax`` gets the epsilon
  formula at its own output ``y = x - logsumexp(x)``: ``R_in = x * (R / y - s * sum_j R_j
  / y_j)``. A ``constant`` rule (CP-LRP) makes the softmax output a constant (detached):
  no relevance flows into the logits, so in ``attn @ v`` all of it goes to the values,
  and relevance is conserved. (``log_softmax`` outputs are log-probabilities, not
  attention weights: a constant rule gives them the epsilon formula at ``eps`` 0.)
* ``F.scaled_dot_product_attention`` and ``F.multi_head_attention_forward``
  (``nn.MultiheadAttention``, ``nn.Transformer*Layer``) are decomposed into their
  projections, ``q @ k^T * scale``, the mask, softmax, dropout and ``attn @ v``, each
  routed through the engine (:meth:`RelevanceMode.dispatch`: ops run inside a handler
  are not seen by the mode), so they get the same rules as attention written out
  (Hugging Face's "eager" attention): causal masks, boolean and additive masks, key
  padding masks, ``scale``, grouped-query attention (``enable_gqa``), ``bias_k`` and
  ``bias_v``, ``add_zero_attn`` and averaged attention weights are honoured.
"""

from __future__ import annotations

import inspect
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .functions import _softmax_dim
from .propagation import apply_rule, epsilon_rule, identity_relevance, is_identity, needs, ratio, stabilize

# --------------------------------------------------------------------------- products


def product(mode, func, args, kwargs, additive: tuple[int, ...] = ()) -> Tensor:
    """``func(*args)`` linear in each input-dependent argument: the epsilon formula,
    each of the ``n`` input-dependent factors weighted ``1/n`` (kind "attention" when
    ``n > 1``, else "matmul"); arguments at the ``additive`` positions (``addmm``'s
    ``input``) are summands, weighted 1."""
    positions = [i for i, a in enumerate(args) if needs(a)]
    if not positions:
        return NotImplemented
    factors = [p for p in positions if p not in additive]
    shares = [1.0 if p in additive else 1.0 / max(1, len(factors)) for p in positions]

    def forward(*ts):
        a = list(args)
        for i, t in zip(positions, ts):
            a[i] = t
        return func(*a, **kwargs)

    rule = mode.rule("attention" if len(factors) > 1 else "matmul", False)
    return epsilon_rule(rule, forward, [args[p] for p in positions], None if min(shares) == 1 else shares)


# --------------------------------------------------------------------------- softmax

_SOFTMAX = (F.softmax, torch.softmax, Tensor.softmax)
_LOG_SOFTMAX = (F.log_softmax, torch.log_softmax, Tensor.log_softmax)


def softmax_relevance(forward: Callable, dim: int, eps: float, log: bool) -> Callable:
    """``R_in = x * J^T (R / stabilised y)`` for ``y = forward(x)``, a softmax (``s``) or a
    log-softmax over ``dim``; ``J^T u`` is ``s * (u - sum(s * u))`` for the softmax and
    ``u - s * sum(u)`` for the log-softmax. Non-finite logits (masked) get 0."""

    def relevance_fn(xs, relevance):
        (x,) = xs
        y = forward(x)
        u = ratio(relevance.to(y.dtype), stabilize(y, eps), eps)
        if log:
            g = u - y.exp() * u.sum(dim, keepdim=True)
        else:
            g = y * (u - (y * u).sum(dim, keepdim=True))
        return [torch.where(torch.isfinite(x), x * g, 0).to(x.dtype)]

    return relevance_fn


def softmax(mode, func, args, kwargs):
    x = args[0]
    if not needs(x):
        return NotImplemented
    log = func in _LOG_SOFTMAX
    rule = mode.rule("softmax", False)
    forward = lambda t: func(t, *args[1:], **kwargs)  # noqa: E731
    constant = bool(getattr(rule, "constant", False))
    if constant and not log:
        return forward(x.detach())
    if is_identity(rule):
        return apply_rule(forward, identity_relevance, [x], True)
    eps = 0.0 if constant else rule.eps
    return apply_rule(forward, softmax_relevance(forward, _softmax_dim(x, args, kwargs), eps, log), [x])


# --------------------------------------------------------------------------- attention


def attend(mode, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout_p: float = 0.0,
           scale: float | None = None, gqa: bool = False) -> tuple[Tensor, Tensor]:
    """``softmax(q @ k^T * scale + mask) @ v`` with every op under the rules, and the
    attention probabilities. ``mask`` is additive (0 or ``-inf``) or None; rows whose
    logits are all ``-inf`` attend to nothing (zeros, as torch's attention)."""
    if gqa and k.shape[-3] != q.shape[-3]:
        k = k.repeat_interleave(q.shape[-3] // k.shape[-3], -3)
        v = v.repeat_interleave(q.shape[-3] // v.shape[-3], -3)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    call = mode.dispatch
    scores = call(torch.mul, (call(torch.matmul, (q, k.transpose(-2, -1))), scale))
    if mask is not None:
        scores = call(torch.add, (scores, mask))
    probs = call(torch.softmax, (scores, -1))
    if mask is not None:
        probs = probs.masked_fill(torch.isneginf(scores).all(-1, keepdim=True), 0.0)
    if dropout_p > 0:
        probs = call(F.dropout, (probs, dropout_p, True))
    return call(torch.matmul, (probs, v)), probs


def _additive(mask: Tensor | None, dtype, keep: bool) -> Tensor | None:
    """A mask as an additive float mask: a boolean one is 0 where ``mask == keep`` and
    ``-inf`` elsewhere (sdpa keeps True, multi-head attention masks True)."""
    if mask is None or mask.dtype != torch.bool:
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask != keep, float("-inf"))


def _sdpa_args(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    return query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa


def scaled_dot_product_attention(mode, func, args, kwargs):
    q, k, v, mask, dropout_p, causal, scale, gqa = _sdpa_args(*args, **kwargs)
    if causal:
        if mask is not None:
            raise ValueError("scaled_dot_product_attention: attn_mask must be None when is_causal is True")
        mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
    return attend(mode, q, k, v, _additive(mask, q.dtype, True), dropout_p, scale, gqa)[0]


_MHA = inspect.signature(F.multi_head_attention_forward)


def _projections(mode, query, key, value, p) -> tuple[Tensor, Tensor, Tensor]:
    bias = p["in_proj_bias"]
    b_q, b_k, b_v = (None, None, None) if bias is None else bias.chunk(3)
    if p["use_separate_proj_weight"]:
        w_q, w_k, w_v = p["q_proj_weight"], p["k_proj_weight"], p["v_proj_weight"]
    elif query is key and key is value:  # self-attention: one packed projection
        return mode.dispatch(F.linear, (query, p["in_proj_weight"], bias)).chunk(3, dim=-1)
    else:
        w_q, w_k, w_v = p["in_proj_weight"].chunk(3)
    inputs = ((query, w_q, b_q), (key, w_k, b_k), (value, w_v, b_v))
    return tuple(mode.dispatch(F.linear, (x, w, b)) for x, w, b in inputs)


def _pad(mask: Tensor | None) -> Tensor | None:
    return None if mask is None else F.pad(mask, (0, 1))


def multi_head_attention(mode, func, args, kwargs):
    """``F.multi_head_attention_forward`` decomposed (see the module docstring)."""
    bound = _MHA.bind(*args, **kwargs)
    bound.apply_defaults()
    p = bound.arguments
    query, key, value, padding = p["query"], p["key"], p["value"], p["key_padding_mask"]
    batched = query.dim() == 3
    if not batched:
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        padding = None if padding is None else padding.unsqueeze(0)
    tgt_len, bsz, embed = query.shape
    heads = p["num_heads"]
    head_dim = embed // heads
    q, k, v = _projections(mode, query, key, value, p)
    mask = _additive(p["attn_mask"], q.dtype, False)
    mask = mask.unsqueeze(0) if mask is not None and mask.dim() == 2 else mask
    padding = _additive(padding, q.dtype, False)
    if p["bias_k"] is not None and p["bias_v"] is not None:
        k, v = torch.cat([k, p["bias_k"].repeat(1, bsz, 1)]), torch.cat([v, p["bias_v"].repeat(1, bsz, 1)])
        mask, padding = _pad(mask), _pad(padding)
    q = q.reshape(tgt_len, bsz * heads, head_dim).transpose(0, 1)
    if p["static_k"] is None:
        k = k.reshape(k.shape[0], bsz * heads, head_dim).transpose(0, 1)
    else:
        k = p["static_k"]
    if p["static_v"] is None:
        v = v.reshape(v.shape[0], bsz * heads, head_dim).transpose(0, 1)
    else:
        v = p["static_v"]
    if p["add_zero_attn"]:
        zeros = q.new_zeros(bsz * heads, 1, head_dim)
        k, v = torch.cat([k, zeros], 1), torch.cat([v, zeros], 1)
        mask, padding = _pad(mask), _pad(padding)
    src_len = k.shape[1]
    if padding is not None:
        padding = padding.view(bsz, 1, 1, src_len).expand(-1, heads, -1, -1).reshape(bsz * heads, 1, src_len)
        mask = padding if mask is None else mask + padding
    out, probs = attend(mode, q, k, v, mask, p["dropout_p"] if p["training"] else 0.0)
    out = out.transpose(0, 1).reshape(tgt_len * bsz, embed)
    out = mode.dispatch(F.linear, (out, p["out_proj_weight"], p["out_proj_bias"])).view(tgt_len, bsz, -1)
    weights = None
    if p["need_weights"]:
        weights = probs.view(bsz, heads, tgt_len, src_len)
        if p["average_attn_weights"]:
            weights = mode.dispatch(torch.mean, (weights,), {"dim": 1})
    if not batched:
        out = out.squeeze(1)
        weights = None if weights is None else weights.squeeze(0)
    return out, weights


HANDLERS: dict = {
    **{f: softmax for f in _SOFTMAX + _LOG_SOFTMAX},
    torch.einsum: product,
    torch.baddbmm: lambda mode, func, args, kwargs: product(mode, func, args, kwargs, additive=(0,)),
    Tensor.baddbmm: lambda mode, func, args, kwargs: product(mode, func, args, kwargs, additive=(0,)),
    F.scaled_dot_product_attention: scaled_dot_product_attention,
    F.multi_head_attention_forward: multi_head_attention,
}
