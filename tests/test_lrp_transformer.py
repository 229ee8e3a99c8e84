"""LRP on transformers (AttnLRP, Achtibat et al. 2024; CP-LRP, Ali et al. 2022): each new
rule against its hand-written formula, conservation on tiny GPT-2 / Llama models and on
torch's attention modules, what AttnLRP's softmax absorbs, eager = sdpa attention, the
borrowed model, and token-level relevance for language models."""

from __future__ import annotations

import copy
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchexplain.attr import LRP, LayerLRP
from torchexplain.attr.lrp import CPLRP, AttnLRP, Constant, Epsilon, EpsilonPlus, Identity
from torchexplain.core.hooks import attention
from torchexplain.core.hooks.relevance import relevance_rules
from torchexplain.models import text

CLOSE = dict(rtol=1e-10, atol=1e-12)  # float64 rule checks


def engine(fn, xs, relevance, rule=None, softmax=None):
    """The relevance reaching ``xs`` when ``fn(*xs)`` gets ``relevance``, every op
    under ``rule`` (LRP-0 by default), softmax under ``softmax`` (default ``rule``)."""
    rule = Epsilon(0.0) if rule is None else rule
    softmax = rule if softmax is None else softmax
    leaves = [x.clone().requires_grad_(True) for x in xs]
    with relevance_rules(lambda kind, first: softmax if kind == "softmax" else rule):
        out = fn(*leaves)
        return out, torch.autograd.grad(out, leaves, relevance, allow_unused=True)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --------------------------------------------------------------------------- softmax


@pytest.mark.parametrize("softmax", [lambda x: F.softmax(x, dim=-1), lambda x: torch.softmax(x, -1),
                                     lambda x: x.softmax(-1), lambda x: F.softmax(x.transpose(0, 1), 0).T])
def test_softmax_rule_by_hand(softmax):
    """R_in = x * (R - s * sum_j R_j), and its sum identity sum R_in = sum R (x - E_s[x])."""
    x, r = randn(3, 5), randn(3, 5, seed=1)
    _, (got,) = engine(softmax, [x], r)
    s = torch.softmax(x, -1)
    torch.testing.assert_close(got, x * (r - s * r.sum(-1, keepdim=True)), **CLOSE)
    mean = (s * x).sum(-1, keepdim=True)
    torch.testing.assert_close(got.sum(-1), (r * (x - mean)).sum(-1), **CLOSE)
    assert not torch.allclose(got.sum(-1), r.sum(-1), rtol=1e-2)  # it does not conserve


def test_softmax_with_epsilon_and_log_softmax_match_the_jacobian_formula():
    """The softmax rule is the epsilon formula x * J^T (R / (y + eps sign y)) at the
    softmax; log_softmax gets that formula at its own output."""
    x, r = randn(4, 6), randn(4, 6, seed=1)
    for fn, eps in ((lambda t: torch.softmax(t, -1), 0.3), (lambda t: F.log_softmax(t, -1), 0.0),
                    (lambda t: t.log_softmax(-1), 0.2)):
        y, (got,) = engine(fn, [x], r, Epsilon(eps))
        expected = torch.stack([
            xi * (torch.autograd.functional.jacobian(fn, xi).T @ (ri / (yi + eps * yi.sign())))
            for xi, ri, yi in zip(x, r, y.detach())
        ])
        torch.testing.assert_close(got, expected, **CLOSE)


@pytest.mark.parametrize("masked", [float("-inf"), torch.finfo(torch.float64).min])
def test_masked_softmax_gives_no_nan(masked):
    """Masked logits (-inf or the dtype's minimum) get no relevance, their row none
    of its softmax: x * 0 stays 0. A fully masked row (probabilities 0, as torch's
    attention returns) gets nothing either."""
    x = randn(3, 5)
    x[0, 3:] = masked
    x[1, 0] = masked
    s = torch.softmax(x, -1)
    r = randn(3, 5, seed=1) * s  # relevance of a masked position is 0 (the rules above give it 0)
    _, (got,) = engine(lambda t: torch.softmax(t, -1), [x], r)
    assert torch.isfinite(got).all()
    keep = torch.isfinite(x) & (x > -1e300)
    expected = torch.where(keep, x, 0) * (r - s * r.sum(-1, keepdim=True))
    torch.testing.assert_close(got, expected, **CLOSE)
    q = randn(1, 2, 3, 4)
    mask = torch.tensor([[True, False, True], [False, False, False], [True, True, True]])
    out, grads = engine(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, attn_mask=mask), [q, q, q],
                        randn(1, 2, 3, 4, seed=2))
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, q, q, attn_mask=mask), **CLOSE)
    assert all(torch.isfinite(g).all() for g in grads)
    assert (out[:, :, 1] == 0).all() and all((g[:, :, 1] == 0).all() for g in grads[:1])


