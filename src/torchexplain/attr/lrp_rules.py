"""LRP rules and composites, as data.

A rule says how a layer ``z = op(x; W, b)`` hands the relevance ``R`` of its output
to its input: as groups of terms ``op(x_k; W_k, b_k)`` whose sum is a ``z``, each
group contributing ``c * sum_k x_k * (J_k^T (R / (z + eps sign z)))``. The engine
(:mod:`torchexplain.core.hooks.relevance`) evaluates every rule the same way; a rule only
chooses the terms. On ops without weights (pooling, sums, additions) every rule acts
as the epsilon rule with its ``eps``.

A composite maps op kinds or module types to rules, with an optional rule for the
first dense or convolutional layer of the forward pass. Composites without arguments
can be named: ``LRP(model, composite="attnlrp")`` (see
:data:`~torchexplain.attr.lrp_base.COMPOSITES`).

Transformers: without a composite, LRP on a transformer is AttnLRP (Achtibat et al.
2024): the epsilon rule on dense layers, the softmax rule ``R_in = x * (R - s * sum R)``
(kind "softmax"), the uniform rule on products of two input-dependent factors (kind
"attention": each factor half), norms with their standard deviation a constant (kind
"norm"), elementwise activations passing relevance unchanged. :class:`AttnLRP` is that
with one epsilon everywhere; :class:`CPLRP` (Ali et al. 2022) makes the attention
probabilities constants (:class:`Constant` on "softmax"), so relevance flows through the
values only and is conserved.

Captum's rule names (``captum.attr._utils.lrp_rules``) are here with Captum's
constructor arguments: ``PropagationRule`` (the base; a subclass may define Captum's
``_manipulate_weights(module, inputs, outputs)``), ``EpsilonRule(epsilon=1e-9)``,
``GammaRule(gamma=0.25, set_bias_to_zero=False)``, ``Alpha1_Beta0_Rule(set_bias_to_zero=False)``
and ``IdentityRule(epsilon=1e-9)``. :func:`as_rule` reads a rule set on a module
(``module.rule = GammaRule()``), ours or Captum's own objects.
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

from ..core.hooks.relevance import KINDS, Term
from .lrp_base import Composite, Rule, as_number, manipulated_term, register_composite

#: the public rules and composites (Captum's names too); ``torchexplain.attr`` and
#: ``torchexplain.attr.lrp`` export exactly these
__all__ = [
    "Rule", "Epsilon", "Gamma", "ZPlus", "AlphaBeta", "ZBox", "Identity", "Constant", "Alpha1_Beta0_Rule",
    "PropagationRule", "EpsilonRule", "GammaRule", "IdentityRule",
    "Composite", "EpsilonPlus", "EpsilonGammaBox", "EpsilonAlpha2Beta1", "AttnLRP", "CPLRP",
]  # fmt: skip


class Epsilon(Rule):
    """LRP-epsilon: ``R_in = x * W^T (R / (W x + b + eps sign))``. ``epsilon=0`` is LRP-0.
    The default matches Captum's ``EpsilonRule`` (1e-9)."""

    def __init__(self, epsilon: float = 1e-9):
        self.eps = as_number(epsilon, "epsilon")


class Gamma(Rule):
    """LRP-gamma: weights ``W + gamma * W+`` favour positive contributions. As Captum's
    ``GammaRule``, the bias is kept (or zeroed with ``set_bias_to_zero``)."""

    def __init__(self, gamma: float = 0.25, set_bias_to_zero: bool = False, epsilon: float = 1e-9):
        self.gamma = as_number(gamma, "gamma")
        self.set_bias_to_zero = bool(set_bias_to_zero)
        self.eps = as_number(epsilon, "epsilon")

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
        self.alpha = as_number(alpha, "alpha")
        self.beta = as_number(beta, "beta")
        if abs(self.alpha - self.beta - 1.0) > 1e-12:
            raise ValueError(f"alpha - beta must equal 1 to conserve relevance; got alpha={alpha!r}, beta={beta!r}")
        self.eps = as_number(epsilon, "epsilon")

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
        self.eps = as_number(epsilon, "epsilon")

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
        self.eps = as_number(epsilon, "epsilon")

    def _params(self):
        return {}


class Constant(Rule):
    """The op's output is a constant: it is detached in the forward pass, so no
    relevance flows back through it and the ops using it treat it as a constant (for
    softmax only). On the attention softmax this is CP-LRP (Ali et al. 2022): in
    ``attn @ v`` the probabilities are fixed weights, all relevance goes to the values
    and the attention conserves it; ``q`` and ``k`` get none. A softmax at the model's
    output gets no relevance either: explain logits. (``log_softmax`` is no attention:
    under this rule it gets the epsilon formula at ``eps`` 0.)"""

    constant = True
    eps = 0.0

    def _params(self):
        return {}


