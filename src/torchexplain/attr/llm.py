"""Which parts of a prompt made a language model say this (Captum 0.9's LLM attribution).

:class:`LLMAttribution` wraps a perturbation method (FeatureAblation,
ShapleyValueSampling, ShapleyValues, Lime, KernelShap) and explains the target's
log-probability, :math:`\\log p(y \\mid x) = \\sum_t \\log p(y_t \\mid x, y_{<t})`, by the
prompt's interpretable features (:class:`TextTemplateInput` segments or
:class:`TextTokenInput` tokens); FeatureAblation and the Shapley methods also explain
every target token on its own. :class:`LLMGradientAttribution` wraps a layer gradient
method (LayerIntegratedGradients, LayerGradientXActivation, LayerGradientShap; also
LayerLRP, which explains the token's logit) on the embedding layer and attributes each
target token's log-probability to the prompt's tokens (summed over the embedding).

Beyond Captum, with the same values: every perturbed prompt of a batch runs in one
forward; a causal model scores all target tokens in one teacher-forced forward (and
shares the unperturbed prompt's key-value cache up to each perturbed prompt's first
changed token); gradient methods explain every target token in one call, the tokens
batched as rows. See :mod:`.llm_model`.

>>> from torchexplain.attr import FeatureAblation, TextTokenInput
>>> from torchexplain.models.text import tiny_gpt2, ByteTokenizer
>>> model, tok = tiny_gpt2(), ByteTokenizer()
>>> llm = LLMAttribution(FeatureAblation(model), tok)
>>> res = llm.attribute(TextTokenInput("hi there", tok), target=" ok")
>>> tuple(res.token_attr.shape)
(3, 8)
"""

from __future__ import annotations

import numbers
from copy import copy
from typing import Any, Callable, Dict, List, Optional, Union

import torch
from torch import Tensor

from .ablation import FeatureAblation
from .interpretable_input import token_id
from .kernel_shap import KernelShap
from .layer import LayerGradientXActivation
from .layer_lrp import LayerLRP
from .layer_path import LayerGradientShap, LayerIntegratedGradients
from .lime import Lime
from .llm_gradient import shared_forward_attribution
from .llm_model import LanguageModel, PrefixCache, model_logits
from .llm_result import LLMAttributionResult
from .shapley import ShapleyValues, ShapleyValueSampling

__all__ = ["DEFAULT_GEN_ARGS", "LLMAttribution", "LLMGradientAttribution", "LLMAttributionResult"]

DEFAULT_GEN_ARGS: Dict[str, Any] = {"max_new_tokens": 25, "do_sample": False, "temperature": None, "top_p": None}


def pretty_tokens(tokenizer, ids: Tensor) -> List[str]:
    """A readable string per token id (decoded one by one; newlines shown as ``\\n``)."""
    if tokenizer is None or not callable(getattr(tokenizer, "decode", None)):
        return [str(int(i)) for i in ids]
    return [tokenizer.decode(ids[i:i + 1].cpu()).replace("\n", "\\n") for i in range(ids.numel())]