def test_constant_and_identity_softmax_rules():
    """Constant (CP-LRP): the softmax output is a constant, so a product with it is
    linear in the other factor, which gets all the relevance. Identity: R unchanged.
    Constant on any other op kind is refused."""
    x, v, r = randn(3, 4), randn(4, 2, seed=1), randn(3, 2, seed=2)
    out, (gx, gv) = engine(lambda a, b: torch.softmax(a, -1) @ b, [x, v], r, softmax=Constant())
    s = torch.softmax(x, -1)
    torch.testing.assert_close(out, s @ v, **CLOSE)
    assert gx is None
    torch.testing.assert_close(gv, v * (s.T @ (r / (s @ v))), **CLOSE)
    torch.testing.assert_close(gv.sum(), r.sum(), **CLOSE)
    _, (got,) = engine(lambda a: torch.softmax(a, -1), [x], s, Identity())
    torch.testing.assert_close(got, s, **CLOSE)
    with pytest.raises(ValueError, match="softmax"):
        engine(lambda a: a @ v, [x], r, Constant())


# --------------------------------------------------------------------------- products and norms


@pytest.mark.parametrize("op", [torch.matmul, torch.bmm, lambda a, b: a @ b,
                                lambda a, b: torch.einsum("bij,bjk->bik", a, b),
                                lambda a, b: torch.baddbmm(torch.zeros(2, 3, 5, dtype=a.dtype), a, b)])
def test_uniform_rule_on_products_of_two_input_dependent_factors(op):
    """R_a = 0.5 * a * J_a^T (R / z), R_b likewise; together they conserve R."""
    a, b, r = randn(2, 3, 4), randn(2, 4, 5, seed=1), randn(2, 3, 5, seed=2)
    z, (ga, gb) = engine(op, [a, b], r)
    s = r / (a @ b)
    torch.testing.assert_close(ga, 0.5 * a * (s @ b.transpose(1, 2)), **CLOSE)
    torch.testing.assert_close(gb, 0.5 * b * (a.transpose(1, 2) @ s), **CLOSE)
    torch.testing.assert_close(ga.sum() + gb.sum(), r.sum(), **CLOSE)
    _, (gb_only,) = engine(lambda t: op(a, t), [b], r)  # one input-dependent factor: all of it
    torch.testing.assert_close(gb_only, b * (a.transpose(1, 2) @ s), **CLOSE)


def test_layer_norm_and_rms_norm_keep_the_standard_deviation_constant():
    """Layer norm: R_in = x * A^T (R / (A x + b)) with A = diag(w / std(x)) (I - 11^T/N),
    std(x) a constant. RMS norm (F.rms_norm, or written out as Hugging Face's
    LlamaRMSNorm) without bias: R_in = R."""
    x, r, w, b = randn(3, 6), randn(3, 6, seed=1), randn(6, seed=2), randn(6, seed=3)
    _, (got,) = engine(lambda t: F.layer_norm(t, (6,), w, b, 1e-5), [x], r)
    centre = torch.eye(6, dtype=x.dtype) - 1.0 / 6
    for xi, ri, gi in zip(x, r, got):
        a = torch.diag(w / (xi.var(unbiased=False) + 1e-5).sqrt()) @ centre
        torch.testing.assert_close(gi, xi * (a.T @ (ri / (a @ xi + b))), **CLOSE)
    _, (unbiased,) = engine(lambda t: F.layer_norm(t, (6,), w, None), [x], r)
    torch.testing.assert_close(unbiased.sum(-1), r.sum(-1), **CLOSE)

    def written_out(t):
        return w * (t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 1e-6))

    for norm in (lambda t: F.rms_norm(t, (6,), w, 1e-6), written_out):
        out, (got,) = engine(norm, [x], r)
        torch.testing.assert_close(out, F.rms_norm(x, (6,), w, 1e-6), **CLOSE)
        torch.testing.assert_close(got, r, **CLOSE)


