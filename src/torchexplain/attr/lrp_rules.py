"""LRP rules and composites, as data.

A rule says how a layer ``z = op(x; W, b)`` hands the relevance ``R`` of its output
to its input: as groups of terms ``op(x_k; W_k, b_k)`` whose sum is a ``z``, each
group contributing ``c * sum_k x_k * (J_k^T (R / (z + eps sign z)))``. The engine
(:mod:`torchexplain.core.hooks.relevance`) evaluates every rule the same way; a rule only
chooses the terms. On ops without weights (pooling, sums, additions) every rule acts
as the epsilon rule with its ``eps``.

A composite maps op kinds or module types to rules, with an optional rule for the
first dense or convolutional layer of the forward pass.

Captum's rule names (``captum.attr._utils.lrp_rules``) are here with Captum's
constructor arguments: ``PropagationRule`` (the base; a subclass may define Captum's
``_manipulate_weights(module, inputs, outputs)``), ``EpsilonRule(epsilon=1e-9)``,
``GammaRule(gamma=0.25, set_bias_to_zero=False)``, ``Alpha1_Beta0_Rule(set_bias_to_zero=False)``
and ``IdentityRule(epsilon=1e-9)``. :func:`as_rule` reads a rule set on a module
(``module.rule = GammaRule()``), ours or Captum's own objects.
"""

from __future__ import annotations

import numbers
import types

import torch
from torch import Tensor, nn

from ..core.hooks.relevance import KINDS, Term

#: the public rules and composites (Captum's names too); ``torchexplain.attr`` and
#: ``torchexplain.attr.lrp`` export exactly these
__all__ = [
    "Rule", "Epsilon", "Gamma", "ZPlus", "AlphaBeta", "ZBox", "Identity", "Alpha1_Beta0_Rule",
    "PropagationRule", "EpsilonRule", "GammaRule", "IdentityRule",
    "Composite", "EpsilonPlus", "EpsilonGammaBox", "EpsilonAlpha2Beta1",
]  # fmt: skip


def _number(value, name: str, minimum: float = 0.0) -> float:
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

    @property
    def STABILITY_FACTOR(self) -> float:  # noqa: N802 (Captum's name)
        return self.eps

    @STABILITY_FACTOR.setter
    def STABILITY_FACTOR(self, value: float) -> None:  # noqa: N802
        self.eps = _number(value, "STABILITY_FACTOR")

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


class Epsilon(Rule):
    """LRP-epsilon: ``R_in = x * W^T (R / (W x + b + eps sign))``. ``epsilon=0`` is LRP-0.
    The default matches Captum's ``EpsilonRule`` (1e-9)."""

    def __init__(self, epsilon: float = 1e-9):
        self.eps = _number(epsilon, "epsilon")


class Gamma(Rule):
    """LRP-gamma: weights ``W + gamma * W+`` favour positive contributions. As Captum's
    ``GammaRule``, the bias is kept (or zeroed with ``set_bias_to_zero``)."""

    def __init__(self, gamma: float = 0.25, set_bias_to_zero: bool = False, epsilon: float = 1e-9):
        self.gamma = _number(gamma, "gamma")
        self.set_bias_to_zero = bool(set_bias_to_zero)
        self.eps = _number(epsilon, "epsilon")

    def groups(self, x, weight, bias):
        w = weight + self.gamma * weight.clamp(min=0)
        return [(1.0, [Term(x, w, None if self.set_bias_to_zero else bias)])]

    def _params(self):
        return {"gamma": self.gamma, "set_bias_to_zero": self.set_bias_to_zero, "epsilon": self.eps}


def _positive_terms(x, weight):
    """The terms whose products ``x_j w_jk`` are positive: ``W+ x+ + W- x-``."""
    return [Term(x.clamp(min=0), weight.clamp(min=0)), Term(x.clamp(max=0), weight.clamp(max=0))]


def _negative_terms(x, weight):
    """The terms whose products ``x_j w_jk`` are negative: ``W- x+ + W+ x-``."""
    return [Term(x.clamp(min=0), weight.clamp(max=0)), Term(x.clamp(max=0), weight.clamp(min=0))]


