"""LLM attribution: Captum's answers on tiny random models, the Shapley and integrated
gradients axioms, the key-value-cache path, and clear errors on bad input."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import torchexplain.attr as te
from torchexplain.attr import (
    FeatureAblation,
    LayerGradientXActivation,
    LayerIntegratedGradients,
    LLMAttribution,
    LLMGradientAttribution,
    RemoteLLMAttribution,
    RemoteLLMProvider,
    ShapleyValues,
    ShapleyValueSampling,
    TextTemplateInput,
    TextTokenInput,
)
from torchexplain.models.text import ByteTokenizer, tiny_gpt2, tiny_llama

ca = pytest.importorskip("captum.attr")
TOK = ByteTokenizer()


def _sharpened(model: nn.Module) -> nn.Module:
    """Larger weights, so that prompts change the log-probabilities visibly."""
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)
    return model


@pytest.fixture(scope="module")
def gpt2():
    return _sharpened(tiny_gpt2(seed=1))


@pytest.fixture(scope="module")
def llama():
    return _sharpened(tiny_llama(seed=2))


def _log_prob(model, prompt_ids: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
    """log p(target | prompt), token by token, straight from the model."""
    seq = torch.cat([prompt_ids.reshape(1, -1), target_ids.reshape(1, -1)], 1)
    with torch.no_grad():
        lp = torch.log_softmax(model(seq).logits[0, prompt_ids.numel() - 1: -1].float(), -1)
    return lp.gather(-1, target_ids.reshape(-1, 1)).squeeze(1)


class Bidirectional(nn.Module):
    """A plain torch LM without a causal mask (every position sees the whole text): the
    teacher-forced shortcut would be wrong for it, so it must be scored token by token."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.emb = nn.Embedding(257, 16)
        self.mix = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.out = nn.Linear(16, 257)
        self.eval()

    def forward(self, ids):
        return self.out(self.mix(self.emb(ids)))


# --------------------------------------------------------------------------- Captum's answers


@pytest.mark.parametrize("name", ["FeatureAblation", "ShapleyValues"])
@pytest.mark.parametrize("form", ["tokens", "template"])
def test_perturbation_methods_equal_captum(gpt2, name, form):
    """Captum scored token by token without its cache (its cached path is wrong under
    transformers 5, see test_captum_cached_scoring_is_wrong_under_transformers_5)."""
    results = []
    for lib in (te, ca):
        inp = (lib.TextTokenInput("a cat", TOK) if form == "tokens"
               else lib.TextTemplateInput("{} sat {}", ["a cat", "here"]))
        llm = lib.LLMAttribution(getattr(lib, name)(gpt2), TOK)
        results.append(llm.attribute(inp, target=" on mats", use_cached_outputs=False))
    ours, theirs = results
    assert ours.output_tokens == [" ", "o", "n", " ", "m", "a", "t", "s"]
    assert ours.input_tokens == theirs.input_tokens
    assert ours.token_attr.abs().max() > 1e-3  # the comparison below is not between zeros
    torch.testing.assert_close(ours.token_attr, theirs.token_attr, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.seq_attr, theirs.seq_attr, rtol=1e-4, atol=1e-5)


def test_probabilities_equal_captum(gpt2):
    results = [lib.LLMAttribution(lib.FeatureAblation(gpt2), TOK, attr_target="prob").attribute(
        lib.TextTokenInput("hey you", TOK), target="!", use_cached_outputs=False) for lib in (te, ca)]
    torch.testing.assert_close(results[0].token_attr, results[1].token_attr, rtol=1e-4, atol=1e-7)


