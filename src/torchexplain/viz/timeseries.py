"""Time-series attributions drawn with matplotlib, with Captum's arguments and results.

``visualize_timeseries_attr(attr, data, ...)`` takes ``(N, C)`` arrays or tensors
(``channels_last=False``: ``(C, N)``; a 1-D series is one channel). The attributions
are normalised as for images (:func:`~torchexplain.viz.normalize_attr`, over all
channels together) and shown as a coloured band behind each channel's curve
(``overlay_individual``), behind all curves with the channel sum
(``overlay_combined``), or as the colour of the curve itself (``colored_graph``).
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple, Union

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure

from .arrays import check_choice, check_finite, check_fraction, to_numpy
from .image import SIGNS, _show, check_outlier_perc, default_cmap, new_figure, normalize_attr

METHODS = ("overlay_individual", "overlay_combined", "colored_graph")


def _channels_first(value: Any, name: str, channels_last: bool) -> np.ndarray:
    array = np.asarray(to_numpy(value, name), dtype=np.float64)
    if array.ndim == 1:
        return array[None, :]
    if array.ndim != 2:
        raise ValueError(f"{name} must have shape (N, C) (or (C, N) with channels_last=False); got {array.shape}")
    check_finite(array, name)
    return array.T if channels_last else array


def _axes(plt_fig_axis, use_pyplot: bool, fig_size, rows: int) -> Tuple[Figure, Any, List[Axes]]:
    if plt_fig_axis is not None:
        figure, axes = plt_fig_axis
    else:
        figure = new_figure(use_pyplot, fig_size)
        axes = figure.subplots(nrows=rows, sharex=True)
    flat = list(np.asarray(axes, dtype=object).reshape(-1))
    if len(flat) < rows:
        raise ValueError(f"plt_fig_axis must hold {rows} axes (one per panel); got {len(flat)}")
    return figure, axes, flat


def _band(axis: Axes, values: np.ndarray, x: np.ndarray, cmap, norm: Normalize, alpha: float) -> None:
    """``values`` as a colour band behind the axis' curves, one column per time step."""
    half = (x[1] - x[0]) / 2.0 if x.size > 1 else 0.5
    low, high = axis.get_ylim()
    axis.imshow(
        values[None, :], cmap=cmap, norm=norm, alpha=alpha, aspect="auto",
        extent=(x[0] - half, x[-1] + half, low, high), origin="lower", interpolation="nearest", zorder=0,
    )
    axis.set_ylim(low, high)


def _colored_line(axis: Axes, x: np.ndarray, y: np.ndarray, values: np.ndarray, cmap, norm, **kwargs) -> None:
    from matplotlib.collections import LineCollection

    points = np.stack([x, y], axis=1)[:, None, :]
    lines = LineCollection(np.concatenate([points[:-1], points[1:]], axis=1), cmap=cmap, norm=norm, **kwargs)
    lines.set_array(values[:-1] if values.size > 1 else values)
    axis.add_collection(lines)
    span = float(y.max() - y.min()) or 1.0
    axis.set_ylim(float(y.min()) - 0.1 * span, float(y.max()) + 0.1 * span)


def visualize_timeseries_attr(
    attr: Any,
    data: Any,
    x_values: Optional[Any] = None,
    method: str = "overlay_individual",
    sign: str = "absolute_value",
    channel_labels: Optional[Sequence[str]] = None,
    channels_last: bool = True,
    plt_fig_axis: Optional[Tuple[Figure, Union[Axes, List[Axes]]]] = None,
    outlier_perc: Union[int, float] = 2,
    cmap: Optional[Union[str, Colormap]] = None,
    alpha_overlay: float = 0.7,
    show_colorbar: bool = False,
    title: Optional[str] = None,
    fig_size: Tuple[float, float] = (6, 6),
    use_pyplot: bool = True,
    **pyplot_kwargs: Any,
) -> Tuple[Figure, Union[Axes, List[Axes]]]:
    """Draws a time series and its attributions; returns ``(figure, axes)`` like
    Captum (one Axes for one panel, else an array of them). ``pyplot_kwargs`` go to
    the curves (``linewidth=2``...)."""
    check_choice(method, METHODS, "method")
    check_choice(sign, SIGNS, "sign")
    check_outlier_perc(outlier_perc)
    check_fraction(alpha_overlay, "alpha_overlay")
    values = _channels_first(attr, "attr", channels_last)
    series = _channels_first(data, "data", channels_last)
    if values.shape != series.shape:
        raise ValueError(f"attr and data must have the same shape; got {values.T.shape} and {series.T.shape}")
    channels, length = series.shape
    x = np.arange(length) if x_values is None else np.asarray(to_numpy(x_values, "x_values"), dtype=np.float64)
    if x.shape != (length,):
        raise ValueError(f"x_values must hold one value per time step ({length}); got shape {x.shape}")
    if channel_labels is not None and len(channel_labels) != channels:
        raise ValueError(f"channel_labels must name each of the {channels} channels; got {len(channel_labels)}")
    combined = method == "overlay_combined"
    norm_attr = normalize_attr((values.sum(0, keepdims=True) if combined else values), sign, outlier_perc, None)
    sign_cmap, vmin, vmax = default_cmap(sign)
    colours, scale = _colormap(sign_cmap if cmap is None else cmap), Normalize(vmin, vmax)
    figure, axes, flat = _axes(plt_fig_axis, use_pyplot, fig_size, 1 if combined else channels)
    if combined:
        flat[0].set_prop_cycle(color=matplotlib.colormaps["Dark2"].colors)
        for c in range(channels):
            flat[0].plot(x, series[c], label=channel_labels[c] if channel_labels else None, **pyplot_kwargs)
        _band(flat[0], norm_attr[0], x, colours, scale, alpha_overlay)
        if channel_labels:
            flat[0].legend(loc="best")
    else:
        for c in range(channels):
            if method == "colored_graph":
                _colored_line(flat[c], x, series[c], norm_attr[c], colours, scale, **pyplot_kwargs)
            else:
                flat[c].plot(x, series[c], **pyplot_kwargs)
                _band(flat[c], norm_attr[c], x, colours, scale, alpha_overlay)
            if channel_labels is not None:
                flat[c].set_ylabel(channel_labels[c])
    flat[0].set_xlim(x[0], x[-1])
    if show_colorbar:
        last = flat[0] if combined else flat[channels - 1]
        _colorbar(figure, last, colours, scale, 1.0 if method == "colored_graph" else alpha_overlay)
    if title:
        flat[0].set_title(title)
    if use_pyplot:
        _show()
    return figure, axes


def _colormap(cmap: Union[str, Colormap]) -> Colormap:
    if isinstance(cmap, Colormap):
        return cmap
    if isinstance(cmap, str) and cmap in matplotlib.colormaps:
        return matplotlib.colormaps[cmap]
    raise ValueError(f"cmap must be a matplotlib colormap or the name of one; got {cmap!r}")


def _colorbar(figure: Figure, axis: Axes, cmap, norm: Normalize, alpha: float) -> None:
    from matplotlib.cm import ScalarMappable
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    slot = make_axes_locatable(axis).append_axes("bottom", size="5%", pad=0.4)
    figure.colorbar(ScalarMappable(norm, cmap), cax=slot, orientation="horizontal", alpha=alpha)
