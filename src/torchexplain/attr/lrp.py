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

from ..core.gradients import row_gradients
from ..core.hooks import module_hooks
from ..core.hooks.canonizers import BatchNormFolding, batchnorm_pairs
from ..core.hooks.relevance import relevance_rules
from ..core.inputs import as_tuple, format_output
from ..core.registry import register
from .base import GradientAttribution, row_sums, take
from .lrp_base import Composite, Rule, check_rule, composite_named
from .lrp_rules import *  # noqa: F403  (the rules' names, listed once: lrp_rules.__all__)
from .lrp_rules import Epsilon, as_rule, is_rule_object
from .lrp_rules import __all__ as _rule_names

__all__ = ["LRP", *_rule_names]

DEFAULT_RULE = Epsilon()


def _check_rules(rules) -> dict:
    if rules is None:
        return {}
    if not isinstance(rules, Mapping):
        raise TypeError(f"rules must be a mapping {{module name or module type: rule}}; got {type(rules).__name__}")
    checked = {}
    for key, rule in rules.items():
        if not (isinstance(key, str) or (isinstance(key, type) and issubclass(key, nn.Module))):
            raise TypeError(f"rules keys must be module names (str) or nn.Module subclasses; got {key!r}")
        checked[key] = check_rule(as_rule(rule, f"rules[{key!r}]"), f"rules[{key!r}]")  # (Captum's objects too)
    return checked


def _rule_attribute(module: nn.Module):
    """The ``rule`` a user set on ``module`` (Captum's way), without triggering
    ``nn.Module.__getattr__`` (a submodule or parameter named "rule" is no rule); a
    class attribute counts only when it is a rule object (not, say, a method)."""
    if "rule" in module.__dict__:
        return module.__dict__["rule"]
    value = getattr(type(module), "rule", None)
    return value if is_rule_object(value) else None


def module_rules(model: nn.Module) -> dict:
    """Every module's ``rule`` attribute as a rule of ours (Captum's rule objects are
    read too); a value that is no rule is a TypeError naming the module. Read only:
    nothing is written onto, or removed from, the model."""
    found = {}
    for name, module in model.named_modules():
        rule = as_rule(_rule_attribute(module), f"{name or 'model'}.rule")
        if rule is not None:
            found[module] = rule
    return found


class _RuleChooser:
    """Picks the rule of each intercepted op. Innermost running module first: its
    entry in ``rules`` (by name, then by type), else its ``rule`` attribute; then the
    composite; then epsilon (Captum's default)."""

    def __init__(self, model: nn.Module, rules: dict, composite: Composite | None, verbose: bool):
        self.model, self.rules, self.composite, self.verbose = model, rules, composite, verbose
        self.names = {m: name for name, m in model.named_modules()}
        self.attributes = module_rules(model)
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
            if module in self.attributes:
                return self.attributes[module]
        return None

    def _report(self, kind: str, rule: Rule) -> None:
        module = self.stack[-1] if self.stack else None
        where = f"{self.names.get(module) or '<model>'} ({type(module).__name__})" if module is not None else "<model>"
        if (kind, where, id(rule)) not in self.reported:
            self.reported.add((kind, where, id(rule)))
            print(f"LRP: applied {rule!r} to {kind} op in {where}")

    def _hooks(self) -> list:
        if not (self.rules or self.attributes or self.composite is not None or self.verbose):
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


@register("lrp", aliases=("layerwise_relevance",), delta=True, order=100, description="LRP, epsilon rule",
          extra={"delta": "output minus sum"})
