"""Image attributions drawn with matplotlib, with Captum's arguments and results.

``visualize_image_attr`` and ``visualize_image_attr_multiple`` take Captum's
arguments (and give the same pictures for the same NumPy input) but also accept
torch tensors in (C, H, W) or (1, C, H, W) form on any device, grayscale images,
and ``mean``/``std`` to show a normalised input image as it really looks.

``pyplot`` is imported only when ``use_pyplot=True``; ``use_pyplot=False`` builds a
``matplotlib.figure.Figure`` on an Agg canvas and never opens a window.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import Colormap, LinearSegmentedColormap
from matplotlib.figure import Figure

from .arrays import (
    check_choice,
    check_finite,
    check_fraction,
    to_display_image,
    to_hwc,
    to_numpy,
)
from .arrays import cumulative_threshold as _cumulative_threshold

METHODS = ("heat_map", "blended_heat_map", "original_image", "masked_image", "alpha_scaling")
SIGNS = ("all", "positive", "negative", "absolute_value")
# Methods that draw the image itself, weighted by |attribution|: a signed map has no meaning.
_UNSIGNED_METHODS = ("masked_image", "alpha_scaling")


def check_outlier_perc(outlier_perc: Any) -> float:
    if isinstance(outlier_perc, bool) or not isinstance(outlier_perc, (int, float, np.number)):
        raise ValueError(f"outlier_perc must be a number in [0, 100); got {outlier_perc!r}")
    if not 0.0 <= float(outlier_perc) < 100.0:
        raise ValueError(f"outlier_perc must be in [0, 100); got {outlier_perc!r}")
    return outlier_perc


def normalize_attr(
    attr: Any,
    sign: str = "absolute_value",
    outlier_perc: Union[int, float] = 2,
    reduction_axis: Optional[int] = 2,
) -> np.ndarray:
    """Attributions scaled for display: [-1, 1] for ``sign="all"``, else [0, 1].

    A 3-D ``attr`` is first summed over ``reduction_axis`` (channels; 2 for HWC,
    0 for CHW). The values of the chosen sign are divided by a threshold: the
    magnitude at which the cumulative sum of sorted |values| reaches
    ``100 - outlier_perc`` percent of their total, so the largest values, holding
    ``outlier_perc`` percent of the total, saturate at 1. ``negative`` maps the most
    negative values to 1. All-zero input (after the sign is applied) gives zeros.
    """
    check_choice(sign, SIGNS, "sign")
    check_outlier_perc(outlier_perc)
    values = to_numpy(attr, "attr")
    if values.ndim == 3 and reduction_axis is not None:
        values = values.sum(axis=reduction_axis)
    if values.ndim != 2:
        raise ValueError(
            f"attr must have shape (H, W) or (H, W, C) (channels on reduction_axis="
            f"{reduction_axis}); got shape {tuple(to_numpy(attr, 'attr').shape)}"
        )
    if not np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float64)
    check_finite(values, "attr")
    if values.size == 0:
        raise ValueError("attr must not be empty")

    if sign == "positive":
        values = np.maximum(values, 0)
    elif sign == "negative":
        values = np.minimum(values, 0)
    elif sign == "absolute_value":
        values = np.abs(values)

    threshold = _cumulative_threshold(np.abs(values), 100.0 - outlier_perc)
    if threshold == 0:
        return np.zeros_like(values)
    if sign == "negative":
        threshold = -threshold
    return np.clip(values / threshold, -1, 1)


def default_cmap(sign: str) -> Tuple[Union[str, Colormap], float, float]:
    """Captum's colormap and value range for each sign."""
    if sign == "all":
        diverging = LinearSegmentedColormap.from_list("RdWhGn", ["red", "white", "green"])
        return diverging, -1.0, 1.0
    return {"positive": "Greens", "negative": "Reds", "absolute_value": "Blues"}[sign], 0.0, 1.0


