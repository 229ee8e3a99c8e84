"""LLM attribution for models served remotely (Captum 0.9's ``RemoteLLMAttribution``).

A :class:`RemoteLLMProvider` returns the log-probabilities of a target text after a
prompt (and generates text); :class:`RemoteLLMAttribution` runs a perturbation method
over the prompt's features with one provider call per perturbed prompt.
:class:`VLLMProvider` talks to a vLLM server through the ``openai`` client.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Any, List, Optional

import torch
from torch import Tensor

from .llm import DEFAULT_GEN_ARGS, LLMAttribution

__all__ = ["RemoteLLMAttribution", "RemoteLLMProvider", "VLLMProvider"]


class RemoteLLMProvider(ABC):
    """A remote model: ``generate(prompt, **gen_args) -> str`` and
    ``get_logprobs(input_prompt, target_str, tokenizer) -> [log p per target token]``."""

    api_url: str

    @abstractmethod
    def generate(self, prompt: str, **gen_args: Any) -> str:
        """The text generated after ``prompt``."""

    @abstractmethod
    def get_logprobs(self, input_prompt: str, target_str: str, tokenizer=None) -> List[float]:
        """The log-probability of each token of ``target_str`` after ``input_prompt``."""


class VLLMProvider(RemoteLLMProvider):
    """A vLLM server's OpenAI-compatible completions API (needs ``pip install openai``;
    the key is ``$OPENAI_API_KEY``, or "EMPTY"). ``model_name`` None: the server's first model."""

    def __init__(self, api_url: str, model_name: Optional[str] = None) -> None:
        try:
            from openai import OpenAI
        except ImportError as err:
            raise ImportError("VLLMProvider needs the openai package: pip install openai") from err
        if not isinstance(api_url, str) or not api_url.strip():
            raise ValueError("api_url must be the vLLM server's URL; got an empty value")
        self.api_url = api_url
        try:
            self.client = OpenAI(base_url=api_url, api_key=os.getenv("OPENAI_API_KEY", "EMPTY"))
            if model_name is None:
                models = self.client.models.list().data
                if not models:
                    raise ValueError("No models available from the vLLM API")
                model_name = models[0].id
        except ValueError:
            raise
        except ConnectionError as err:
            raise ConnectionError(f"Failed to connect to vLLM API: {err}") from err
        except Exception as err:
            raise Exception(f"Unexpected error while initializing vLLM provider: {err}") from err
        self.model_name = model_name

    def generate(self, prompt: str, **gen_args: Any) -> str:
        gen_args.setdefault("max_tokens", gen_args.pop("max_new_tokens", 25))
        gen_args.pop("do_sample", None)
        try:
            response = self.client.completions.create(model=self.model_name, prompt=prompt, **gen_args)
        except ConnectionError as err:
            raise ConnectionError(f"Failed to connect to vLLM API: {err}") from err
        if not getattr(response, "choices", None):
            raise KeyError("API response missing expected 'choices' data")
        return response.choices[0].text

    def get_logprobs(self, input_prompt: str, target_str: str, tokenizer=None) -> List[float]:
        if tokenizer is None:
            raise ValueError("tokenizer is required to count the target's tokens")
        if not target_str:
            raise ValueError("target_str must not be empty")
        n = len(tokenizer.encode(target_str, add_special_tokens=False))
        try:
            response = self.client.completions.create(model=self.model_name, prompt=input_prompt + target_str,
                                                      temperature=0.0, max_tokens=1, extra_body={"prompt_logprobs": 0})
        except ConnectionError as err:
            raise ConnectionError(f"Failed to connect to vLLM API: {err}") from err
        if not getattr(response, "choices", None):
            raise KeyError("API response missing expected 'choices' data")
        found = getattr(response.choices[0], "prompt_logprobs", None)
        if not found:
            raise KeyError("API response missing 'prompt_logprobs' data")
        probs = [next(iter(entry.values()))["logprob"] for entry in found[-n:] if entry]
        if len(probs) != n:
            raise ValueError(f"the API gave {len(probs)} log-probabilities for a target of {n} tokens")
        return probs


class _PlaceholderModel:
    """Stands in for the model of a remote attribution (only its ``device`` is read)."""

    def __init__(self) -> None:
        self.device = torch.device("cpu")

    def __call__(self, *args, **kwargs) -> int:
        return 0


class RemoteLLMAttribution(LLMAttribution):
    """:class:`LLMAttribution` for a remote model: construct ``attr_method`` on
    :attr:`placeholder_model`; every perturbed prompt's target log-probabilities come
    from ``provider.get_logprobs``."""

    placeholder_model = _PlaceholderModel()

    def __init__(self, attr_method, tokenizer, provider: RemoteLLMProvider, attr_target: str = "log_prob") -> None:
        if not callable(getattr(provider, "get_logprobs", None)):
            raise TypeError(f"provider must be a RemoteLLMProvider; got {type(provider).__name__}")
        super().__init__(attr_method, tokenizer, attr_target=attr_target, causal=True)
        self.provider = provider

    def _text(self, model_input) -> str:
        return self.tokenizer.decode(model_input.reshape(-1)) if isinstance(model_input, Tensor) else model_input

    def _generate(self, inp, gen_args) -> Tensor:
        args = dict(DEFAULT_GEN_ARGS if not gen_args else gen_args)
        text = self.provider.generate(self._text(inp.to_model_input()), **args)
        return self.tokenizer.encode(text, return_tensors="pt", add_special_tokens=False)[0].to(self.device)

    def _log_probs(self, inputs: list, target: Tensor, causal: bool, prefix) -> Tensor:
        target_str = self.tokenizer.decode(target)
        rows = []
        for x in inputs:
            probs = self.provider.get_logprobs(input_prompt=self._text(x), target_str=target_str,
                                               tokenizer=self.tokenizer)
            if len(probs) != target.numel():
                raise ValueError(f"Number of token logprobs from provider ({len(probs)}) does not match the "
                                 f"target's {target.numel()} tokens")
            rows.append(probs)
        return torch.tensor(rows, dtype=torch.float32, device=self.device)