class BaseLLMAttribution:
    """What both LLM attribution classes share: the model, its tokenizer, the target."""

    SUPPORTED_METHODS: tuple = ()

    def __init__(self, attr_method, tokenizer, causal: Optional[bool] = None) -> None:
        if not isinstance(attr_method, self.SUPPORTED_METHODS):
            names = ", ".join(c.__name__ for c in self.SUPPORTED_METHODS)
            raise TypeError(f"attr_method: {type(self).__name__} supports {names}; got {type(attr_method).__name__}")
        if causal is not None and not isinstance(causal, bool):
            raise TypeError(f"causal must be True, False or None (detect); got {causal!r}")
        self.attr_method = copy(attr_method)  # the caller's instance is never changed
        self.model = attr_method.forward_func
        self.tokenizer = tokenizer
        self.lm = LanguageModel(self.model, tokenizer)
        self.causal = causal

    @property
    def device(self) -> torch.device:
        return self.lm.device

    def _format_model_input(self, model_input) -> Tensor:
        return self.lm.as_ids(model_input)

    def _skip_ids(self, skip_tokens) -> List[int]:
        if not skip_tokens:
            return []
        if not isinstance(skip_tokens, (list, tuple)):
            raise TypeError(
                f"skip_tokens must be a list of token ids or token strings; got {type(skip_tokens).__name__}")
        vocab = self.lm.vocab_size
        ids = []
        for token in skip_tokens:
            if isinstance(token, str):
                if self.tokenizer is None:
                    raise ValueError(f"skip_tokens: {token!r} is a token string, but there is no tokenizer")
                ids.append(token_id(self.tokenizer, token, "skip_tokens"))
            elif isinstance(token, numbers.Integral) and not isinstance(token, bool):
                if token < 0 or (vocab is not None and token >= vocab):
                    raise ValueError(f"skip_tokens: id {token} is not in the vocabulary (0 .. {vocab})")
                ids.append(int(token))
            else:
                raise TypeError(f"skip_tokens must hold token ids (int) or tokens (str); got {token!r}")
        return ids

    def _get_target_tokens(self, inp, target=None, skip_tokens=None, gen_args=None) -> Tensor:
        """The target's token ids ``(T,)``: generated when ``target`` is None."""
        if target is None:
            return self._generate(inp, gen_args)
        if gen_args is not None:
            raise ValueError("gen_args is only used to generate a target; give gen_args or target, not both")
        skip = self._skip_ids(skip_tokens)
        if isinstance(target, str):
            ids = self.lm.encode(target, "target", special_tokens=False)[0]
        elif isinstance(target, Tensor):
            if target.is_floating_point() or target.dim() > 2 or (target.dim() == 2 and target.shape[0] != 1):
                raise ValueError(f"target must be one sequence of integer token ids; got {target.dtype} "
                                 f"{tuple(target.shape)}")
            ids = target.reshape(-1).long().to(self.device)
        else:
            raise TypeError(f"target must be a str, a tensor of token ids or None; got {type(target).__name__}")
        if skip:
            ids = ids[~torch.isin(ids, torch.tensor(skip, device=ids.device))]
        if ids.numel() == 0:
            raise ValueError("target has no tokens (after removing skip_tokens)")
        return ids

    def _generate(self, inp, gen_args) -> Tensor:
        prompt = self._format_model_input(inp.to_model_input())
        return self.lm.generate(prompt, dict(DEFAULT_GEN_ARGS if not gen_args else gen_args))

    def _checked_prompt(self, inp, target: Tensor) -> Tensor:
        prompt = self._format_model_input(inp.to_model_input())
        context = self.lm.context_length
        if context is not None and prompt.shape[1] + target.numel() - 1 > context:
            raise ValueError(f"target: the prompt ({prompt.shape[1]} tokens) and the target ({target.numel()} "
                             f"tokens) exceed the model's context of {context} tokens")
        return prompt

    def _is_causal(self, prompt: Tensor, target: Tensor) -> bool:
        return self.causal if self.causal is not None else self.lm.is_causal(prompt, target)

    def attribute_future(self) -> Callable:
        raise NotImplementedError(f"attribute_future is not implemented for {type(self).__name__}")


class _TargetScorer:
    """The forward the perturbation method sees: ``(B, n_features)`` presence vectors ->
    ``(B, 1 + T)`` [sequence, per-token] log-probabilities (or ``(B,)`` sequence only)."""

    def __init__(self, llm: "LLMAttribution", inp, target: Tensor, causal: bool, prefix, inspect_forward) -> None:
        self.llm, self.inp, self.target, self.causal, self.prefix = llm, inp, target, causal, prefix
        self.inspect_forward = inspect_forward

    def __call__(self, perturbed: Tensor) -> Tensor:
        z = perturbed.reshape(-1, perturbed.shape[-1])
        inputs = [self.inp.to_model_input(z[i:i + 1]) for i in range(z.shape[0])]
        scores = self.llm._log_probs(inputs, self.target, self.causal, self.prefix)
        total = scores.sum(1, keepdim=True)
        out = torch.cat([total, scores], 1) if self.llm.include_per_token_attr else total.squeeze(1)
        out = out.exp() if self.llm.attr_target == "prob" else out
        if self.inspect_forward is not None:
            self._inspect(inputs, out)
        return out

    def _inspect(self, inputs, out) -> None:
        decode = getattr(self.llm.tokenizer, "decode", str)
        response = decode(self.target)
        for prompt, value in zip(inputs, out):
            probs = value.exp() if self.llm.attr_target != "prob" else value
            text = prompt if isinstance(prompt, str) else decode(torch.as_tensor(prompt).reshape(-1))
            self.inspect_forward(text, response, probs.reshape(-1).tolist())


