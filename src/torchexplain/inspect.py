"""Looking inside a convolutional model: its kernels and its feature maps, as figures.

* :func:`filters` draws a grid of a ``Conv2d`` layer's kernels, each min-max normalised
  to [0, 1] on its own;
* :func:`feature_maps` draws the activations of any layer for one input.

``layer`` is a submodule of ``model`` or its dotted name (``"features.3"``,
``"layer1.0.conv1"``). Figures are plain :class:`matplotlib.figure.Figure` objects (no
pyplot window, nothing global) unless ``use_pyplot=True``. With ``return_arrays=True``
both functions also return the arrays they drew, as NumPy arrays.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .core.hooks import model_guard, module_hooks
from .core.hooks.layers import layer_name, resolve_layer

__all__ = ["filters", "feature_maps"]


def _resolve(model, layer) -> tuple[nn.Module, str]:
    """The submodule ``layer`` of ``model`` (:func:`~torchexplain.core.hooks.layers.resolve_layer`)
    and its dotted name."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    module = resolve_layer(model, layer)
    return module, layer if isinstance(layer, str) else layer_name(model, module)


def _check_count(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")


def _check_cmap(cmap) -> None:
    import matplotlib
    from matplotlib.colors import Colormap

    if isinstance(cmap, Colormap):
        return
    if not isinstance(cmap, str) or cmap not in matplotlib.colormaps:
        raise ValueError(f"cmap: expected a matplotlib colormap or its name (e.g. 'gray', 'viridis'), got {cmap!r}")


def _minmax(kernels: torch.Tensor) -> torch.Tensor:
    """Each kernel (first dimension) scaled to [0, 1]; a constant kernel becomes 0."""
    flat = kernels.reshape(len(kernels), -1)
    lo = flat.min(1).values.view(-1, *[1] * (kernels.ndim - 1))
    span = (flat.max(1).values - flat.min(1).values).view_as(lo)
    return torch.where(span > 0, (kernels - lo) / torch.where(span > 0, span, 1.0), 0.0)


def _grid(images: np.ndarray, title: str, cmap, use_pyplot: bool, vmin=None, vmax=None):
    """A near-square grid with one axes per image (and no other axes)."""
    n = len(images)
    ncols = math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    figsize = (1.3 * ncols + 0.4, 1.3 * nrows + 0.7)
    if use_pyplot:
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=figsize)
    else:
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize)
    for i, image in enumerate(images):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(str(i), fontsize=7)
        ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    return fig


def filters(model, layer, *, max_filters: int = 64, channel: int | None = None, cmap="gray",
            use_pyplot: bool = False, return_arrays: bool = False):
    """Draw the first ``max_filters`` kernels of the ``Conv2d`` layer ``layer``.

    Kernels with one input channel are drawn as they are; with three, as RGB images
    (``cmap`` is then unused); with more, the mean over input channels is drawn, unless
    ``channel`` picks one input channel (of any layer). Each drawn kernel is min-max
    normalised to [0, 1] on its own (a constant kernel draws as 0).

    Returns the Figure, or ``(Figure, array)`` with ``return_arrays=True``: the drawn
    values, of shape (n, kh, kw), or (n, kh, kw, 3) for RGB.
    """
    module, name = _resolve(model, layer)
    if not isinstance(module, nn.Conv2d):
        raise ValueError(f"layer: expected a Conv2d layer, got {name!r} of type {type(module).__name__}")
    if isinstance(module.weight, nn.parameter.UninitializedParameter):
        raise ValueError(
            f"layer: {name!r} is a lazy layer whose weights are not initialised yet; run a forward pass first"
        )
    _check_count("max_filters", max_filters)
    _check_cmap(cmap)
    weight = module.weight.detach()[:max_filters].float().cpu()  # (n, in_channels / groups, kh, kw)
    cin = weight.shape[1]
    if channel is not None:
        if isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel < cin:
            raise ValueError(f"channel: expected an int in [0, {cin}) for {name!r}, got {channel!r}")
        kernels, what = weight[:, channel], f"input channel {channel}"
    elif cin == 3:
        kernels, what = weight.permute(0, 2, 3, 1), "RGB"
    elif cin == 1:
        kernels, what = weight[:, 0], "1 input channel"
    else:
        kernels, what = weight.mean(1), f"mean over {cin} input channels"
    arrays = _minmax(kernels).numpy()
    title = f"{name}: {len(arrays)} of {module.out_channels} filters, {what}, each scaled to [0, 1]"
    fig = _grid(arrays, title, cmap, use_pyplot, vmin=0.0, vmax=1.0)
    return (fig, arrays) if return_arrays else fig


class _Captured(Exception):
    """Raised by the capture hook to skip the rest of the forward pass."""


def _layer_output(model: nn.Module, module: nn.Module, name: str, x: torch.Tensor) -> torch.Tensor:
    seen = []

    def hook(_module, _args, output):
        seen.append(output)
        raise _Captured

    with torch.no_grad(), model_guard(model), module_hooks([(module, "forward", hook)]):
        try:
            model(x)
        except _Captured:
            pass
    if not seen:
        raise ValueError(f"layer: {name!r} was not called by the model's forward pass")
    out = seen[0]
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"layer: {name!r} returned a {type(out).__name__}, not a tensor")
    return out.detach()


def _one_input(model: nn.Module, input) -> torch.Tensor:
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"input: expected a torch.Tensor, got {type(input).__name__}")
    x = input.unsqueeze(0) if input.ndim == 3 else input
    if x.ndim < 1 or x.shape[0] != 1:
        raise ValueError(f"input: expected one example, (C, H, W) or (1, C, H, W), got shape {tuple(input.shape)}")
    first = next(model.parameters(), None)
    if first is None:
        first = next(model.buffers(), None)
    return x if first is None else x.to(first.device)


def feature_maps(
    model, layer, input, *, max_maps: int = 64, cmap="viridis", use_pyplot: bool = False, return_arrays: bool = False
):
    """Draw the first ``max_maps`` channels of ``layer``'s output for one ``input``.

    ``input`` is one example, (C, H, W) or (1, C, H, W), moved to the model's device.
    The model runs as it is (its train/eval mode is not changed) under
    ``torch.no_grad``, up to ``layer`` only; the forward hook is removed and buffers,
    flags and hooks are restored on every exit. Each map has its own colour scale.

    Returns the Figure, or ``(Figure, array)`` with ``return_arrays=True``: the drawn
    activations, of shape (n, H, W).
    """
    module, name = _resolve(model, layer)
    _check_count("max_maps", max_maps)
    _check_cmap(cmap)
    x = _one_input(model, input)
    out = _layer_output(model, module, name, x)
    if out.ndim != 4:
        raise ValueError(f"layer: expected {name!r} to output maps (1, C, H, W), got shape {tuple(out.shape)}")
    arrays = out[0, :max_maps].float().cpu().numpy()
    title = f"{name}: {len(arrays)} of {out.shape[1]} feature maps ({out.shape[2]}x{out.shape[3]})"
    fig = _grid(arrays, title, cmap, use_pyplot)
    return (fig, arrays) if return_arrays else fig
