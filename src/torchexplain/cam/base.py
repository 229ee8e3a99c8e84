"""What every class activation map shares.

``Method(model, target_layer=None, reshape_transform=None)`` then
``.attribute(inputs, target=None, upsample=True, relu=True, normalize=False)``:

* ``target_layer`` is a module of ``model`` or its dotted name; None locates it on
  the first call (:mod:`.locate`) and keeps it (``self.target_layer``,
  ``self.target_layer_name``);
* ``reshape_transform(values) -> (N, C, h, w)`` turns a layer's output that is not a
  feature map (a vision transformer's tokens) into one; it is applied to the
  activations and to the gradients alike;
* ``target`` takes every form the rest of the library takes (int, tuple, list or
  tensor with one entry per example, callable); None explains each example's
  predicted class (the arg-max of its output);
* the result is a tensor ``(N, 1, H, W)`` on the inputs' device: ReLU'd at the
  layer's resolution (``relu``), then bilinearly resized to the inputs' size
  (``upsample``; ``align_corners=False``, the pixel-centre convention of OpenCV's
  resize), then min-max scaled per example only with ``normalize=True``.

A method implements :meth:`BaseCAM._layer_cam`, returning ``(N, h, w)`` at the
layer's resolution; gradient methods only a weight function (:mod:`.gradient`).
The model is borrowed: hooks are removed and flags, buffers and grads restored on
every exit path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.batching import check_chunk_size
from ..core.forward import ForwardAdapter
from ..core.hooks import model_guard
from ..core.hooks.layers import LayerTap, layer_name, resolve_layer
from ..core.targets import Target
from . import locate


def weighted(activations: Tensor, weights: Tensor) -> Tensor:
    """sum_k weights[n, k] * activations[n, k]: (N, K, h, w), (N, K) -> (N, h, w)."""
    return torch.einsum("nkhw,nk->nhw", activations, weights.to(activations.dtype))


def min_max(maps: Tensor) -> Tensor:
    """Each example scaled to [0, 1] (all zeros where it is constant)."""
    dims = tuple(range(1, maps.dim()))
    low, high = maps.amin(dims, keepdim=True), maps.amax(dims, keepdim=True)
    span = high - low
    return torch.where(span > 0, (maps - low) / torch.where(span > 0, span, 1), torch.zeros_like(maps))


def with_predicted_target(adapter: ForwardAdapter, output: Tensor) -> ForwardAdapter:
    """``adapter`` with a ``"predicted"`` target fixed to each example's arg-max
    index in ``output`` (for methods that evaluate other inputs than the explained ones)."""
    return adapter.with_target(adapter.target.resolved(output))


def check_images(inputs) -> Tensor:
    if not isinstance(inputs, Tensor):
        raise TypeError(f"inputs must be a torch.Tensor image batch (N, C, H, W); got {type(inputs).__name__}")
    if inputs.dim() != 4 or inputs.shape[0] == 0 or not inputs.is_floating_point():
        raise ValueError(
            "inputs must be a non-empty 4-D floating-point image batch (N, C, H, W); got a "
            f"{inputs.dim()}-D {inputs.dtype} tensor of shape {tuple(inputs.shape)}"
        )
    return inputs


class BaseCAM:
    """Base of the class-activation-map methods (see the module docstring).
    ``layer_call`` picks the run of a layer that runs several times per forward;
    ``output_selector`` picks the explained tensor of a tuple or dict output."""

    def __init__(self, model, target_layer=None, reshape_transform=None, *, layer_call: int | None = None,
                 output_selector=None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module (its layers are hooked); got {type(model).__name__}")
        if reshape_transform is not None and not callable(reshape_transform):
            raise TypeError(f"reshape_transform must be None or a callable; got {type(reshape_transform).__name__}")
        if reshape_transform is not None and target_layer is None:
            raise ValueError(
                "target_layer is required with reshape_transform (it cannot be located automatically among "
                "token layers); for torchvision's ViTs e.g. 'encoder.layers.encoder_layer_11.ln_1'"
            )
        self.model = model
        self.reshape_transform = reshape_transform
        self.output_selector = output_selector
        LayerTap(model, call=layer_call)  # validates layer_call
        self.layer_call = layer_call
        self.target_layer = None if target_layer is None else resolve_layer(model, target_layer, "target_layer")
        self.target_layer_name = None if target_layer is None else layer_name(model, self.target_layer)

    @property
    def method(self) -> str:
        return type(self).__name__

    def attribute(self, inputs, target=None, upsample: bool = True, relu: bool = True, normalize: bool = False,
                  additional_forward_args=None, forward_kwargs=None, batch_size="auto") -> Tensor:
        """The class activation map of each example, ``(N, 1, H, W)`` (``(N, 1, h, w)``
        with ``upsample=False``). ``batch_size``: rows per forward chunk ("auto" from
        the memory budget, an int, or None for all at once); perturbation CAMs count
        masked copies of each example."""
        x = check_images(inputs)
        batch_size = check_chunk_size(batch_size, "batch_size")
        adapter = ForwardAdapter(
            self.model, x.shape[0], Target.of(target, x.shape[0], none="predicted"), additional_forward_args,
            forward_kwargs, self.output_selector,
        )
        with model_guard(self.model):
            if self._needs_probe():
                self._probed(*locate.probe(self.model, adapter, x))
            cam = self._layer_cam(x, adapter, batch_size)
        return finish(cam, x, upsample=upsample, relu=relu, normalize=normalize)

    # ---------------------------------------------------------------- the layer

    def _needs_probe(self) -> bool:
        return self.target_layer is None

    def _probed(self, runs: list[locate.Run], output: Tensor) -> locate.Run:
        """Take what the probe forward found; returns the target layer's run."""
        if self.target_layer is None:
            run = locate.locate_layer(runs, self.method)
            self.target_layer, self.target_layer_name = run.module, run.name
            if sum(r.module is run.module for r in runs) > 1:
                self.layer_call = run.call
            return run
        return locate.layer_run(runs, self.target_layer, self.layer_call)

    def _tap(self) -> LayerTap:
        return LayerTap(self.target_layer, call=self.layer_call, name=self.target_layer_name)

    def _grid(self, values) -> Tensor:
        """The layer's values as a feature map (N, C, h, w), through reshape_transform."""
        if len(values) != 1:
            raise ValueError(
                f"target_layer {self.target_layer_name!r} outputs {len(values)} tensors; a CAM needs one"
            )
        grid = values[0] if self.reshape_transform is None else self.reshape_transform(values[0])
        if not isinstance(grid, Tensor) or grid.dim() != 4 or grid.shape[0] != values[0].shape[0]:
            got = tuple(grid.shape) if isinstance(grid, Tensor) else type(grid).__name__
            if self.reshape_transform is None:
                raise ValueError(
                    f"target_layer {self.target_layer_name!r} has an output of shape {got}; {self.method} needs "
                    "a 4-D (N, C, H, W) feature map: choose a convolutional layer, or pass reshape_transform "
                    "(e.g. torchexplain.cam.vit_reshape_transform for a vision transformer's tokens)"
                )
            raise ValueError(
                f"reshape_transform must return a 4-D (N, C, h, w) tensor with the batch first; it returned {got} "
                f"for target_layer {self.target_layer_name!r}'s output of shape {tuple(values[0].shape)}"
            )
        return grid

    def _forward(self, x: Tensor, adapter: ForwardAdapter) -> tuple[tuple[Tensor, ...], Tensor]:
        """One forward without gradients: the layer's (native) values and the output."""
        with torch.no_grad(), self._tap().recording() as record:
            output = adapter.outputs((x,), torch.arange(x.shape[0]))
        return record.values, output

    def _layer_cam(self, x: Tensor, adapter: ForwardAdapter, batch_size) -> Tensor:
        raise NotImplementedError


def finish(cam: Tensor, x: Tensor, *, upsample: bool, relu: bool, normalize: bool) -> Tensor:
    """(N, h, w) at the layer's resolution -> (N, 1, H, W) as the caller asked."""
    cam = cam.unsqueeze(1)
    if relu:
        cam = torch.relu(cam)
    if upsample and cam.shape[-2:] != x.shape[-2:]:
        cam = F.interpolate(cam, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
    if normalize:
        cam = min_max(cam)
    return cam.to(x.device)