class Alpha1_Beta0_Rule(Rule):  # noqa: N801 (Captum's name)
    """Captum's alpha=1, beta=0 rule: positive weights only, ``z = W+ x + b`` with the
    input whole and the bias kept (zeroed with ``set_bias_to_zero``):
    ``R_in = x * W+^T (R / (W+ x + b))``. On non-negative inputs without bias this is
    :class:`ZPlus`."""

    def __init__(self, set_bias_to_zero: bool = False, epsilon: float = 1e-9):
        self.set_bias_to_zero = bool(set_bias_to_zero)
        self.eps = as_number(epsilon, "epsilon")

    def groups(self, x, weight, bias):
        return [(1.0, [Term(x, weight.clamp(min=0), None if self.set_bias_to_zero else bias)])]

    def _params(self):
        return {"set_bias_to_zero": self.set_bias_to_zero, "epsilon": self.eps}


#: Captum's name for `Rule`
PropagationRule = Rule
#: Captum's name for `Epsilon`
EpsilonRule = Epsilon
#: Captum's name for `Gamma`
GammaRule = Gamma
#: Captum's name for `Identity`
IdentityRule = Identity


class _CaptumRule(Rule):
    """A rule object of Captum's own classes (read from a module's ``rule``), applied
    as Captum applies it: its ``_manipulate_weights`` on copies of the weights, its
    ``STABILITY_FACTOR`` in the denominators."""

    def __init__(self, rule):
        self.rule = rule
        self.eps = as_number(getattr(rule, "STABILITY_FACTOR", 1e-9), f"{type(rule).__name__}.STABILITY_FACTOR")

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
            return Epsilon(as_number(value.STABILITY_FACTOR, f"{where}.STABILITY_FACTOR"))
        if callable(getattr(value, "_manipulate_weights", None)):
            return _CaptumRule(value)
    raise TypeError(
        f"{where} must be an LRP rule (e.g. EpsilonRule(), GammaRule(), Alpha1_Beta0_Rule(), IdentityRule()); "
        f"got {type(value).__name__}"
    )


@register_composite("epsilon_plus")
class EpsilonPlus(Composite):
    """z+ on convolutions, epsilon on dense layers and matrix products."""

    def __init__(self, epsilon: float = 1e-6):
        super().__init__([("conv", ZPlus()), (("linear", "matmul"), Epsilon(epsilon))])


@register_composite("epsilon_gamma_box")
class EpsilonGammaBox(Composite):
    """z^B on the first layer (inputs within ``[low, high]``), gamma on the other
    convolutions, epsilon on dense layers and matrix products."""

    def __init__(self, low, high, epsilon: float = 1e-6, gamma: float = 0.25):
        super().__init__([("conv", Gamma(gamma)), (("linear", "matmul"), Epsilon(epsilon))], first=ZBox(low, high))


@register_composite("epsilon_alpha2_beta1")
class EpsilonAlpha2Beta1(Composite):
    """alpha=2, beta=1 on convolutions, epsilon on dense layers and matrix products."""

    def __init__(self, epsilon: float = 1e-6):
        super().__init__([("conv", AlphaBeta(2.0, 1.0)), (("linear", "matmul"), Epsilon(epsilon))])


#: every kind but softmax: the kinds AttnLRP and CP-LRP give one epsilon rule
_NOT_SOFTMAX = tuple(kind for kind in KINDS if kind != "softmax")


@register_composite("attnlrp")
class AttnLRP(Composite):
    """AttnLRP (Achtibat et al. 2024), the default for transformers: ``Epsilon(epsilon)``
    on every kind (dense layers, matrix products, norms with the standard deviation a
    constant, additions, pooling), products of two input-dependent factors split evenly
    (the uniform rule, kind "attention"), and the softmax rule
    ``R_in = x * (R - s * sum_j R_j)`` at ``eps`` 0 (kind "softmax"). Conserved at
    ``epsilon=0`` without biases: everything but the softmax, which absorbs
    ``sum_i R_i * (1 - x_i + sum_j s_j x_j)`` (see :mod:`torchexplain.core.hooks.attention`)."""

    def __init__(self, epsilon: float = 1e-6):
        self.epsilon = as_number(epsilon, "epsilon")
        super().__init__([("softmax", Epsilon(0.0)), (_NOT_SOFTMAX, Epsilon(self.epsilon))])


@register_composite("cp-lrp")
class CPLRP(Composite):
    """CP-LRP (Ali et al. 2022): as :class:`AttnLRP`, but the attention probabilities
    are constants (:class:`Constant` on "softmax"): relevance flows through the values
    only, none through queries and keys. Conserved at ``epsilon=0`` without biases."""

    def __init__(self, epsilon: float = 1e-6):
        self.epsilon = as_number(epsilon, "epsilon")
        super().__init__([("softmax", Constant()), (_NOT_SOFTMAX, Epsilon(self.epsilon))])
