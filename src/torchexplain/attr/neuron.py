"""Neuron attributions: how each input feature moves one neuron (or a group of
neurons) of a hidden layer, with Captum's names, arguments and return forms.

``neuron_selector`` picks the neuron from the layer's output (or input, with
``attribute_to_neuron_input=True``):

* an int, or a tuple of ints and slices, indexing the non-batch dimensions (Captum's
  ``value[(slice(None), *selector)]``); slices select a group of neurons whose values
  are summed, as in Captum. Fewer indices than the layer has non-batch dimensions
  leave the remaining dimensions whole: their neurons are a group too (``(c,)`` of a
  conv layer is channel ``c``, summed over positions);
* a callable ``layer values -> one value per example`` (the layer's tensor, or the
  tuple of its tensors when it has several). A callable that returns one value for
  the whole batch (``lambda x: x.sum()``) is read as Captum's gradients read it, a
  sum over examples: it is applied to each example alone (``torch.func.vmap``), so
  each example's neuron value is the callable of that example.

Each method is the matching input method applied to the *neuron function*
``x -> selected neuron value of each example``: the layer's values are read through a
:class:`~torchexplain.core.hooks.layers.LayerTap` snapshot, which stays on the inputs'
autograd graph and which an in-place operation after the layer cannot change. So
every expanded row (steps, samples, references, ablations) runs through the same
chunked evaluators as the input methods, and activation rules (guided, rescale) apply
to every ReLU and max-pool the model computes, reused and functional ones included.
A layer that runs more than once per forward pass needs ``layer_call`` (the run to
read); without it a clear error is raised.
"""

from __future__ import annotations

import numbers
from typing import Callable

import torch
from torch import Tensor, nn

from ..core.forward import ForwardAdapter
from ..core.gradients import check_grad_kwargs, input_gradients
from ..core.hooks.layers import LayerTap
from ..core.inputs import format_baselines, format_output
from .ablation import FeatureAblation, PerturbationAttribution
from .deeplift import DeepLift, DeepLiftShap
from .gradient import Deconvolution, GuidedBackprop, Saliency
from .integrated import IntegratedGradients
from .layer_base import LayerAttribution
from .noise import GradientShap
from .seeding import positive_int

SELECTOR_FORMS = "an int, a tuple of ints and slices, or a callable (layer values -> one value per example)"


def check_neuron_selector(selector):
    """``selector`` as a callable or a tuple of ints and slices; a TypeError or
    ValueError naming ``neuron_selector`` otherwise."""
    if callable(selector) and not isinstance(selector, Tensor):
        return selector
    items = selector if isinstance(selector, tuple) else (selector,)
    for item in items:
        if isinstance(item, slice):
            if not all(v is None or (isinstance(v, numbers.Integral) and not isinstance(v, bool))
                       for v in (item.start, item.stop, item.step)):
                raise TypeError(f"neuron_selector slices must have int bounds; got {item!r}")
            if item.step is not None and item.step < 1:
                raise ValueError(f"neuron_selector slices must have a positive step; got {item!r}")
        elif isinstance(item, bool) or not isinstance(item, numbers.Integral):
            raise TypeError(f"neuron_selector must be {SELECTOR_FORMS}; got {selector!r}")
    if not items:
        raise ValueError("neuron_selector must not be an empty tuple")
    return tuple(i if isinstance(i, slice) else int(i) for i in items)