def new_figure(use_pyplot: bool, fig_size: Tuple[float, float]) -> Figure:
    """A figure through pyplot (shown later) or a detached one on an Agg canvas."""
    if use_pyplot:
        import matplotlib.pyplot as plt

        return plt.figure(figsize=fig_size)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = Figure(figsize=fig_size)
    FigureCanvasAgg(figure)
    return figure


def _show() -> None:
    import matplotlib.pyplot as plt

    plt.show()


def _figure_and_axis(plt_fig_axis: Any, use_pyplot: bool, fig_size: Any) -> Tuple[Figure, Axes]:
    if plt_fig_axis is None:
        figure = new_figure(use_pyplot, fig_size)
        return figure, figure.subplots()
    if not isinstance(plt_fig_axis, (tuple, list)) or len(plt_fig_axis) != 2:
        raise ValueError(
            f"plt_fig_axis must be a (figure, axis) pair; got {type(plt_fig_axis).__name__}"
        )
    figure, axis = plt_fig_axis
    if isinstance(axis, (list, tuple, np.ndarray)):
        axis = np.asarray(axis, dtype=object).reshape(-1)[0]
    if not isinstance(axis, Axes):
        raise ValueError(f"plt_fig_axis[1] must be a matplotlib Axes; got {type(axis).__name__}")
    return figure, axis


def _bare_axis(axis: Axes) -> None:
    axis.xaxis.set_ticks_position("none")
    axis.yaxis.set_ticks_position("none")
    axis.set_xticklabels([])
    axis.set_yticklabels([])
    axis.grid(visible=False)