class ZPlus(Rule):
    """LRP-z+ (alpha=1, beta=0): only positive contributions ``(x_j w_jk)+`` count, the
    bias is ignored. For ``x >= 0``: ``R_in = x * W+^T (R / (W+ x))``."""

    def groups(self, x, weight, bias):
        return [(1.0, _positive_terms(x, weight))]


class AlphaBeta(Rule):
    """LRP-alpha-beta: ``alpha`` times the positive-contribution share minus ``beta``
    times the negative-contribution share; ``alpha - beta`` must be 1. Bias ignored."""

    def __init__(self, alpha: float = 2.0, beta: float = 1.0, epsilon: float = 1e-9):
        self.alpha = _number(alpha, "alpha")
        self.beta = _number(beta, "beta")
        if abs(self.alpha - self.beta - 1.0) > 1e-12:
            raise ValueError(f"alpha - beta must equal 1 to conserve relevance; got alpha={alpha!r}, beta={beta!r}")
        self.eps = _number(epsilon, "epsilon")

    def groups(self, x, weight, bias):
        return [(self.alpha, _positive_terms(x, weight)), (-self.beta, _negative_terms(x, weight))]

    def _params(self):
        return {"alpha": self.alpha, "beta": self.beta, "epsilon": self.eps}


def _bound(value, name: str) -> Tensor:
    if isinstance(value, Tensor):
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor or a number; got dtype {value.dtype}")
        return value.detach()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number or a tensor broadcastable to the input; got {type(value).__name__}")
    return torch.tensor(float(value))


class ZBox(Rule):
    """LRP-z^B for the first layer of inputs bounded by ``low <= x <= high`` (numbers or
    tensors broadcastable to that layer's input, e.g. per channel):
    ``z = W x - W+ low - W- high``. Bias ignored."""

    def __init__(self, low, high, epsilon: float = 1e-9):
        self.low, self.high = _bound(low, "low"), _bound(high, "high")
        try:
            ordered = bool((self.low <= self.high).all())
        except RuntimeError:
            raise ValueError(f"low {tuple(self.low.shape)} and high {tuple(self.high.shape)} must broadcast") from None
        if not ordered:
            raise ValueError("low must be <= high everywhere")
        self.eps = _number(epsilon, "epsilon")

    def groups(self, x, weight, bias):
        low = self.low.to(device=x.device, dtype=x.dtype)
        high = self.high.to(device=x.device, dtype=x.dtype)
        positive, negative = weight.clamp(min=0), weight.clamp(max=0)
        return [(1.0, [Term(x, weight), Term(low, positive, None, -1.0), Term(high, negative, None, -1.0)])]

    def _params(self):
        return {"low": self.low, "high": self.high, "epsilon": self.eps}


class Identity(Rule):
    """Relevance passes unchanged (shape-preserving ops only, e.g. batch norm).
    ``epsilon`` is accepted as Captum's ``IdentityRule`` accepts it, and unused."""

    identity = True

    def __init__(self, epsilon: float = 1e-9):
        self.eps = _number(epsilon, "epsilon")

    def _params(self):
        return {}


class Alpha1_Beta0_Rule(Rule):  # noqa: N801 (Captum's name)
    """Captum's alpha=1, beta=0 rule: positive weights only, ``z = W+ x + b`` with the
    input whole and the bias kept (zeroed with ``set_bias_to_zero``):
    ``R_in = x * W+^T (R / (W+ x + b))``. On non-negative inputs without bias this is
    :class:`ZPlus`."""

    def __init__(self, set_bias_to_zero: bool = False, epsilon: float = 1e-9):
        self.set_bias_to_zero = bool(set_bias_to_zero)
        self.eps = _number(epsilon, "epsilon")

    def groups(self, x, weight, bias):
        return [(1.0, [Term(x, weight.clamp(min=0), None if self.set_bias_to_zero else bias)])]

    def _params(self):
        return {"set_bias_to_zero": self.set_bias_to_zero, "epsilon": self.eps}