class LLMAttribution(BaseLLMAttribution):
    r"""A perturbation method over a prompt's features, explaining a target text
    (Captum 0.9's LLMAttribution).

    Args:
        attr_method: FeatureAblation, ShapleyValueSampling, ShapleyValues, Lime or
            KernelShap, constructed on the language model (not changed).
        tokenizer: the model's tokenizer (``encode``/``decode``); may be None when the
            prompt and target are token ids.
        attr_target: ``"log_prob"`` (default) or ``"prob"``.
        causal: whether appending tokens leaves earlier logits unchanged (every
            decoder-only LM); None checks it once per call. A causal model is scored
            with one forward for all target tokens, others one forward per token.

    Formula:
        $$f(z) = \log p(y \mid x_z) = \sum_{t=1}^{T} \log p(y_t \mid x_z, y_{<t}), \qquad
        f_t(z) = \log p(y_t \mid x_z, y_{<t})$$

        with \(y = y_1 \dots y_T\) the target's tokens, \(z \in \{0, 1\}^d\) the presence of
        the prompt's \(d\) interpretable features and \(x_z\) the prompt with the absent
        ones replaced by the input's baselines. ``seq_attr`` is the wrapped method's
        attribution of \(f\) to the features (for FeatureAblation
        \(\phi_i = f(\mathbf{1}) - f(\mathbf{1} - e_i)\)) and ``token_attr[t]`` that of
        \(f_t\) (FeatureAblation and the Shapley methods only), averaged over
        ``num_trials``; with ``attr_target="prob"`` the probabilities \(e^{f}\) and
        \(e^{f_t}\) are explained instead. FeatureAblation and the Shapley methods are
        linear in the explained function, so with log-probabilities ``seq_attr`` is the
        sum of the rows of ``token_attr``.

    Cost:
        No backward pass. Each prompt the wrapped method evaluates (FeatureAblation:
        \(1 + d\)) costs one forward pass over ``prompt + target[:-1]`` on a causal model
        (prompts of one length batched, on CPU in blocks of about 1024 token positions),
        \(T\) forward passes (one per target token, batched over prompts) on any other;
        with ``use_cached_outputs`` on a Hugging Face model one more forward builds the
        unperturbed sequence's key-value cache and each prompt runs only from its first
        changed token. ``causal=None`` adds three forward passes of the prompt (the
        check); everything but the check is repeated ``num_trials`` times.

    Examples:
        >>> import torch
        >>> from torchexplain.models.text import ByteTokenizer
        >>> class TinyLM(torch.nn.Module):  # a causal LM: position t sees the tokens up to t
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.emb = torch.nn.Embedding(257, 8)
        ...         self.out = torch.nn.Linear(8, 257)
        ...     def forward(self, ids):
        ...         return self.out(self.emb(ids).cumsum(1))
        >>> model, tok = TinyLM(), ByteTokenizer()
        >>> from torchexplain.attr import FeatureAblation, LLMAttribution, TextTokenInput
        >>> llm = LLMAttribution(FeatureAblation(model), tok)
        >>> result = llm.attribute(TextTokenInput("hi there", tok), target=" ok")
        >>> result.seq_attr.shape, result.token_attr.shape  # 8 prompt tokens; 3 target tokens
        (torch.Size([8]), torch.Size([3, 8]))
        >>> bool(torch.allclose(result.seq_attr, result.token_attr.sum(0), atol=1e-5))
        True
    """

    SUPPORTED_METHODS = (FeatureAblation, ShapleyValueSampling, ShapleyValues, Lime, KernelShap)
    SUPPORTED_PER_TOKEN_ATTR_METHODS = (FeatureAblation, ShapleyValueSampling, ShapleyValues)

    def __init__(self, attr_method, tokenizer, attr_target: str = "log_prob", causal: Optional[bool] = None) -> None:
        super().__init__(attr_method, tokenizer, causal)
        if attr_target not in ("log_prob", "prob"):
            raise ValueError(f"attr_target must be 'log_prob' or 'prob'; got {attr_target!r}")
        self.attr_target = attr_target
        self.include_per_token_attr = isinstance(attr_method, self.SUPPORTED_PER_TOKEN_ATTR_METHODS)

    def _log_probs(self, inputs: list, target: Tensor, causal: bool, prefix) -> Tensor:
        """``(B, T)`` log-probabilities of the target after each model input; inputs of
        one length share forwards."""
        rows = [self._format_model_input(x) for x in inputs]
        if any(r.shape[1] == 0 for r in rows):
            raise ValueError("inp: a perturbed prompt has no tokens left, and a language model needs one to predict "
                             "the target; use baselines that keep a token or a tokenizer that adds a start token")
        scores = torch.empty((len(rows), target.numel()), device=self.device)
        for length in sorted({r.shape[1] for r in rows}):
            index = [i for i, r in enumerate(rows) if r.shape[1] == length]
            batch = torch.cat([rows[i] for i in index])
            scores[index] = self.lm.target_log_probs(batch, target, causal, prefix)
        return scores

    def attribute(self, inp, target: Union[str, Tensor, None] = None, num_trials: int = 1,
                  gen_args: Optional[Dict[str, Any]] = None, use_cached_outputs: bool = True,
                  _inspect_forward: Optional[Callable[[str, str, List[float]], None]] = None,
                  forward_in_tokens: bool = True, skip_tokens=None, **kwargs) -> LLMAttributionResult:
        """Attributions of ``target`` (generated with ``gen_args`` when None; a text is
        encoded without special tokens, as Captum 0.9 does) to the features of ``inp``,
        averaged over ``num_trials`` runs; ``skip_tokens`` (ids or tokens) are left out
        of the target; ``use_cached_outputs`` shares the unperturbed prompt's key-value
        cache (Hugging Face models); ``kwargs`` go to the method's ``attribute`` (e.g.
        ``n_samples``). ``forward_in_tokens`` (Captum 0.9's choice between token-by-token
        and one-pass scoring) is accepted for compatibility: a causal model is scored in
        one pass either way (its values are the token-by-token ones: that is what the
        causality check verifies), any other model token by token."""
        if isinstance(num_trials, bool) or not isinstance(num_trials, numbers.Integral) or num_trials < 1:
            raise ValueError(f"num_trials must be a positive int; got {num_trials!r}")
        target_ids = self._get_target_tokens(inp, target, skip_tokens, gen_args)
        prompt = self._checked_prompt(inp, target_ids)
        causal = self._is_causal(prompt, target_ids)
        argument = self.lm.cache_argument() if causal and use_cached_outputs else None
        prefix = None
        if argument is not None and prompt.shape[0] == 1:
            prefix = PrefixCache(self.lm, torch.cat([prompt, target_ids[:-1].reshape(1, -1)], 1), argument)
        method = copy(self.attr_method)
        method.forward_func = _TargetScorer(self, inp, target_ids, causal, prefix, _inspect_forward)
        rows = 1 + target_ids.numel() if self.include_per_token_attr else 1
        attr = torch.zeros((rows, inp.n_itp_features), device=self.device)
        for _ in range(num_trials):
            attr += method.attribute(inp.to_tensor().to(self.device), **kwargs).reshape(attr.shape).to(attr)
        attr = inp.format_attr(attr / num_trials)
        return LLMAttributionResult(
            seq_attr=attr[0], token_attr=attr[1:] if self.include_per_token_attr else None,
            input_tokens=inp.values, output_tokens=pretty_tokens(self.tokenizer, target_ids), inp=inp,
        )


