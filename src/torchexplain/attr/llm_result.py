"""What an LLM attribution returns (Captum's ``LLMAttributionResult``).

``seq_attr[i]``: how much prompt feature ``i`` contributes to the (log-)probability of
the whole target; ``token_attr[t, i]``: to target token ``t`` alone (None for methods
that only explain the sequence: Lime, KernelShap). Pictures come from
:mod:`torchexplain.viz.llm`.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torch import Tensor

__all__ = ["LLMAttributionResult"]


def _tensor(value, name: str, shape: tuple, meaning: str) -> Optional[Tensor]:
    """``value`` as a tensor of ``shape`` (None stays None), else a ValueError naming it."""
    if value is None:
        return None
    t = value if isinstance(value, Tensor) else torch.as_tensor(value)
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape ({meaning}) = {shape}; got {tuple(t.shape)}")
    return t


class LLMAttributionResult:
    """Attributions of a target text to the features of a prompt.

    Args (keyword only, as in Captum):
        input_tokens: the prompt's feature names (``n_in``).
        output_tokens: the target's tokens (``n_out``).
        seq_attr: ``(n_in,)`` attributions to the whole target.
        token_attr: ``(n_out, n_in)`` attributions per target token, or None.
        output_probs: ``(n_out,)`` probabilities of the target tokens, or None.
        inp: the interpretable input explained (Captum 0.9 keeps it too), or None.
    """

    def __init__(self, *, input_tokens: List[str], output_tokens: List[str], seq_attr, token_attr=None,
                 output_probs=None, inp=None) -> None:
        self.input_tokens = list(input_tokens)
        self.output_tokens = list(output_tokens)
        self.seq_attr = seq_attr
        self.token_attr = token_attr
        self.output_probs = output_probs
        self.inp = inp

    @property
    def seq_attr(self) -> Tensor:
        return self._seq_attr

    @seq_attr.setter
    def seq_attr(self, value) -> None:
        if value is None:
            raise ValueError("seq_attr must be given: one value per input token")
        self._seq_attr = _tensor(value, "seq_attr", (len(self.input_tokens),), "input tokens,")

    @property
    def token_attr(self) -> Optional[Tensor]:
        return self._token_attr

    @token_attr.setter
    def token_attr(self, value) -> None:
        shape = (len(self.output_tokens), len(self.input_tokens))
        self._token_attr = _tensor(value, "token_attr", shape, "output tokens, input tokens")

    @property
    def output_probs(self) -> Optional[Tensor]:
        return self._output_probs

    @output_probs.setter
    def output_probs(self, value) -> None:
        self._output_probs = _tensor(value, "output_probs", (len(self.output_tokens),), "output tokens,")

    @property
    def seq_attr_dict(self) -> Dict[str, float]:
        """``{input token: seq_attr}`` (a repeated token keeps its last value, as in Captum)."""
        return dict(zip(self.input_tokens, self.seq_attr.cpu().tolist()))

    def plot_token_attr(self, show: bool = False):
        """Heat map of ``token_attr`` (output tokens x input tokens): ``(fig, ax)``, or
        None after showing it."""
        from ..viz.llm import plot_token_attr

        return plot_token_attr(self, show=show)

    def plot_seq_attr(self, show: bool = False):
        """Bar chart of ``seq_attr`` over the input tokens: ``(fig, ax)``, or None after
        showing it."""
        from ..viz.llm import plot_seq_attr

        return plot_seq_attr(self, show=show)

    def _repr_html_(self) -> str:
        from ..viz.llm import token_attr_html

        return token_attr_html(self)

    def __repr__(self) -> str:
        rows = "" if self.token_attr is None else f", token_attr {tuple(self.token_attr.shape)}"
        return (f"LLMAttributionResult({len(self.input_tokens)} input tokens, {len(self.output_tokens)} output "
                f"tokens{rows})")