def select_neuron(selector, values: tuple[Tensor, ...], n_rows: int) -> Tensor:
    """The selected neuron's value (a group's sum) for each of ``n_rows`` rows of the
    layer's ``values``; ``selector`` is checked by :func:`check_neuron_selector`."""
    if callable(selector):
        return _call_selector(selector, values, n_rows)
    if len(values) > 1:
        raise ValueError(
            f"neuron_selector: the layer has {len(values)} tensors, so an index cannot say which to read; "
            "pass a callable that takes the tuple of tensors"
        )
    value = values[0]
    dims = tuple(value.shape[1:])
    if len(selector) > len(dims):
        raise ValueError(
            f"neuron_selector has {len(selector)} index(es) but the layer's values have only {len(dims)} non-batch "
            f"dimension(s) (per-example shape {dims}); give at most one int or slice per dimension, or a callable"
        )
    for j, (index, size) in enumerate(zip(selector, dims)):
        if isinstance(index, slice):
            if not range(*index.indices(size)):
                raise ValueError(
                    f"neuron_selector slice {index!r} selects no neuron of dimension {j + 1} (size {size})"
                )
        elif not -size <= index < size:
            raise ValueError(
                f"neuron_selector index {index} is out of range for dimension {j + 1} (size {size}) of the "
                f"layer's values (per-example shape {dims})"
            )
    return value[(slice(None),) + selector].reshape(n_rows, -1).sum(1)


def _call_selector(selector, values: tuple[Tensor, ...], n_rows: int) -> Tensor:
    """A callable selector's value of each row: what it returns when that is one value
    per row, else (one value for the whole batch) the callable of each row alone."""
    single = len(values) == 1
    picked = selector(values[0] if single else values)
    if isinstance(picked, Tensor) and picked.numel() == n_rows:
        return picked.reshape(n_rows)
    if not (isinstance(picked, Tensor) and picked.numel() == 1):
        got = f"shape {tuple(picked.shape)}" if isinstance(picked, Tensor) else type(picked).__name__
        raise ValueError(
            f"neuron_selector (a callable) must return one value per example ({n_rows} values for {n_rows} rows) "
            f"or one value for the whole batch; got {got}"
        )

    def one(*rows):  # each row as a batch of one
        return selector(rows[0] if single else rows).reshape(())

    try:
        return torch.func.vmap(one)(*(v.unsqueeze(1) for v in values))
    except RuntimeError as err:
        raise ValueError(
            "neuron_selector (a callable) returned one value for the whole batch, and applying it to each "
            f"example alone failed ({err}); return one value per example instead"
        ) from err


class NeuronFunction(nn.Module):
    """``forward_func`` reduced to the selected neuron's value of each row. A module
    (holding the model as its child), so the evaluators see the model's parameters."""

    def __init__(self, forward_func: Callable, tap: LayerTap, selector):
        super().__init__()
        self.forward_func = forward_func
        self.tap = tap
        self.selector = selector

    def forward(self, *args, **kwargs) -> Tensor:
        with self.tap.recording() as record:
            self.forward_func(*args, **kwargs)
        return select_neuron(self.selector, record.values, args[0].shape[0])


class NeuronAttribution(LayerAttribution):
    """Base of the neuron methods: ``Method(forward_func, layer, ...)`` with the layer a
    module or its dotted name; ``layer_call`` picks the run of a reused layer.
    ``device_ids`` is accepted for Captum compatibility."""

    def __init__(self, forward_func, layer, device_ids=None, *, output_selector=None, layer_call: int | None = None):
        super().__init__(forward_func, layer, device_ids, output_selector, layer_call)

    def _neuron(self, neuron_selector, attribute_to_neuron_input: bool) -> NeuronFunction:
        selector = check_neuron_selector(neuron_selector)
        return NeuronFunction(self.forward_func, self._tap(bool(attribute_to_neuron_input)), selector)

    def _through(self, make: Callable, inputs, neuron_selector, attribute_to_neuron_input, **kwargs):
        """``make(neuron function).attribute(inputs, **kwargs)``; the input method
        guards the neuron function, so the model it holds."""
        return make(self._neuron(neuron_selector, attribute_to_neuron_input)).attribute(inputs, **kwargs)


class _Multiplying(NeuronAttribution):
    """A neuron method with Captum's ``multiply_by_inputs`` switch."""

    def __init__(self, forward_func, layer, device_ids=None, multiply_by_inputs: bool = True, *,
                 output_selector=None, layer_call: int | None = None):
        super().__init__(forward_func, layer, device_ids, output_selector=output_selector, layer_call=layer_call)
        self._multiply_by_inputs = multiply_by_inputs