class _TokenLogProb:
    """The forward a gradient method sees: presence vectors -> the log-probability (or,
    for LRP, the logit) of target token ``index`` after ``prompt + target[:index]``;
    or, with ``index`` None (causal models), one row per target token over the one
    sequence ``prompt + target[:-1]`` (a row explains the token its ``rows`` entry names)."""

    def __init__(self, llm: "LLMGradientAttribution", inp, target: Tensor, index: Optional[int]) -> None:
        self.llm, self.inp, self.target, self.index = llm, inp, target, index

    def __call__(self, perturbed: Tensor, rows: Optional[Tensor] = None) -> Tensor:
        ids = self.llm._format_model_input(self.inp.to_model_input(perturbed))
        n, t_len = ids.shape[0], self.target.numel()
        stop = t_len - 1 if self.index is None else self.index
        seq = torch.cat([ids, self.target[:stop].expand(n, -1).to(ids)], 1)
        logits = model_logits(self.llm.model(seq))
        if self.index is None:
            token = rows.reshape(-1).to(ids.device)
            picked = logits[torch.arange(n, device=ids.device), ids.shape[1] - 1 + token]
        else:
            token = torch.full((n,), self.index, device=ids.device)
            picked = logits[:, -1]
        if not self.llm.explains_logit:
            picked = torch.log_softmax(picked.float(), -1)
        return picked.gather(-1, self.target.to(ids.device)[token].unsqueeze(1)).squeeze(1)


