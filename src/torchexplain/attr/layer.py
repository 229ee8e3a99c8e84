"""Layer attributions from one pass or from ablations: LayerActivation,
LayerGradientXActivation, LayerGradCam, LayerFeatureAblation, and GuidedGradCam."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from ..core.hooks.layers import resolve_layer
from ..core.inputs import as_tuple, format_output
from .ablation import FeatureAblation
from .base import Attribution, take
from .gradient import GuidedBackprop
from .layer_base import LayerAttribution, layer_output


class _PerLayer(LayerAttribution):
    """A layer method that also accepts a list of layers (Captum's multi-layer form):
    the result is then a list with one entry per layer."""

    def __init__(self, forward_func, layer, device_ids=None, output_selector=None, layer_call=None):
        layers = list(layer) if isinstance(layer, (list, tuple)) else [layer]
        if not layers:
            raise ValueError("layer must be a module, a module name, or a non-empty list of them")
        super().__init__(forward_func, layers[0], device_ids, output_selector, layer_call)
        self.layers = [self.layer] + [resolve_layer(forward_func, item) for item in layers[1:]]
        self._many = isinstance(layer, (list, tuple))
        if self._many:
            self.layer = self.layers

    def _each(self, fn):
        """``fn(layer)`` for the single layer, or a list over the layers."""
        results = []
        for layer in self.layers:
            saved, self.layer = self.layer, layer
            try:
                results.append(fn())
            finally:
                self.layer = saved
        return results if self._many else results[0]


class LayerActivation(_PerLayer):
    """The layer's output (or input) for the inputs."""

    def attribute(self, inputs, additional_forward_args=None, attribute_to_layer_input: bool = False,
                  forward_kwargs=None):
        inputs, _, adapter = self._prepare(inputs, None, additional_forward_args, forward_kwargs, floating=False)
        with self._guard():
            return self._each(lambda: layer_output(self._layer_values(adapter, inputs, to_input=attribute_to_layer_input)))

    @property
    def multiplies_by_inputs(self) -> bool:
        return True


class LayerGradientXActivation(_PerLayer):
    """The gradient of the target with respect to the layer times the layer's values
    (the gradient alone with ``multiply_by_inputs=False``)."""

    def __init__(self, forward_func, layer, device_ids=None, multiply_by_inputs: bool = True,
                 output_selector=None, layer_call=None):
        super().__init__(forward_func, layer, device_ids, output_selector, layer_call)
        self._multiply_by_inputs = multiply_by_inputs

    def attribute(self, inputs, target=None, additional_forward_args=None, attribute_to_layer_input: bool = False,
                  forward_kwargs=None, internal_batch_size="auto"):
        inputs, _, adapter = self._prepare(inputs, target, additional_forward_args, forward_kwargs, floating=False)
        chunk = self._chunk(internal_batch_size)
        with self._guard():
            return self._each(lambda: layer_output(self._gradients_at_inputs(
                adapter, inputs, attribute_to_layer_input, chunk,
                (lambda g, v: g * v) if self._multiply_by_inputs else (lambda g, v: g),
            )))

    def _gradients_at_inputs(self, adapter, inputs, to_input, chunk, combine):
        """``combine(gradient, value)`` of each layer tensor, per example."""
        results: list[Tensor] = []

        def build(rows, examples):
            return tuple(take(x, examples) for x in inputs)

        def consume(rows, examples, grads, values, scalars):
            combined = [combine(g, v) for g, v in zip(grads, values)]
            if not results:
                results.extend(c.new_empty((adapter.n,) + c.shape[1:]) for c in combined)
            for out, c in zip(results, combined):
                out[rows.to(out.device)] = c

        self._layer_gradients(adapter, adapter.n, build, consume, to_input=to_input, chunk=chunk)
        return results


class LayerGradCam(LayerGradientXActivation):
    """Grad-CAM at a layer (Selvaraju et al. 2017), as Captum's LayerGradCam: the
    layer's channels weighted by their spatially averaged gradients and summed over
    channels (kept apart with ``attr_dim_summation=False``), optionally through a
    ReLU. The result has the layer's resolution; see :meth:`interpolate`."""

    def __init__(self, forward_func, layer, device_ids=None, output_selector=None, layer_call=None):
        super().__init__(forward_func, layer, device_ids, True, output_selector, layer_call)
        if self._many:
            raise TypeError("LayerGradCam takes one layer; got a list")

    def attribute(self, inputs, target=None, additional_forward_args=None, attribute_to_layer_input: bool = False,
                  relu_attributions: bool = False, attr_dim_summation: bool = True, forward_kwargs=None,
                  internal_batch_size="auto"):
        inputs, _, adapter = self._prepare(inputs, target, additional_forward_args, forward_kwargs, floating=False)
        chunk = self._chunk(internal_batch_size)

        def combine(g: Tensor, v: Tensor) -> Tensor:
            weights = g.mean(dim=tuple(range(2, g.dim())), keepdim=True) if g.dim() > 2 else g
            cam = (weights * v).sum(1, keepdim=True) if attr_dim_summation else weights * v
            return torch.relu(cam) if relu_attributions else cam

        with self._guard():
            return layer_output(self._gradients_at_inputs(adapter, inputs, attribute_to_layer_input, chunk, combine))


class LayerFeatureAblation(LayerAttribution):
    """Feature ablation of the layer's values (Captum's LayerFeatureAblation): each
    layer unit (or group of units sharing a ``layer_mask`` id) is set to its
    ``layer_baselines`` value (0 by default) while the rest of the model runs on the
    inputs; the attribution is the drop in the explained output. Every ablation runs
    batched through :class:`FeatureAblation`."""

    def attribute(
        self,
        inputs,
        layer_baselines=None,
        target=None,
        additional_forward_args=None,
        layer_mask=None,
        attribute_to_layer_input: bool = False,
        perturbations_per_eval="auto",
        forward_kwargs=None,
        show_progress: bool = False,
    ):
        inputs, _, adapter = self._prepare(inputs, target, additional_forward_args, forward_kwargs, floating=False)
        tap = self._tap(attribute_to_layer_input)
        with self._guard():
            values = self._layer_values(adapter, inputs, to_input=attribute_to_layer_input)

            def layer_forward(*args, **kwargs):
                layer_rows, model_args = args[: len(values)], args[len(values):]
                with tap.recording(replace=lambda found: layer_rows):
                    return self.forward_func(*model_args, **kwargs)

            ablation = FeatureAblation(layer_forward, output_selector=self.output_selector)
            attributions = ablation.attribute(
                tuple(values),
                baselines=layer_baselines,
                target=target,
                additional_forward_args=tuple(inputs) + tuple(adapter.args),
                feature_mask=layer_mask,
                perturbations_per_eval=perturbations_per_eval,
                show_progress=show_progress,
                forward_kwargs=forward_kwargs,
            )
        return layer_output(attributions)


class GuidedGradCam(Attribution):
    """Guided Grad-CAM (Selvaraju et al. 2017), as Captum: guided backpropagation
    times the layer's Grad-CAM (ReLU'd) resized to each input's spatial size.
    Inputs whose dimensions do not match the layer's get an empty tensor, with a
    warning, as in Captum."""

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
        results = []
        for i, (x, g) in enumerate(zip(inputs, guided)):
            if x.dim() != cam.dim():
                warnings.warn(
                    f"GuidedGradCam: inputs[{i}] has {x.dim()} dimensions but the layer's Grad-CAM has "
                    f"{cam.dim()}; its attribution is an empty tensor"
                )
                results.append(torch.empty(0))
                continue
            results.append(g * LayerAttribution.interpolate(cam, tuple(x.shape[2:]), interpolate_mode))
        return format_output(is_tuple, results)