class NeuronGradient(NeuronAttribution):
    r"""The gradient of the neuron's value with respect to the inputs (Captum's NeuronGradient).

    Formula:
        $$\phi_i = \frac{\partial n(x)}{\partial x_i}$$

        \(n(x) = \sum_{u \in U} h_u(x)\) is the value of the neuron (or the sum of a group
        \(U\) of neurons) that ``neuron_selector`` picks from the layer's output \(h\)
        (input, with ``attribute_to_neuron_input=True``); a callable selector \(c\) gives
        \(n(x) = c(h(x))\). The model's output is not used.

    Cost:
        One forward pass (of the whole model) and one backward pass (from the layer) per
        example, batched in chunks sized to the memory budget.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import NeuronGradient
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> x = torch.randn(2, 3)
        >>> attributions = NeuronGradient(model, model[0]).attribute(x, neuron_selector=1)
        >>> attributions.shape
        torch.Size([2, 3])
        >>> # unit 1 of the first Linear layer: its gradient is that unit's weight row
        >>> bool(torch.allclose(attributions, model[0].weight[1].expand(2, 3)))
        True
    """

    def attribute(self, inputs, neuron_selector, additional_forward_args=None,
                  attribute_to_neuron_input: bool = False, forward_kwargs=None):
        return self._through(
            Saliency, inputs, neuron_selector, attribute_to_neuron_input,
            abs=False, additional_forward_args=additional_forward_args, forward_kwargs=forward_kwargs,
        )


class NeuronGuidedBackprop(NeuronAttribution):
    r"""Guided backpropagation (Springenberg et al. 2015) from the neuron: only positive
    gradients pass back through the ReLUs below it, and only where they were active.

    Formula:
        $$\hat{g}_{\mathrm{in}} = \mathbb{1}[z > 0] \odot \max(\hat{g}_{\mathrm{out}}, 0), \qquad
        \phi_i = \hat{g}_i$$

        at every ReLU \(y = \max(z, 0)\) below the neuron: \(\hat{g}_{\mathrm{out}}\) is
        the modified gradient reaching its output and \(\hat{g}_{\mathrm{in}}\) what it
        passes back to \(z\); every other op keeps its ordinary backward. The backward
        pass starts from the neuron's value \(n\), and \(\phi_i\) is the modified gradient
        reaching input \(x_i\) (not multiplied by the input).
        \(n(x) = \sum_{u \in U} h_u(x)\) is the value of the neuron (or the sum of a group
        \(U\) of neurons) that ``neuron_selector`` picks from the layer's output \(h\)
        (input, with ``attribute_to_neuron_input=True``); a callable selector \(c\) gives
        \(n(x) = c(h(x))\).

    Cost:
        One forward pass (of the whole model) and one backward pass (from the layer,
        under the rule) per example, batched in chunks sized to the memory budget.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import NeuronGuidedBackprop
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> x = torch.randn(2, 3)
        >>> attributions = NeuronGuidedBackprop(model, model[2]).attribute(x, neuron_selector=0)
        >>> attributions.shape
        torch.Size([2, 3])
        >>> active = model[0](x) > 0
        >>> by_hand = (active * model[2].weight[0].clamp(min=0)) @ model[0].weight
        >>> bool(torch.allclose(attributions, by_hand.detach(), atol=1e-6))
        True
    """

    _method = GuidedBackprop

    def __init__(self, model, layer, device_ids=None, *, output_selector=None, layer_call: int | None = None):
        super().__init__(model, layer, device_ids, output_selector=output_selector, layer_call=layer_call)

    def attribute(self, inputs, neuron_selector, additional_forward_args=None,
                  attribute_to_neuron_input: bool = False, forward_kwargs=None):
        return self._through(
            self._method, inputs, neuron_selector, attribute_to_neuron_input,
            additional_forward_args=additional_forward_args, forward_kwargs=forward_kwargs,
        )


