"""One-pass gradient methods: Saliency, InputXGradient, GuidedBackprop, Deconvolution."""

from __future__ import annotations

import torch

from ..core.gradients import row_gradients
from ..core.hooks import FunctionRules
from ..core.inputs import format_output
from ..core.registry import register
from ..core.rules import DeconvReLU, GuidedReLU
from .base import GradientAttribution, take


class _OnePass(GradientAttribution):
    """Gradient of the target at the inputs, optionally under backward rules."""

    rule = None

    def _gradients(self, inputs, adapter, internal_batch_size="auto"):
        grads = [torch.empty_like(x) for x in inputs]

        def build(rows, examples):
            return tuple(take(x, examples) for x in inputs)

        def consume(rows, examples, chunk_grads, scalars):
            for total, g in zip(grads, chunk_grads):
                total[rows] = g

        context = (lambda: FunctionRules(self.rule)) if self.rule is not None else None
        row_gradients(adapter, adapter.n, build, consume, internal_batch_size=internal_batch_size, context=context)
        return grads

    def attribute(self, inputs, target=None, additional_forward_args=None, forward_kwargs=None):
        return self._attribute(inputs, target, additional_forward_args, forward_kwargs, lambda x, g: g)

    def _attribute(self, inputs, target, additional_forward_args, forward_kwargs, combine):
        inputs, is_tuple, adapter = self._prepare(inputs, target, additional_forward_args, forward_kwargs)
        with self._guard():
            grads = self._gradients(inputs, adapter)
        return format_output(is_tuple, [combine(x, g) for x, g in zip(inputs, grads)])


@register("saliency", aliases=("gradient", "vanilla_gradient"), order=10, description="|gradient|")
class Saliency(_OnePass):
    r"""Saliency (Simonyan et al. 2013): the gradient of the target output with respect
    to the inputs; its absolute value when ``abs=True`` (Captum's default).

    Formula:
        $$\phi_i = \left| \frac{\partial F(x)}{\partial x_i} \right|$$

        with \(F\) the target output of the model and \(x\) the input; with ``abs=False``
        the signed gradient \(\partial F(x) / \partial x_i\). There is no baseline and no
        multiplication by the input.

    Cost:
        One forward and one backward pass per example; the batch is evaluated in
        chunks sized to ``torchexplain.config.memory_budget``.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import Saliency
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 2))
        >>> x = torch.randn(2, 3)
        >>> attributions = Saliency(model).attribute(x, target=1)
        >>> attributions.shape
        torch.Size([2, 3])
        >>> bool(torch.allclose(attributions, model[0].weight[1].abs().expand(2, 3)))
        True
    """

    def attribute(self, inputs, target=None, abs=True, additional_forward_args=None, forward_kwargs=None):
        combine = (lambda x, g: g.abs()) if abs else (lambda x, g: g)
        return self._attribute(inputs, target, additional_forward_args, forward_kwargs, combine)


@register("input_x_gradient", aliases=("ixg", "gradient_x_input"), order=20, description="input x gradient")
class InputXGradient(_OnePass):
    r"""Input x Gradient (Shrikumar et al. 2016): the input times the gradient of the
    target output with respect to it.

    Formula:
        $$\phi_i = x_i \, \frac{\partial F(x)}{\partial x_i}$$

        with \(F\) the target output and \(x\) the input (an implicit zero baseline).
        For a bias-free linear model the attributions sum to \(F(x)\).

    Cost:
        One forward and one backward pass per example; the batch is evaluated in
        chunks sized to ``torchexplain.config.memory_budget``.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import InputXGradient
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 2, bias=False))
        >>> x = torch.randn(2, 3)
        >>> attributions = InputXGradient(model).attribute(x, target=0)
        >>> attributions.shape
        torch.Size([2, 3])
        >>> bool(torch.allclose(attributions.sum(1), model(x)[:, 0], atol=1e-5))
        True
    """

    _multiply_by_inputs = True

    def attribute(self, inputs, target=None, additional_forward_args=None, forward_kwargs=None):
        return self._attribute(inputs, target, additional_forward_args, forward_kwargs, lambda x, g: x * g)


class _RuleOnePass(_OnePass):
    """A one-pass method under a backward rule; its first argument is ``model``, as in Captum."""

    def __init__(self, model, output_selector=None):
        super().__init__(model, output_selector)


@register("guided_backprop", aliases=("guided", "gbp"), order=60, description="guided backpropagation")
class GuidedBackprop(_RuleOnePass):
    r"""Guided backpropagation (Springenberg et al. 2015): only positive gradients pass
    back through ReLUs, and only where the ReLU was active. Applies to every ReLU the
    model computes, whether a module, functional, in-place or reused.

    Formula:
        $$\hat{g}_{\mathrm{in}} = \mathbb{1}[z > 0] \odot \max(\hat{g}_{\mathrm{out}}, 0), \qquad
        \phi_i = \hat{g}_i$$

        at every ReLU \(y = \max(z, 0)\): \(\hat{g}_{\mathrm{out}}\) is the modified
        gradient reaching its output and \(\hat{g}_{\mathrm{in}}\) what it passes back to
        \(z\); every other op keeps its ordinary backward. The attribution
        \(\phi_i\) is the modified gradient reaching input \(x_i\) from the target
        output (not multiplied by the input).

    Cost:
        One forward and one backward pass per example (the backward under the rule);
        the batch is evaluated in chunks sized to ``torchexplain.config.memory_budget``.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import GuidedBackprop
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> x = torch.randn(2, 3)
        >>> attributions = GuidedBackprop(model).attribute(x, target=0)
        >>> attributions.shape
        torch.Size([2, 3])
        >>> active = model[0](x) > 0
        >>> by_hand = (active * model[2].weight[0].clamp(min=0)) @ model[0].weight
        >>> bool(torch.allclose(attributions, by_hand.detach(), atol=1e-6))
        True
    """

    rule = GuidedReLU()


@register("deconvolution", aliases=("deconv",), order=70, description="deconvolution")
class Deconvolution(_RuleOnePass):
    r"""Deconvolution (Zeiler & Fergus 2014): ReLUs pass back positive gradients,
    whatever their input.

    Formula:
        $$\hat{g}_{\mathrm{in}} = \max(\hat{g}_{\mathrm{out}}, 0), \qquad \phi_i = \hat{g}_i$$

        at every ReLU of the model: \(\hat{g}_{\mathrm{out}}\) is the modified gradient
        reaching its output and \(\hat{g}_{\mathrm{in}}\) what it passes back, whether the
        unit was active or not; every other op keeps its ordinary backward. The
        attribution \(\phi_i\) is the modified gradient reaching input \(x_i\) from the
        target output (not multiplied by the input).

    Cost:
        One forward and one backward pass per example (the backward under the rule);
        the batch is evaluated in chunks sized to ``torchexplain.config.memory_budget``.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import Deconvolution
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> x = torch.randn(2, 3)
        >>> attributions = Deconvolution(model).attribute(x, target=0)
        >>> by_hand = model[2].weight[0].clamp(min=0) @ model[0].weight
        >>> bool(torch.allclose(attributions, by_hand.detach().expand(2, 3), atol=1e-6))
        True
    """

    rule = DeconvReLU()
