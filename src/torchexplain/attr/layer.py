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
    """The layer's output (or input) for the inputs; for a list of layers, a list
    with each layer's values (from one forward pass)."""

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
    """The gradient of the target with respect to the layer times the layer's values
    (the gradient alone with ``multiply_by_inputs=False``). For a list of layers, a
    list with one result per layer, all from the same forward and backward pass.
    ``grad_kwargs`` (Captum's) go to ``torch.autograd.grad``; with
    ``materialize_grads=True`` a layer that does not reach the output gets zeros.
    ``memory_efficient=True`` (Captum's) keeps the results in CPU memory, each chunk
    of rows moved there as it is done."""

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
    """Grad-CAM at a layer (Selvaraju et al. 2017), as Captum's LayerGradCam: the
    layer's channels weighted by their spatially averaged gradients and summed over
    channels (kept apart with ``attr_dim_summation=False``), optionally through a
    ReLU. The result has the layer's resolution; see :meth:`interpolate`.
    ``multiplies_by_inputs`` is False, as in Captum. ``grad_kwargs`` as for
    :class:`LayerGradientXActivation`."""

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
    """Guided Grad-CAM (Selvaraju et al. 2017), as Captum: guided backpropagation
    times the layer's Grad-CAM (ReLU'd) resized to each input's spatial size.
    An input whose Grad-CAM cannot be resized to it (its dimensions do not match the
    layer's, or ``F.interpolate`` refuses ``interpolate_mode``) gets an empty tensor,
    with a warning saying why, as in Captum."""

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
