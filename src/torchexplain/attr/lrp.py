"""Layer-wise Relevance Propagation (Bach et al. 2015), with Captum's ``LRP`` interface.

``LRP(model).attribute(inputs, target)`` starts from the target output and hands its
value back layer by layer, each layer splitting the relevance of its outputs among its
inputs by a rule (:mod:`torchexplain.attr.lrp_rules`). Rules are chosen per op kind or
module, never written onto the model; relevance is propagated by one engine
(:mod:`torchexplain.core.hooks.relevance`) that intercepts ops at the function level, so
functional and in-place activations, reused modules and residual additions are all
handled.
"""

from __future__ import annotations

import contextlib
from typing import Mapping

import torch
from torch import Tensor, nn

from ..core.hooks.canonizers import BatchNormFolding, batchnorm_pairs
from ..core.gradients import row_gradients
from ..core.hooks import module_hooks
from ..core.inputs import as_tuple, format_output
from ..core.hooks.relevance import relevance_rules
from .base import Attribution, row_sums, take
from .lrp_rules import (
    AlphaBeta,
    Composite,
    Epsilon,
    EpsilonAlpha2Beta1,
    EpsilonGammaBox,
    EpsilonPlus,
    EpsilonRule,
    Gamma,
    GammaRule,
    Identity,
    IdentityRule,
    Rule,
    ZBox,
    ZPlus,
    check_rule,
)

__all__ = [
    "LRP", "Rule", "Epsilon", "Gamma", "ZPlus", "AlphaBeta", "ZBox", "Identity", "EpsilonRule", "GammaRule",
    "IdentityRule", "Composite", "EpsilonPlus", "EpsilonGammaBox", "EpsilonAlpha2Beta1",
]  # fmt: skip

DEFAULT_RULE = Epsilon()


def _check_rules(rules) -> dict:
    if rules is None:
        return {}
    if not isinstance(rules, Mapping):
        raise TypeError(f"rules must be a mapping {{module name or module type: rule}}; got {type(rules).__name__}")
    for key, rule in rules.items():
        if not (isinstance(key, str) or (isinstance(key, type) and issubclass(key, nn.Module))):
            raise TypeError(f"rules keys must be module names (str) or nn.Module subclasses; got {key!r}")
        check_rule(rule, f"rules[{key!r}]")
    return dict(rules)


class _RuleChooser:
    """Picks the rule of each intercepted op: ``rules`` (by name, then type, innermost
    running module first), then the composite, then epsilon (Captum's default)."""

    def __init__(self, model: nn.Module, rules: dict, composite: Composite | None, verbose: bool):
        self.model, self.rules, self.composite, self.verbose = model, rules, composite, verbose
        self.names = {m: name for name, m in model.named_modules()}
        self.stack: list[nn.Module] = []
        self.reported: set = set()

    def __call__(self, kind: str, first: bool) -> Rule:
        rule = self._from_rules()
        if rule is None and self.composite is not None:
            rule = self.composite.rule_for(kind, self.stack[-1] if self.stack else None, first)
        rule = DEFAULT_RULE if rule is None else rule
        if self.verbose:
            self._report(kind, rule)
        return rule

    def _from_rules(self) -> Rule | None:
        for module in reversed(self.stack):
            name = self.names.get(module)
            if name in self.rules:
                return self.rules[name]
            for cls in type(module).__mro__:
                if cls in self.rules:
                    return self.rules[cls]
        return None

    def _report(self, kind: str, rule: Rule) -> None:
        module = self.stack[-1] if self.stack else None
        where = f"{self.names.get(module) or '<model>'} ({type(module).__name__})" if module is not None else "<model>"
        if (kind, where, id(rule)) not in self.reported:
            self.reported.add((kind, where, id(rule)))
            print(f"LRP: applied {rule!r} to {kind} op in {where}")

    def _hooks(self) -> list:
        if not (self.rules or self.composite is not None or self.verbose):
            return []

        def push(module, inputs) -> None:
            self.stack.append(module)

        def pop(module, inputs, output) -> None:
            self.stack.pop()

        return [(m, kind, fn) for m in self.names for kind, fn in (("forward_pre", push), ("forward", pop))]

    @contextlib.contextmanager
    def active(self):
        """Track the running modules and propagate relevance under the chosen rules."""
        self.stack.clear()
        with module_hooks(self._hooks()), relevance_rules(self):
            yield


