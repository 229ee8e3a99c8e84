"""What layer and neuron attributions share: the watched layer(s) and their evaluation.

A method is constructed with ``(forward_func, layer)``; ``layer`` is a module of the
model or its dotted name ("layer4.1.conv2"). The methods for which Captum takes a
list of layers (LayerActivation, LayerGradientXActivation, LayerIntegratedGradients)
take one too: every layer is watched in the same forward passes and the result is a
list with one entry per layer. A layer that runs more than once in a forward pass
needs ``layer_call`` (which run to attribute to); Captum silently uses one of them.
Values are read through :class:`~torchexplain.core.hooks.layers.LayerTap`, so in-place
operations after the layer cannot change them.

Return forms follow Captum: one tensor when the layer's output (or input, with
``attribute_to_layer_input=True``) is one tensor, a tuple when it is several.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.forward import ForwardAdapter
from ..core.gradients import layer_gradients
from ..core.hooks.layers import LayerTap, layer_name, recording_all, resolve_layer
from ..core.inputs import format_output
from .base import Attribution


def layer_output(values: Sequence[Tensor]):
    """Captum's return form for a layer's values: a tensor, or a tuple of several."""
    return format_output(len(values) > 1, list(values))


def split_layers(flat: Sequence[Tensor], counts: Sequence[int]) -> list[tuple[Tensor, ...]]:
    """``flat`` (the tensors of several layers, in order) cut into one tuple per layer."""
    out, start = [], 0
    for count in counts:
        out.append(tuple(flat[start:start + count]))
        start += count
    return out


class LayerAttribution(Attribution):
    """Base of the layer methods. ``device_ids`` is accepted for Captum compatibility
    (DataParallel models run as they are)."""

    #: whether ``layer`` may be a list of layers (Captum's ``ModuleOrModuleList``)
    _takes_layer_list = False

    def __init__(self, forward_func, layer, device_ids=None, output_selector=None, layer_call: int | None = None):
        super().__init__(forward_func, output_selector)
        many = isinstance(layer, (list, tuple))
        if many and not self._takes_layer_list:
            raise TypeError(f"{type(self).__name__} takes one layer (a module or its dotted name); got a "
                            f"{type(layer).__name__}")
        if many and not layer:
            raise ValueError("layer must be a module, its dotted name, or a non-empty list of those; got an empty list")
        items = list(layer) if many else [layer]
        self._layers = [resolve_layer(forward_func, m, f"layer[{i}]" if many else "layer") for i, m in enumerate(items)]
        self.layer = list(self._layers) if many else self._layers[0]
        self.device_ids = device_ids
        self.layer_call = layer_call
        LayerTap(self._layers[0], call=layer_call)  # validates layer_call

    @staticmethod
    def interpolate(layer_attribution: Tensor, interpolate_dims, interpolate_mode: str = "nearest") -> Tensor:
        """Resize a layer attribution (N, C, *spatial) to ``interpolate_dims``, as
        Captum's ``LayerAttribution.interpolate``."""
        if not isinstance(layer_attribution, Tensor) or layer_attribution.dim() < 3:
            raise ValueError("layer_attribution must be a tensor of shape (N, C, *spatial dims)")
        return F.interpolate(layer_attribution, size=interpolate_dims, mode=interpolate_mode)

    def _tap(self, to_input: bool = False, layer=None) -> LayerTap:
        layer = self._layers[0] if layer is None else layer
        return LayerTap(layer, to_input=to_input, call=self.layer_call, name=layer_name(self.forward_func, layer))

    def _taps(self, to_input: bool = False) -> list[LayerTap]:
        return [self._tap(to_input, layer) for layer in self._layers]

    def _format_layers(self, per_layer: Sequence[Sequence[Tensor]]):
        """Captum's return form: each layer's values as :func:`layer_output`; a list of
        those when the method was given a list of layers."""
        results = [layer_output(values) for values in per_layer]
        return results if isinstance(self.layer, list) else results[0]

    def _all_layer_values(self, adapter: ForwardAdapter, inputs: Sequence[Tensor], examples: Tensor | None = None,
                          to_input: bool = False) -> list[tuple[Tensor, ...]]:
        """Every watched layer's values (one tuple per layer, from one forward pass) for
        rows ``inputs`` (examples given by ``examples``, default the rows themselves),
        without gradients."""
        if examples is None:
            examples = torch.arange(inputs[0].shape[0])
        with torch.no_grad(), recording_all(self._taps(to_input)) as records:
            adapter.outputs(tuple(inputs), examples)
        return [record.values for record in records]

    def _layer_values(self, adapter: ForwardAdapter, inputs: Sequence[Tensor], examples: Tensor | None = None,
                      to_input: bool = False) -> tuple[Tensor, ...]:
        """The (single) layer's values for rows ``inputs``; see :meth:`_all_layer_values`."""
        return self._all_layer_values(adapter, inputs, examples, to_input)[0]

    def _layer_gradients(self, adapter: ForwardAdapter, n_rows: int, build: Callable, consume: Callable, *,
                         to_input: bool = False, **options) -> list[int]:
        """:func:`~torchexplain.core.gradients.layer_gradients` with respect to every
        watched layer (``consume(rows, examples, layer_grads, layer_values, scalars)``;
        ``options``: its ``chunk``, ``replace``, ``context``, ``score`` and
        ``grad_kwargs``); returns the number of tensors of each layer."""
        return layer_gradients(adapter, self._taps(to_input), n_rows, build, consume, **options)
