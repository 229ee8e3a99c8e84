"""Class-activation-style heat maps blended over an image, and PNG output."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.colors import Colormap

from .arrays import check_finite, check_fraction, to_display_image, to_hwc, to_numpy, to_uint8


def _colormap(colormap: Union[str, Colormap]) -> Colormap:
    if isinstance(colormap, Colormap):
        return colormap
    if isinstance(colormap, str) and colormap in matplotlib.colormaps:
        return matplotlib.colormaps[colormap]
    raise ValueError(
        f"colormap must be a matplotlib colormap or the name of one (e.g. 'jet', 'viridis'); "
        f"got {colormap!r}"
    )


def _heatmap_2d(heatmap: Any) -> np.ndarray:
    values = to_numpy(heatmap, "heatmap")
    shape = tuple(values.shape)
    while values.ndim > 2 and values.shape[0] == 1:
        values = values[0]
    if values.ndim == 3 and values.shape[2] == 1:
        values = values[:, :, 0]
    if values.ndim != 2 or values.size == 0:
        raise ValueError(
            f"heatmap must be one map of shape (h, w), (1, h, w) or (1, 1, h, w); got {shape}"
        )
    values = values.astype(np.float64)
    check_finite(values, "heatmap")
    return values


def _resize_bilinear(values: np.ndarray, height: int, width: int) -> np.ndarray:
    if values.shape == (height, width):
        return values
    grid = torch.from_numpy(np.ascontiguousarray(values))[None, None]
    resized = F.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False)
    return resized[0, 0].numpy()


def overlay_heatmap(
    image: Any,
    heatmap: Any,
    alpha: float = 0.5,
    colormap: Union[str, Colormap] = "jet",
    *,
    normalize: bool = True,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
) -> np.ndarray:
    """``heatmap`` coloured and blended over ``image``; returns (H, W, 3) uint8.

    ``image``: NumPy (H, W[, C]) or tensor (C, H, W) / (1, C, H, W), RGB or
    grayscale, uint8 or floats in [0, 1], de-normalised as ``x * std + mean`` when
    those are given. ``heatmap``: one map (h, w), (1, h, w) or (1, 1, h, w), min-max
    scaled to [0, 1] (``normalize=False``: it must already lie in [0, 1]), then
    resized bilinearly to (H, W) if needed. Each pixel is
    ``(1 - alpha) * image + alpha * 255 * colormap(heatmap)``.
    """
    alpha = check_fraction(alpha, "alpha")
    cmap = _colormap(colormap)
    pixels = to_display_image(image, "image", mean, std)
    values = _heatmap_2d(heatmap)
    low, high = float(values.min()), float(values.max())
    if normalize:
        values = (values - low) / (high - low) if high > low else np.zeros_like(values)
    elif low < -1e-6 or high > 1.0 + 1e-6:
        raise ValueError(
            f"heatmap must lie in [0, 1] when normalize=False; got values in [{low:.4g}, {high:.4g}]"
        )
    values = np.clip(_resize_bilinear(values, *pixels.shape[:2]), 0.0, 1.0)
    colours = cmap(values)[:, :, :3] * 255.0
    blended = (1.0 - alpha) * pixels.astype(np.float64) + alpha * colours
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def save_png(array: Any, path: Union[str, os.PathLike]) -> Path:
    """Writes an image array as a PNG with Pillow; returns the path.

    ``array``: (H, W) grayscale, (H, W, 3) RGB or (H, W, 4) RGBA (or a tensor in
    channels-first form), uint8 or floats in [0, 1].
    """
    from PIL import Image

    hwc = to_hwc(array, "array")
    channels = hwc.shape[2]
    if channels not in (1, 3, 4):
        raise ValueError(
            f"array must have 1, 3 or 4 channels to save as PNG; got shape {tuple(hwc.shape)}"
        )
    if hwc.dtype == bool:
        hwc = hwc.astype(np.uint8) * 255
    pixels = np.ascontiguousarray(to_uint8(hwc, "array"))
    if channels == 1:
        pixels = pixels[:, :, 0]
    path = Path(path)
    Image.fromarray(pixels).save(path, format="PNG")
    return path
