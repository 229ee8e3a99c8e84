"""When Occlusion and FeatureAblation run incrementally, and how their rows are handed
to the engine of :mod:`torchexplain.core.incremental`.

``incremental="auto"`` (the default) uses it for one floating-point input of shape
``(batch, channels, *spatial)`` with at least :data:`AUTO_MIN_POSITIONS` spatial
positions, whose perturbed boxes are small against the input; it
stops after the unperturbed batch when the model's first call has no rule (nothing to
save). ``True`` insists (a ValueError says why it cannot apply); ``False`` opts out;
``"approximate"`` caps each layer's change at ``projective_field_threshold`` of the
layer per dimension (Krypton's approximate inference: faster, not exact).
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from .. import config
from ..core.incremental import CACHE_SHARE, WHOLE_FRACTION, Engine, IncrementalReport

MODES = ("auto", True, False, "approximate")
#: Krypton's projective-field threshold for approximate mode
DEFAULT_THRESHOLD = 0.4
#: "auto" needs this many spatial positions: below, the per-call bookkeeping outweighs
#: what it saves (the bundled 32x32 digits CNN runs at 0.94x of the full path; a
#: 64x64 resnet18 at 1.5x)
AUTO_MIN_POSITIONS = 48 * 48


class Incremental:
    """One call's incremental state: ``engine`` is None when the rows run in full.

    ``box_fraction`` is the share of the input's spatial extent a perturbed box covers
    (the largest box); ``mode`` and ``threshold`` are the method's arguments."""

    def __init__(self, mode, threshold, inputs: tuple[Tensor, ...], adapter, box_fraction: float):
        if not (isinstance(mode, bool) or (isinstance(mode, str) and mode in MODES)):
            raise ValueError(f'incremental must be "auto", True, False or "approximate"; got {mode!r}')
        if threshold is None:
            threshold = DEFAULT_THRESHOLD
        if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not 0 < threshold <= 1:
            raise ValueError(f"projective_field_threshold must be a number in (0, 1]; got {threshold!r}")
        self.mode, self.engine = mode, None
        if mode is False:
            return
        reason = _not_applicable(inputs, adapter, box_fraction)
        if reason is None and mode == "auto" and math.prod(inputs[0].shape[2:]) < AUTO_MIN_POSITIONS:
            return  # too small to pay for the bookkeeping
        if reason is not None:
            if mode is True or mode == "approximate":
                raise ValueError(f"incremental={mode!r} cannot apply: {reason}")
            return
        x = inputs[0]
        budget = config.resolve_memory_budget(x.device)
        approximate = mode == "approximate"
        self.engine = Engine(x, threshold if approximate else 1.0, cache_limit=CACHE_SHARE * budget,
                             mode="approximate" if approximate else "exact")

    def cached_bytes(self) -> int:
        """The unperturbed activations kept so far (left out of the chunks' budget)."""
        return 0 if self.engine is None else self.engine.report.cached_bytes

    @property
    def report(self) -> IncrementalReport | None:
        return None if self.engine is None else self.engine.report

    def rows(self, rows: tuple[Tensor, ...], examples: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, ...]:
        """The model's inputs for perturbed ``rows`` that differ from their examples
        only in the boxes ``[lo, hi)`` (``(R, spatial dims)``)."""
        if self.engine is None:
            return rows
        if self.mode == "auto" and self.engine.batches == 1 and self.engine.report.incremental_ops == 0:
            self.engine = None  # the model's first call already needed the rows in full
            return rows
        return (self.engine.rows(rows[0], examples, lo, hi),)


def _not_applicable(inputs, adapter, box_fraction: float) -> str | None:
    if len(inputs) != 1:
        return f"it takes one input tensor; got {len(inputs)}"
    x = inputs[0]
    if not x.is_floating_point() or x.dim() < 3:
        return f"it needs a floating-point input of shape (batch, channels, *spatial); got {x.dtype} {tuple(x.shape)}"
    if adapter.futures:
        return "forward_func returns futures"
    if box_fraction >= WHOLE_FRACTION:
        return f"each perturbation covers {box_fraction:.0%} of the input, which leaves nothing to save"
    return None


def box_share(lo: Tensor, hi: Tensor, spatial) -> float:
    """The largest box's share of the spatial extent."""
    if lo.numel() == 0:
        return 0.0
    return float((hi - lo).clamp_min(0).prod(1).max()) / max(1, math.prod(spatial))


class FeatureBoxes:
    """The bounding box of every feature of a one-input feature mask, for
    :meth:`Incremental.rows`: ``lo, hi`` ``(mask rows, n_features, spatial dims)``."""

    def __init__(self, fm, x: Tensor):
        index = fm.index[0]
        if x.dim() < 3:
            self.lo = self.hi = torch.zeros(1, fm.n_features, 0, dtype=torch.long)
            self.share = 1.0
            return
        index = index.expand((index.shape[0], index.shape[1]) + tuple(x.shape[2:]))
        self.lo, self.hi = _boxes(index, fm.n_features)
        self.share = box_share(self.lo.flatten(0, 1), self.hi.flatten(0, 1), x.shape[2:])

    def of(self, features: Tensor, examples: Tensor) -> tuple[Tensor, Tensor]:
        """Boxes of rows perturbing ``features`` (-1: none) of ``examples``."""
        rows = examples if self.lo.shape[0] > 1 else torch.zeros_like(examples)
        f = features.clamp_min(0)
        keep = (features >= 0).view(-1, 1).to(self.lo.device)
        rows, f = rows.to(self.lo.device), f.to(self.lo.device)
        return self.lo[rows, f] * keep, self.hi[rows, f] * keep


def _boxes(index: Tensor, n_features: int) -> tuple[Tensor, Tensor]:
    """Bounding boxes of the features in ``index`` ``(M, C, *spatial)`` (feature
    positions): ``lo, hi`` ``(M, n_features, k)``."""
    m, k = index.shape[0], index.dim() - 2
    spatial = index.shape[2:]
    flat = index.reshape(m, -1)
    lo = torch.zeros(m, n_features, k, dtype=torch.long, device=index.device)
    hi = torch.zeros_like(lo)
    for d in range(k):
        shape = [1] * (k + 2)
        shape[2 + d] = spatial[d]
        coord = torch.arange(spatial[d], device=index.device).view(shape).expand(index.shape).reshape(m, -1)
        low = torch.full((m, n_features), spatial[d], dtype=torch.long, device=index.device)
        high = torch.full((m, n_features), -1, dtype=torch.long, device=index.device)
        lo[..., d] = low.scatter_reduce(1, flat, coord, "amin")
        hi[..., d] = high.scatter_reduce(1, flat, coord, "amax") + 1
    return lo, hi
