"""Tiny random-weight language models and a byte tokenizer, built offline.

Nothing here downloads: :func:`tiny_gpt2` and :func:`tiny_llama` build Hugging Face
models from configurations (the ``text`` extra: ``transformers``) with seeded random
weights; :class:`ByteTokenizer` is a character-level tokenizer over UTF-8 bytes that
works with any model whose vocabulary has at least :attr:`ByteTokenizer.vocab_size`
entries. :func:`load_text_model` resolves the model specs of ``torchexplain
explain-text``: ``gpt2-tiny``, ``llama-tiny`` or a local Hugging Face model directory.

>>> model, tokenizer = load_text_model("gpt2-tiny")
>>> tokenizer.decode(tokenizer.encode("hi"))
'hi'
"""

from __future__ import annotations

from collections import UserDict
from pathlib import Path
from typing import List, Optional, Union

import torch
from torch import nn

TEXT_MODELS = ("gpt2-tiny", "llama-tiny")

__all__ = ["TEXT_MODELS", "ByteTokenizer", "tiny_gpt2", "tiny_llama", "load_text_model"]


class ByteTokenizer:
    """One token per UTF-8 byte (ids 0-255) plus a begin/end token (id 256, ``"<s>"``).

    Hugging Face style: ``encode(text, add_special_tokens=True, return_tensors=None)``,
    ``decode(ids)``, ``convert_ids_to_tokens``, ``convert_tokens_to_ids`` and
    ``__call__(text, return_offsets_mapping=...)``. ``add_special_tokens`` puts the
    begin token first (off by default: a byte model needs no start token).
    """

    bos_token = eos_token = "<s>"
    bos_token_id = eos_token_id = 256
    vocab_size = 257

    def __init__(self, add_bos: bool = False) -> None:
        self.add_bos = add_bos

    def encode(self, text: str, add_special_tokens: bool = True, return_tensors: Optional[str] = None):
        if not isinstance(text, str):
            raise TypeError(f"text must be a string; got {type(text).__name__}")
        ids = list(text.encode("utf-8"))
        if add_special_tokens and self.add_bos:
            ids = [self.bos_token_id, *ids]
        if return_tensors == "pt":
            return torch.tensor([ids], dtype=torch.long)
        if return_tensors is not None:
            raise ValueError(f"return_tensors: only 'pt' or None; got {return_tensors!r}")
        return ids

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        ids = torch.as_tensor(ids).reshape(-1).tolist()
        data = bytes(i for i in ids if 0 <= i < 256)
        text = data.decode("utf-8", errors="replace")
        if skip_special_tokens or self.bos_token_id not in ids:
            return text
        return "".join(self.bos_token if i == self.bos_token_id else bytes([i]).decode("utf-8", "replace") for i in ids)

    def convert_ids_to_tokens(self, ids: Union[int, List[int]]):
        if isinstance(ids, int):
            return self.bos_token if ids == self.bos_token_id else bytes([ids]).decode("utf-8", "replace")
        return [self.convert_ids_to_tokens(int(i)) for i in ids]

    def convert_tokens_to_ids(self, tokens: Union[str, List[str]]):
        if isinstance(tokens, str):
            if tokens == self.bos_token:
                return self.bos_token_id
            data = tokens.encode("utf-8")
            if len(data) != 1:
                raise ValueError(f"tokens: {tokens!r} is not one byte token")
            return data[0]
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def __call__(self, text: str, add_special_tokens: bool = True, return_offsets_mapping: bool = False, **kwargs):
        ids = self.encode(text, add_special_tokens=add_special_tokens)
        result = UserDict(input_ids=ids)
        if return_offsets_mapping:
            offsets = [(0, 0)] if add_special_tokens and self.add_bos else []
            position = 0
            for ch in text:  # every byte of a character maps to that character's span
                for _ in ch.encode("utf-8"):
                    offsets.append((position, position + 1))
                position += 1
            result["offset_mapping"] = offsets
        return result


def _transformers():
    try:
        import transformers
    except ImportError as err:  # pragma: no cover - the text extra is installed in dev
        raise ImportError("the tiny language models need transformers: pip install 'torchexplain[text]'") from err
    return transformers


def tiny_gpt2(layers: int = 2, width: int = 64, heads: int = 4, context: int = 128, seed: int = 0,
              bias: bool = True, attn_implementation: str = "eager") -> nn.Module:
    """A random-weight GPT-2 (``GPT2LMHeadModel``) over :class:`ByteTokenizer`'s
    vocabulary, in eval mode. ``bias=False`` zeroes every bias (for conservation checks)."""
    t = _transformers()
    config = t.GPT2Config(vocab_size=ByteTokenizer.vocab_size, n_positions=context, n_embd=width, n_layer=layers,
                          n_head=heads, bos_token_id=256, eos_token_id=256, pad_token_id=256)
    return _build(t.GPT2LMHeadModel, config, seed, bias, attn_implementation)


def tiny_llama(layers: int = 2, width: int = 64, heads: int = 4, context: int = 128, seed: int = 0,
               attn_implementation: str = "eager") -> nn.Module:
    """A random-weight Llama (``LlamaForCausalLM``: RMSNorm, rotary positions, SwiGLU,
    no biases) over :class:`ByteTokenizer`'s vocabulary, in eval mode."""
    t = _transformers()
    config = t.LlamaConfig(vocab_size=ByteTokenizer.vocab_size, hidden_size=width, intermediate_size=2 * width,
                           num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                           max_position_embeddings=context, bos_token_id=256, eos_token_id=256, pad_token_id=256)
    return _build(t.LlamaForCausalLM, config, seed, True, attn_implementation)


def _build(cls, config, seed: int, bias: bool, attn_implementation: str) -> nn.Module:
    config._attn_implementation = attn_implementation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
    if not bias:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith(".bias"):
                    p.zero_()
    return model.eval()


def load_text_model(spec: str, device: Union[str, torch.device] = "cpu"):
    """``(model, tokenizer)`` for a text model spec: ``gpt2-tiny`` / ``llama-tiny``
    (random weights, :class:`ByteTokenizer`) or the path of a local Hugging Face model
    directory (``AutoModelForCausalLM`` and ``AutoTokenizer``, read with
    ``local_files_only``: nothing is downloaded)."""
    if spec == "gpt2-tiny":
        model, tokenizer = tiny_gpt2(), ByteTokenizer()
    elif spec == "llama-tiny":
        model, tokenizer = tiny_llama(), ByteTokenizer()
    elif Path(spec).is_dir():
        t = _transformers()
        model = t.AutoModelForCausalLM.from_pretrained(spec, local_files_only=True).eval()
        tokenizer = t.AutoTokenizer.from_pretrained(spec, local_files_only=True)
    else:
        raise ValueError(f"model: expected one of {list(TEXT_MODELS)} or a local Hugging Face model directory; "
                         f"got {spec!r}")
    return model.to(device), tokenizer


