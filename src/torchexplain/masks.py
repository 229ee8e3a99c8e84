"""Feature masks for images: integer tensors usable as ``feature_mask``.

``grid`` cuts the image plane into rectangular cells; ``superpixels`` segments each
image with SLIC (scikit-image, the optional extra ``torchexplain[masks]``). Both return
masks whose ids start at 0 and that broadcast over the channels (and, for a single
image, over the batch).
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor


def _positive_ints(value, n: int, name: str) -> tuple[int, ...]:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value,) * n
    if (
        not isinstance(value, (tuple, list))
        or len(value) != n
        or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in value)
    ):
        raise ValueError(f"{name} must be a positive int or a tuple of {n} positive ints; got {value!r}")
    return tuple(int(v) for v in value)


def grid(shape, cell, device=None) -> Tensor:
    """Integer mask of rectangular cells over the last two dimensions of ``shape``.

    ``shape`` is ``(H, W)``, any longer shape such as ``(N, C, H, W)`` (or a tensor,
    whose shape is used); ``cell`` is an int or ``(cell_h, cell_w)``. Cells are numbered
    row by row from 0; the last row and column of cells are cut off at the border when
    the cell does not divide the size. The mask has shape ``(H, W)`` for a 2-D shape and
    ``(1, ..., 1, H, W)`` otherwise, so it broadcasts over batch and channels.
    """
    if isinstance(shape, Tensor):
        device = shape.device if device is None else device
        shape = tuple(shape.shape)
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if (
        not isinstance(shape, (tuple, list))
        or len(shape) < 2
        or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in shape)
    ):
        raise ValueError(f"shape must be a tuple of at least two positive ints (..., H, W); got {shape!r}")
    height, width = int(shape[-2]), int(shape[-1])
    ch, cw = _positive_ints(cell, 2, "cell")
    cols = -(-width // cw)
    rows = torch.arange(height, device=device) // ch
    columns = torch.arange(width, device=device) // cw
    mask = rows.unsqueeze(1) * cols + columns.unsqueeze(0)
    return mask.reshape((1,) * (len(shape) - 2) + (height, width))


def _slic():
    try:
        from skimage.segmentation import slic
    except ImportError:
        raise ImportError(
            "torchexplain.masks.superpixels needs scikit-image: pip install 'torchexplain[masks]' "
            "(or pip install scikit-image)"
        ) from None
    return slic


def _segment(image: Tensor, n_segments: int, compactness: float, slic_kwargs: dict) -> Tensor:
    """SLIC labels ``(H, W)`` of one channel-first image ``(C, H, W)``, ids 0 .. k-1."""
    import numpy as np

    data = image.detach().to("cpu", torch.float64)
    low, high = data.min(), data.max()
    data = (data - low) / (high - low) if high > low else torch.zeros_like(data)
    array = np.ascontiguousarray(data.permute(1, 2, 0).numpy())
    channels = array.shape[-1]
    kwargs = dict(start_label=0, convert2lab=channels == 3)
    kwargs.update(slic_kwargs)
    if channels == 1:
        labels = _slic()(array[..., 0], n_segments=n_segments, compactness=compactness, channel_axis=None, **kwargs)
    else:
        labels = _slic()(array, n_segments=n_segments, compactness=compactness, channel_axis=-1, **kwargs)
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    return torch.unique(labels, return_inverse=True)[1]  # consecutive ids from 0


def superpixels(image, n_segments: int = 50, compactness: float = 10.0, **slic_kwargs) -> Tensor:
    """SLIC superpixels (Achanta et al. 2012) as an integer feature mask.

    ``image`` is channel-first: ``(H, W)``, ``(C, H, W)`` or a batch ``(N, C, H, W)``;
    each image is min-max scaled to [0, 1] before segmentation (3-channel images are
    segmented in Lab colour, as scikit-image does by default). ``n_segments`` is the
    approximate number of superpixels; other keyword arguments go to
    ``skimage.segmentation.slic``. Returns a long mask on the image's device with ids
    0 .. k-1: ``(H, W)`` for a 2-D image, ``(1, H, W)`` for ``(C, H, W)`` (it
    broadcasts over the batch) and ``(N, 1, H, W)`` for a batch, where each image has
    its own segmentation (a per-example ``feature_mask``).
    """
    if isinstance(n_segments, bool) or not isinstance(n_segments, numbers.Integral) or n_segments < 1:
        raise ValueError(f"n_segments must be a positive int; got {n_segments!r}")
    _slic()  # fail early, before any work, when scikit-image is missing
    if not isinstance(image, Tensor):
        image = torch.as_tensor(image)
    if image.dim() not in (2, 3, 4) or image.numel() == 0:
        raise ValueError(
            f"image must be channel-first (H, W), (C, H, W) or (N, C, H, W); got shape {tuple(image.shape)}"
        )
    if image.is_complex():
        raise ValueError(f"image must be real-valued; got dtype {image.dtype}")
    if image.dim() == 2:
        return _segment(image.unsqueeze(0), n_segments, compactness, slic_kwargs).to(image.device)
    if image.dim() == 3:
        return _segment(image, n_segments, compactness, slic_kwargs).unsqueeze(0).to(image.device)
    labels = [_segment(img, n_segments, compactness, slic_kwargs) for img in image]
    return torch.stack(labels).unsqueeze(1).to(image.device)
