"""Image segments as interpretable features (Captum 0.9's ``ImageMaskInput``)."""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .interpretable_input import InterpretableInput, scatter_by_mask


def _identity(image):
    return image


def _check_pil(image):
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow ships with the vision extra
        raise ImportError("ImageMaskInput needs Pillow (pip install pillow)") from None
    if not isinstance(image, Image.Image):
        raise TypeError(f"image must be a PIL.Image.Image (e.g. PIL.Image.open(path)); got {type(image).__name__}")
    return Image


class ImageMaskInput(InterpretableInput):
    """An image whose interpretable features are segments of pixels.

    Args:
        image: a PIL image.
        mask: an integer tensor ``(H, W)`` giving each pixel its segment id (pixels
            sharing an id are one feature); None: the whole image is one feature.
        mask_list: instead of ``mask``, a list of boolean ``(H, W)`` masks, one per
            feature (features may overlap); ``mask`` is then ignored.
        baseline: the colour of absent pixels, an RGB tuple (or one value for
            single-channel images); white by default.
        processor_fn: turns the (perturbed) PIL image into the model's input (e.g. a
            multimodal processor); identity by default.

    ``to_model_input(z)`` paints every pixel of the absent features of ``z``'s first
    row with ``baseline`` and returns ``processor_fn`` of that image. ``format_attr``
    returns the per-feature attributions; ``format_pixel_attr`` spreads them over the
    pixels ``(..., H, W)`` (overlapping features of ``mask_list`` add up).
    """

    def __init__(
        self,
        image,
        mask: Optional[Tensor] = None,
        mask_list: Optional[List[Tensor]] = None,
        baseline: Union[Tuple[int, int, int], int] = (255, 255, 255),
        processor_fn: Callable[[Any], Any] = _identity,
    ) -> None:
        _check_pil(image)
        if not callable(processor_fn):
            raise TypeError(f"processor_fn must be callable; got {type(processor_fn).__name__}")
        self.image = image
        self.baseline = baseline
        self.processor_fn = processor_fn
        shape = (image.size[1], image.size[0])
        if mask_list is not None:
            self.mask_list = [self._check_mask(m, shape, f"mask_list[{i}]").bool() for i, m in enumerate(mask_list)]
            if not self.mask_list:
                raise ValueError("mask_list must hold at least one mask")
            self.mask = torch.empty(0)
            ids: List[int] = list(range(len(self.mask_list)))
        else:
            self.mask_list = []
            self.mask = torch.zeros(shape, dtype=torch.int32) if mask is None else self._check_mask(mask, shape, "mask")
            ids = [int(m) for m in torch.unique(self.mask).tolist()]
        self.n_itp_features = len(ids)
        self.mask_id_to_idx = {int(m): i for i, m in enumerate(ids)}
        self.values = [f"image_feature_{m}" for m in ids]
        self._pixels = self._pixel_array()
        self.original_model_inputs = processor_fn(image)

    @staticmethod
    def _check_mask(mask, shape: Tuple[int, int], name: str) -> Tensor:
        if not isinstance(mask, Tensor):
            raise TypeError(f"{name} must be a tensor of shape {shape} (height, width); got {type(mask).__name__}")
        if tuple(mask.shape) != shape:
            raise ValueError(f"{name} must have the image's shape {shape} (height, width); got {tuple(mask.shape)}")
        if mask.is_floating_point():
            raise ValueError(f"{name} must hold integer segment ids (or booleans); got dtype {mask.dtype}")
        return mask.cpu()

    def _pixel_array(self) -> np.ndarray:
        """The image's pixels, and the fill of absent pixels (``self._fill``)."""
        pixels = np.array(self.image)
        fill = np.asarray(self.baseline, dtype=np.float64).reshape(-1)
        channels = 1 if pixels.ndim == 2 else pixels.shape[2]
        if pixels.ndim == 2 and fill.size == 3:  # an RGB colour on a one-channel image: its luma (as PIL's "L")
            fill = fill @ np.array([0.299, 0.587, 0.114])
        elif fill.size not in (1, channels):
            raise ValueError(
                f"baseline must give one value per image channel ({channels}) or a single value; got {self.baseline!r}"
            )
        self._fill = np.rint(fill).reshape(()) if pixels.ndim == 2 else np.rint(fill)
        return pixels

    def _index_map(self) -> Tensor:
        """Each pixel's feature index (for ``mask``)."""
        ids = torch.tensor(list(self.mask_id_to_idx), dtype=torch.long)
        return torch.searchsorted(ids, self.mask.long().contiguous())

    def to_tensor(self) -> Tensor:
        return torch.ones((1, self.n_itp_features))

    def absent_pixels(self, perturbed_tensor: Tensor) -> Tensor:
        """Bool ``(H, W)``: the pixels of the features that row 0 of ``perturbed_tensor`` removes."""
        z = torch.as_tensor(perturbed_tensor).reshape(-1, self.n_itp_features)[0].cpu()
        absent = z == 0
        if self.mask_list:
            stacked = torch.stack(self.mask_list)
            return (stacked & absent.view(-1, 1, 1)).any(0)
        return absent[self._index_map()]

    def to_model_input(self, perturbed_tensor: Optional[Tensor] = None) -> Any:
        if perturbed_tensor is None:
            return self.original_model_inputs
        Image = _check_pil(self.image)
        pixels = self._pixels.copy()
        pixels[self.absent_pixels(perturbed_tensor).numpy()] = self._fill
        return self.processor_fn(Image.fromarray(pixels.astype(np.uint8)))

    def get_mask_list(self) -> List[Tensor]:
        """One boolean ``(H, W)`` mask per interpretable feature."""
        return self.mask_list or [self.mask == m for m in self.mask_id_to_idx]

    def format_attr(self, itp_attr: Tensor) -> Tensor:
        return itp_attr

    def format_pixel_attr(self, itp_attr: Tensor) -> Tensor:
        """``(..., n_itp_features)`` attributions spread over pixels: ``(..., H, W)``."""
        if self.mask_list:
            masks = torch.stack(self.mask_list).to(itp_attr.device, itp_attr.dtype)
            return torch.einsum("...f,fhw->...hw", itp_attr, masks)
        return scatter_by_mask(itp_attr, self._index_map())

    def plot_mask_overlay(self, show: bool = False, border_width: int = 0, show_legends: bool = True):
        """The image with each segment tinted (and outlined when ``border_width > 0``,
        labelled with its id when ``show_legends``); ``(figure, axis)``, or None when
        ``show`` displays it."""
        from ..viz.masks import plot_segments

        labels = [str(m) for m in self.mask_id_to_idx]
        return plot_segments(self.image, self.get_mask_list(), labels, show, border_width, show_legends)


__all__ = ["ImageMaskInput"]