def test_elementwise_math_passes_relevance_unchanged():
    """-x, x ** p, rsqrt, exp, ... pass relevance as activations do: GPT-2's gelu_new,
    written out with pow, tanh, products and sums, hands on exactly R at eps 0."""
    x, r = randn(3, 5), randn(3, 5, seed=1)
    gelu_new = lambda t: 0.5 * t * (1.0 + torch.tanh(0.79788456 * (t + 0.044715 * torch.pow(t, 3.0))))  # noqa: E731
    for fn in (lambda t: -t, lambda t: t ** 3, lambda t: torch.rsqrt(t.abs()), torch.exp, gelu_new):
        _, (got,) = engine(fn, [x], r)
        torch.testing.assert_close(got, r, **CLOSE)


# --------------------------------------------------------------------------- attention modules


def _written_attention(q, k, v, mask, scale):
    """Grouped-query attention written out (two query heads per key head)."""
    k, v = k.repeat_interleave(2, 1), v.repeat_interleave(2, 1)
    return torch.softmax((q @ k.transpose(-2, -1)) * scale + mask, -1) @ v


def test_sdpa_is_decomposed_with_masks_scale_and_gqa():
    """F.scaled_dot_product_attention under the rules: the same output as torch's, and
    the same relevance as the attention written out with matmul/softmax/matmul."""
    q, k, v = randn(2, 4, 5, 8), randn(2, 2, 6, 8, seed=1), randn(2, 2, 6, 8, seed=2)
    r = randn(2, 4, 5, 8, seed=3)
    bool_mask = torch.rand(5, 6, generator=torch.Generator().manual_seed(4)) > 0.3
    bool_mask[:, 0] = True
    float_mask = randn(5, 6, seed=5)
    cases = [dict(attn_mask=bool_mask, scale=0.3), dict(attn_mask=float_mask), dict(is_causal=True)]
    for kwargs in cases:
        sdpa = partial(F.scaled_dot_product_attention, enable_gqa=True, **kwargs)
        mask = kwargs.get("attn_mask", torch.ones(5, 6, dtype=torch.bool).tril())
        if mask.dtype == torch.bool:
            mask = torch.zeros(5, 6, dtype=q.dtype).masked_fill(~mask, float("-inf"))
        written = partial(_written_attention, mask=mask, scale=kwargs.get("scale", 8 ** -0.5))
        for softmax in (Epsilon(0.0), Constant()):
            out, got = engine(sdpa, [q, k, v], r, softmax=softmax)
            _, expected = engine(written, [q, k, v], r, softmax=softmax)
            torch.testing.assert_close(out, sdpa(q, k, v), **CLOSE)
            for g, e in zip(got, expected):
                assert (g is None) == (e is None)
                if g is not None:
                    torch.testing.assert_close(g, e, **CLOSE)


class Encoder(nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, bias=False, batch_first=True, **kwargs)
        self.head = nn.Linear(16, 3, bias=False)

    def forward(self, x, mask=None, padding=None):
        return self.head(self.layer(x, src_mask=mask, src_key_padding_mask=padding).mean(1))


class Attention(nn.Module):
    """Self-attention, or with ``cross`` keys and values from the reversed sequence
    (then the packed projection is split), or with ``unbatched`` examples one by one."""

    def __init__(self, cross=False, unbatched=False, **kwargs):
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 4, bias=False, batch_first=True, **kwargs)
        self.head = nn.Linear(16, 3, bias=False)
        self.cross, self.unbatched = cross, unbatched

    def forward(self, x, mask=None, padding=None):
        kv = x.flip(1) if self.cross else x
        if self.unbatched:
            y = torch.stack([self.attn(a, b, b, attn_mask=mask)[0] for a, b in zip(x, kv)])
        else:
            y, weights = self.attn(x, kv, kv, attn_mask=mask, key_padding_mask=padding)
            y = y + 0.0 * weights.sum()
        return self.head(y.sum(1))


CAUSAL = nn.Transformer.generate_square_subsequent_mask(5, dtype=torch.float64)
PADDING = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])