class LRP(Attribution):
    """Layer-wise relevance propagation, Captum-compatible.

    ``rules`` maps module names (as in ``named_modules()``) or module types to rules
    and applies to every op run inside that module (the innermost match wins);
    ``composite`` (e.g. :class:`EpsilonPlus`) picks rules by op kind or module type;
    ops matched by neither use ``Epsilon()``, Captum's default. ``fold_batchnorm``
    folds eval-mode batch norms into the layer feeding them for the duration of each
    call (off by default, as Captum does not fold). The model is never edited: every
    change is undone when ``attribute`` returns or raises.
    """

    def __init__(self, model: nn.Module, rules=None, composite: Composite | None = None, fold_batchnorm: bool = False):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        if composite is not None and not isinstance(composite, Composite):
            raise TypeError(f"composite must be a Composite (e.g. EpsilonPlus()); got {type(composite).__name__}")
        if not isinstance(fold_batchnorm, bool):
            raise TypeError(f"fold_batchnorm must be a bool; got {type(fold_batchnorm).__name__}")
        super().__init__(model)
        self.model = model
        self.rules = _check_rules(rules)
        self.composite = composite
        self.fold_batchnorm = fold_batchnorm

    _multiply_by_inputs = True

    def has_convergence_delta(self) -> bool:
        return True

    def attribute(
        self,
        inputs,
        target=None,
        additional_forward_args=None,
        return_convergence_delta: bool = False,
        verbose: bool = False,
        internal_batch_size="auto",
    ):
        """Relevance of every input value for the target output, in the form of
        ``inputs``; with ``return_convergence_delta``, also Captum's delta
        ``output - sum(relevance)`` per example."""
        inputs, is_tuple, adapter = self._prepare(inputs, target, additional_forward_args)
        for name, value in (("return_convergence_delta", return_convergence_delta), ("verbose", verbose)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool; got {type(value).__name__}")
        chunk = self._chunk(internal_batch_size)
        chooser = _RuleChooser(self.model, self.rules, self.composite, verbose)
        with self._guard():
            for p in self.model.parameters():
                p.requires_grad_(False)
            with self._canonized(inputs, adapter):
                relevance, outputs = self._propagate(inputs, adapter, chunk, chooser)
        result = format_output(is_tuple, relevance)
        if return_convergence_delta:
            return result, self.compute_convergence_delta(relevance, outputs)
        return result

    def _canonized(self, inputs, adapter):
        if not self.fold_batchnorm:
            return contextlib.nullcontext()
        first = torch.zeros(1, dtype=torch.long)
        rows = tuple(take(x, first) for x in inputs)
        return BatchNormFolding(batchnorm_pairs(self.model, lambda: adapter.outputs(rows, first)))

    def _propagate(self, inputs, adapter, chunk, chooser):
        relevance = [torch.empty_like(x) for x in inputs]
        outputs: list[tuple[Tensor, Tensor]] = []

        def build(rows, examples):
            return tuple(take(x, examples) for x in inputs)

        def consume(rows, examples, grads, scalars):
            for total, g in zip(relevance, grads):
                total[rows] = g * scalars.to(g.dtype).reshape((-1,) + (1,) * (g.dim() - 1))
            outputs.append((rows, scalars))

        with torch.enable_grad():  # also under a caller's torch.no_grad()
            row_gradients(adapter, adapter.n, build, consume, internal_batch_size=chunk, context=chooser.active)
        values = torch.empty(adapter.n, dtype=outputs[0][1].dtype, device=outputs[0][1].device)
        for rows, scalars in outputs:
            values[rows.to(values.device)] = scalars
        return relevance, values

    def compute_convergence_delta(self, attributions, output: Tensor) -> Tensor:
        """Captum's LRP delta: ``output - sum(attributions)`` per example."""
        attributions, _ = as_tuple(attributions, "attributions")
        if not isinstance(output, Tensor):
            raise TypeError(f"output must be a tensor of target outputs; got {type(output).__name__}")
        return output.flatten() - row_sums(attributions).flatten()
