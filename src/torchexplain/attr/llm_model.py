"""A language model as the LLM attribution classes see it: token ids in, the
log-probabilities of a target continuation out, for a batch of prompts at once.

:class:`LanguageModel` wraps a Hugging Face causal LM or any ``nn.Module`` mapping
``(B, L)`` token ids to ``(B, L, vocab)`` logits (a tensor, an output with
``.logits``, or a tuple whose first item is the logits).

How the target's log-probabilities are computed (all give the same values):

* **causal** models (checked once per call: appending a token leaves the logits of
  the earlier positions unchanged): one teacher-forced forward over
  ``prompt + target[:-1]`` gives every target token's log-probability;
* with a **shared-prefix cache** (Hugging Face models, ``use_cached_outputs``): the
  unperturbed sequence's key-value cache is computed once, and each perturbed
  prompt runs only from its first changed token on;
* other models (bidirectional, or random in their forward): one forward per target
  token over ``prompt + target[:t]``, as Captum does, batched over prompts.
"""

from __future__ import annotations

import inspect
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.batching import evaluate_rows

__all__ = ["LanguageModel", "PrefixCache", "model_logits"]

#: prompts sharing a forward are grouped by the length of their unperturbed prefix
#: into at most this many groups (more groups: less recomputation, more calls)
PREFIX_GROUPS = 8
#: token positions per forward on CPU: larger blocks run slower per row (measured on a
#: 4-layer GPT-2: 3.1 ms a row in blocks of 16-32 rows of 49 tokens, 5.9 ms in one of 772)
CPU_BLOCK_TOKENS = 1024