class NeuronDeconvolution(NeuronGuidedBackprop):
    r"""Deconvolution (Zeiler & Fergus 2014) from the neuron: the ReLUs below it pass back
    positive gradients, whatever their input.

    Formula:
        $$\hat{g}_{\mathrm{in}} = \max(\hat{g}_{\mathrm{out}}, 0), \qquad \phi_i = \hat{g}_i$$

        at every ReLU below the neuron (whatever its input \(z\)): \(\hat{g}_{\mathrm{out}}\)
        is the modified gradient reaching its output and \(\hat{g}_{\mathrm{in}}\) what it
        passes back; every other op keeps its ordinary backward. The backward pass starts
        from the neuron's value \(n\), and \(\phi_i\) is the modified gradient reaching
        input \(x_i\) (not multiplied by the input).
        \(n(x) = \sum_{u \in U} h_u(x)\) is the value of the neuron (or the sum of a group
        \(U\) of neurons) that ``neuron_selector`` picks from the layer's output \(h\)
        (input, with ``attribute_to_neuron_input=True``); a callable selector \(c\) gives
        \(n(x) = c(h(x))\).

    Cost:
        One forward pass (of the whole model) and one backward pass (from the layer,
        under the rule) per example, batched in chunks sized to the memory budget.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import NeuronDeconvolution
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> x = torch.randn(2, 3)
        >>> attributions = NeuronDeconvolution(model, model[2]).attribute(x, neuron_selector=0)
        >>> attributions.shape
        torch.Size([2, 3])
        >>> # the ReLU passes back the positive part of the weights, whatever the input
        >>> by_hand = model[2].weight[0].clamp(min=0) @ model[0].weight
        >>> bool(torch.allclose(attributions, by_hand.detach().expand(2, 3), atol=1e-6))
        True
    """

    _method = Deconvolution


class NeuronIntegratedGradients(_Multiplying):
    r"""Integrated gradients (Sundararajan et al. 2017) of the neuron's value along the
    straight path from the baselines to the inputs (Gauss-Legendre quadrature by default, as
    Captum).

    Formula:
        $$\phi_i = (x_i - x'_i) \int_0^1 \frac{\partial n(x' + \alpha (x - x'))}{\partial x_i}\, d\alpha
        \approx (x_i - x'_i) \sum_{k=1}^{m} w_k \frac{\partial n(x' + \alpha_k (x - x'))}{\partial x_i}$$

        \(n(x) = \sum_{u \in U} h_u(x)\) is the value of the neuron (or the sum of a group
        \(U\) of neurons) that ``neuron_selector`` picks from the layer's output \(h\)
        (input, with ``attribute_to_neuron_input=True``); a callable selector \(c\) gives
        \(n(x) = c(h(x))\). \(x'\) is the baseline (zero by default), and
        \(\alpha_k\) and \(w_k\) are the \(m\) = ``n_steps`` points and weights of
        ``method``. With ``multiply_by_inputs=False`` the factor \((x_i - x'_i)\) is left
        out. Completeness: \(\sum_i \phi_i = n(x) - n(x')\) up to the quadrature error.

    Cost:
        ``n_steps`` forward passes (of the whole model) and backward passes (from the
        layer) per example, batched in chunks of ``internal_batch_size`` rows
        (``"auto"``: from the memory budget).

    Examples:
        >>> import torch
        >>> from torchexplain.attr import NeuronIntegratedGradients
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 4),
        ...                             torch.nn.Tanh(), torch.nn.Linear(4, 2))
        >>> x = torch.randn(2, 3)
        >>> attributions = NeuronIntegratedGradients(model, model[3]).attribute(x, neuron_selector=1)
        >>> attributions.shape
        torch.Size([2, 3])
        >>> gap = model[:4](x)[:, 1] - model[:4](torch.zeros(1, 3))[:, 1]
        >>> bool(torch.allclose(attributions.sum(1), gap, atol=1e-4))
        True
    """

    def attribute(self, inputs, neuron_selector, baselines=None, additional_forward_args=None, n_steps: int = 50,
                  method: str = "gausslegendre", internal_batch_size="auto",
                  attribute_to_neuron_input: bool = False, forward_kwargs=None):
        return self._through(
            lambda f: IntegratedGradients(f, self._multiply_by_inputs), inputs, neuron_selector,
            attribute_to_neuron_input, baselines=baselines, additional_forward_args=additional_forward_args,
            n_steps=n_steps, method=method, internal_batch_size=internal_batch_size, forward_kwargs=forward_kwargs,
        )


