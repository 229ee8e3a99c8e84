"""Occlusion (Zeiler & Fergus 2014): slide a baseline patch over each input.

Captum's semantics: the first window sits at index 0 of every dimension and moves by
the stride until the dimension is covered, so the last window of a dimension may be cut
off at the border. Each window's attribution is ``F(x) - F(x occluded)``; a scalar's
attribution is the mean over the windows that cover it.

Every window of every example runs through the batched forward-only evaluator. The
windows form a grid per dimension, so the scattering of window values back onto the
input is a product of per-dimension window-membership matrices: one tensor contraction
per dimension instead of a loop over windows.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from ..core.inputs import format_output
from ..core.registry import occlusion_window, register
from .ablation import perturbation_baselines
from .blocks import Blocks, PerturbationAttribution, example_rows, then


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _format_windows(sliding_window_shapes, inputs) -> list[tuple[int, ...]]:
    name = "sliding_window_shapes"
    shapes = sliding_window_shapes
    if not isinstance(shapes, (tuple, list)) or len(shapes) == 0:
        raise ValueError(f"{name} must be a tuple of ints (one per non-batch input dimension); got {shapes!r}")
    if _is_int(shapes[0]):
        shapes = (shapes,)
    if len(shapes) != len(inputs):
        raise ValueError(
            f"{name} must give one window shape per input tensor: {len(inputs)} input(s), got {len(shapes)}"
        )
    out = []
    for i, (w, x) in enumerate(zip(shapes, inputs)):
        where = f"{name}[{i}]" if len(inputs) > 1 else name
        dims = tuple(x.shape[1:])
        if not isinstance(w, (tuple, list)) or not all(_is_int(v) for v in w) or len(w) != len(dims):
            raise ValueError(
                f"{where} must be a tuple of {len(dims)} ints for an input of shape {tuple(x.shape)}; got {w!r}"
            )
        if any(v < 1 for v in w):
            raise ValueError(f"{where} must be positive; got {tuple(w)}")
        if any(v > s for v, s in zip(w, dims)):
            raise ValueError(
                f"{where} {tuple(w)} is larger than the input (per-example shape {dims}); "
                "every window dimension must fit in the input"
            )
        out.append(tuple(int(v) for v in w))
    return out


def _format_strides(strides, inputs, windows) -> list[tuple[int, ...]]:
    name = "strides"
    if strides is None:
        strides = tuple(1 for _ in inputs)
    if len(inputs) == 1 and not (isinstance(strides, (tuple, list)) and len(strides) == 1):
        strides = (strides,)
    if not isinstance(strides, (tuple, list)) or len(strides) != len(inputs):
        raise ValueError(f"strides must give one entry per input tensor: {len(inputs)} input(s), got {strides!r}")
    out = []
    for i, (s, x, w) in enumerate(zip(strides, inputs, windows)):
        where = f"{name}[{i}]" if len(inputs) > 1 else name
        dims = tuple(x.shape[1:])
        if _is_int(s):
            s = (s,) * len(dims)
        if not isinstance(s, (tuple, list)) or not all(_is_int(v) for v in s) or len(s) != len(dims):
            raise ValueError(
                f"{where} must be an int or a tuple of {len(dims)} ints for an input of shape {tuple(x.shape)}; "
                f"got {s!r}"
            )
        if any(v < 1 for v in s):
            raise ValueError(f"{where} must be positive; got {tuple(s)}")
        for d, (sd, wd, size) in enumerate(zip(s, w, dims)):
            if wd < size and sd > wd:
                raise ValueError(
                    f"{where} {tuple(s)} is larger than the window {w} in dimension {d + 1}, "
                    "which would leave input scalars uncovered"
                )
        out.append(tuple(int(v) for v in s))
    return out


class _Grid:
    """The windows of one input: per dimension, the start of each window position."""

    def __init__(self, window: tuple[int, ...], stride: tuple[int, ...], dims: tuple[int, ...]):
        self.window, self.stride, self.dims = window, stride, dims
        self.counts = tuple(math.ceil((s - w) / st) + 1 for s, w, st in zip(dims, window, stride))
        self.n_windows = math.prod(self.counts)

    def membership(self, d: int, device) -> Tensor:
        """Bool ``(counts[d], dims[d])``: which positions window position ``k`` covers."""
        starts = torch.arange(self.counts[d], device=device).unsqueeze(1) * self.stride[d]
        pos = torch.arange(self.dims[d], device=device).unsqueeze(0)
        return (pos >= starts) & (pos < starts + self.window[d])

    def covered(self, local: Tensor, valid: Tensor, device) -> Tensor:
        """Bool ``(R, *dims)``: the scalars each row's window covers (none where not ``valid``)."""
        n_rows, n_dims = local.shape[0], len(self.dims)
        mask = valid.to(device).view((n_rows,) + (1,) * n_dims)
        rest = local.clone()
        for d in reversed(range(n_dims)):  # C order: the last dimension moves fastest
            k = (rest % self.counts[d]).to(device)
            rest = rest // self.counts[d]
            inside = self.membership(d, device)[k]  # (R, dims[d])
            shape = [n_rows] + [1] * n_dims
            shape[1 + d] = self.dims[d]
            mask = mask & inside.view(shape)
        return mask

    def scatter(self, window_values: Tensor) -> Tensor:
        """Mean over covering windows: ``(rows, n_windows)`` -> ``(rows, *dims)``."""
        n = window_values.shape[0]
        total = window_values.reshape((n,) + self.counts)
        count = torch.ones((), dtype=window_values.dtype, device=window_values.device)
        for d in range(len(self.dims)):
            member = self.membership(d, window_values.device).to(window_values.dtype)
            total = torch.tensordot(total, member, dims=([1], [0]))  # contracts dim d, appends dims[d]
            count = count.unsqueeze(-1) * member.sum(0)
        return total / count