def _pixels(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _draw(
    axis: Axes,
    method: str,
    norm: np.ndarray,
    image: Optional[np.ndarray],
    cmap: Union[str, Colormap],
    vmin: float,
    vmax: float,
    alpha_overlay: float,
) -> Any:
    """Draws one method; returns the heat-map image (for a colorbar) or None."""
    if method == "heat_map":
        return axis.imshow(norm, cmap=cmap, vmin=vmin, vmax=vmax)
    if method == "blended_heat_map":
        axis.imshow(image.mean(axis=2), cmap="gray", vmin=0, vmax=255)
        return axis.imshow(norm, cmap=cmap, vmin=vmin, vmax=vmax, alpha=alpha_overlay)
    if method == "original_image":
        axis.imshow(image)
    elif method == "masked_image":
        axis.imshow(_pixels(image * norm[:, :, None]))
    else:  # alpha_scaling
        axis.imshow(np.concatenate([image, _pixels(norm[:, :, None] * 255.0)], axis=2))
    return None


def _add_colorbar(figure: Figure, axis: Axes, heat_map: Any) -> None:
    # A colorbar slot is made (hidden when there is no heat map) so that panels of a
    # multiple-method figure stay aligned.
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    slot = make_axes_locatable(axis).append_axes("bottom", size="5%", pad=0.1)
    if heat_map is None:
        slot.axis("off")
    else:
        figure.colorbar(heat_map, cax=slot, orientation="horizontal")


def visualize_image_attr(
    attr: Any,
    original_image: Any = None,
    method: str = "heat_map",
    sign: str = "absolute_value",
    plt_fig_axis: Optional[Tuple[Figure, Axes]] = None,
    outlier_perc: Union[int, float] = 2,
    cmap: Optional[Union[str, Colormap]] = None,
    alpha_overlay: float = 0.5,
    show_colorbar: bool = False,
    title: Optional[str] = None,
    fig_size: Tuple[float, float] = (6, 6),
    use_pyplot: bool = True,
    *,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
) -> Tuple[Figure, Axes]:
    """Draws one image attribution; returns ``(figure, axis)`` like Captum.

    ``attr``: NumPy (H, W) / (H, W, C) or tensor (C, H, W) / (1, C, H, W), summed
    over channels. ``original_image``: same forms, RGB or grayscale, uint8 in
    [0, 255] or floats in [0, 1]; when ``mean``/``std`` are given it is shown as
    ``x * std + mean``. ``method``: heat_map, blended_heat_map, original_image,
    masked_image or alpha_scaling. ``sign``: all, positive, negative or
    absolute_value (see :func:`normalize_attr` for ``outlier_perc``). ``cmap``
    defaults to Greens / Reds / Blues / red-white-green for positive / negative /
    absolute_value / all.
    """
    check_choice(method, METHODS, "method")
    check_choice(sign, SIGNS, "sign")
    check_outlier_perc(outlier_perc)
    check_fraction(alpha_overlay, "alpha_overlay")
    if method in _UNSIGNED_METHODS and sign == "all":
        raise ValueError(
            f"sign='all' cannot be shown with method={method!r}, which has no way to show "
            "the sign; choose sign 'positive', 'negative' or 'absolute_value'"
        )
    attr_hwc = to_hwc(attr, "attr")
    image = None
    if original_image is not None:
        image = to_display_image(original_image, "original_image", mean, std)
        if image.shape[:2] != attr_hwc.shape[:2]:
            raise ValueError(
                "attr and original_image must have the same height and width; got attr "
                f"{attr_hwc.shape[:2]} and original_image {image.shape[:2]} (as H, W)"
            )
    elif method != "heat_map":
        raise ValueError(f"original_image is required for method={method!r}; got None")

    norm = normalize_attr(attr_hwc, sign, outlier_perc, reduction_axis=2)
    sign_cmap, vmin, vmax = default_cmap(sign)
    cmap = sign_cmap if cmap is None else cmap

    figure, axis = _figure_and_axis(plt_fig_axis, use_pyplot, fig_size)
    _bare_axis(axis)
    heat_map = _draw(axis, method, norm, image, cmap, vmin, vmax, alpha_overlay)
    if show_colorbar:
        _add_colorbar(figure, axis, heat_map)
    if title:
        axis.set_title(title)
    if use_pyplot:
        _show()
    return figure, axis


def visualize_image_attr_multiple(
    attr: Any,
    original_image: Any,
    methods: Sequence[str],
    signs: Sequence[str],
    titles: Optional[Sequence[str]] = None,
    fig_size: Tuple[float, float] = (8, 6),
    use_pyplot: bool = True,
    *,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    **kwargs: Any,
) -> Tuple[Figure, Union[Axes, List[Axes]]]:
    """Draws ``len(methods)`` panels side by side; returns ``(figure, axes)``.

    ``axes`` is one Axes for one method, else a list. ``kwargs`` go to every
    :func:`visualize_image_attr` call (``outlier_perc``, ``cmap``, ``show_colorbar``,
    ``alpha_overlay``...).
    """
    methods, signs = list(methods), list(signs)
    if not methods:
        raise ValueError("methods must name at least one method; got an empty list")
    if len(signs) != len(methods):
        raise ValueError(
            f"signs must have one entry per method ({len(methods)}); got {len(signs)}"
        )
    if titles is not None and len(titles) != len(methods):
        raise ValueError(
            f"titles must have one entry per method ({len(methods)}); got {len(titles)}"
        )
    for name in ("plt_fig_axis", "use_pyplot", "title"):
        if name in kwargs:
            raise ValueError(f"{name} cannot be passed to visualize_image_attr_multiple")
    for method in methods:
        check_choice(method, METHODS, "methods")
    for sign in signs:
        check_choice(sign, SIGNS, "signs")

    # Convert once: tensors leave the device a single time, the image is de-normalised once.
    attr_hwc = to_hwc(attr, "attr")
    image = None
    if original_image is not None:
        image = to_display_image(original_image, "original_image", mean, std)

    figure = new_figure(use_pyplot, fig_size)
    axes = list(figure.subplots(1, len(methods), squeeze=False)[0])
    for index, (method, sign) in enumerate(zip(methods, signs)):
        visualize_image_attr(
            attr_hwc,
            original_image=image,
            method=method,
            sign=sign,
            plt_fig_axis=(figure, axes[index]),
            use_pyplot=False,
            title=titles[index] if titles is not None else None,
            **kwargs,
        )
    figure.tight_layout()
    if use_pyplot:
        _show()
    return figure, axes[0] if len(axes) == 1 else axes
