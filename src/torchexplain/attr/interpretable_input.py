"""Interpretable inputs (Captum 0.9's ``captum.attr._utils.interpretable_input``).

An interpretable input maps a binary vector ``z`` (``(1, n_itp_features)``, 1 =
feature present) to what the model consumes: ``to_model_input(z)`` builds the input
with absent features replaced by their baselines, ``to_model_input()`` the original.
``to_tensor()`` is the all-ones ``z``; ``format_attr`` maps per-feature attributions
back to the input's own units. ``values`` names the features.

* :class:`TextTemplateInput`: segments of a text filled into a template.
* :class:`TextTokenInput`: the tokens of a text under a tokenizer.
* :class:`ImageMaskInput`: segments of a PIL image given by a mask.

They are the inputs of the LLM attribution classes; any perturbation method can
use them through ``to_model_input``.
"""

from __future__ import annotations

import inspect
import numbers
from abc import ABC, abstractmethod
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor


def scatter_by_mask(itp_attr: Tensor, index: Tensor) -> Tensor:
    """``(..., n_itp)`` attributions to ``(..., *index.shape)``: each position gets
    the attribution of its interpretable feature ``index``."""
    lead = itp_attr.shape[:-1]
    flat = index.reshape(-1).to(itp_attr.device)
    return itp_attr.index_select(-1, flat).reshape(*lead, *index.shape)


class InterpretableInput(ABC):
    """What an interpretable input provides (see the module's docstring).

    Attributes:
        n_itp_features: number of interpretable features.
        values: a name (string) per interpretable feature.
    """

    n_itp_features: int
    values: List[str]

    @abstractmethod
    def to_tensor(self) -> Tensor:
        """The interpretable representation of the unperturbed input."""

    @abstractmethod
    def to_model_input(self, perturbed_tensor: Optional[Tensor] = None) -> Any:
        """The model's input for the interpretable vector ``perturbed_tensor``; the
        original input when it is None."""

    def format_attr(self, itp_attr: Tensor) -> Tensor:
        """Attributions of the interpretable features in this input's own form."""
        return itp_attr


def _as_list(value, keys: List[str], name: str, kind: str) -> list:
    """``value`` as a list in the order of ``keys`` (dict form) or as given (list form)."""
    if keys:
        if not isinstance(value, dict):
            raise TypeError(f"{name} must be a dict like values (keys {keys}); got {type(value).__name__}")
        missing = [k for k in keys if k not in value]
        if missing:
            raise ValueError(f"{name} has no entry for {missing}")
        return [value[k] for k in keys]
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a list like values; got {type(value).__name__}")
    return list(value)


def _compact_ids(mask: Sequence) -> Tuple[List[int], int]:
    """Mask ids renumbered 0 .. k-1 (sorted ids, or first appearance if unsortable)."""
    unique = list(dict.fromkeys(mask))
    try:
        unique = sorted(unique)
    except TypeError:
        pass
    position = {m: i for i, m in enumerate(unique)}
    return [position[m] for m in mask], len(unique)


