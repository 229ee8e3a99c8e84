"""Captum's ``captum.attr.visualization`` names, drawn by :mod:`torchexplain.viz`.

``from torchexplain.attr import visualization as viz`` then Captum's calls work
unchanged: ``viz.visualize_image_attr(attr_hwc, image_hwc, "blended_heat_map",
"all")``, ``viz.visualize_image_attr_multiple``, ``viz.visualize_timeseries_attr``,
``viz.visualize_text([viz.VisualizationDataRecord(...)])``. The image and series
functions also take torch tensors in (C, H, W) form; float images are shown as
[0, 1] images (clipped), uint8 as 0-255.

Differences from Captum: ``visualize_text`` shows the attributions as given (Captum
too) but returns an ``IPython.display.HTML`` only when IPython is installed (the
HTML string otherwise) and displays it only inside a notebook kernel; bad arguments
raise ``ValueError`` naming them instead of ``AssertionError``.
"""

from __future__ import annotations

import html
from enum import Enum
from typing import Any, Iterable, Sequence, Union

import numpy as np

from ..viz import image as _image
from ..viz.arrays import to_numpy
from ..viz.image import visualize_image_attr, visualize_image_attr_multiple
from ..viz.masks import erode
from ..viz.text import VisualizationDataRecord, _words_cell, word_color
from ..viz.text import visualize_text as _visualize_text
from ..viz.timeseries import visualize_timeseries_attr


class ImageVisualizationMethod(Enum):
    heat_map = 1
    blended_heat_map = 2
    original_image = 3
    masked_image = 4
    alpha_scaling = 5


class TimeseriesVisualizationMethod(Enum):
    overlay_individual = 1
    overlay_combined = 2
    colored_graph = 3


class VisualizeSign(Enum):
    positive = 1
    absolute_value = 2
    negative = 3
    all = 4


def _cumulative_sum_threshold(values, percentile: Union[int, float]) -> float:
    """The sorted value at which the running sum of ``values`` (non-negative) reaches
    ``percentile`` % of their total."""
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in [0, 100]; got {percentile!r}")
    return float(_image._cumulative_threshold(np.asarray(to_numpy(values, "values"), dtype=np.float64), percentile))


def _normalize_scale(attr, scale_factor: float):
    """``attr / scale_factor`` clipped to [-1, 1]."""
    if scale_factor == 0:
        raise ValueError("scale_factor must be nonzero")
    return np.clip(np.asarray(to_numpy(attr, "attr")) / scale_factor, -1, 1)


def _normalize_attr(attr, sign: str, outlier_perc: Union[int, float] = 2, reduction_axis=None):
    """Captum's normalisation of a 2-D (or, with ``reduction_axis``, 3-D) attribution
    map: [-1, 1] for ``sign="all"``, else [0, 1], the top ``outlier_perc`` percent of
    the total saturating (see :func:`torchexplain.viz.normalize_attr`); 1-D maps too."""
    values = np.asarray(to_numpy(attr, "attr"))
    if values.ndim == 1:
        return _image.normalize_attr(values[None], sign, outlier_perc, None)[0]
    return _image.normalize_attr(values, sign, outlier_perc, reduction_axis)


def _normalize_image_attr(attr, sign: str, outlier_perc: Union[int, float] = 2):
    """Captum's older name: an (H, W, C) map summed over channels, then normalised."""
    return _image.normalize_attr(attr, sign, outlier_perc, reduction_axis=2)


def draw_mask_border(ax, mask, border_width: int = 1, border_color: Any = "black") -> None:
    """Draws the ``border_width``-pixel inner border of the boolean ``mask`` on ``ax``."""
    from matplotlib.colors import to_rgba

    region = np.asarray(to_numpy(mask, "mask")).astype(bool)
    edge = region & ~erode(region, border_width)
    ax.imshow(edge[:, :, None] * np.asarray(to_rgba(border_color)))


def draw_mask_legend(ax, mask, label: str, fontsize: int = 12, **kwargs: Any) -> None:
    """Writes ``label`` at the centroid of the boolean ``mask`` on ``ax``."""
    rows, cols = np.nonzero(np.asarray(to_numpy(mask, "mask")).astype(bool))
    if rows.size:
        style = {"ha": "center", "va": "center", "fontsize": fontsize,
                 "bbox": {"boxstyle": "round,pad=0.2", "facecolor": "white", "alpha": 0.7}}
        ax.text(float(cols.mean()), float(rows.mean()), label, **{**style, **kwargs})


def _get_color(attr: float) -> str:
    return word_color(attr)


def format_classname(classname: Union[str, int]) -> str:
    """A table cell holding ``classname`` in bold."""
    return f'<td><text style="padding-right:2em"><b>{html.escape(str(classname))}</b></text></td>'


def format_special_tokens(token: str) -> str:
    """``<s>`` -> ``#s`` (special tokens readable in HTML); other tokens unchanged."""
    return "#" + token.strip("<>") if token.startswith("<") and token.endswith(">") else token


def format_tooltip(item: str, text: str) -> str:
    """``item`` with ``text`` as its tooltip."""
    return f'<div class="tooltip">{item}<span class="tooltiptext">{html.escape(str(text))}</span></div>'


def format_word_importances(words: Sequence[str], importances) -> str:
    """A table cell with each word's background coloured by its importance (in
    [-1, 1]: green positive, red negative)."""
    if importances is None or len(importances) == 0:
        return "<td></td>"
    values = np.asarray(to_numpy(importances, "importances"), dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"importances must be 1-D (one value per word); got shape {values.shape}")
    if len(words) > values.size:
        raise ValueError(f"importances has {values.size} values for {len(words)} words")
    return _words_cell([format_special_tokens(str(w)) for w in words], values[: len(words)])


def visualize_text(datarecords: Iterable[VisualizationDataRecord], legend: bool = True):
    """An HTML table of the records (true, predicted and attributed labels, score,
    coloured words), displayed in a notebook; returns ``IPython.display.HTML`` (the
    string without IPython)."""
    markup = _visualize_text(datarecords, legend=legend, normalize=False)
    try:
        from IPython.display import HTML
    except ImportError:
        return markup
    return HTML(markup)


__all__ = [
    "ImageVisualizationMethod",
    "TimeseriesVisualizationMethod",
    "VisualizationDataRecord",
    "VisualizeSign",
    "draw_mask_border",
    "draw_mask_legend",
    "format_classname",
    "format_special_tokens",
    "format_tooltip",
    "format_word_importances",
    "visualize_image_attr",
    "visualize_image_attr_multiple",
    "visualize_text",
    "visualize_timeseries_attr",
]
