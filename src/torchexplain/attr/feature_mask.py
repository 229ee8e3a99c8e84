"""Feature masks: the one place that reads Captum 0.9's ``feature_mask`` argument.

A feature mask groups input scalars into features: positions sharing an id are
perturbed together. Ids are global across the input tensors (Captum 0.9), so one
feature may span several inputs. ``None`` makes every scalar of every input its own
feature, numbered input after input.

Each mask is an integer tensor broadcastable to its input: the input's shape, a batch
dimension of 1 (one grouping shared by every example), size-1 dimensions (a mask
``(1, 1, H, W)`` groups all channels of a pixel) or missing leading dimensions
(``(H, W)``). A mask with the batch size as its first dimension groups each example
differently.

``FeatureMask`` turns a per-row choice of features into perturbed rows and per-feature
values back into attributions, both vectorised over features.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def _where(i: int, n_inputs: int) -> str:
    return f"feature_mask[{i}]" if n_inputs > 1 else "feature_mask"


def _check_mask(mask, inp: Tensor, where: str) -> Tensor:
    if not isinstance(mask, Tensor):
        raise TypeError(f"{where} must be an integer tensor; got {type(mask).__name__}")
    if mask.dtype == torch.bool:
        mask = mask.long()
    if mask.is_complex() or (mask.is_floating_point() and not bool((mask == mask.round()).all())):
        raise ValueError(
            f"{where} must hold integer feature ids (an integer dtype such as torch.long, or whole numbers); "
            f"got dtype {mask.dtype}"
        )
    if mask.dim() > inp.dim():
        raise ValueError(
            f"{where} of shape {tuple(mask.shape)} has more dimensions than its input {tuple(inp.shape)}"
        )
    shape = (1,) * (inp.dim() - mask.dim()) + tuple(mask.shape)
    ok = all(m == s or m == 1 for m, s in zip(shape, inp.shape))
    if not ok:
        raise ValueError(
            f"{where} of shape {tuple(mask.shape)} cannot broadcast to its input of shape {tuple(inp.shape)}; "
            "give the input's shape, a batch dimension of 1, or size-1 dimensions to share ids "
            f"(e.g. (1, 1, H, W) for images)"
        )
    return mask.reshape(shape).to(device=inp.device, dtype=torch.long)


def _default_masks(inputs: Sequence[Tensor]) -> list[Tensor]:
    masks, offset = [], 0
    for x in inputs:
        size = x[0:1].numel()  # an empty input gets an empty mask: no features
        masks.append(torch.arange(offset, offset + size, device=x.device).reshape(x[0:1].shape))
        offset += size
    return masks


def format_feature_mask(feature_mask, inputs: Sequence[Tensor]) -> "FeatureMask":
    """Validate ``feature_mask`` (None, a tensor or a tuple of tensors, one per input)
    against the input tuple and return a :class:`FeatureMask`."""
    inputs = tuple(inputs)
    if feature_mask is None:
        return FeatureMask(_default_masks(inputs), inputs)
    parts = tuple(feature_mask) if isinstance(feature_mask, (tuple, list)) else (feature_mask,)
    if len(parts) != len(inputs):
        raise ValueError(
            f"feature_mask must give one mask per input tensor: {len(inputs)} input(s) but {len(parts)} mask(s)"
        )
    return FeatureMask(
        [_check_mask(m, x, _where(i, len(inputs))) for i, (m, x) in enumerate(zip(parts, inputs))], inputs
    )


class FeatureMask:
    """Validated per-input masks and the features they define.

    Attributes:
        masks: per input, the long mask with the input's number of dimensions
            (broadcastable to it; first dimension 1 or the batch size).
        ids: the sorted unique feature ids (1-D long tensor, on CPU).
        n_features: ``len(ids)``.
        index: per input, each position's feature *position* in ``ids`` (0 .. n_features-1).
        present: bool ``(n_inputs, n_features)``: which features occur in which input.
        per_example: whether some mask groups examples differently (first dimension N).
    """

    def __init__(self, masks: Sequence[Tensor], inputs: Sequence[Tensor]):
        self.masks = tuple(masks)
        self.shapes = tuple(tuple(x.shape) for x in inputs)
        self.n = inputs[0].shape[0] if inputs else 0
        flat = [m.reshape(-1).cpu() for m in self.masks]
        self.ids = torch.unique(torch.cat(flat)) if flat else torch.zeros(0, dtype=torch.long)
        self.n_features = int(self.ids.numel())
        self.index = tuple(torch.searchsorted(self.ids.to(m.device), m.contiguous()) for m in self.masks)
        self.present = torch.zeros(len(self.masks), self.n_features, dtype=torch.bool)
        for i, f in enumerate(flat):
            self.present[i, torch.searchsorted(self.ids, f)] = True
        self.per_example = any(m.shape[0] not in (0, 1) and m.shape[0] == self.n for m in self.masks)

    def feature_counts(self) -> Tensor:
        """Number of input scalars (per example, in every input, after broadcasting)
        in each feature: ``(n_features,)`` long, or ``(N, n_features)`` for per-example masks."""
        rows = self.n if self.per_example else 1
        counts = torch.zeros(rows, self.n_features, dtype=torch.long)
        for idx, shape in zip(self.index, self.shapes):
            full = idx.expand((idx.shape[0],) + shape[1:]).reshape(idx.shape[0], -1).cpu()
            counts += (
                torch.zeros(idx.shape[0], self.n_features, dtype=torch.long)
                .scatter_add_(1, full, torch.ones_like(full))
                .expand(rows, -1)
            )
        return counts if self.per_example else counts[0]

    def _row_index(self, i: int, n_rows: int, examples: Tensor | None) -> Tensor:
        """Feature positions of input ``i`` for each row: ``(n_rows or 1, *mask.shape[1:])``."""
        idx = self.index[i]
        if idx.shape[0] != self.n or idx.shape[0] <= 1:
            return idx
        if examples is None:
            raise ValueError("examples (the example index of each row) are required for per-example feature masks")
        return idx.index_select(0, examples.to(idx.device))

    def ablate(
        self,
        inputs_rows: Sequence[Tensor],
        baselines_rows: Sequence[Tensor],
        replaced: Tensor,
        examples: Tensor | None = None,
    ) -> tuple[Tensor, ...]:
        """Perturbed rows: ``replaced`` is bool ``(R, n_features)``, True where the
        feature is REPLACED by the baseline (False keeps the input's value).

        ``inputs_rows[i]`` is ``(R, *input.shape[1:])``; ``baselines_rows[i]`` is
        broadcastable to it (``(R, ...)`` or ``(1, ...)``); ``examples`` (``(R,)``) is
        each row's example index, needed only for per-example masks. Inputs without
        any replaced feature are returned unchanged (not copied).
        """
        replaced = replaced.to(torch.bool)
        n_rows = replaced.shape[0]
        out = []
        for i, (x, b) in enumerate(zip(inputs_rows, baselines_rows)):
            present = self.present[i].to(replaced.device)
            if x.numel() == 0 or not bool(replaced[:, present].any()):
                out.append(x)
                continue
            idx = self._row_index(i, n_rows, examples)
            if x.shape[0] != n_rows:  # not batched (a whole-batch model): every row perturbs it alike
                out.append(torch.where(replaced[0].to(idx.device)[idx].to(x.device), b, x))
                continue
            flat = idx.reshape(idx.shape[0], -1).expand(n_rows, -1)
            chosen = replaced.to(idx.device).gather(1, flat).view((n_rows,) + tuple(idx.shape[1:]))
            out.append(torch.where(chosen.to(x.device), b, x))
        return tuple(out)

    def ablate_features(
        self,
        inputs_rows: Sequence[Tensor],
        baselines_rows: Sequence[Tensor],
        features: Tensor,
        examples: Tensor | None = None,
    ) -> tuple[Tensor, ...]:
        """Rows with ONE feature replaced each: ``features`` is long ``(R,)``, the
        position (in ``ids``) of the feature each row replaces, or -1 for none. The
        same as :meth:`ablate` with one-hot rows, without building them."""
        n_rows = features.shape[0]
        out = []
        for i, (x, b) in enumerate(zip(inputs_rows, baselines_rows)):
            here = self.present[i].to(features.device)[features.clamp_min(0)] & (features >= 0)
            if x.numel() == 0 or not bool(here.any()):
                out.append(x)
                continue
            idx = self._row_index(i, n_rows, examples)
            if x.shape[0] != n_rows:  # not batched (a whole-batch model): every row perturbs it alike
                out.append(torch.where((idx == int(features[0])).to(x.device), b, x))
                continue
            wanted = features.to(idx.device).view((n_rows,) + (1,) * (idx.dim() - 1))
            out.append(torch.where((idx == wanted).to(x.device), b, x))
        return tuple(out)

    def expand(
        self, values: Tensor, examples: Tensor | None = None, dtype: torch.dtype | None = None
    ) -> tuple[Tensor, ...]:
        """Scatter per-feature values ``(N, n_features)`` to attributions in the
        inputs' shapes: every position gets its feature's value."""
        n_rows = values.shape[0]
        if examples is None and self.per_example:
            examples = torch.arange(n_rows)
        out = []
        for i, shape in enumerate(self.shapes):
            if self.index[i].numel() == 0:  # an empty input
                out.append(values.new_zeros((n_rows,) + shape[1:], dtype=dtype or values.dtype))
                continue
            idx = self._row_index(i, n_rows, examples)
            if idx.shape[0] not in (1, n_rows):  # an unbatched input: its mask's first row
                idx = idx[:1]
            flat = idx.reshape(idx.shape[0], -1).to(values.device).expand(n_rows, -1)
            per_pos = values.gather(1, flat).view((n_rows,) + tuple(idx.shape[1:]))
            full = per_pos.expand((n_rows,) + shape[1:]).contiguous()
            out.append(full if dtype is None else full.to(dtype))
        return tuple(out)
