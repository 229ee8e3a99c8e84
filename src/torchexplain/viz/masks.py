"""Image segments drawn over their image (``ImageMaskInput.plot_mask_overlay``)."""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import matplotlib
import numpy as np

from .arrays import to_numpy
from .image import _show, new_figure

#: tint opacity of a segment, and of its border
SEGMENT_ALPHA = 0.6
BORDER_ALPHA = 0.8


def erode(mask: np.ndarray, steps: int) -> np.ndarray:
    """``mask`` shrunk by ``steps`` pixels (4-neighbourhood; outside counts as empty)."""
    out = mask.copy()
    for _ in range(steps):
        padded = np.pad(out, 1, constant_values=False)
        out = (
            out & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
        )
    return out


def _label_at_centroid(axis, mask: np.ndarray, label: str) -> None:
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return
    axis.text(
        float(cols.mean()), float(rows.mean()), label, ha="center", va="center", fontsize=9,
        bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "alpha": 0.7},
    )


def plot_segments(
    image: Any,
    masks: Sequence[Any],
    labels: Sequence[str],
    show: bool = False,
    border_width: int = 0,
    show_legends: bool = True,
    fig_size: Tuple[float, float] = (6, 6),
) -> Optional[Tuple[Any, Any]]:
    """Draws ``image`` with each boolean ``(H, W)`` mask tinted in its own colour
    (tab20), outlined ``border_width`` pixels deep and labelled at its centroid.
    Returns ``(figure, axis)``, or None when ``show`` displays the figure (pyplot)."""
    if isinstance(border_width, bool) or not isinstance(border_width, (int, np.integer)) or border_width < 0:
        raise ValueError(f"border_width must be a non-negative int; got {border_width!r}")
    figure = new_figure(show, fig_size)
    axis = figure.subplots()
    axis.imshow(np.asarray(image))
    colours = matplotlib.colormaps["tab20"]
    for i, (mask, label) in enumerate(zip(masks, labels)):
        region = to_numpy(mask, f"masks[{i}]").astype(bool)
        rgb = np.asarray(colours(i % 20)[:3])
        axis.imshow(region[:, :, None] * np.append(rgb, SEGMENT_ALPHA))
        if border_width > 0:
            edge = region & ~erode(region, border_width)
            axis.imshow(edge[:, :, None] * np.append(rgb, BORDER_ALPHA))
        if show_legends:
            _label_at_centroid(axis, region, label)
    axis.axis("off")
    if show:
        _show()
        return None
    return figure, axis