class TextTemplateInput(InterpretableInput):
    """Text made of segments filled into a template; each segment (or group of
    segments sharing a ``mask`` id) is one interpretable feature.

    Args:
        template: a format string (``"{} feels {}"`` or ``"{who} feels {how}"``) or
            a callable taking the segments (positional, or keyword for dict values).
        values: the segments, a list or a dict (keyword template).
        baselines: what an absent segment becomes: same form as values, or a
            callable returning that form (called at each ``to_model_input``, e.g.
            :class:`~torchexplain.attr.ProductBaselines`); None: empty strings.
        mask: one id per segment (same form as values); segments sharing an id are
            one feature. None: each segment is its own feature.

    ``to_model_input(z)`` reads the first row of ``z`` and returns the text.
    """

    def __init__(
        self,
        template: Union[str, Callable[..., str]],
        values: Union[List[str], Dict[str, str]],
        baselines: Union[List[str], Dict[str, str], Callable[[], Union[List[str], Dict[str, str]]], None] = None,
        mask: Union[List[int], Dict[str, int], None] = None,
    ) -> None:
        if isinstance(values, dict):
            self.dict_keys = list(values)
            self.values = [values[k] for k in self.dict_keys]
        elif isinstance(values, (list, tuple)):
            self.dict_keys = []
            self.values = list(values)
        else:
            raise TypeError(f"values must be a list or a dict of strings; got {type(values).__name__}")
        self.n_features = len(self.values)
        if baselines is None:
            baselines = [""] * self.n_features
        elif not callable(baselines):
            baselines = self._check_length(_as_list(baselines, self.dict_keys, "baselines", "strings"), "baselines")
        self.baselines = baselines
        self.mask = mask
        if mask is None:
            self.formatted_mask = list(range(self.n_features))
            self.n_itp_features = self.n_features
        else:
            ids = self._check_length(_as_list(mask, self.dict_keys, "mask", "ids"), "mask")
            self.formatted_mask, self.n_itp_features = _compact_ids(ids)
        if isinstance(template, str):
            self.format_fn = template.format
        elif callable(template):
            self.format_fn = template
        else:
            raise TypeError(f"template must be a format string or a callable; got {type(template).__name__}")
        self.template = template

    def _check_length(self, items: list, name: str) -> list:
        if len(items) != self.n_features:
            raise ValueError(f"{name} must give one entry per segment ({self.n_features}); got {len(items)}")
        return items

    def to_tensor(self) -> Tensor:
        return torch.ones((1, self.n_itp_features))

    def _baseline_list(self) -> list:
        if not callable(self.baselines):
            return self.baselines
        drawn = self.baselines()
        return self._check_length(_as_list(drawn, self.dict_keys, "baselines()", "strings"), "baselines()")

    def to_model_input(self, perturbed_tensor: Optional[Tensor] = None) -> str:
        segments = list(self.values)
        if perturbed_tensor is not None:
            present = torch.as_tensor(perturbed_tensor).reshape(-1, self.n_itp_features)[0].tolist()
            fills = self._baseline_list()
            segments = [v if present[m] else b for v, b, m in zip(segments, fills, self.formatted_mask)]
        if self.dict_keys:
            return self.format_fn(**dict(zip(self.dict_keys, segments)))
        return self.format_fn(*segments)

    def format_attr(self, itp_attr: Tensor) -> Tensor:
        """Per segment (``(..., n_features)``) when a mask groups segments, else as given."""
        if self.mask is None:
            return itp_attr
        return scatter_by_mask(itp_attr, torch.tensor(self.formatted_mask))


def _accepts(fn, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in params)


def _ids_tensor(ids, what: str) -> Tensor:
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    t = torch.as_tensor(ids)
    if t.is_floating_point() or t.dim() > 2 or (t.dim() == 2 and t.shape[0] != 1):
        raise ValueError(f"{what} must give one sequence of integer token ids; got shape {tuple(t.shape)}")
    return t.reshape(1, -1).long()


def encode_text(tokenizer, text: str) -> Tensor:
    """``(1, L)`` long token ids of ``text``: ``tokenizer.encode`` (Hugging Face style,
    asked for a tensor when it takes ``return_tensors``) or a callable tokenizer."""
    encode = getattr(tokenizer, "encode", None)
    if callable(encode):
        ids = encode(text, return_tensors="pt") if _accepts(encode, "return_tensors") else encode(text)
        return _ids_tensor(ids, "tokenizer.encode")
    if callable(tokenizer):
        return _ids_tensor(tokenizer(text), "tokenizer(text)")
    raise TypeError(
        "tokenizer must have an encode(text) method (e.g. a Hugging Face tokenizer) or be a callable "
        f"text -> token ids; got {type(tokenizer).__name__}"
    )


def token_names(tokenizer, ids: List[int]) -> List[str]:
    """The token strings of ``ids``: ``convert_ids_to_tokens``, else ``decode`` per id."""
    convert = getattr(tokenizer, "convert_ids_to_tokens", None)
    if callable(convert):
        return list(convert(ids))
    decode = getattr(tokenizer, "decode", None)
    if callable(decode):
        return [decode([i]) for i in ids]
    return [str(i) for i in ids]


def token_id(tokenizer, token: str, name: str) -> int:
    """The id of one token string: ``convert_tokens_to_ids`` (a token it does not know,
    or maps to the unknown token, is a ValueError naming ``name``), else its encoding."""
    convert = getattr(tokenizer, "convert_tokens_to_ids", None)
    if callable(convert):
        unknown = f"{name}: {token!r} is not a token of the tokenizer's vocabulary"
        try:
            found = convert([token])
        except (KeyError, ValueError) as err:
            raise ValueError(unknown) from err
        found = found[0] if isinstance(found, (list, tuple)) else found
        unk = getattr(tokenizer, "unk_token_id", None)
        if found is None or (unk is not None and found == unk and token != getattr(tokenizer, "unk_token", None)):
            raise ValueError(unknown)
        return int(found)
    encode = getattr(tokenizer, "encode", None) if callable(getattr(tokenizer, "encode", None)) else tokenizer
    ids = encode(token, add_special_tokens=False) if _accepts(encode, "add_special_tokens") else encode(token)
    ids = _ids_tensor(ids, name).reshape(-1)
    if ids.numel() != 1:
        raise ValueError(f"{name} {token!r} is {ids.numel()} tokens under this tokenizer; give one token or its id")
    return int(ids[0])