def test_captum_cached_scoring_is_wrong_under_transformers_5(gpt2):
    """Captum's default (use_cached_outputs=True) differs from its own uncached values
    here; ours equals the uncached ones, which are log p computed directly."""
    inp = ca.TextTokenInput("the cat", TOK)
    cached = ca.LLMAttribution(ca.FeatureAblation(gpt2), TOK).attribute(inp, target=" sat")
    plain = ca.LLMAttribution(ca.FeatureAblation(gpt2), TOK).attribute(inp, target=" sat", use_cached_outputs=False)
    ours = LLMAttribution(FeatureAblation(gpt2), TOK).attribute(TextTokenInput("the cat", TOK), target=" sat")
    torch.testing.assert_close(ours.token_attr, plain.token_attr, rtol=1e-4, atol=1e-5)
    if (cached.token_attr - plain.token_attr).abs().max() < 1e-4:
        pytest.skip("Captum's cached path agrees with its uncached one in this transformers version")
    # first token's attribution by hand: log p(target_0 | prompt) - log p(target_0 | prompt with token 0 -> id 0)
    prompt, target = TOK.encode("the cat", return_tensors="pt"), torch.tensor(TOK.encode(" sat"))
    ablated = prompt.clone()
    ablated[0, 0] = 0
    by_hand = _log_prob(gpt2, prompt, target)[0] - _log_prob(gpt2, ablated, target)[0]
    torch.testing.assert_close(ours.token_attr[0, 0], by_hand, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["LayerIntegratedGradients", "LayerGradientXActivation"])
def test_gradient_methods_equal_captum(gpt2, name):
    results = []
    for lib in (te, ca):
        method = getattr(lib, name)(gpt2, gpt2.get_input_embeddings())
        results.append(lib.LLMGradientAttribution(method, TOK).attribute(lib.TextTokenInput("to be", TOK),
                                                                         target=" or no"))
    assert results[0].token_attr.abs().max() > 1e-3
    torch.testing.assert_close(results[0].token_attr, results[1].token_attr, rtol=1e-4, atol=1e-6)


def test_a_bidirectional_model_is_scored_token_by_token_as_captum_does():
    model = Bidirectional()
    ours = LLMAttribution(FeatureAblation(model), TOK)
    inp = TextTokenInput("abc", TOK)
    assert not ours.lm.is_causal(inp.to_model_input(), torch.tensor([100]))
    got = ours.attribute(inp, target="de")
    captum = ca.LLMAttribution(ca.FeatureAblation(_HFStyle(model)), TOK).attribute(
        ca.TextTokenInput("abc", TOK), target="de", use_cached_outputs=False)
    torch.testing.assert_close(got.token_attr, captum.token_attr, rtol=1e-4, atol=1e-6)
    # the teacher-forced shortcut would give other numbers: forcing it shows the check matters
    forced = LLMAttribution(FeatureAblation(model), TOK, causal=True).attribute(inp, target="de")
    assert (forced.token_attr - got.token_attr).abs().max() > 1e-4


class _HFStyle(nn.Module):
    """Captum reads ``.logits`` and passes an attention mask: a thin wrapper for it."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, **kwargs):
        return type("Out", (), {"logits": self.model(input_ids)})()


# --------------------------------------------------------------------------- axioms


def test_shapley_values_sum_to_the_log_probability_gap(llama):
    """Efficiency: the features' Shapley values add up to log p(target | prompt) minus
    log p(target | every feature at its baseline)."""
    inp = TextTokenInput("hi bo", TOK, baselines=" ")
    target = torch.tensor(TOK.encode(" yes"))
    res = LLMAttribution(ShapleyValues(llama), TOK).attribute(inp, target=target)
    prompt = inp.to_model_input()
    baseline = torch.full_like(prompt, ord(" "))
    gap = _log_prob(llama, prompt, target) - _log_prob(llama, baseline, target)
    torch.testing.assert_close(res.token_attr.sum(1), gap, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(res.seq_attr.sum(), gap.sum(), rtol=1e-4, atol=1e-5)


def test_integrated_gradients_over_embeddings_are_complete(gpt2):
    """Each target token's attributions add up to its log-probability gap between the
    prompt and the all-baseline prompt, to the integral's convergence."""
    inp = TextTokenInput("so it", TOK)
    target = torch.tensor(TOK.encode(" go"))
    res = LLMGradientAttribution(LayerIntegratedGradients(gpt2, gpt2.get_input_embeddings()), TOK).attribute(
        inp, target=target, n_steps=300)
    prompt = inp.to_model_input()
    gap = _log_prob(gpt2, prompt, target) - _log_prob(gpt2, torch.zeros_like(prompt), target)
    assert gap.abs().min() > 1e-2
    torch.testing.assert_close(res.token_attr.sum(1), gap, rtol=2e-3, atol=2e-4)


