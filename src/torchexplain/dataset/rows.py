"""The columns of one result row (:mod:`torchexplain.dataset.schema`): what the model
predicted for an example, and each method's summary of its attribution map.

For a map ``A`` (C, H, W) of an explained class: ``total = sum(A)``; ``top`` the
``top_k`` positions of the largest ``|sum_c A|`` in H*W row-major order (largest
first, ties by position); ``thumb`` = ``sum_c A`` average-pooled (adaptive) to at most
``thumb`` x ``thumb``; with ``store="full"``, ``map`` = ``A`` as float16 bytes (a map
with one channel for a multi-channel input, as CAMs give, is repeated over the channels
so that it has the row's ``shape``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .schema import encode_map, method_column


def thumb_shape(shape: tuple, thumb: int) -> list[int]:
    """(h, w) of the thumbnails of inputs of ``shape`` (C, H, W)."""
    return [min(thumb, int(shape[-2])), min(thumb, int(shape[-1]))]


def prediction_fields(item, output: Tensor, target: int, shape: tuple, thumb: int) -> dict:
    """The example's columns: id, path, label, the predicted class and its softmax
    probability, the explained class, its rank among the outputs (0 = the top one) and
    probability, the input's shape and the thumbnails' shape."""
    scores = output.detach().double().cpu()
    probs = torch.softmax(scores, 0)
    predicted = int(scores.argmax())
    return {
        "id": item.id, "path": item.path, "label": item.label, "predicted": predicted,
        "probability": float(probs[predicted]), "target": int(target),
        "rank": int((scores > scores[target]).sum()), "target_probability": float(probs[target]),
        "shape": [int(s) for s in shape], "thumb_shape": thumb_shape(shape, thumb),
    }


def channel_sum(a: Tensor) -> Tensor:
    """A map's (H, W) channel sum (a 2-D map is its own)."""
    return a.sum(0) if a.dim() == 3 else a.reshape(a.shape[-2:])


def top_positions(summed: Tensor, k: int) -> list[int]:
    """The ``k`` positions of the largest ``|summed|`` (flattened), largest first."""
    flat = summed.abs().reshape(-1)
    order = torch.argsort(flat, descending=True, stable=True)
    return order[: min(k, flat.numel())].tolist()


def thumbnail(summed: Tensor, size: list[int]) -> list[float]:
    return F.adaptive_avg_pool2d(summed[None, None].float(), tuple(size)).reshape(-1).tolist()


def method_fields(name: str, a: Tensor, delta, seconds: float, shape: tuple, top_k: int, thumb: int,
                  full: bool) -> dict:
    """One method's columns for one row (``a``: its (C, H, W) map, on the CPU)."""
    if a.dim() == 2:
        a = a.unsqueeze(0)
    if a.dim() != 3 or tuple(a.shape[-2:]) != tuple(shape[-2:]):
        raise ValueError(f"{name} gave a map of shape {tuple(a.shape)} for an input of shape {tuple(shape)}")
    summed = channel_sum(a.double())
    fields = {
        method_column(name, "total"): float(a.double().sum()),
        method_column(name, "top"): top_positions(summed, top_k),
        method_column(name, "delta"): None if delta is None else float(delta),
        method_column(name, "seconds"): float(seconds),
        method_column(name, "thumb"): thumbnail(summed, thumb_shape(shape, thumb)),
    }
    if full:
        fields[method_column(name, "map")] = encode_map(a.expand(*shape).numpy())
    return fields
