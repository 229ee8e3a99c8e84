"""Turning one image in any common form into the tensor a bundled model takes.

Accepted forms: a PIL image, a path (``str`` or ``os.PathLike``), a NumPy array
(H, W) or (H, W, C) and a torch tensor (H, W), (C, H, W) or (1, C, H, W), with C one
of 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA). Alpha is dropped; colour becomes
gray with the ITU-R 601-2 luma weights (as PIL's ``convert("L")``). Integer images
are uint8 (0..255) or uint16 (0..65535); float images must already lie in [0, 1].
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ..loading import load_image
from .digits import resize

_LUMA = (0.299, 0.587, 0.114)
_FORMS = "a PIL image, a path, a numpy array (H, W) or (H, W, C) or a torch tensor (H, W), (C, H, W) or (1, C, H, W)"
# PIL modes read as arrays directly; every other mode is converted to RGB first
_DIRECT_MODES = {"L", "LA", "RGB", "RGBA", "F", "I;16", "I;16L", "I;16B"}


def _pil_to_array(im) -> np.ndarray:
    if im.mode not in _DIRECT_MODES:
        im = im.convert("RGB")
    arr = np.asarray(im)
    if im.mode.startswith("I;16"):
        arr = arr.astype(np.uint16)
    return arr


def _scale(x: torch.Tensor, given: str) -> torch.Tensor:
    """``x`` as float32 values in [0, 1]."""
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    if x.dtype == getattr(torch, "uint16", None):
        return x.float() / 65535.0
    if x.dtype == torch.bool:
        return x.float()
    if not x.is_floating_point():
        raise ValueError(f"image: expected uint8, uint16, bool or float values, got {given} of dtype {x.dtype}")
    x = x.float()
    if x.numel() and not torch.isfinite(x).all():
        raise ValueError(f"image: expected finite values, got {given} with NaN or infinity")
    lo, hi = (x.min().item(), x.max().item()) if x.numel() else (0.0, 0.0)
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(
            f"image: float images must lie in [0, 1], got {given} with values in [{lo:g}, {hi:g}] "
            "(divide by the maximum value, e.g. 16 for sklearn's load_digits, or pass uint8)"
        )
    return x.clamp(0.0, 1.0)


def _to_gray(chw: torch.Tensor, given: str) -> torch.Tensor:
    """(C, H, W) with C in 1..4 -> (H, W)."""
    c = chw.shape[0]
    if c in (1, 2):
        return chw[0]
    if c in (3, 4):
        r, g, b = chw[0], chw[1], chw[2]
        return _LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b
    raise ValueError(f"image: expected 1, 2, 3 or 4 channels, got {given}")


def to_gray01(image) -> torch.Tensor:
    """One image in any accepted form as a (H, W) float32 tensor of [0, 1] values."""
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        image = load_image(image)
    if isinstance(image, Image.Image):
        image = _pil_to_array(image)
    if isinstance(image, np.ndarray):
        given = f"a numpy array of shape {image.shape}"
        if image.ndim == 3:
            image = np.moveaxis(image, -1, 0)  # HWC -> CHW
        elif image.ndim != 2:
            raise ValueError(f"image: expected a numpy array (H, W) or (H, W, C), got {given}")
        if image.dtype.kind not in "biuf":
            raise ValueError(f"image: expected numeric values, got {given} of dtype {image.dtype}")
        if image.dtype == np.uint16:  # (torch before 2.3 has no uint16)
            image = image.astype(np.float32) / 65535.0
        image = torch.from_numpy(np.array(image, order="C"))  # a writable copy
    elif isinstance(image, torch.Tensor):
        given = f"a tensor of shape {tuple(image.shape)}"
        image = image.detach()
        if image.ndim == 4 and image.shape[0] == 1:
            image = image[0]
        elif image.ndim not in (2, 3):
            raise ValueError(f"image: expected a tensor (H, W), (C, H, W) or (1, C, H, W), got {given}")
    else:
        raise TypeError(f"image: expected {_FORMS}, got {type(image).__name__}")
    if image.ndim == 2:
        image = image.unsqueeze(0)
    if image.shape[-1] == 0 or image.shape[-2] == 0:
        raise ValueError(f"image: expected a non-empty image, got {given}")
    return _to_gray(_scale(image, given), given)


class Preprocess:
    """Callable: one image (see module docstring) -> normalised float32 tensor of shape
    (1, size, size) on ``device``, ready for ``model(x.unsqueeze(0))``."""

    def __init__(self, mean: float, std: float, size: int, device: torch.device | str = "cpu"):
        self.mean, self.std, self.size, self.device = mean, std, size, torch.device(device)

    def __call__(self, image) -> torch.Tensor:
        gray = to_gray01(image)
        x = resize(gray[None, None], self.size)[0]
        return ((x - self.mean) / self.std).to(self.device)

    def __repr__(self) -> str:
        return (
            f"Preprocess(gray, resize {self.size}x{self.size}, [0, 1], mean={self.mean}, std={self.std}, "
            f"device={str(self.device)!r})"
        )