# Captum's names for the rules with the same meaning.
PropagationRule, EpsilonRule, GammaRule, IdentityRule = Rule, Epsilon, Gamma, Identity


def manipulated_term(manipulate, x: Tensor, weight: Tensor, bias: Tensor | None) -> Term:
    """The term ``(x, W', b')`` where ``W'`` and ``b'`` are what Captum's
    ``_manipulate_weights(module, inputs, outputs)`` leaves on a stand-in module holding
    copies of the layer's weight and bias."""
    module = types.SimpleNamespace(
        weight=weight.detach().clone(), bias=None if bias is None else bias.detach().clone()
    )
    manipulate(module, (x,), None)
    return Term(x, module.weight, module.bias)


class _CaptumRule(Rule):
    """A rule object of Captum's own classes (read from a module's ``rule``), applied
    as Captum applies it: its ``_manipulate_weights`` on copies of the weights, its
    ``STABILITY_FACTOR`` in the denominators."""

    def __init__(self, rule):
        self.rule = rule
        self.eps = _number(getattr(rule, "STABILITY_FACTOR", 1e-9), f"{type(rule).__name__}.STABILITY_FACTOR")

    def groups(self, x, weight, bias):
        return [(1.0, [manipulated_term(self.rule._manipulate_weights, x, weight, bias)])]

    def __repr__(self) -> str:
        return f"{type(self.rule).__name__}(captum, epsilon={self.eps!r})"


def _captum_class_names(value) -> list[str]:
    return [c.__name__ for c in type(value).__mro__ if c.__module__.startswith("captum.")]


def is_rule_object(value) -> bool:
    """Whether ``value`` is a rule of ours or an object of Captum's rule classes."""
    return isinstance(value, Rule) or "PropagationRule" in _captum_class_names(value)


def as_rule(value, where: str) -> Rule | None:
    """A module's ``rule`` attribute as a rule of ours: ours as is; None (unset, as
    Captum allows) as None; an object of Captum's rule classes (found by duck typing:
    nothing here imports Captum) as the same rule. Anything else is a TypeError."""
    if value is None or isinstance(value, Rule):
        return value
    names = _captum_class_names(value)
    if "PropagationRule" in names:
        if "IdentityRule" in names:
            return Identity()
        if type(value).__module__.startswith("captum.") and type(value).__name__ == "EpsilonRule":
            return Epsilon(_number(value.STABILITY_FACTOR, f"{where}.STABILITY_FACTOR"))
        if callable(getattr(value, "_manipulate_weights", None)):
            return _CaptumRule(value)
    raise TypeError(
        f"{where} must be an LRP rule (e.g. EpsilonRule(), GammaRule(), Alpha1_Beta0_Rule(), IdentityRule()); "
        f"got {type(value).__name__}"
    )


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


class Composite:
    """Which rule applies where. ``layer_rules`` is an ordered list of
    ``(selector, rule)``; a selector is an op kind (one of ``KINDS``: "linear", "conv",
    "norm", "pool", "sum", "add", "product", "matmul"), an ``nn.Module`` subclass (the
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


class EpsilonPlus(Composite):
    """z+ on convolutions, epsilon on dense layers and matrix products."""

    def __init__(self, epsilon: float = 1e-6):
        super().__init__([("conv", ZPlus()), (("linear", "matmul"), Epsilon(epsilon))])


class EpsilonGammaBox(Composite):
    """z^B on the first layer (inputs within ``[low, high]``), gamma on the other
    convolutions, epsilon on dense layers and matrix products."""

    def __init__(self, low, high, epsilon: float = 1e-6, gamma: float = 0.25):
        super().__init__([("conv", Gamma(gamma)), (("linear", "matmul"), Epsilon(epsilon))], first=ZBox(low, high))


class EpsilonAlpha2Beta1(Composite):
    """alpha=2, beta=1 on convolutions, epsilon on dense layers and matrix products."""

    def __init__(self, epsilon: float = 1e-6):
        super().__init__([("conv", AlphaBeta(2.0, 1.0)), (("linear", "matmul"), Epsilon(epsilon))])