class NeuronDeepLift(_Multiplying):
    r"""DeepLIFT (Shrikumar et al. 2017; rescale rule) of the neuron's value: inputs and
    baselines run as one batch and every ReLU and max-pool below the neuron passes back
    rescaled multipliers, so the attributions sum to ``neuron(x) - neuron(x0)`` on ReLU /
    max-pool / eval-BatchNorm networks.

    Formula:
        $$\phi_i = m_i \, (x_i - x'_i), \qquad
        m_{\mathrm{in}} = m_{\mathrm{out}} \odot \frac{f(z) - f(z')}{z - z'}$$

        \(n(x) = \sum_{u \in U} h_u(x)\) is the value of the neuron (or the sum of a group
        \(U\) of neurons) that ``neuron_selector`` picks from the layer's output \(h\)
        (input, with ``attribute_to_neuron_input=True``); a callable selector \(c\) gives
        \(n(x) = c(h(x))\). \(x'\) is the baseline (zero by default) and \(m_i\) the
        multiplier of input \(x_i\): the backward pass from \(n\) in which every activation
        (and max-pool) \(y = f(z)\) passes back the secant slope between its inputs for
        \(x\) and \(x'\) (the derivative where \(|z - z'| <\) ``eps``). With
        ``multiply_by_inputs=False`` the result is \(m_i\). Summation to delta on such
        networks: \(\sum_i \phi_i = n(x) - n(x')\).

    Cost:
        One forward pass (of the whole model) and one backward pass (from the layer) per
        example, each chunk of examples run together with its baselines as one batch
        ``[x; x']`` (twice the rows). Chunks follow ``internal_batch_size``.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import NeuronDeepLift
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4),
        ...                             torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> x = torch.randn(2, 3)
        >>> attributions = NeuronDeepLift(model, model[3]).attribute(x, neuron_selector=0)
        >>> attributions.shape
        torch.Size([2, 3])
        >>> gap = model[:4](x)[:, 0] - model[:4](torch.zeros(1, 3))[:, 0]
        >>> bool(torch.allclose(attributions.sum(1), gap, atol=1e-5))
        True
    """

    _method = DeepLift

    def __init__(self, model, layer, multiply_by_inputs: bool = True, eps: float = 1e-10, *,
                 layer_call: int | None = None):
        super().__init__(model, layer, None, multiply_by_inputs, layer_call=layer_call)
        self.eps = eps

    def attribute(self, inputs, neuron_selector, baselines=None, additional_forward_args=None,
                  attribute_to_neuron_input: bool = False, custom_attribution_func=None, forward_kwargs=None,
                  internal_batch_size="auto"):
        return self._through(
            lambda f: self._method(f, self._multiply_by_inputs, self.eps), inputs, neuron_selector,
            attribute_to_neuron_input, baselines=baselines, additional_forward_args=additional_forward_args,
            custom_attribution_func=custom_attribution_func, forward_kwargs=forward_kwargs,
            internal_batch_size=internal_batch_size,
        )