class LLMGradientAttribution(BaseLLMAttribution):
    r"""A layer gradient method on the embedding layer, explaining each target token's
    log-probability by the prompt's tokens (the layer attribution summed over the
    embedding dimension; Captum 0.9's LLMGradientAttribution).

    Args:
        attr_method: LayerIntegratedGradients, LayerGradientXActivation,
            LayerGradientShap or LayerLRP on the language model and its embedding layer
            (LayerLRP explains the target token's logit, as AttnLRP does).
        tokenizer: the model's tokenizer; may be None when the target is token ids.
        causal: as for :class:`LLMAttribution`. On a causal model LayerIntegratedGradients
            and LayerGradientXActivation take one forward pass for all target tokens and a
            backward pass per token (:mod:`.llm_gradient`), the other methods one call with
            a row per token; other models one call per token, as in Captum.

    Formula:
        $$\phi_{t,i} = \sum_{d} A_{i,d}\left(f_t\right), \qquad
        f_t(e) = \log p(y_t \mid e, y_{<t}), \qquad \mathrm{seq}_i = \sum_{t=1}^{T} \phi_{t,i}$$

        with \(y = y_1 \dots y_T\) the target's tokens, \(e\) the embedding layer's values,
        \(A_{i,d}(f_t)\) the wrapped layer method's attribution of \(f_t\) to dimension
        \(d\) of prompt token \(i\) (for LayerLRP \(f_t\) is the logit of \(y_t\)), and
        ``token_attr[t, i]`` \(= \phi_{t,i}\), ``seq_attr[i]`` \(= \mathrm{seq}_i\) (the
        tokens the input skips left out). For LayerIntegratedGradients

        $$A_{i,d}(f_t) = (e_{i,d} - e'_{i,d}) \sum_{k=1}^{m} w_k
        \frac{\partial f_t(e' + \alpha_k (e - e'))}{\partial e_{i,d}}$$

        with \(e'\) the embeddings of the prompt with every token replaced by the input's
        baseline (the target's tokens are the same at both ends and get nothing), so
        completeness reads \(\sum_i \phi_{t,i} = \log p(y_t \mid x, y_{<t}) -
        \log p(y_t \mid x', y_{<t})\) up to the quadrature error.

    Cost:
        On a causal model with \(T > 1\) target tokens, LayerIntegratedGradients runs
        ``n_steps`` forward passes of the one sequence ``prompt + target[:-1]`` (batched in
        chunks) with \(T\) backward passes through each chunk's graph, plus two forward
        passes for the embeddings at both ends; LayerGradientXActivation one forward and
        \(T\) backward passes. Other methods, or other keyword arguments, run the method
        once with \(T\) rows (its cost per row, times \(T\)); a non-causal model (or a
        single target token) runs it once per target token. ``causal=None`` adds three
        forward passes (the check).

    Examples:
        >>> import torch
        >>> from torchexplain.models.text import ByteTokenizer
        >>> class TinyLM(torch.nn.Module):  # a causal LM: position t sees the tokens up to t
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.emb = torch.nn.Embedding(257, 8)
        ...         self.out = torch.nn.Linear(8, 257)
        ...     def forward(self, ids):
        ...         return self.out(self.emb(ids).cumsum(1))
        >>> model, tok = TinyLM(), ByteTokenizer()
        >>> from torchexplain.attr import LayerIntegratedGradients, LLMGradientAttribution, TextTokenInput
        >>> llm = LLMGradientAttribution(LayerIntegratedGradients(model, model.emb), tok)
        >>> result = llm.attribute(TextTokenInput("hi there", tok), target=" ok")
        >>> result.token_attr.shape  # 3 target tokens, 8 prompt tokens
        torch.Size([3, 8])
        >>> prompt, target = torch.tensor(tok.encode("hi there")), torch.tensor(tok.encode(" ok"))
        >>> def log_probs(p):  # log p(y_t | p, y_<t) for every target token
        ...     logits = model(torch.cat([p, target[:-1]])[None])[0, len(p) - 1:]
        ...     return logits.log_softmax(-1).gather(1, target[:, None]).squeeze(1)
        >>> gap = log_probs(prompt) - log_probs(torch.zeros_like(prompt))  # baseline: token id 0
        >>> bool(torch.allclose(result.token_attr.sum(1), gap, atol=1e-4))
        True
    """

    SUPPORTED_METHODS = (LayerIntegratedGradients, LayerGradientXActivation, LayerGradientShap, LayerLRP)

    def __init__(self, attr_method, tokenizer, causal: Optional[bool] = None) -> None:
        super().__init__(attr_method, tokenizer, causal)
        self.explains_logit = isinstance(attr_method, LayerLRP)

    def attribute(self, inp, target: Union[str, Tensor, None] = None, gen_args: Optional[Dict[str, Any]] = None,
                  skip_tokens=None, **kwargs) -> LLMAttributionResult:
        """Attributions of every token of ``target`` (generated with ``gen_args`` when
        None) to the tokens of ``inp`` (a :class:`TextTokenInput`); ``kwargs`` go to the
        method's ``attribute`` (e.g. ``n_steps``, ``baselines``)."""
        if not isinstance(self._format_model_input(inp.to_model_input()), Tensor) or not hasattr(inp, "itp_mask"):
            raise TypeError(
                f"inp: LLMGradientAttribution needs token inputs (TextTokenInput); got {type(inp).__name__}")
        target_ids = self._get_target_tokens(inp, target, skip_tokens, gen_args)
        prompt = self._checked_prompt(inp, target_ids)
        z = inp.to_tensor().to(self.device).float()  # paths between presence vectors (GradientShap)
        t_len = target_ids.numel()
        if self._is_causal(prompt, target_ids) and t_len > 1:
            attr = shared_forward_attribution(self, self.attr_method, inp, target_ids, kwargs)
            if attr is None:  # the method itself, one row per target token
                rows = torch.arange(t_len, device=self.device)  # travels with its row through the batching
                kwargs = {**kwargs, "additional_forward_args": (rows,)}
                attr = self._call(_TokenLogProb(self, inp, target_ids, None), z.expand(t_len, -1), kwargs)
            attr = attr[:, : prompt.shape[1]]
        else:
            attr = torch.cat([self._call(_TokenLogProb(self, inp, target_ids, t), z, kwargs)[:, : prompt.shape[1]]
                              for t in range(t_len)])
        attr = attr.sum(-1)
        if getattr(inp, "itp_mask", None) is not None:
            attr = attr[:, inp.itp_mask[0].to(attr.device)]
        return LLMAttributionResult(seq_attr=attr.sum(0), token_attr=attr, input_tokens=inp.values,
                                    output_tokens=pretty_tokens(self.tokenizer, target_ids), inp=inp)

    def _call(self, forward, z: Tensor, kwargs) -> Tensor:
        method = copy(self.attr_method)
        method.forward_func = forward
        out = method.attribute(z, **kwargs)
        return (out[0] if isinstance(out, tuple) else out).detach()
