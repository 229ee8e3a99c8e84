"""The report's pictures, drawn with NumPy and Pillow (no matplotlib): palette PNGs
of attribution maps, the input images, colour maps and their CSS colour bars.

A method's maps are stacked in one PNG (a sprite; the page shows one slice per row)
and coloured by index into a palette, one byte per pixel: the signed view uses a
diverging palette of an odd number of entries whose middle entry is zero, the
absolute view a sequential one. The browser lays each map over its input image at
about half opacity, as Captum's ``blended_heat_map`` does.
"""

from __future__ import annotations

import base64
import io
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from ..viz.arrays import cumulative_threshold, to_display_image

#: ColorBrewer RdBu, reversed: blue for negative evidence, red for positive, near-white zero
DIVERGING = ((-1.0, "#2166ac"), (-0.5, "#67a9cf"), (0.0, "#f7f7f7"), (0.5, "#ef8a62"), (1.0, "#b2182b"))
#: ColorBrewer YlOrBr: |attribution| from 0 (pale) to the largest (dark)
SEQUENTIAL = ((0.0, "#ffffe5"), (0.25, "#fee391"), (0.5, "#fe9929"), (0.75, "#cc4c02"), (1.0, "#662506"))
#: palette entries of the signed view (odd: zero is the middle entry exactly) and of the absolute one
SIGNED_LEVELS, ABSOLUTE_LEVELS = 65, 64
#: maps and images larger than this (on their longer side) are averaged down to it
MAX_SIDE = 112


def _rgb(colour: str) -> np.ndarray:
    return np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.float64)


def palette(stops, levels: int) -> np.ndarray:
    """``levels`` colours (levels x 3 uint8) evenly spaced over the ``stops``' range,
    interpolated linearly in RGB between the stops."""
    positions = np.array([p for p, _ in stops])
    colours = np.stack([_rgb(c) for _, c in stops])
    at = np.linspace(positions[0], positions[-1], levels)
    channels = [np.interp(at, positions, colours[:, k]) for k in range(3)]
    return np.clip(np.rint(np.stack(channels, 1)), 0, 255).astype(np.uint8)


def css_gradient(stops) -> str:
    """A left-to-right CSS gradient through the stops (the colour bar of a palette)."""
    low, high = stops[0][0], stops[-1][0]
    parts = [f"{c} {100 * (p - low) / (high - low):g}%" for p, c in stops]
    return f"linear-gradient(to right, {', '.join(parts)})"


def data_uri(image, fmt: str = "PNG", **options) -> str:
    """A Pillow image as a ``data:`` URI."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    mime = {"PNG": "image/png", "WEBP": "image/webp", "JPEG": "image/jpeg"}[fmt]
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def indexed_png(indices: np.ndarray, colours: np.ndarray) -> str:
    """A palette PNG (one byte per pixel) of ``indices`` into ``colours``."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(indices.astype(np.uint8)), mode="P")
    image.putpalette(colours.reshape(-1).tolist())
    return data_uri(image, "PNG", optimize=True)


def photo_uri(pixels: np.ndarray) -> str:
    """An (H, W, 3) uint8 image: lossless PNG when small or flat, else WebP (JPEG when
    Pillow lacks WebP) at high quality."""
    from PIL import Image, features

    image = Image.fromarray(np.ascontiguousarray(pixels))
    if max(pixels.shape[:2]) <= 64 or len(np.unique(pixels.reshape(-1, 3)[::7], axis=0)) <= 256:
        if np.all(pixels == pixels[:, :, :1]):
            image = image.convert("L")
        return data_uri(image, "PNG", optimize=True)
    if features.check("webp"):
        return data_uri(image, "WEBP", quality=88, method=6)
    return data_uri(image, "JPEG", quality=90)


def shrink(values: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    """(N, H, W[, C]) values averaged down so the longer side is at most ``max_side``."""
    height, width = values.shape[1:3]
    factor = max(height, width) / max_side
    if factor <= 1:
        return values
    size = (max(1, round(height / factor)), max(1, round(width / factor)))
    tensor = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64))
    channels_last = tensor.dim() == 4
    tensor = tensor.permute(0, 3, 1, 2) if channels_last else tensor[:, None]
    small = F.interpolate(tensor, size=size, mode="area")
    return (small.permute(0, 2, 3, 1) if channels_last else small[:, 0]).numpy()


def as_maps(attributions: torch.Tensor) -> np.ndarray:
    """Attributions as (N, H, W) float64 maps: an image's channels summed (Captum's
    display), a series (N, C, L) or a vector (N, F) as a one-row strip."""
    a = attributions.detach().cpu().double()
    if a.dim() == 4:
        return a.sum(1).numpy()
    if a.dim() == 3:
        return a.sum(1, keepdim=True).numpy()
    return a.reshape(a.shape[0], 1, -1).numpy()


def column_scale(maps: np.ndarray, outlier_perc: float = 2.0) -> float:
    """One scale for a method's maps over all rows (Captum's ``outlier_perc`` rule,
    pooled): the |value| at which the sorted magnitudes reach ``100 - outlier_perc``
    percent of their total; values beyond it saturate. 1 for all-zero maps."""
    magnitudes = np.abs(maps[np.isfinite(maps)])
    if magnitudes.size == 0 or not magnitudes.any():
        return 1.0
    return float(cumulative_threshold(magnitudes, 100.0 - outlier_perc))


def signed_sprite(maps: np.ndarray, scale: float) -> str:
    """The maps stacked top to bottom in one palette PNG, ``value / scale`` in [-1, 1]
    on the diverging palette (zero is its middle entry)."""
    colours = palette(DIVERGING, SIGNED_LEVELS)
    half = (SIGNED_LEVELS - 1) / 2
    v = np.clip(np.nan_to_num(maps / scale), -1.0, 1.0)
    return indexed_png(np.rint(half + half * v).reshape(-1, maps.shape[-1]), colours)


def absolute_sprite(maps: np.ndarray, scale: float) -> str:
    """The maps stacked top to bottom in one palette PNG, ``|value| / scale`` in [0, 1]
    on the sequential palette."""
    colours = palette(SEQUENTIAL, ABSOLUTE_LEVELS)
    v = np.clip(np.nan_to_num(np.abs(maps) / scale), 0.0, 1.0)
    return indexed_png(np.rint(v * (ABSOLUTE_LEVELS - 1)).reshape(-1, maps.shape[-1]), colours)


def input_pictures(inputs: torch.Tensor, mean=None, std=None) -> list[str] | None:
    """The input rows as pictures (images only; None for other inputs): de-normalised
    with ``mean``/``std``, averaged down to ``MAX_SIDE``."""
    if inputs.dim() != 4 or inputs.shape[1] not in (1, 3, 4):
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pixels = np.stack([to_display_image(x, "inputs", mean, std) for x in inputs.detach().cpu().float()])
    if caught:  # one warning for the batch, not one per row
        warnings.warn(f"{caught[0].message} (report: {len(caught)} of {len(inputs)} inputs)", stacklevel=4)
    small = np.clip(np.rint(shrink(pixels.astype(np.float64))), 0, 255).astype(np.uint8)
    return [photo_uri(p) for p in small]
