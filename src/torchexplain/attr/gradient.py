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
    """Gradient of the target with respect to the inputs (Simonyan et al. 2013);
    its absolute value when ``abs=True`` (Captum's default)."""

    def attribute(self, inputs, target=None, abs=True, additional_forward_args=None, forward_kwargs=None):
        combine = (lambda x, g: g.abs()) if abs else (lambda x, g: g)
        return self._attribute(inputs, target, additional_forward_args, forward_kwargs, combine)


@register("input_x_gradient", aliases=("ixg", "gradient_x_input"), order=20, description="input x gradient")
class InputXGradient(_OnePass):
    """Input times the gradient of the target with respect to it."""

    _multiply_by_inputs = True

    def attribute(self, inputs, target=None, additional_forward_args=None, forward_kwargs=None):
        return self._attribute(inputs, target, additional_forward_args, forward_kwargs, lambda x, g: x * g)


class _RuleOnePass(_OnePass):
    """A one-pass method under a backward rule; its first argument is ``model``, as in Captum."""

    def __init__(self, model, output_selector=None):
        super().__init__(model, output_selector)


@register("guided_backprop", aliases=("guided", "gbp"), order=60, description="guided backpropagation")
class GuidedBackprop(_RuleOnePass):
    """Guided backpropagation (Springenberg et al. 2015): only positive gradients pass
    back through ReLUs, and only where the ReLU was active. Applies to every ReLU the
    model computes, whether a module, functional, in-place or reused."""

    rule = GuidedReLU()


@register("deconvolution", aliases=("deconv",), order=70, description="deconvolution")
class Deconvolution(_RuleOnePass):
    """Deconvolution (Zeiler & Fergus 2014): ReLUs pass back positive gradients,
    whatever their input."""

    rule = DeconvReLU()