class NeuronDeepLiftShap(NeuronDeepLift):
    r"""DeepLiftShap (Lundberg & Lee 2017) of the neuron: DeepLIFT of the neuron's value
    against each row of a baseline distribution, averaged.

    Formula:
        $$\phi_i = \frac{1}{B} \sum_{j=1}^{B} m_i^{(j)} \, (x_i - b_{j,i})$$

        \(n(x) = \sum_{u \in U} h_u(x)\) is the value of the neuron (or the sum of a group
        \(U\) of neurons) that ``neuron_selector`` picks from the layer's output \(h\)
        (input, with ``attribute_to_neuron_input=True``); a callable selector \(c\) gives
        \(n(x) = c(h(x))\). \(b_1, \dots, b_B\) are the rows of ``baselines`` and
        \(m^{(j)}\) the DeepLIFT (rescale) multipliers of \(n\) for \(x\) against \(b_j\)
        (see :class:`NeuronDeepLift`); with ``multiply_by_inputs=False`` the multipliers
        alone are averaged. Where DeepLIFT sums to delta:
        \(\sum_i \phi_i = n(x) - \frac{1}{B} \sum_j n(b_j)\).

    Cost:
        \(B\) forward passes (of the whole model) and backward passes (from the layer)
        per example, one per baseline row: all (example, baseline) pairs are rows of one
        chunked evaluation, each chunk run together with its baselines as one batch
        (twice the rows). Chunks follow ``internal_batch_size``.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import NeuronDeepLiftShap
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4),
        ...                             torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> x, baselines = torch.randn(2, 3), torch.randn(5, 3)
        >>> attributions = NeuronDeepLiftShap(model, model[3]).attribute(x, 0, baselines)
        >>> attributions.shape
        torch.Size([2, 3])
        >>> gap = model[:4](x)[:, 0] - model[:4](baselines)[:, 0].mean()
        >>> bool(torch.allclose(attributions.sum(1), gap, atol=1e-5))
        True
    """

    _method = DeepLiftShap

    def attribute(self, inputs, neuron_selector, baselines, additional_forward_args=None,  # type: ignore[override]
                  attribute_to_neuron_input: bool = False, custom_attribution_func=None, forward_kwargs=None,
                  internal_batch_size="auto"):
        return super().attribute(
            inputs, neuron_selector, baselines, additional_forward_args, attribute_to_neuron_input,
            custom_attribution_func, forward_kwargs, internal_batch_size,
        )


class NeuronGradientShap(_Multiplying):
    r"""GradientSHAP (Lundberg & Lee 2017) of the neuron's value: gradients at random points
    between noisy inputs and rows of a baseline distribution, times the difference.
    ``generator`` (beyond Captum) makes the draws reproducible.

    Formula:
        $$\phi_i = \frac{1}{S} \sum_{s=1}^{S} (\tilde{x}_{s,i} - b_{s,i})
        \frac{\partial n(b_s + \alpha_s (\tilde{x}_s - b_s))}{\partial x_i}, \qquad
        \tilde{x}_s = x + \epsilon_s$$

        \(n(x) = \sum_{u \in U} h_u(x)\) is the value of the neuron (or the sum of a group
        \(U\) of neurons) that ``neuron_selector`` picks from the layer's output \(h\)
        (input, with ``attribute_to_neuron_input=True``); a callable selector \(c\) gives
        \(n(x) = c(h(x))\). \(S\) is ``n_samples``, each sample's baseline \(b_s\)
        is drawn uniformly from the rows of ``baselines``, \(\alpha_s\) uniformly from
        \([0, 1)\) and \(\epsilon_s\) from \(\mathcal{N}(0, \sigma^2 I)\), \(\sigma\) =
        ``stdevs``. With ``multiply_by_inputs=False`` the factor
        \((\tilde{x}_s - b_s)\) is left out. Completeness holds only approximately
        (exactly for a neuron linear in the inputs).

    Cost:
        ``n_samples`` forward passes (of the whole model) and backward passes (from the
        layer) per example, all rows batched in chunks of ``internal_batch_size``.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import NeuronGradientShap
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> x = torch.randn(2, 3)
        >>> ngs = NeuronGradientShap(model, model[0])
        >>> attributions = ngs.attribute(x, 1, torch.zeros(1, 3), n_samples=4,
        ...                              generator=torch.Generator().manual_seed(0))
        >>> attributions.shape
        torch.Size([2, 3])
        >>> # a neuron linear in the inputs, one zero baseline: every sample gives x * weight
        >>> bool(torch.allclose(attributions, x * model[0].weight[1], atol=1e-6))
        True
    """

    def attribute(self, inputs, neuron_selector, baselines, n_samples: int = 5, stdevs=0.0,
                  additional_forward_args=None, attribute_to_neuron_input: bool = False, forward_kwargs=None,
                  internal_batch_size="auto", generator: torch.Generator | None = None):
        return self._through(
            lambda f: GradientShap(f, self._multiply_by_inputs), inputs, neuron_selector, attribute_to_neuron_input,
            baselines=baselines, n_samples=n_samples, stdevs=stdevs, additional_forward_args=additional_forward_args,
            forward_kwargs=forward_kwargs, internal_batch_size=internal_batch_size, generator=generator,
        )


