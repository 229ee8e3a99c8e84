"""What layer and neuron attributions share: the watched layer and its evaluation.

A method is constructed with ``(forward_func, layer)``; ``layer`` is a module of the
model or its dotted name ("layer4.1.conv2"). A layer that runs more than once in a
forward pass needs ``layer_call`` (which run to attribute to); Captum silently uses
one of them. Values are read through :class:`~torchexplain.core.hooks.layers.LayerTap`,
so in-place operations after the layer cannot change them.

Return forms follow Captum: one tensor when the layer's output (or input, with
``attribute_to_layer_input=True``) is one tensor, a tuple when it is several.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.forward import ForwardAdapter
from ..core.gradients import row_gradients
from ..core.hooks.layers import LayerTap, layer_name, resolve_layer
from ..core.inputs import format_output
from .base import Attribution


def layer_output(values: Sequence[Tensor]):
    """Captum's return form for a layer's values: a tensor, or a tuple of several."""
    return format_output(len(values) > 1, list(values))


class LayerAttribution(Attribution):
    """Base of the layer methods. ``device_ids`` is accepted for Captum compatibility
    (DataParallel models run as they are)."""

    def __init__(self, forward_func, layer, device_ids=None, output_selector=None, layer_call: int | None = None):
        super().__init__(forward_func, output_selector)
        self.layer = resolve_layer(forward_func, layer)
        self.device_ids = device_ids
        self.layer_call = layer_call
        LayerTap(self.layer, call=layer_call)  # validates layer_call

    @staticmethod
    def interpolate(layer_attribution: Tensor, interpolate_dims, interpolate_mode: str = "nearest") -> Tensor:
        """Resize a layer attribution (N, C, *spatial) to ``interpolate_dims``, as
        Captum's ``LayerAttribution.interpolate``."""
        if not isinstance(layer_attribution, Tensor) or layer_attribution.dim() < 3:
            raise ValueError("layer_attribution must be a tensor of shape (N, C, *spatial dims)")
        return F.interpolate(layer_attribution, size=interpolate_dims, mode=interpolate_mode)

    def _tap(self, to_input: bool = False, layer=None) -> LayerTap:
        layer = self.layer if layer is None else layer
        return LayerTap(layer, to_input=to_input, call=self.layer_call, name=layer_name(self.forward_func, layer))

    def _layer_values(self, adapter: ForwardAdapter, inputs: Sequence[Tensor], examples: Tensor | None = None,
                      to_input: bool = False) -> tuple[Tensor, ...]:
        """The layer's values for rows ``inputs`` (examples given by ``examples``,
        default the rows themselves), without gradients."""
        if examples is None:
            examples = torch.arange(inputs[0].shape[0])
        with torch.no_grad(), self._tap(to_input).recording() as record:
            adapter.outputs(tuple(inputs), examples)
        return record.values

    def _layer_gradients(
        self,
        adapter: ForwardAdapter,
        n_rows: int,
        build: Callable,
        consume: Callable,
        *,
        to_input: bool = False,
        chunk="auto",
        replace: Callable | None = None,
        context: Callable | None = None,
        score: Callable | None = None,
    ) -> None:
        """:func:`row_gradients` with respect to the layer: for each chunk of rows,
        ``consume(rows, examples, layer_grads, layer_values, scalars)``.
        ``replace(rows, examples, values) -> values`` substitutes the layer's values
        of the chunk; ``score(chunk, rows, examples)`` replaces the adapter's scalars."""
        tap = self._tap(to_input)
        seen: dict = {}
        score = score or (lambda chunk_inputs, rows, examples: adapter.scalars(chunk_inputs, examples))

        def scored(chunk_inputs, rows, examples):
            swap = None if replace is None else (lambda values: replace(rows, examples, values))
            with tap.recording(replace=swap, grad=True) as record:
                scalars = score(chunk_inputs, rows, examples)
            seen["values"] = record.values
            return scalars

        def consumed(rows, examples, grads, scalars):
            consume(rows, examples, grads, tuple(v.detach() for v in seen.pop("values")), scalars)

        row_gradients(
            adapter, n_rows, build, consumed,
            internal_batch_size=chunk, context=context, score=scored, wrt=lambda: seen["values"],
        )