@pytest.mark.parametrize("make, masks", [
    (lambda: Encoder(), ()),
    (lambda: Encoder(norm_first=True), (CAUSAL,)),
    (lambda: Encoder(), (None, PADDING)),
    (lambda: Attention(), ()),
    (lambda: Attention(add_zero_attn=True), (CAUSAL.isinf(), PADDING)),
    (lambda: Attention(cross=True, kdim=16, vdim=16), (None, PADDING)),
    (lambda: Attention(cross=True, unbatched=True), (CAUSAL,)),
])
def test_multihead_attention_and_encoder_layer_conserve_under_cp_lrp(make, masks):
    """nn.MultiheadAttention / nn.TransformerEncoderLayer (eval, no biases) under
    CP-LRP at epsilon 0: the relevance sums to the output; AttnLRP's differs (the
    queries and keys take part, the softmax absorbs)."""
    torch.manual_seed(0)
    model, x = make().double().eval(), randn(2, 5, 16)
    out = model(x, *masks)[:, 1].detach()
    decomposed, _ = engine(lambda t: model(t, *masks), [x], torch.ones(2, 3, dtype=x.dtype))
    torch.testing.assert_close(decomposed[:, 1], out, **CLOSE)  # the decomposition computes the same
    cp = LRP(model, composite=CPLRP(0.0))
    relevance = cp.attribute(x, target=1, additional_forward_args=masks or None)
    assert torch.isfinite(relevance).all()
    torch.testing.assert_close(relevance.sum((1, 2)), out, rtol=1e-9, atol=1e-12)
    attn = LRP(model, composite=AttnLRP(0.0)).attribute(x, target=1, additional_forward_args=masks or None)
    assert (attn.sum((1, 2)) - out).abs().max() > 1e-6


# --------------------------------------------------------------------------- language models

class LastLogit(nn.Module):
    """The logits at the last position, as an LLM user explains the next token. The
    ids may come as floats: LayerLRP validates its inputs as floating-point for now
    (see test_layer_lrp_on_token_ids), so most tests pass ``IDS_AS_FLOATS``."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, ids):
        return self.lm(ids.long()).logits[:, -1]


class FromEmbeddings(LastLogit):
    def forward(self, embeds):
        return self.lm(inputs_embeds=embeds).logits[:, -1]


def _models(impl="eager"):
    pytest.importorskip("transformers")  # (the text extra)
    return {"gpt2": lambda: text.tiny_gpt2(bias=False, attn_implementation=impl).double(),
            "llama": lambda: text.tiny_llama(attn_implementation=impl).double()}


IDS = torch.randint(0, 256, (2, 7), generator=torch.Generator().manual_seed(0))
IDS_AS_FLOATS = IDS.double()


def _logit(model, ids=IDS):
    out = model(ids)
    target = out.argmax(-1)
    return target, out.gather(1, target[:, None]).flatten().detach()


def _first_block_input(lm):
    """The module whose output is the first block's input (GPT-2: the embedding
    dropout, after the position embeddings are added; Llama: the embeddings)."""
    return lm.transformer.drop if hasattr(lm, "transformer") else lm.get_input_embeddings()


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_cp_lrp_conserves_on_tiny_language_models(name):
    model = LastLogit(_models()[name]())
    target, logit = _logit(model)
    relevance = LayerLRP(model, _first_block_input(model.lm), composite=CPLRP(0.0)).attribute(IDS_AS_FLOATS, target=target)
    torch.testing.assert_close(relevance.sum((1, 2)), logit, rtol=1e-6, atol=0.0)


def test_gpt2_relevance_splits_between_token_and_position_embeddings():
    """Both embeddings tapped: their relevance together is the logit (one example: the
    position embeddings are shared by the batch)."""
    model = LastLogit(_models()["gpt2"]())
    ids = IDS[:1]
    target, logit = _logit(model, ids)
    wte, wpe = model.lm.transformer.wte, model.lm.transformer.wpe
    tokens, positions = LayerLRP(model, [wte, wpe], composite=CPLRP(0.0)).attribute(ids.double(), target=target)
    torch.testing.assert_close(tokens.sum() + positions.sum(), logit[0], rtol=1e-6, atol=0.0)
    assert positions.abs().sum() > 1e-3 * tokens.abs().sum()


def _recording_absorption(monkeypatch) -> list:
    """Patches the softmax rule to record, per call and example, what it absorbs:
    sum R_out - sum R_in, and checks the sum identity on the way."""
    absorbed = []
    original = attention.softmax_relevance

    def recording(forward, dim, eps, log):
        rule = original(forward, dim, eps, log)

        def relevance_fn(xs, relevance):
            (got,) = rule(xs, relevance)
            (x,) = xs
            s = forward(x).to(x.dtype)
            x = torch.where(torch.isfinite(x), x, 0)
            identity = (relevance * (x - (s * x).sum(dim, keepdim=True))).flatten(1).sum(1)
            torch.testing.assert_close(got.flatten(1).sum(1), identity, rtol=1e-5, atol=1e-9)
            absorbed.append(relevance.flatten(1).sum(1) - got.flatten(1).sum(1))
            return [got]

        return relevance_fn

    monkeypatch.setattr(attention, "softmax_relevance", recording)
    return absorbed


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_attnlrp_loses_exactly_what_the_softmax_rule_absorbs(name, monkeypatch):
    """AttnLRP at epsilon 0 without biases: everything conserves but the softmax, so
    logit - sum(relevance at the first block) = logit * sum over softmax calls of
    (sum R_out - sum R_in) (the engine's relevance is per unit of output)."""
    model = LastLogit(_models()[name]())
    target, logit = _logit(model)
    absorbed = _recording_absorption(monkeypatch)
    relevance = LayerLRP(model, _first_block_input(model.lm), composite=AttnLRP(0.0)).attribute(IDS_AS_FLOATS, target=target)
    assert len(absorbed) == 2  # one softmax per block
    gap = logit - relevance.sum((1, 2))
    torch.testing.assert_close(gap, logit * torch.stack(absorbed).sum(0), rtol=1e-5, atol=1e-7)
    assert (gap.abs() > 1e-4 * logit.abs()).all()  # the softmax does absorb


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_eager_and_sdpa_attention_give_the_same_relevance(name):
    """Default rules (AttnLRP): Hugging Face's eager attention and its
    scaled_dot_product_attention path (causal, grouped-query for Llama) agree."""
    eager, sdpa = LastLogit(_models("eager")[name]()), LastLogit(_models("sdpa")[name]())
    target, _ = _logit(eager)
    got = [LayerLRP(m, m.lm.get_input_embeddings() if name == "llama" else m.lm.transformer.drop)
           .attribute(IDS_AS_FLOATS, target=target) for m in (eager, sdpa)]
    torch.testing.assert_close(got[0], got[1], rtol=1e-5, atol=1e-8)
    assert got[0].abs().sum() > 0


def test_the_model_is_unchanged_afterwards():
    model = LastLogit(_models()["gpt2"]())
    target, _ = _logit(model)
    model.lm.transformer.h[0].attn.train()  # a mixed training flag (dropout on) is kept as it was
    model.lm.lm_head.weight.requires_grad_(False)  # (tied to the token embeddings)
    before = copy.deepcopy(model.state_dict())
    flags = {name: m.training for name, m in model.named_modules()}
    grads = {name: p.requires_grad for name, p in model.named_parameters()}
    for composite in ("attnlrp", "cp-lrp"):
        LayerLRP(model, model.lm.transformer.drop, composite=composite).attribute(IDS_AS_FLOATS, target=target)
    assert {name: m.training for name, m in model.named_modules()} == flags
    assert {name: p.requires_grad for name, p in model.named_parameters()} == grads
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks) for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_token_relevance_from_the_input_embeddings(name):
    """Relevance per token = the relevance at its embedding summed over the embedding
    dimension; CP-LRP's sums to the logit on Llama (GPT-2's position embeddings, a
    constant here, take no share)."""
    lm = _models()[name]()
    target, logit = _logit(LastLogit(lm))
    embeds = lm.get_input_embeddings()(IDS).detach()
    relevance = LRP(FromEmbeddings(lm), composite=CPLRP(0.0)).attribute(embeds, target=target)
    per_token = relevance.sum(-1)
    assert per_token.shape == IDS.shape
    torch.testing.assert_close(per_token.sum(1), logit, rtol=1e-5, atol=0.0)