class NeuronFeatureAblation(NeuronAttribution, PerturbationAttribution):
    r"""Feature ablation of the neuron's value (Captum's NeuronFeatureAblation): each
    feature (a ``feature_mask`` group, every scalar by default) is replaced by its baseline
    and its attribution is the drop in the neuron's value. Ablations run batched
    (``perturbations_per_eval``). ``multiplies_by_inputs`` is True, as for Captum's
    perturbation methods.

    Formula:
        $$\phi_i = n(x) - n(x_{g \leftarrow b}), \qquad i \in g$$

        \(n(x) = \sum_{u \in U} h_u(x)\) is the value of the neuron (or the sum of a group
        \(U\) of neurons) that ``neuron_selector`` picks from the layer's output \(h\)
        (input, with ``attribute_to_neuron_input=True``); a callable selector \(c\) gives
        \(n(x) = c(h(x))\). \(x_{g \leftarrow b}\) is the input with the scalars
        of feature \(g\) set to ``baselines`` (0 by default); every scalar of a feature
        gets the feature's drop.

    Cost:
        No backward pass: \(1 + G\) forward passes (of the whole model) per example, the
        input and one per feature (\(G\) features), ``perturbations_per_eval`` ablations
        batched per forward (``"auto"``: from the memory budget).

    Examples:
        >>> import torch
        >>> from torchexplain.attr import NeuronFeatureAblation
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> x = torch.randn(2, 3)
        >>> attributions = NeuronFeatureAblation(model, model[0]).attribute(x, neuron_selector=1)
        >>> attributions.shape
        torch.Size([2, 3])
        >>> # unit 1 of a Linear layer: zeroing input i drops it by weight_i * x_i
        >>> bool(torch.allclose(attributions, x * model[0].weight[1], atol=1e-5))
        True
    """

    def attribute(self, inputs, neuron_selector, baselines=None, additional_forward_args=None, feature_mask=None,
                  attribute_to_neuron_input: bool = False, perturbations_per_eval="auto",
                  show_progress: bool = False, forward_kwargs=None):
        return self._through(
            FeatureAblation, inputs, neuron_selector, attribute_to_neuron_input,
            baselines=baselines, additional_forward_args=additional_forward_args, feature_mask=feature_mask,
            perturbations_per_eval=perturbations_per_eval, show_progress=show_progress,
            forward_kwargs=forward_kwargs,
        )


class ConductanceAdapter(ForwardAdapter):
    """An adapter whose per-row scalar has the conductance through the neuron as its
    input gradient: ``sum_j w_j * (dF/dv_j) * v_j``, with ``dF/dv`` (the gradient of
    the target output with respect to the layer) and ``w = d selection / dv`` held
    constant, so only the layer values ``v`` carry the inputs' gradient. ``w`` is the
    0/1 mask of the selected neurons for an index selector, the callable's gradient
    otherwise. One backward pass through the model per chunk, as for the inputs."""

    def __init__(self, adapter: ForwardAdapter, tap: LayerTap, selector, grad_kwargs=None):
        super().__init__(adapter.forward_func, adapter.n, adapter.target, adapter.args, adapter.kwargs,
                         adapter.output_selector)
        self.tap = tap
        self.selector = selector
        self.grad_kwargs = {**check_grad_kwargs(grad_kwargs), "retain_graph": True}

    def scalars(self, inputs, examples) -> Tensor:
        with self.tap.recording(grad=True) as record:
            out = super().scalars(inputs, examples)
        values = record.values
        grads = input_gradients(out, values, f"layer {self.tap.name!r}'s values", self.grad_kwargs)
        probe = tuple(v.detach().requires_grad_() for v in values)
        with torch.enable_grad():
            picked = select_neuron(self.selector, probe, len(out))
        if not picked.requires_grad:
            raise ValueError("neuron_selector (a callable) must compute its values from the layer's values")
        weights = torch.autograd.grad(picked.sum(), probe, allow_unused=True)
        total = 0
        for v, g, w in zip(values, grads, weights):
            if w is not None:
                total = total + (w * g.detach() * v).reshape(len(out), -1).sum(1)
        return total