def test_kernel_shap_agrees_with_captums_within_sampling_noise(gpt2):
    """Both fit the same unconstrained regression to different draws of coalitions."""
    results = [lib.LLMAttribution(lib.KernelShap(gpt2), TOK).attribute(
        lib.TextTemplateInput("{} {} {}", ["we", "go", "up"]), target="!", n_samples=3000, use_cached_outputs=False)
        for lib in (te, ca)]
    assert results[0].token_attr is None
    assert results[0].seq_attr.abs().max() > 0.1
    torch.testing.assert_close(results[0].seq_attr, results[1].seq_attr, rtol=0, atol=0.03)


# --------------------------------------------------------------------------- the fast paths


@pytest.mark.parametrize("model_name", ["gpt2", "llama"])
def test_the_key_value_cache_path_gives_the_uncached_values(request, model_name):
    model = request.getfixturevalue(model_name)
    inp = TextTokenInput("the small cat", TOK)
    for method in (FeatureAblation(model), ShapleyValueSampling(model)):
        llm = LLMAttribution(method, TOK)
        kwargs = {} if isinstance(method, FeatureAblation) else {"n_samples": 3, "generator": torch.Generator().manual_seed(0)}
        cached = llm.attribute(inp, target=" ran", **kwargs)
        if kwargs:
            kwargs["generator"] = torch.Generator().manual_seed(0)
        plain = llm.attribute(inp, target=" ran", use_cached_outputs=False, **kwargs)
        torch.testing.assert_close(cached.token_attr, plain.token_attr, rtol=1e-5, atol=1e-5)


def test_the_cache_runs_only_the_changed_suffix(gpt2):
    """Counted on the model: with the cache, the perturbed prompts feed fewer tokens."""
    inp = TextTokenInput("abcdefghijklmnop", TOK)
    counts = {cached: _fed_tokens(gpt2, lambda cached=cached: LLMAttribution(FeatureAblation(gpt2), TOK).attribute(
        inp, target="qrs", use_cached_outputs=cached)) for cached in (True, False)}
    assert counts[True] < 0.8 * counts[False], counts


def _fed_tokens(model, run) -> int:
    fed = []
    handle = model.register_forward_pre_hook(lambda m, args, kwargs: fed.append(
        (args[0] if args else kwargs["input_ids"]).numel()), with_kwargs=True)
    try:
        run()
    finally:
        handle.remove()
    return sum(fed)


