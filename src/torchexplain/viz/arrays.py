"""Array forms shared by every plot: tensors or arrays in, NumPy HWC out.

Attributions and images arrive as NumPy arrays in Captum's (H, W, C) form or as
torch tensors in (C, H, W) / (1, C, H, W) form on any device. Everything here turns
them into NumPy (H, W, C) arrays, and images into (H, W, 3) uint8 ready to show.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional, Sequence

import numpy as np
import torch

# Channel counts that identify a channel axis when the layout is in doubt.
_CHANNEL_COUNTS = (1, 3, 4)


def to_numpy(value: Any, name: str) -> np.ndarray:
    """A NumPy copy or view of ``value`` (tensor: detached, on the CPU)."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        if tensor.dtype in (torch.float16, torch.bfloat16):
            tensor = tensor.float()
        return tensor.numpy()
    if isinstance(value, np.ndarray):
        return value
    try:
        array = np.asarray(value)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise ValueError(
            f"{name} must be a numpy array or a torch tensor, got {type(value).__name__}"
        ) from exc
    if array.dtype == object:
        raise ValueError(
            f"{name} must be a numpy array or a torch tensor, got {type(value).__name__}"
        )
    return array


def to_hwc(value: Any, name: str) -> np.ndarray:
    """``value`` as a NumPy (H, W, C) array.

    NumPy input is read as (H, W), (H, W, C) or (1, H, W, C); tensor input as
    (H, W), (C, H, W) or (1, C, H, W). When the usual layout's channel axis does
    not hold 1, 3 or 4 channels but the other end does, the other layout is used,
    so NumPy (C, H, W) and tensor (H, W, C) images also work.
    """
    channel_first = isinstance(value, torch.Tensor)
    array = to_numpy(value, name)
    if array.ndim == 4:
        if array.shape[0] != 1:
            raise ValueError(
                f"{name} must hold one example; got a batch of {array.shape[0]} "
                f"(shape {tuple(array.shape)}). Pass {name}[i] instead."
            )
        array = array[0]
    if array.ndim == 2:
        return array[:, :, None]
    if array.ndim != 3:
        raise ValueError(
            f"{name} must have shape (H, W), (H, W, C), (C, H, W) or (1, C, H, W); "
            f"got shape {tuple(array.shape)}"
        )
    first, last = array.shape[0], array.shape[2]
    if channel_first and first not in _CHANNEL_COUNTS and last in _CHANNEL_COUNTS:
        channel_first = False
    elif not channel_first and last not in _CHANNEL_COUNTS and first in _CHANNEL_COUNTS:
        channel_first = True
    if channel_first:
        array = np.ascontiguousarray(array.transpose(1, 2, 0))
    return array


def cumulative_threshold(magnitudes: np.ndarray, percent: float) -> Any:
    """Smallest sorted magnitude at which the running total reaches ``percent`` % of
    the sum (Captum's ``outlier_perc`` rule: values above it saturate)."""
    ascending = np.sort(magnitudes, axis=None)
    running = np.cumsum(ascending)
    target = running[-1] * 0.01 * percent
    index = int(np.searchsorted(running, target, side="left"))
    return ascending[min(index, ascending.size - 1)]


def check_finite(array: np.ndarray, name: str) -> None:
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")


def _per_channel(values: Sequence[float], channels: int, name: str) -> np.ndarray:
    vector = np.asarray(to_numpy(values, name), dtype=np.float64).reshape(-1)
    if vector.size not in (1, channels):
        raise ValueError(
            f"{name} must have one value per image channel ({channels}) or a single "
            f"value; got {vector.size} values"
        )
    return vector


def denormalize(
    image_hwc: np.ndarray,
    mean: Optional[Sequence[float]],
    std: Optional[Sequence[float]],
) -> np.ndarray:
    """Undo ``(x - mean) / std``: returns ``x * std + mean`` per channel (float64)."""
    if mean is None and std is None:
        return image_hwc
    channels = image_hwc.shape[2]
    scale = np.ones(1) if std is None else _per_channel(std, channels, "std")
    shift = np.zeros(1) if mean is None else _per_channel(mean, channels, "mean")
    return image_hwc.astype(np.float64) * scale + shift


def to_uint8(array: np.ndarray, name: str) -> np.ndarray:
    """Pixel values as uint8.

    uint8 stays as is; other integers are 0-255 values (clipped), or 0-1 values when
    none exceeds 1 (as Captum reads any image of maximum 1). A float array is a
    [0, 1] image: scaled by 255 and clipped to [0, 255] whatever its maximum (as
    matplotlib and Captum show floats), so a normalised-and-shifted image slightly
    above 1 keeps its picture. Two float arrays are not [0, 1] images: whole numbers
    above 1 (``uint8_image.astype(float)``) are 0-255 values, and values below -0.5
    (a normalised image whose ``mean``/``std`` were not given) are stretched
    min-to-max, with a warning.
    """
    if array.dtype == np.uint8:
        return array
    check_finite(array, name)
    values = array.astype(np.float64)
    if values.size == 0:
        return values.astype(np.uint8)
    low, high = float(values.min()), float(values.max())
    if not np.issubdtype(array.dtype, np.floating):
        return np.clip(values * (255.0 if high <= 1 else 1.0), 0, 255).astype(np.uint8)
    if high > 1.0 and np.array_equal(values, np.rint(values)):
        pass  # 0-255 values stored as floats
    elif low < -0.5:
        warnings.warn(
            f"{name} has values in [{low:.3g}, {high:.3g}], not an image in [0, 1] or [0, 255]; "
            "it is stretched to [0, 255] for display. Pass mean= and std= to undo input normalisation.",
            stacklevel=3,
        )
        span = high - low
        values = (values - low) * (255.0 / span) if span > 0 else np.zeros_like(values)
    else:
        values = values * 255.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def to_display_image(
    image: Any,
    name: str = "original_image",
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
) -> np.ndarray:
    """An image (any accepted form, optionally normalised) as (H, W, 3) uint8 RGB."""
    hwc = to_hwc(image, name)
    channels = hwc.shape[2]
    if channels not in _CHANNEL_COUNTS:
        raise ValueError(
            f"{name} must have 1 (grayscale), 3 (RGB) or 4 (RGBA) channels; "
            f"got shape {tuple(hwc.shape)}"
        )
    if hwc.dtype == bool:
        hwc = hwc.astype(np.uint8) * 255
    pixels = to_uint8(denormalize(hwc, mean, std), name)
    if channels == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    elif channels == 4:
        pixels = pixels[:, :, :3]
    return np.ascontiguousarray(pixels)


def check_choice(value: Any, choices: Sequence[str], name: str) -> str:
    if not isinstance(value, str) or value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {options}; got {value!r}")
    return value


def check_fraction(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise ValueError(f"{name} must be a number in [0, 1]; got {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1]; got {value!r}")
    return float(value)