class LRP(GradientAttribution):
    r"""Layer-wise relevance propagation (Bach et al. 2015), Captum-compatible.

    The target output ``f(x)`` is the relevance at the top; each op hands the relevance
    of its output to its inputs by its rule (epsilon: ``R_in = x * J^T (R / (z + eps
    sign z))``), elementwise activations and dropout pass it unchanged, and the
    attributions are the relevance reaching the inputs. ``return_convergence_delta``
    adds Captum's delta ``f(x) - sum(R_in)`` per example (zero when relevance is
    conserved, e.g. LRP-0 on a bias-free network).

    Rules, for each op, innermost running module first:

    1. ``rules`` (beyond Captum): a mapping of module names (as in
       ``named_modules()``) or module types to rules; by name, then by type;
    2. the module's ``rule`` attribute, set by the user as in Captum
       (``model.conv1.rule = GammaRule()``; Captum's own rule objects are read too).
       It is only read: LRP never writes, replaces or removes it;
    3. ``composite`` (e.g. :class:`EpsilonPlus`, or a name: "attnlrp", "cp-lrp",
       "epsilon_plus", "epsilon_alpha2_beta1"), by op kind or module type;
    4. ``Epsilon()``, Captum's default.

    Transformers (softmax, attention, layer and RMS norms, ``scaled_dot_product_attention``,
    ``nn.MultiheadAttention``) get AttnLRP's rules by default; ``composite="cp-lrp"``
    (:class:`CPLRP`) treats the attention probabilities as constants instead, which
    conserves relevance (see :mod:`torchexplain.attr.lrp_rules`).

    So ``rules`` wins over an attribute on the same module, and a rule for an inner
    module wins over one for a module containing it. A rule applies to every op run
    inside its module (for a leaf module such as ``nn.Conv2d``: exactly Captum's
    meaning). Any module type, reused module, functional op or residual ``+`` is
    handled (Captum refuses modules without a rule of its own and reused modules).

    Dropout in training mode is run as it is (Captum does not switch to eval either)
    and passes relevance unchanged; the output that is explained and the relevance
    come from one and the same forward pass, so they agree whatever the dropout mask.
    ``fold_batchnorm`` folds eval-mode batch norms into the layer feeding them for the
    duration of each call (off by default, as Captum does not fold). The model is
    never edited: every change is undone when ``attribute`` returns or raises.

    Formula:
        $$R^{(L)} = F(x), \qquad R_j = \sum_k \frac{x_j w_{jk}}{z_k + \epsilon \operatorname{sign}(z_k)} R_k,
        \qquad z_k = \sum_j x_j w_{jk} + b_k$$

        for a layer with inputs \(x_j\), weights \(w_{jk}\) and bias \(b_k\) under the
        default epsilon rule (\(\epsilon\) = 1e-9); other rules change the terms (e.g.
        :class:`Gamma`: \(w + \gamma w^+\)). \(F(x)\) is the target output, and the
        attributions are the relevance \(R_i\) that reaches input \(x_i\). Computed as
        \(R_i = F(x) \, \hat{g}_i\), with \(\hat{g}\) the backward pass from the target
        output under the rules. Conservation: \(\sum_i R_i = F(x)\) for LRP-0
        (\(\epsilon = 0\)) on a bias-free ReLU network; the delta returns
        \(F(x) - \sum_i R_i\).

    Cost:
        One forward and one backward pass per example (the backward under the rules;
        rules other than epsilon rebuild their terms during it), batched in chunks of
        ``internal_batch_size``.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import LRP
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4, bias=False), torch.nn.ReLU(),
        ...                             torch.nn.Linear(4, 2, bias=False))
        >>> x = torch.randn(2, 3)
        >>> relevance, delta = LRP(model).attribute(x, target=0, return_convergence_delta=True)
        >>> relevance.shape, delta.shape
        (torch.Size([2, 3]), torch.Size([2]))
        >>> bool(delta.abs().max() < 1e-4)  # a bias-free network: relevance is conserved
        True
    """

    def __init__(self, model: nn.Module, rules=None, composite: Composite | str | None = None,
                 fold_batchnorm: bool = False):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        if isinstance(composite, str):
            composite = composite_named(composite)
        if composite is not None and not isinstance(composite, Composite):
            raise TypeError(
                f"composite must be a Composite (e.g. EpsilonPlus()) or a composite's name (e.g. 'attnlrp'); "
                f"got {type(composite).__name__}"
            )
        if not isinstance(fold_batchnorm, bool):
            raise TypeError(f"fold_batchnorm must be a bool; got {type(fold_batchnorm).__name__}")
        GradientAttribution.__init__(self, model)  # (LayerLRP's next base is LayerAttribution)
        self.model = model
        self.rules = _check_rules(rules)
        self.composite = composite
        self.fold_batchnorm = fold_batchnorm
        module_rules(model)  # a module's ``rule`` that is no rule fails here, as in Captum

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
        forward_kwargs=None,
    ):
        """Relevance of every input value for the target output, in the form of
        ``inputs``; with ``return_convergence_delta``, also Captum's delta
        ``output - sum(relevance)`` per example. ``forward_kwargs`` (beyond Captum):
        keyword arguments of the model; tensors batched over the examples follow
        their example."""
        inputs, is_tuple, adapter = self._prepare(inputs, target, additional_forward_args, forward_kwargs)
        self._check_flags(return_convergence_delta=return_convergence_delta, verbose=verbose)
        relevance, outputs = self._run(inputs, adapter, internal_batch_size, verbose)
        result = format_output(is_tuple, relevance)
        if return_convergence_delta:
            return result, self.compute_convergence_delta(relevance, outputs)
        return result

    @staticmethod
    def _check_flags(**flags) -> None:
        for name, value in flags.items():
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool; got {type(value).__name__}")

    def _run(self, inputs, adapter, internal_batch_size, verbose: bool, taps=None):
        """Relevance at the inputs (or at the values ``taps`` record) and the explained
        outputs, under the rules, with the model guarded."""
        chunk = self._chunk(internal_batch_size)
        chooser = _RuleChooser(self.model, self.rules, self.composite, verbose)
        with self._guard():
            for p in self.model.parameters():
                p.requires_grad_(False)
            with self._canonized(inputs, adapter):
                return self._propagate(inputs, adapter, chunk, chooser, taps)

    def _canonized(self, inputs, adapter):
        if not self.fold_batchnorm:
            return contextlib.nullcontext()
        first = torch.zeros(1, dtype=torch.long)
        rows = tuple(take(x, first) for x in inputs)
        return BatchNormFolding(batchnorm_pairs(self.model, lambda: adapter.outputs(rows, first)))

    def _propagate(self, inputs, adapter, chunk, chooser, taps=None):
        """Relevance = (d output / d values under the rules) * output, per row. The
        values are the inputs, or with ``taps`` (LayerLRP) what each tap records (then
        one list of tensors per tap)."""
        relevance: list = []
        outputs: list[tuple[Tensor, Tensor]] = []
        seen: dict = {}

        def build(rows, examples):
            chunk_inputs = tuple(take(x, examples) for x in inputs)
            if taps is None:
                return chunk_inputs
            # the inputs take part in the graph so that every layer below the taps is
            # intercepted too (a composite's first layer is the model's first layer)
            return tuple(x.detach().requires_grad_(True) if x.is_floating_point() else x for x in chunk_inputs)

        def score(chunk_inputs, rows, examples):
            with contextlib.ExitStack() as stack:
                records = [stack.enter_context(tap.recording(grad=True)) for tap in taps]
                scalars = adapter.scalars(chunk_inputs, examples)
            seen["values"] = tuple(v for record in records for v in record.values)
            seen["counts"] = [len(record.values) for record in records]
            return scalars

        def consume(rows, examples, grads, scalars):
            if not relevance:
                relevance.extend(g.new_empty((adapter.n,) + g.shape[1:]) for g in grads)
            for total, g in zip(relevance, grads):
                total[rows.to(total.device)] = g * scalars.to(g.dtype).reshape((-1,) + (1,) * (g.dim() - 1))
            outputs.append((rows, scalars))

        with torch.enable_grad():  # also under a caller's torch.no_grad()
            row_gradients(
                adapter, adapter.n, build, consume, internal_batch_size=chunk, context=chooser.active,
                score=None if taps is None else score, wrt=None if taps is None else (lambda: seen.pop("values")),
            )
        values = torch.empty(adapter.n, dtype=outputs[0][1].dtype, device=outputs[0][1].device)
        for rows, scalars in outputs:
            values[rows.to(values.device)] = scalars
        if taps is not None:  # one list of tensors per tap
            bounds = torch.tensor([0] + seen["counts"]).cumsum(0).tolist()
            relevance = [relevance[a:b] for a, b in zip(bounds, bounds[1:])]
        return relevance, values

    def compute_convergence_delta(self, attributions, output: Tensor) -> Tensor:
        """Captum's LRP delta: ``output - sum(attributions)`` per example."""
        attributions, _ = as_tuple(attributions, "attributions")
        if not isinstance(output, Tensor):
            raise TypeError(f"output must be a tensor of target outputs; got {type(output).__name__}")
        return output.flatten() - row_sums(attributions).flatten()