class NeuronConductance(_Multiplying):
    r"""Conductance of the neuron (Dhamdhere et al. 2018): the flow of the target
    output's integrated gradients through the neuron, ``(x - x0) * integral of
    dF/dv * dv/dx`` along the straight path (``riemann_trapezoid`` by default, as
    Captum). A slice, or a callable linear in the layer's values (a selection, a sum,
    a weighted sum), gives the same combination of the single neurons' conductances;
    Captum instead multiplies the selection of the output gradients by the gradient
    of the selection, which differs for groups. A nonlinear callable is linearised
    at each point of the path (its gradient weights the neurons).
    ``output_selector`` (beyond Captum) picks the explained output of a model that
    returns a tuple or dict.

    Formula:
        $$\phi_i = (x_i - x'_i) \sum_{k=1}^{m} w_k \sum_j s_j(x_k)
        \frac{\partial F(x_k)}{\partial h_j} \frac{\partial h_j(x_k)}{\partial x_i}, \qquad
        x_k = x' + \alpha_k (x - x')$$

        with \(F\) the target output, \(h\) the layer's output (input, with
        ``attribute_to_neuron_input=True``), \(s_j = \partial n / \partial h_j\) the
        weight of unit \(j\) in the selection \(n\) (1 for the selected neurons of an index
        selector, 0 elsewhere), \(x'\) the baseline (zero by default) and the \(m\) =
        ``n_steps`` points \(\alpha_k\) and weights \(w_k\) of ``method``. With
        ``multiply_by_inputs=False`` the factor \((x_i - x'_i)\) is left out. By the
        chain rule, the conductances of all the layer's neurons sum to the integrated
        gradients of \(F\) when the output depends on the inputs only through the layer.

    Cost:
        ``n_steps`` forward passes per example, each with two partial backward passes
        (output to layer, then layer to inputs: about one full backward), batched in
        chunks of ``internal_batch_size`` rows (``"auto"``: from the memory budget).

    Examples:
        >>> import torch
        >>> from torchexplain.attr import IntegratedGradients, NeuronConductance
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> x = torch.randn(2, 3)
        >>> nc = NeuronConductance(model, model[1])
        >>> attributions = nc.attribute(x, neuron_selector=1, target=0)
        >>> attributions.shape
        torch.Size([2, 3])
        >>> whole_layer = nc.attribute(x, neuron_selector=slice(None), target=0)
        >>> ig = IntegratedGradients(model).attribute(x, target=0, method="riemann_trapezoid")
        >>> bool(torch.allclose(whole_layer, ig, atol=1e-5))
        True
    """

    def attribute(self, inputs, neuron_selector, baselines=None, target=None, additional_forward_args=None,
                  n_steps: int = 50, method: str = "riemann_trapezoid", internal_batch_size="auto",
                  attribute_to_neuron_input: bool = False, grad_kwargs=None, forward_kwargs=None):
        neuron = self._neuron(neuron_selector, attribute_to_neuron_input)
        inputs, is_tuple, adapter = self._prepare(inputs, target, additional_forward_args, forward_kwargs)
        baselines = format_baselines(baselines, inputs)
        n_steps = positive_int(n_steps, "n_steps")
        chunk = self._chunk(internal_batch_size)
        scores = ConductanceAdapter(adapter, neuron.tap, neuron.selector, grad_kwargs)
        integrator = IntegratedGradients(self.forward_func, self._multiply_by_inputs)
        with self._guard():
            attributions = integrator._integrate(inputs, baselines, scores, n_steps, method, chunk)
        return format_output(is_tuple, attributions)