def test_gradient_tokens_from_one_forward_equal_one_call_per_token(gpt2):
    """Three ways, one answer: one forward for every target token (the default on a
    causal model), the method itself with a row per token (taken when an option the
    shared forward does not cover is given), and Captum's one call per token."""
    inp = TextTokenInput("yes we", TOK)
    for method in (LayerIntegratedGradients(gpt2, gpt2.get_input_embeddings()),
                   LayerGradientXActivation(gpt2, gpt2.get_input_embeddings())):
        llm = LLMGradientAttribution(method, TOK)
        shared = llm.attribute(inp, target=" can")
        rows = llm.attribute(inp, target=" can", attribute_to_layer_input=False)
        one_by_one = LLMGradientAttribution(method, TOK, causal=False).attribute(inp, target=" can")
        torch.testing.assert_close(shared.token_attr, one_by_one.token_attr, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(rows.token_attr, one_by_one.token_attr, rtol=1e-5, atol=1e-6)
    llm = LLMGradientAttribution(LayerIntegratedGradients(gpt2, gpt2.get_input_embeddings()), TOK, causal=True)
    shared = _fed_tokens(gpt2, lambda: llm.attribute(inp, target=" can", n_steps=8))
    rows = _fed_tokens(gpt2, lambda: llm.attribute(inp, target=" can", n_steps=8, attribute_to_layer_input=False))
    assert shared * 3 < rows, (shared, rows)  # 4 target tokens share each forward


# --------------------------------------------------------------------------- models, targets, tokenizers


def test_a_plain_model_without_generate_is_decoded_greedily():
    model = Bidirectional()
    res = LLMAttribution(FeatureAblation(model), TOK).attribute(TextTokenInput("ok", TOK), gen_args={"max_new_tokens": 3})
    ids = TOK.encode("ok", return_tensors="pt")
    for _ in range(3):
        ids = torch.cat([ids, model(ids)[:, -1].argmax(-1, keepdim=True)], 1)
    assert res.output_tokens == [TOK.decode([i]) for i in ids[0, 2:].tolist()]


def test_a_hugging_face_tokenizer_trained_here(gpt2):
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    raw = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="[UNK]"))
    raw.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    raw.train_from_iterator(["the cat sat on the mat", "a dog ran to the cat"] * 20,
                            tokenizers.trainers.BpeTrainer(vocab_size=60, special_tokens=["[UNK]", "[BOS]"]))
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]", bos_token="[BOS]")
    model = tiny_gpt2(seed=4)  # 257 entries: every id of this 60-token vocabulary is one
    results = [lib.LLMAttribution(lib.FeatureAblation(model), tok).attribute(
        lib.TextTemplateInput("{} sat on {}", ["the cat", "the mat"]), target="a dog", use_cached_outputs=False)
        for lib in (te, ca)]
    torch.testing.assert_close(results[0].token_attr, results[1].token_attr, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="skip_tokens: 'zebra'"):
        LLMAttribution(FeatureAblation(model), tok).attribute(
            TextTemplateInput("{} sat", ["the cat"]), target="a dog", skip_tokens=["zebra"])
    skipped = LLMAttribution(FeatureAblation(model), tok).attribute(
        TextTemplateInput("{} sat", ["the cat"]), target="a dog", skip_tokens=["dog"])
    assert skipped.output_tokens == ["a"]
    with pytest.raises(ValueError, match="a perturbed prompt has no tokens left"):
        LLMAttribution(FeatureAblation(model), tok).attribute(TextTemplateInput("{}", ["the cat"]), target="a dog")


class _ModelProvider(RemoteLLMProvider):
    """A "remote" model that is our tiny GPT-2, scored directly."""

    api_url = "local"

    def __init__(self, model):
        self.model = model

    def generate(self, prompt, **gen_args):
        return "!"

    def get_logprobs(self, input_prompt, target_str, tokenizer=None):
        ids = torch.tensor(tokenizer.encode(input_prompt))
        return _log_prob(self.model, ids, torch.tensor(tokenizer.encode(target_str))).tolist()


def test_remote_attribution_equals_the_local_one(gpt2):
    remote = RemoteLLMAttribution(FeatureAblation(RemoteLLMAttribution.placeholder_model), TOK, _ModelProvider(gpt2))
    local = LLMAttribution(FeatureAblation(gpt2), TOK)
    inp = TextTemplateInput("{} and {}", ["tea", "jam"])
    torch.testing.assert_close(remote.attribute(inp, target=" ok").token_attr,
                               local.attribute(inp, target=" ok").token_attr, rtol=1e-4, atol=1e-5)
    assert remote.attribute(inp).output_tokens == ["!"]


def test_the_model_and_the_method_are_left_unchanged(gpt2):
    before = {k: v.clone() for k, v in gpt2.state_dict().items()}
    method = LayerIntegratedGradients(gpt2, gpt2.get_input_embeddings())
    forward = method.forward_func
    LLMGradientAttribution(method, TOK).attribute(TextTokenInput("hm", TOK), target="!")
    LLMAttribution(FeatureAblation(gpt2), TOK).attribute(TextTokenInput("hm", TOK), target="!")
    assert method.forward_func is forward and not gpt2.training
    assert all(torch.equal(before[k], v) for k, v in gpt2.state_dict().items())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in gpt2.modules())
    assert all(p.grad is None for p in gpt2.parameters())