@register("occlusion", order=110, defaults=occlusion_window, description="occlusion by a sliding zero window")
class Occlusion(PerturbationAttribution):
    """Occlusion with Captum's arguments and values: ``sliding_window_shapes`` (one
    tuple per input, without the batch dimension), ``strides`` (int or tuple per input,
    default 1) and ``baselines`` (the occluding value). ``perturbations_per_eval="auto"``
    batches the windows from the memory budget; an int is Captum's windows per forward.
    """

    def attribute(
        self,
        inputs,
        sliding_window_shapes,
        strides=None,
        baselines=None,
        target=None,
        additional_forward_args=None,
        perturbations_per_eval="auto",
        show_progress: bool = False,
        forward_kwargs=None,
    ):
        inputs, is_tuple, adapter, fm = self._setup(inputs, target, additional_forward_args, forward_kwargs, None)
        windows = _format_windows(sliding_window_shapes, inputs)
        grids = [
            _Grid(w, s, tuple(x.shape[1:]))
            for w, s, x in zip(windows, _format_strides(strides, inputs, windows), inputs)
        ]
        baselines, n = perturbation_baselines(baselines, inputs), adapter.n
        offsets = [1]  # block 0 is the unoccluded inputs
        for g in grids:
            offsets.append(offsets[-1] + g.n_windows)

        def build(blocks: Tensor, examples: Tensor):
            out = []
            for x, b, g, first in zip(inputs, baselines, grids, offsets):
                rows = example_rows(x, examples, n)
                local = blocks - first
                valid = (local >= 0) & (local < g.n_windows)
                if not bool(valid.any()):
                    out.append(rows)
                    continue
                covered = g.covered(local.clamp(0, g.n_windows - 1), valid, x.device)
                if rows.shape[0] != len(blocks):  # not batched (a whole-batch model): one block per call
                    covered = covered[:1]
                out.append(torch.where(covered, example_rows(b, examples, n), rows))
            return tuple(out)

        def finish(blocks: Blocks):
            v = blocks.flat()
            dtype = torch.promote_types(v.dtype, torch.float32)
            drops = (v[0:1] - v[1:]).t().to(torch.float64)  # (outputs, all windows)
            return format_output(
                is_tuple,
                [
                    g.scatter(drops[:, first - 1 : first - 1 + g.n_windows]).to(device=x.device, dtype=dtype)
                    for x, g, first in zip(inputs, grids, offsets)
                ],
            )

        return then(
            self._blocks(adapter, fm, inputs, offsets[-1], build, perturbations_per_eval, show_progress), finish
        )