def model_logits(output) -> Tensor:
    """The logits of a model's output: a tensor, ``.logits``, or a tuple's first item."""
    if isinstance(output, Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    if isinstance(output, dict) and isinstance(output.get("logits"), Tensor):
        return output["logits"]
    raise TypeError(f"the model must return logits (a tensor, or an output with .logits); got {type(output).__name__}")


def _config_value(model, *names) -> Optional[int]:
    config = getattr(model, "config", None)
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


class LanguageModel:
    """See the module docstring. ``tokenizer`` may be None when token ids are given."""

    def __init__(self, model: nn.Module, tokenizer=None) -> None:
        if not callable(model):
            raise TypeError(f"model must be an nn.Module returning logits; got {type(model).__name__}")
        self.model, self.tokenizer = model, tokenizer

    @property
    def device(self) -> torch.device:
        device = getattr(self.model, "device", None)
        if isinstance(device, (torch.device, str)):
            return torch.device(device)
        param = next(iter(self.model.parameters()), None) if isinstance(self.model, nn.Module) else None
        return param.device if param is not None else torch.device("cpu")

    @property
    def context_length(self) -> Optional[int]:
        return _config_value(self.model, "n_positions", "max_position_embeddings", "n_ctx")

    @property
    def vocab_size(self) -> Optional[int]:
        size = getattr(self.tokenizer, "vocab_size", None)  # a plain model's fallback
        return _config_value(self.model, "vocab_size") or (size if isinstance(size, int) and size > 0 else None)

    def logits(self, ids: Tensor, **kwargs) -> Tensor:
        return model_logits(self.model(ids, **kwargs))

    # ------------------------------------------------------------------ text <-> ids

    def encode(self, text: str, name: str, special_tokens: bool = True) -> Tensor:
        """``(1, L)`` ids of ``text`` (with the tokenizer's special tokens, or without)."""
        if self.tokenizer is None:
            raise ValueError(f"{name} is text, but there is no tokenizer: pass a tokenizer, or give token ids "
                             "(a TextTokenInput / a tensor target)")
        options = {} if special_tokens else {"add_special_tokens": False}
        ids = self.tokenizer.encode(text, return_tensors="pt", **options)
        return torch.as_tensor(ids).reshape(1, -1).long().to(self.device)

    def as_ids(self, model_input, name: str = "inp") -> Tensor:
        if isinstance(model_input, str):
            return self.encode(model_input, name)
        if isinstance(model_input, Tensor):
            return model_input.reshape(-1, model_input.shape[-1]).long().to(self.device)
        raise TypeError(f"{name}.to_model_input() must give text or token ids; got {type(model_input).__name__}")

    @torch.no_grad()
    def generate(self, prompt: Tensor, gen_args: dict) -> Tensor:
        """The ids ``(T,)`` the model generates after ``prompt`` ``(1, L)``: its
        ``generate(prompt, **gen_args)`` (a Hugging Face model also gets an attention mask
        and a padding id, so it need not guess them), else greedy decoding of
        ``max_new_tokens`` (25) tokens, stopping at the tokenizer's end token."""
        generate = getattr(self.model, "generate", None)
        if callable(generate):
            args = dict(gen_args)
            if hasattr(self.model, "config"):
                pad = getattr(self.tokenizer, "pad_token_id", None)
                pad = getattr(self.tokenizer, "eos_token_id", None) if pad is None else pad
                args.setdefault("attention_mask", torch.ones_like(prompt))
                args.setdefault("pad_token_id", pad)
            return generate(prompt, **args)[0, prompt.shape[1]:].to(self.device)
        eos = getattr(self.tokenizer, "eos_token_id", None)
        ids = prompt
        for _ in range(int(gen_args.get("max_new_tokens", 25))):
            nxt = self.logits(ids)[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], 1)
            if eos is not None and int(nxt) == eos:
                break
        return ids[0, prompt.shape[1]:]

    # ------------------------------------------------------------------ checks

    @torch.no_grad()
    def is_causal(self, prompt: Tensor, target: Tensor) -> bool:
        """Whether the logits of ``prompt`` are unchanged by appending a target token
        (and the same on a second run: a random forward is not treated as causal)."""
        if target.numel() == 0:
            return True
        first = self.logits(prompt)[:, -1]
        again = self.logits(prompt)[:, -1]
        longer = self.logits(torch.cat([prompt, target[:1].reshape(1, 1).to(prompt)], 1))[:, -2]
        return bool(torch.equal(first, again) and torch.allclose(first, longer, rtol=1e-4, atol=1e-5))

    def cache_argument(self) -> Optional[str]:
        """The keyword a Hugging Face model takes its key-value cache by, or None."""
        if not hasattr(self.model, "config") or not isinstance(self.model, nn.Module):
            return None
        try:
            from transformers.cache_utils import DynamicCache  # noqa: F401
        except ImportError:
            return None
        params = inspect.signature(self.model.forward).parameters
        if "use_cache" not in params:
            return None
        return next((p for p in ("cache", "past_key_values") if p in params), None)  # "cache" since transformers 5

    # ------------------------------------------------------------------ scoring

    @torch.no_grad()
    def target_log_probs(self, rows: Tensor, target: Tensor, causal: bool, prefix: Optional["PrefixCache"] = None
                         ) -> Tensor:
        """``(B, T)``: log p(target[t] | row, target[:t]) for ``B`` prompts of one length."""
        target = target.to(rows.device)
        n, length, t_len = rows.shape[0], rows.shape[1], target.numel()
        out = rows.new_empty((n, t_len), dtype=torch.float32)
        if t_len == 0:
            return out
        if not causal:
            for t in range(t_len):
                seq = torch.cat([rows, target[:t].expand(n, -1)], 1)
                out[:, t] = self._chunked(seq, lambda s: self.logits(s)[:, -1:]).squeeze(1).gather(
                    -1, target[t].expand(n, 1)).squeeze(1)
            return out
        seq = torch.cat([rows, target[:-1].expand(n, -1)], 1)
        picks = target.expand(n, -1).unsqueeze(-1)
        if prefix is None:
            lp = self._chunked(seq, lambda s: self.logits(s)[:, length - 1:])
            return lp.gather(-1, picks).squeeze(-1)
        shared = prefix.shared_lengths(seq).clamp(max=length - 1)
        order = torch.argsort(shared, stable=True)
        for group in torch.tensor_split(order, min(PREFIX_GROUPS, n)):
            if group.numel():
                start = int(shared[group].min())
                lp = self._chunked(seq[group], lambda s, start=start: prefix.logits(s, start)[:, length - 1 - start:])
                out[group] = lp.gather(-1, picks[: group.numel()]).squeeze(-1)
        return out

    def _chunked(self, seq: Tensor, logits_of) -> Tensor:
        """Log-softmax of ``logits_of(rows)`` over blocks of rows: on CPU of about
        :data:`CPU_BLOCK_TOKENS` positions, elsewhere sized by the memory budget."""
        parts: list[Tensor] = []
        stats: dict = {"device": seq.device}

        def run(a: int, b: int) -> None:
            logits = logits_of(seq[a:b]).float()
            stats["row_bytes"] = 2 * logits[:1].numel() * logits.element_size()
            parts.append(F.log_softmax(logits, -1))

        chunk = max(1, CPU_BLOCK_TOKENS // seq.shape[1]) if seq.device.type == "cpu" else "auto"
        evaluate_rows(seq.shape[0], run, chunk, stats=stats, forward_only=True)
        return torch.cat(parts)


class PrefixCache:
    """The key-value cache of one unperturbed sequence, reused by every perturbed
    sequence for the tokens they share with it (a Hugging Face ``DynamicCache`` is
    rebuilt, cut and expanded, per call; the model is never changed)."""

    def __init__(self, lm: LanguageModel, ids: Tensor, argument: str) -> None:
        from transformers.cache_utils import DynamicCache

        self.lm, self.ids, self.argument, self._cache_cls = lm, ids, argument, DynamicCache
        with torch.no_grad():
            output = lm.model(ids, use_cache=True)
        cache = getattr(output, "cache", None)
        cache = getattr(output, "past_key_values", None) if cache is None else cache
        self.layers = [(layer.keys, layer.values) for layer in cache.layers]

    def shared_lengths(self, seq: Tensor) -> Tensor:
        """Per row of ``seq``: how many leading tokens it shares with the cached sequence."""
        m = min(seq.shape[1], self.ids.shape[1])
        same = (seq[:, :m] == self.ids[:, :m].to(seq.device)).long()
        return same.cumprod(1).sum(1)

    def logits(self, seq: Tensor, start: int) -> Tensor:
        """Logits of ``seq``'s positions ``start`` on, from the cache of the first ``start``."""
        if start == 0:
            return self.lm.logits(seq)
        n = seq.shape[0]
        data = [(k[:, :, :start].expand(n, -1, -1, -1), v[:, :, :start].expand(n, -1, -1, -1)) for k, v in self.layers]
        cache = self._cache_cls(data)
        return model_logits(self.lm.model(seq[:, start:], use_cache=True, **{self.argument: cache}))
