"""Layer attributions from one pass: LayerActivation, LayerGradientXActivation,
LayerGradCam, and GuidedGradCam (the layer perturbations are in :mod:`.layer_perturbation`)."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from ..core.inputs import as_tuple, format_output
from .base import Attribution, take
from .gradient import GuidedBackprop
from .layer_base import LayerAttribution, split_layers


class LayerActivation(LayerAttribution):
    r"""Layer activation: the layer's output (or input) for the inputs; for a list of
    layers, a list with each layer's values (from one forward pass).

    Formula:
        $$A = h(x)$$

        with \(h(x)\) the values the layer outputs (takes in, with
        ``attribute_to_layer_input=True``) when the model runs on \(x\). No target and
        no gradient are involved.

    Cost:
        One forward pass of the whole batch (without gradients, not chunked) and no
        backward pass, whatever the number of layers.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import LayerActivation
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> x = torch.randn(2, 3)
        >>> hidden = LayerActivation(model, model[1]).attribute(x)
        >>> hidden.shape
        torch.Size([2, 4])
        >>> bool(torch.equal(hidden, torch.relu(model[0](x))))
        True
    """

    _takes_layer_list = True

    def attribute(self, inputs, additional_forward_args=None, attribute_to_layer_input: bool = False,
                  forward_kwargs=None):
        inputs, _, adapter = self._prepare(inputs, None, additional_forward_args, forward_kwargs, floating=False)
        with self._guard():
            return self._format_layers(self._all_layer_values(adapter, inputs, to_input=attribute_to_layer_input))

    @property
    def multiplies_by_inputs(self) -> bool:
        return True


class LayerGradientXActivation(LayerAttribution):
    r"""The gradient of the target with respect to the layer times the layer's values
    (the gradient alone with ``multiply_by_inputs=False``). For a list of layers, a
    list with one result per layer, all from the same forward and backward pass.
    ``grad_kwargs`` (Captum's) go to ``torch.autograd.grad``; with
    ``materialize_grads=True`` a layer that does not reach the output gets zeros.
    ``memory_efficient=True`` (Captum's) keeps the results in CPU memory, each chunk
    of rows moved there as it is done.

    Formula:
        $$A = h \odot \frac{\partial F(x)}{\partial h}$$

        with \(h\) the layer's output (input, with ``attribute_to_layer_input=True``)
        values for \(x\) and \(F\) the target output; with ``multiply_by_inputs=False``,
        \(\partial F / \partial h\). When the part \(g\) of the model above the layer
        is affine, \(\sum A = F(x) - g(0)\).

    Cost:
        One forward and one backward pass per example for all the layers together,
        batched in chunks of ``internal_batch_size``.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import LayerGradientXActivation
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> x = torch.randn(2, 3)
        >>> attributions = LayerGradientXActivation(model, model[1]).attribute(x, target=0)
        >>> attributions.shape
        torch.Size([2, 4])
        >>> gap = model(x)[:, 0] - model[2].bias[0]  # g(0): the bias of the last layer
        >>> bool(torch.allclose(attributions.sum(1), gap, atol=1e-5))
        True
    """

    _takes_layer_list = True

    def __init__(self, forward_func, layer, device_ids=None, multiply_by_inputs: bool = True,
                 memory_efficient: bool = False, output_selector=None, layer_call=None):
        super().__init__(forward_func, layer, device_ids, output_selector, layer_call)
        self._multiply_by_inputs = multiply_by_inputs
        self._memory_efficient = bool(memory_efficient)

    def attribute(self, inputs, target=None, additional_forward_args=None, attribute_to_layer_input: bool = False,
                  grad_kwargs=None, forward_kwargs=None, internal_batch_size="auto"):
        inputs, _, adapter = self._prepare(inputs, target, additional_forward_args, forward_kwargs, floating=False)
        chunk = self._chunk(internal_batch_size)
        combine = (lambda g, v: g * v) if self._multiply_by_inputs else (lambda g, v: g)
        with self._guard():
            return self._format_layers(
                self._gradients_at_inputs(adapter, inputs, attribute_to_layer_input, chunk, combine, grad_kwargs)
            )

    def _gradients_at_inputs(self, adapter, inputs, to_input, chunk, combine, grad_kwargs):
        """``combine(gradient, value)`` of each layer tensor, per example: one tuple per layer."""
        results: list[Tensor] = []

        def build(rows, examples):
            return tuple(take(x, examples) for x in inputs)

        def consume(rows, examples, grads, values, scalars):
            combined = [combine(g, v) for g, v in zip(grads, values)]
            if not results:
                device = "cpu" if self._memory_efficient else None
                results.extend(c.new_empty((adapter.n,) + c.shape[1:], device=device) for c in combined)
            for out, c in zip(results, combined):
                out[rows.to(out.device)] = c.to(out.device)

        counts = self._layer_gradients(adapter, adapter.n, build, consume, to_input=to_input, chunk=chunk,
                                       grad_kwargs=grad_kwargs)
        return split_layers(results, counts)


class LayerGradCam(LayerGradientXActivation):
    r"""Grad-CAM at a layer (Selvaraju et al. 2017), as Captum's LayerGradCam: the
    layer's channels weighted by their spatially averaged gradients and summed over
    channels (kept apart with ``attr_dim_summation=False``), optionally through a
    ReLU. The result has the layer's resolution; see :meth:`interpolate`.
    ``multiplies_by_inputs`` is False, as in Captum. ``grad_kwargs`` as for
    :class:`LayerGradientXActivation`.

    Formula:
        $$L = \operatorname{ReLU}\left( \sum_c \alpha_c A_c \right), \qquad
        \alpha_c = \frac{1}{|\Omega|} \sum_{u \in \Omega} \frac{\partial F(x)}{\partial A_{c,u}}$$

        with \(A\) the layer's output (input, with ``attribute_to_layer_input=True``),
        \(c\) its channels (dimension 1), \(\Omega\) its spatial positions (the
        dimensions after the channel; a 2-D layer has none, so \(\alpha = \partial F /
        \partial A\)) and \(F\) the target output. The ReLU only with
        ``relu_attributions=True``; with ``attr_dim_summation=False`` the terms
        \(\alpha_c A_c\) are returned without the sum over \(c\).

    Cost:
        One forward and one backward pass per example, batched in chunks of
        ``internal_batch_size``.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import LayerGradCam
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.ReLU(),
        ...                             torch.nn.Flatten(), torch.nn.Linear(2 * 4 * 4, 3))
        >>> x = torch.randn(2, 1, 4, 4)
        >>> cam = LayerGradCam(model, model[1]).attribute(x, target=2, relu_attributions=True)
        >>> cam.shape
        torch.Size([2, 1, 4, 4])
        >>> bool((cam >= 0).all())
        True
        >>> LayerGradCam.interpolate(cam, (8, 8)).shape
        torch.Size([2, 1, 8, 8])
    """

    _takes_layer_list = False

    def __init__(self, forward_func, layer, device_ids=None, output_selector=None, layer_call=None):
        super().__init__(forward_func, layer, device_ids, False, output_selector=output_selector, layer_call=layer_call)

    def attribute(self, inputs, target=None, additional_forward_args=None, attribute_to_layer_input: bool = False,
                  relu_attributions: bool = False, attr_dim_summation: bool = True, grad_kwargs=None,
                  forward_kwargs=None, internal_batch_size="auto"):
        inputs, _, adapter = self._prepare(inputs, target, additional_forward_args, forward_kwargs, floating=False)
        chunk = self._chunk(internal_batch_size)

        def combine(g: Tensor, v: Tensor) -> Tensor:
            weights = g.mean(dim=tuple(range(2, g.dim())), keepdim=True) if g.dim() > 2 else g
            cam = (weights * v).sum(1, keepdim=True) if attr_dim_summation else weights * v
            return torch.relu(cam) if relu_attributions else cam

        with self._guard():
            return self._format_layers(
                self._gradients_at_inputs(adapter, inputs, attribute_to_layer_input, chunk, combine, grad_kwargs)
            )


class GuidedGradCam(Attribution):
    r"""Guided Grad-CAM (Selvaraju et al. 2017), as Captum: guided backpropagation
    times the layer's Grad-CAM (ReLU'd) resized to each input's spatial size.
    An input whose Grad-CAM cannot be resized to it (its dimensions do not match the
    layer's, or ``F.interpolate`` refuses ``interpolate_mode``) gets an empty tensor,
    with a warning saying why, as in Captum.

    Formula:
        $$\phi = \hat{g} \odot \operatorname{resize}\left( \operatorname{ReLU}\left( \sum_c \alpha_c A_c \right)
        \right)$$

        with \(\hat{g}\) the guided backpropagation of the input (see
        :class:`GuidedBackprop`), \(\sum_c \alpha_c A_c\) the layer's Grad-CAM (see
        :class:`LayerGradCam`) and resize the ``F.interpolate`` to the input's spatial
        size with ``interpolate_mode``; the one-channel map broadcasts over the input's
        channels.

    Cost:
        Two forward and two backward passes per example: one of each for the Grad-CAM
        and one of each (under the guided rule) for guided backpropagation.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import GuidedBackprop, GuidedGradCam, LayerGradCam
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.ReLU(),
        ...                             torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(2 * 2 * 2, 3))
        >>> x = torch.randn(2, 1, 4, 4)
        >>> attributions = GuidedGradCam(model, model[2]).attribute(x, target=0)
        >>> attributions.shape
        torch.Size([2, 1, 4, 4])
        >>> cam = LayerGradCam(model, model[2]).attribute(x, target=0, relu_attributions=True)
        >>> by_hand = GuidedBackprop(model).attribute(x, target=0) * LayerGradCam.interpolate(cam, (4, 4))
        >>> bool(torch.allclose(attributions, by_hand))
        True
    """

    def __init__(self, model, layer, device_ids=None, output_selector=None, layer_call=None):
        super().__init__(model, output_selector)
        self.grad_cam = LayerGradCam(model, layer, device_ids, output_selector, layer_call)
        self.guided_backprop = GuidedBackprop(model, output_selector)

    def attribute(self, inputs, target=None, additional_forward_args=None, interpolate_mode: str = "nearest",
                  attribute_to_layer_input: bool = False, forward_kwargs=None):
        inputs, is_tuple = as_tuple(inputs)
        common = dict(target=target, additional_forward_args=additional_forward_args, forward_kwargs=forward_kwargs)
        cam = self.grad_cam.attribute(
            inputs, attribute_to_layer_input=attribute_to_layer_input, relu_attributions=True, **common
        )
        cam = cam[0] if isinstance(cam, tuple) else cam
        guided = self.guided_backprop.attribute(inputs, **common)
        guided = guided if isinstance(guided, tuple) else (guided,)
        results = [self._guided_map(i, x, g, cam, interpolate_mode) for i, (x, g) in enumerate(zip(inputs, guided))]
        return format_output(is_tuple, results)

    @staticmethod
    def _guided_map(i: int, x: Tensor, guided: Tensor, cam: Tensor, interpolate_mode: str) -> Tensor:
        """Guided backpropagation of input ``i`` times the Grad-CAM resized to it."""
        if x.dim() != cam.dim():
            reason = f"inputs[{i}] has {x.dim()} dimensions but the layer's Grad-CAM has {cam.dim()}"
        else:
            try:
                return guided * LayerAttribution.interpolate(cam, tuple(x.shape[2:]), interpolate_mode)
            except (ValueError, NotImplementedError, RuntimeError) as err:
                reason = f"the Grad-CAM cannot be resized to inputs[{i}] (interpolate_mode={interpolate_mode!r}: {err})"
        warnings.warn(f"GuidedGradCam: {reason}; its attribution is an empty tensor", stacklevel=3)
        return torch.empty(0)