# --------------------------------------------------------------------------- bad input


def test_a_target_beyond_the_context_is_refused():
    model = tiny_gpt2(context=16)
    with pytest.raises(ValueError, match="exceed the model's context of 16 tokens"):
        LLMAttribution(FeatureAblation(model), TOK).attribute(TextTokenInput("0123456789", TOK), target="abcdefgh")


def test_skip_tokens_outside_the_vocabulary_are_refused(gpt2):
    with pytest.raises(ValueError, match=r"skip_tokens: id 999 is not in the vocabulary \(0 .. 257\)"):
        LLMAttribution(FeatureAblation(gpt2), TOK).attribute(TextTokenInput("hi", TOK), target="!", skip_tokens=[999])
    with pytest.raises(ValueError, match=r"skip_tokens: id 300 is not in the vocabulary \(0 .. 257\)"):
        LLMAttribution(FeatureAblation(Bidirectional()), TOK).attribute(  # no config: the tokenizer's size
            TextTokenInput("hi", TOK), target="!", skip_tokens=[300])
    with pytest.raises(ValueError, match="skip_tokens: 'xy' is not a token"):
        LLMAttribution(FeatureAblation(gpt2), TOK).attribute(TextTokenInput("hi", TOK), target="!", skip_tokens=["xy"])


def test_text_without_a_tokenizer_is_refused_but_token_ids_work(gpt2):
    llm = LLMAttribution(FeatureAblation(gpt2), None)
    with pytest.raises(ValueError, match="there is no tokenizer"):
        llm.attribute(TextTemplateInput("{}", ["hi"]), target=torch.tensor([33]))
    with pytest.raises(ValueError, match="target is text, but there is no tokenizer"):
        llm.attribute(TextTokenInput("hi", TOK), target="!")
    res = llm.attribute(TextTokenInput("hi", TOK), target=torch.tensor([33]))
    assert res.output_tokens == ["33"] and res.token_attr.shape == (1, 2)


def test_other_misuse_gets_one_clear_error(gpt2):
    with pytest.raises(TypeError, match="attr_method: LLMAttribution supports FeatureAblation"):
        LLMAttribution(te.Saliency(gpt2), TOK)
    with pytest.raises(ValueError, match="attr_target must be 'log_prob' or 'prob'"):
        LLMAttribution(FeatureAblation(gpt2), TOK, attr_target="logit")
    with pytest.raises(ValueError, match="give gen_args or target, not both"):
        LLMAttribution(FeatureAblation(gpt2), TOK).attribute(TextTokenInput("a", TOK), target="b", gen_args={})
    with pytest.raises(TypeError, match="needs token inputs"):
        LLMGradientAttribution(LayerIntegratedGradients(gpt2, gpt2.get_input_embeddings()), TOK).attribute(
            TextTemplateInput("{}", ["a"]), target="b")
    with pytest.raises(ValueError, match="target must be one sequence of integer token ids"):
        LLMAttribution(FeatureAblation(gpt2), TOK).attribute(TextTokenInput("a", TOK), target=torch.ones(2, 2))
    with pytest.raises(ValueError, match="num_trials must be a positive int"):
        LLMAttribution(FeatureAblation(gpt2), TOK).attribute(TextTokenInput("a", TOK), target="b", num_trials=0)
    with pytest.raises(NotImplementedError):
        LLMAttribution(FeatureAblation(gpt2), TOK).attribute_future()


def test_the_result_checks_its_shapes_and_draws():
    res = te.LLMAttributionResult(input_tokens=["a", "b"], output_tokens=["c"], seq_attr=[1.0, -2.0],
                                  token_attr=[[1.0, -2.0]])
    assert res.seq_attr_dict == {"a": 1.0, "b": -2.0}
    with pytest.raises(ValueError, match=r"token_attr must have shape \(output tokens, input tokens\) = \(1, 2\)"):
        res.token_attr = torch.zeros(2, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig, ax = res.plot_token_attr()
    assert ax.images[0].get_array().tolist() == [[1.0, -2.0]]
    assert "title=" in res._repr_html_()
