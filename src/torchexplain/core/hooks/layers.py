"""Reading, differentiating and replacing the values of one hidden layer.

A :class:`LayerTap` watches one module of a borrowed model. Inside
``with tap.recording(...) as record`` every forward pass records the module's output
(or its input, with ``to_input=True``) at one of its calls:

* by default the values are snapshots (clones), so an in-place operation after the
  layer (``nn.ReLU(inplace=True)``) cannot change what was recorded; the snapshots are
  still on the autograd graph of the inputs, so a neuron's value can be
  differentiated with respect to the inputs;
* with ``grad=True`` the recorded values are the tensors the rest of the forward
  pass is computed from, so ``torch.autograd.grad(output, record.values)`` is the
  gradient of the output with respect to the layer; downstream the model receives
  clones, which in-place operations may change freely;
* ``replace(values) -> values`` substitutes the layer's values (layer integrated
  gradients evaluate the rest of the model at interpolated activations).

A module that runs more than once per forward pass (a reused ReLU, a weight-shared
block) is ambiguous: the tap raises unless ``call`` names which run to use. The hook
is removed when the block exits, on every path. :func:`recording_all` watches several
layers in the same forward passes (Captum's lists of layers).
"""

from __future__ import annotations

import contextlib
import difflib
from typing import Callable, Sequence

import torch
from torch import Tensor, nn


def resolve_layer(model, layer, argname: str = "layer") -> nn.Module:
    """``layer`` as a module: a module is returned as is (it must belong to ``model``
    when ``model`` is a module); a string is a dotted name from
    ``model.named_modules()`` ("layer4.1.conv2")."""
    if isinstance(layer, nn.Module):
        if isinstance(model, nn.Module) and not any(m is layer for m in model.modules()):
            raise ValueError(f"{argname} ({type(layer).__name__}) is not a submodule of the model")
        return layer
    if isinstance(layer, str):
        if not isinstance(model, nn.Module):
            raise TypeError(f"{argname} given by name ({layer!r}) needs an nn.Module model; pass the module instead")
        modules = dict(model.named_modules())
        if layer in modules:
            return modules[layer]
        close = difflib.get_close_matches(layer, [n for n in modules if n], n=5, cutoff=0.5)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise ValueError(f"{argname} {layer!r} is not a module of the model{hint}")
    raise TypeError(f"{argname} must be an nn.Module or its dotted name; got {type(layer).__name__}")


def layer_name(model, layer: nn.Module) -> str:
    """The dotted name of ``layer`` in ``model`` (its class name if not found)."""
    if isinstance(model, nn.Module):
        for name, m in model.named_modules():
            if m is layer:
                return name or type(model).__name__
    return type(layer).__name__


class LayerRecord:
    """What one forward pass recorded: ``values`` (a tuple of tensors) and
    ``calls`` (how many times the layer ran)."""

    def __init__(self):
        self.values: tuple[Tensor, ...] | None = None
        self.calls = 0


class LayerTap:
    """Watches ``layer``'s output (or its input, ``to_input=True``) at run ``call``
    (None: the layer must run exactly once per forward pass). See the module
    docstring."""

    def __init__(self, layer: nn.Module, *, to_input: bool = False, call: int | None = None, name: str | None = None):
        if call is not None and (isinstance(call, bool) or not isinstance(call, int) or call < 0):
            raise ValueError(f"layer_call must be None or a non-negative int; got {call!r}")
        self.layer = layer
        self.to_input = to_input
        self.call = call
        self.name = name or type(layer).__name__

    def _values(self, found) -> tuple[Tensor, ...]:
        values = (found,) if isinstance(found, Tensor) else found
        if not isinstance(values, (tuple, list)) or not all(isinstance(v, Tensor) for v in values):
            what = "input" if self.to_input else "output"
            raise TypeError(
                f"layer {self.name!r} has an {what} of type {type(found).__name__}; "
                "a tensor or a tuple of tensors was expected"
            )
        return tuple(values)

    @contextlib.contextmanager
    def recording(self, replace: Callable[[tuple[Tensor, ...]], Sequence[Tensor]] | None = None, grad: bool = False):
        record = LayerRecord()

        def substitute(found):
            index = record.calls
            record.calls += 1
            if self.call is not None and index != self.call:
                return None
            values = self._values(found)
            if replace is not None:
                values = tuple(replace(values))
                if grad:
                    values = tuple(v if v.requires_grad else v.detach().requires_grad_() for v in values)
                record.values, passed = values, tuple(v.clone() for v in values)
            elif grad:
                if not torch.is_grad_enabled():
                    raise RuntimeError("LayerTap.recording(grad=True) needs gradients enabled")
                values = tuple(v if v.requires_grad else v.detach().requires_grad_() for v in values)
                record.values, passed = values, tuple(v.clone() for v in values)
            else:
                record.values, passed = tuple(v.clone() for v in values), values
                return None
            if isinstance(found, Tensor):
                return passed[0]
            return type(found)(passed) if isinstance(found, tuple) else list(passed)

        if self.to_input:
            handle = self.layer.register_forward_pre_hook(lambda module, args: substitute(args))
        else:
            handle = self.layer.register_forward_hook(lambda module, args, output: substitute(output))
        try:
            yield record
        finally:
            handle.remove()
        self._check(record)

    def _check(self, record: LayerRecord) -> None:
        if record.calls == 0:
            raise ValueError(f"layer {self.name!r} did not run in the model's forward pass")
        if self.call is None and record.calls > 1:
            raise ValueError(
                f"layer {self.name!r} ran {record.calls} times in one forward pass; pass "
                f"layer_call=<0..{record.calls - 1}> to choose the run to attribute to"
            )
        if self.call is not None and record.values is None:
            raise ValueError(
                f"layer_call={self.call} but layer {self.name!r} ran only {record.calls} time(s) in one forward pass"
            )


@contextlib.contextmanager
def recording_all(taps: Sequence[LayerTap], replace: Sequence[Callable | None] | None = None, grad: bool = False):
    """``tap.recording(...)`` of every tap in the same forward passes; yields the
    list of their records. ``replace[k]`` (or None) substitutes the values of tap ``k``."""
    replace = list(replace) if replace is not None else [None] * len(taps)
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(tap.recording(replace=swap, grad=grad)) for tap, swap in zip(taps, replace)]
