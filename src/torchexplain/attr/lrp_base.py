"""The base of LRP rules and composites (:mod:`torchexplain.attr.lrp_rules` holds the
rules and composites themselves): :class:`Rule`, :class:`Composite`, and the registry
of composites by name (:func:`register_composite`, :func:`composite_named`)."""

from __future__ import annotations

import numbers
import types

from torch import Tensor, nn

from ..core.hooks.relevance import KINDS, Term

__all__ = [
    "COMPOSITES", "Composite", "Rule", "as_number", "check_rule", "composite_named", "manipulated_term",
    "register_composite",
]  # fmt: skip


def as_number(value, name: str, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= minimum:
        raise ValueError(f"{name} must be a number >= {minimum}; got {value!r}")
    return float(value)


class Rule:
    """Base of every rule: the plain z-rule with stabiliser ``eps`` (Captum's
    ``STABILITY_FACTOR``). A subclass that defines Captum's
    ``_manipulate_weights(module, inputs, outputs)`` has its one term built from the
    weights that method leaves on a stand-in for the module (``.weight``, ``.bias``:
    copies, never the model's own), as Captum's custom rules do."""

    eps = 1e-9
    identity = False
    constant = False

    @property
    def STABILITY_FACTOR(self) -> float:  # noqa: N802 (Captum's name)
        return self.eps

    @STABILITY_FACTOR.setter
    def STABILITY_FACTOR(self, value: float) -> None:  # noqa: N802
        self.eps = as_number(value, "STABILITY_FACTOR")

    def groups(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> list:
        manipulate = getattr(self, "_manipulate_weights", None)
        if manipulate is None:
            return [(1.0, [Term(x, weight, bias)])]
        return [(1.0, [manipulated_term(manipulate, x, weight, bias)])]

    @property
    def plain(self) -> bool:
        """True when ``groups`` is this one term, the layer itself: its ``z`` is then the
        layer's output, and the engine reuses the forward pass instead of recomputing."""
        return type(self).groups is Rule.groups and not hasattr(self, "_manipulate_weights")

    def _params(self) -> dict:
        return {"epsilon": self.eps}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({args})"


def manipulated_term(manipulate, x: Tensor, weight: Tensor, bias: Tensor | None) -> Term:
    """The term ``(x, W', b')`` where ``W'`` and ``b'`` are what Captum's
    ``_manipulate_weights(module, inputs, outputs)`` leaves on a stand-in module holding
    copies of the layer's weight and bias."""
    module = types.SimpleNamespace(
        weight=weight.detach().clone(), bias=None if bias is None else bias.detach().clone()
    )
    manipulate(module, (x,), None)
    return Term(x, module.weight, module.bias)


def _check_selector(selector, where: str):
    items = selector if isinstance(selector, tuple) else (selector,)
    for s in items:
        if isinstance(s, str):
            if s not in KINDS:
                raise ValueError(f"{where}: unknown op kind {s!r}; expected one of {', '.join(KINDS)}")
        elif not (isinstance(s, type) and issubclass(s, nn.Module)):
            raise TypeError(f"{where}: a selector must be an op kind (str) or an nn.Module subclass; got {s!r}")
    return items


def _matches(selector, kind: str, module) -> bool:
    return selector == kind if isinstance(selector, str) else isinstance(module, selector)


def check_rule(rule, where: str) -> Rule:
    if not isinstance(rule, Rule):
        raise TypeError(f"{where} must be an LRP rule (e.g. Epsilon(), ZPlus()); got {type(rule).__name__}")
    return rule


#: composites by name (``LRP(model, composite="attnlrp")``): registered with
#: :func:`register_composite`, built without arguments
COMPOSITES: dict[str, type] = {}


def register_composite(name: str):
    """Class decorator: the composite can be given by ``name``."""

    def register(cls):
        COMPOSITES[name] = cls
        return cls

    return register


def composite_named(name: str) -> Composite:
    """The composite registered as ``name``, built with its default arguments. An
    unknown name is a TypeError, as any other value that is no composite."""
    if name not in COMPOSITES:
        raise TypeError(
            f"composite must be a Composite or one of the names {', '.join(sorted(COMPOSITES))}; got {name!r}"
        )
    try:
        return COMPOSITES[name]()
    except TypeError:
        raise ValueError(f"composite {name!r} needs arguments: pass {COMPOSITES[name].__name__}(...)") from None


class Composite:
    """Which rule applies where. ``layer_rules`` is an ordered list of
    ``(selector, rule)``; a selector is an op kind (one of ``KINDS``: "linear", "conv",
    "norm", "pool", "sum", "add", "product", "matmul", "attention", "softmax"; see
    :mod:`torchexplain.core.hooks.relevance`), an ``nn.Module`` subclass (the
    module running the op) or a tuple of those; the first match wins. ``first`` is the
    rule of the first dense or convolutional layer the forward pass runs."""

    def __init__(self, layer_rules=(), first: Rule | None = None):
        self.layer_rules = [
            (_check_selector(s, f"layer_rules[{i}]"), check_rule(r, f"layer_rules[{i}] rule"))
            for i, (s, r) in enumerate(layer_rules)
        ]
        self.first = None if first is None else check_rule(first, "first")

    def rule_for(self, kind: str, module: nn.Module | None, first: bool) -> Rule | None:
        if first and self.first is not None:
            return self.first
        for selectors, rule in self.layer_rules:
            if any(_matches(s, kind, module) for s in selectors):
                return rule
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(layer_rules={self.layer_rules!r}, first={self.first!r})"