class TextTokenInput(InterpretableInput):
    """A text whose interpretable features are its tokens.

    Args:
        text: the text.
        tokenizer: a tokenizer with ``encode`` (Hugging Face style; ``decode`` or
            ``convert_ids_to_tokens`` name the tokens) or a callable text -> ids.
        baselines: the id (int) or token (str) that replaces absent tokens (0 by
            default, commonly the unknown or padding token).
        skip_tokens: tokens (ids or strings) that are never features (e.g. the
            start token): they stay in the model input and are never perturbed.

    ``to_model_input(z)`` returns ``(B, L)`` token ids for ``B`` rows of ``z``: every
    token whose ``z`` is not 1 becomes ``baselines``. ``values`` are the feature
    tokens' strings.
    """

    def __init__(
        self,
        text: str,
        tokenizer,
        baselines: Union[int, str] = 0,
        skip_tokens: Union[List[int], List[str], None] = None,
    ) -> None:
        if not isinstance(text, str):
            raise TypeError(f"text must be a string; got {type(text).__name__}")
        self.inp_tensor = encode_text(tokenizer, text)
        self.itp_tensor = self.inp_tensor
        self.itp_mask: Optional[Tensor] = None
        if skip_tokens:
            self.itp_mask = ~self._skipped(tokenizer, list(skip_tokens))
            self.itp_tensor = self.inp_tensor[self.itp_mask].unsqueeze(0)
        self.skip_tokens = skip_tokens
        self.tokenizer = tokenizer
        self.values = token_names(tokenizer, self.itp_tensor[0].tolist())
        self.n_itp_features = len(self.values)
        if isinstance(baselines, bool) or not isinstance(baselines, (numbers.Integral, str)):
            raise TypeError(f"baselines must be a token id (int) or a token (str); got {type(baselines).__name__}")
        is_name = isinstance(baselines, str)
        self.baselines = token_id(tokenizer, baselines, "baselines") if is_name else int(baselines)

    def _skipped(self, tokenizer, skip_tokens: list) -> Tensor:
        """Bool ``(1, L)``: the tokens of ``skip_tokens`` (ids, or strings matched by
        ``convert_tokens_to_ids`` or else by the tokens' names)."""
        ids = [int(t) for t in skip_tokens if isinstance(t, numbers.Integral)]
        names = [t for t in skip_tokens if isinstance(t, str)]
        if len(ids) + len(names) != len(skip_tokens):
            raise TypeError(f"skip_tokens must hold token ids (int) or tokens (str); got {skip_tokens!r}")
        if names and callable(getattr(tokenizer, "convert_tokens_to_ids", None)):
            ids += [int(i) for i in tokenizer.convert_tokens_to_ids(names)]
            names = []
        skipped = torch.isin(self.inp_tensor, torch.tensor(ids, dtype=torch.long))
        if names:
            all_names = token_names(tokenizer, self.inp_tensor[0].tolist())
            skipped |= torch.tensor([[n in names for n in all_names]])
        return skipped

    def to_tensor(self) -> Tensor:
        return torch.ones_like(self.itp_tensor)

    def to_model_input(self, perturbed_tensor: Optional[Tensor] = None) -> Tensor:
        if perturbed_tensor is None:
            return self.inp_tensor
        z = torch.as_tensor(perturbed_tensor)
        if z.dim() != 2 or z.shape[1] != self.n_itp_features:
            raise ValueError(
                f"perturbed_tensor must have shape (B, {self.n_itp_features}) (one entry per token); "
                f"got {tuple(z.shape)}"
            )
        device = z.device
        tokens = self.itp_tensor.to(device).expand(z.shape[0], -1)
        tokens = torch.where(z != 1, torch.full_like(tokens, self.baselines), tokens)
        if self.itp_mask is None:
            return tokens
        full = self.inp_tensor.to(device).expand(z.shape[0], -1).clone()
        full[self.itp_mask.to(device).expand_as(full)] = tokens.reshape(-1)
        return full


from .interpretable_image import ImageMaskInput  # noqa: E402  (Captum's module holds it too)

__all__ = ["ImageMaskInput", "InterpretableInput", "TextTemplateInput", "TextTokenInput"]
