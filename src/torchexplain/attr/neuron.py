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
read); without it a clear error is raised. This module holds the selector, the base
class and the gradient and ablation methods; the path and reference methods
(integrated gradients, DeepLift, GradientShap, conductance) are in ``neuron_path``.
"""

from __future__ import annotations

import numbers
from typing import Callable

import torch
from torch import Tensor, nn

from ..core.hooks.layers import LayerTap
from .ablation import FeatureAblation, PerturbationAttribution
from .gradient import Deconvolution, GuidedBackprop, Saliency
from .layer_base import LayerAttribution

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