def test_layer_lrp_on_token_ids():
    """The call an LLM user makes: LayerLRP on the input embeddings with token ids."""
    lm = _models()["llama"]()
    model = LastLogit(lm)
    target, logit = _logit(model)
    relevance = LayerLRP(model, model.lm.get_input_embeddings(), composite=CPLRP(0.0)).attribute(IDS, target=target)
    embeds = lm.get_input_embeddings()(IDS).detach()
    expected = LRP(FromEmbeddings(lm), composite=CPLRP(0.0)).attribute(embeds, target=target)
    torch.testing.assert_close(relevance, expected, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(relevance.sum((1, 2)), logit, rtol=1e-5, atol=0.0)


def test_composites_by_name():
    model = nn.Linear(3, 2)
    assert isinstance(LRP(model, composite="attnlrp").composite, AttnLRP)
    assert isinstance(LRP(model, composite="cp-lrp").composite, CPLRP)
    assert isinstance(LRP(model, composite="epsilon_plus").composite, EpsilonPlus)
    with pytest.raises(TypeError, match="attnlrp"):
        LRP(model, composite="attn-lrp")
    with pytest.raises(ValueError, match="EpsilonGammaBox"):
        LRP(model, composite="epsilon_gamma_box")
    assert CPLRP(0.0).rule_for("softmax", None, False).constant
    assert AttnLRP().rule_for("attention", None, False).eps == 1e-6
