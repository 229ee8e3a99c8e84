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

from ..core.incremental import IncrementalReport
from ..core.inputs import format_output
from ..core.registry import occlusion_window, register
from .ablation import perturbation_baselines
from .blocks import Blocks, PerturbationAttribution, example_rows, then
from .incremental import Incremental


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

    def positions(self, local: Tensor) -> list[Tensor]:
        """Per dimension, the position (``0 .. counts[d]-1``) of each row's window
        ``local`` in the grid, in C order (the last dimension moves fastest)."""
        out, rest = [], local
        for count in reversed(self.counts):
            out.insert(0, rest % count)
            rest = rest // count
        return out

    def covered(self, local: Tensor, valid: Tensor, device) -> Tensor:
        """Bool ``(R, *dims)``: the scalars each row's window covers (none where not ``valid``)."""
        n_rows, n_dims = local.shape[0], len(self.dims)
        mask = valid.to(device).view((n_rows,) + (1,) * n_dims)
        for d, k in enumerate(self.positions(local)):
            inside = self.membership(d, device)[k.to(device)]  # (R, dims[d])
            shape = [n_rows] + [1] * n_dims
            shape[1 + d] = self.dims[d]
            mask = mask & inside.view(shape)
        return mask

    def boxes(self, local: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """Each row's window over the spatial dimensions (every dimension after the
        first, the channels): ``lo, hi`` ``(R, len(dims) - 1)``; empty where not ``valid``."""
        starts = [k * self.stride[d] for d, k in enumerate(self.positions(local))][1:]
        lo = torch.stack(starts, 1)
        hi = torch.minimum(lo + torch.tensor(self.window[1:]), torch.tensor(self.dims[1:]))
        keep = valid.unsqueeze(1)
        return lo * keep, hi * keep

    def _contract(self, t: Tensor, transpose: bool) -> Tensor:
        """Contract every dimension after the rows with the window-membership matrix:
        windows -> positions (a sum over the windows covering each position) or, with
        ``transpose``, positions -> windows (a sum over each window's positions)."""
        for d in range(len(self.dims)):
            member = self.membership(d, t.device).to(t.dtype)
            t = torch.tensordot(t, member, dims=([1], [1 if transpose else 0]))  # appends the new dim d
        return t

    def scatter(self, window_values: Tensor, weights: Tensor | None = None) -> Tensor:
        """Mean over covering windows: ``(rows, n_windows)`` -> ``(rows, *dims)``;
        with ``weights`` (0/1 per row and window) over the weighted windows only (NaN
        where none covers)."""
        n = window_values.shape[0]
        if weights is None:
            weights = torch.ones((1, self.n_windows), dtype=window_values.dtype, device=window_values.device)
        total = self._contract((window_values * weights).reshape((n,) + self.counts), False)
        count = self._contract(weights.reshape((weights.shape[0],) + self.counts), False)
        return total / count

    def window_means(self, values: Tensor) -> Tensor:
        """The mean of ``values`` ``(rows, *dims)`` over each window: ``(rows, n_windows)``."""
        total = self._contract(values, True).reshape(values.shape[0], -1)
        size = self._contract(torch.ones((1,) + self.dims, dtype=values.dtype, device=values.device), True)
        return total / size.reshape(1, -1)


@register("occlusion", order=110, defaults=occlusion_window, description="occlusion by a sliding zero window")
class Occlusion(PerturbationAttribution):
    r"""Occlusion (Zeiler & Fergus 2014): a baseline patch slides over the input; a scalar gets the mean drop it causes.

    Captum's arguments and values: ``sliding_window_shapes`` (one
    tuple per input, without the batch dimension), ``strides`` (int or tuple per input,
    default 1) and ``baselines`` (the occluding value). ``perturbations_per_eval="auto"``
    batches the windows from the memory budget; an int is Captum's windows per forward.
    The first window of a dimension starts at index 0 and the last one may be cut off
    at the border.

    Formula:
        $$\phi_i = \frac{1}{|W(i)|} \sum_{w \in W(i)} \Big(F(x) - F\big(x \odot (1 - \mathbb{1}_w)
        + x' \odot \mathbb{1}_w\big)\Big)$$

        with \(W(i)\) the windows that cover scalar \(i\), \(\mathbb{1}_w\) the indicator of
        window \(w\) and \(x'\) the ``baselines`` (0 by default). With windows that do not
        overlap (strides equal to the window) this is :class:`FeatureAblation` with one
        feature per window.

    Cost:
        \(1 + \sum_t \prod_d \big(\lceil (s_{t,d} - k_{t,d}) / r_{t,d} \rceil + 1\big)\)
        forward passes per example and no backward pass: the inputs once, then one
        occluded copy per window of each input tensor \(t\) (size \(s\), window shape
        \(k\) and stride \(r\) along each dimension \(d\)), ``perturbations_per_eval``
        windows per forward call. ``drill_down`` \(= p\) runs every coarse window, then
        only the \(\lceil p K \rceil\) of the \(K\) fine windows whose area has the largest
        coarse attributions (each pass with one forward of the inputs too);
        ``incremental`` recomputes only the part of each layer that a window changes.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import FeatureAblation, Occlusion
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.ReLU(),
        ...                             torch.nn.Flatten(), torch.nn.Linear(32, 2))
        >>> x = torch.randn(2, 1, 4, 4)
        >>> occlusion = Occlusion(model)
        >>> attributions = occlusion.attribute(x, sliding_window_shapes=(1, 2, 2), strides=(1, 2, 2), target=0)
        >>> attributions.shape
        torch.Size([2, 1, 4, 4])
        >>> cells = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]).view(1, 1, 4, 4)
        >>> ablation = FeatureAblation(model).attribute(x, target=0, feature_mask=cells)
        >>> bool(torch.allclose(attributions, ablation, atol=1e-6))
        True
    """

    incremental_report: IncrementalReport | None = None

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
        incremental="auto",
        projective_field_threshold: float | None = None,
        drill_down: float | None = None,
        drill_down_strides=None,
    ):
        """Beyond Captum:

        * ``incremental``: for one image-like input ``(N, C, *spatial)``, each occluded
          copy recomputes only the region its window changes, layer by layer, from the
          unoccluded image's activations (Krypton's incremental inference; exact, see
          :mod:`torchexplain.attr.incremental`). ``"auto"`` uses it when it applies,
          ``True`` insists, ``False`` opts out; ``"approximate"`` caps each layer's
          change at ``projective_field_threshold`` (default 0.4) of the layer.
          :attr:`incremental_report` says how the last call went (None: not used).
        * ``drill_down`` (a fraction in (0, 1]): adaptive drill-down. A coarse pass
          with ``drill_down_strides`` (default: the window, no overlap), then the
          ``strides`` pass only for that fraction of the windows, those whose area
          has the largest mean absolute coarse attribution (per example); scalars no
          refined window covers keep their coarse value. One input, one explained
          value per example.
        """
        inputs, is_tuple, adapter, fm = self._setup(inputs, target, additional_forward_args, forward_kwargs, None)
        windows = _format_windows(sliding_window_shapes, inputs)
        grids = _grids(windows, _format_strides(strides, inputs, windows), inputs)
        baselines = perturbation_baselines(baselines, inputs)
        share = math.prod(windows[0][1:]) / max(1, math.prod(inputs[0].shape[2:]))
        inc = Incremental(incremental, projective_field_threshold, inputs, adapter, share)
        self.incremental_report = inc.report
        run = lambda grids, chosen=None: self._drops(  # noqa: E731
            adapter, fm, inputs, baselines, grids, inc, perturbations_per_eval, show_progress, chosen
        )
        if drill_down is None:
            return then(run(grids), lambda done: format_output(is_tuple, _spread(done, grids, inputs)))
        fraction = _check_drill_down(drill_down, inputs)
        coarse_strides = _format_strides(drill_down_strides if drill_down_strides is not None else windows, inputs,
                                         windows)
        return format_output(is_tuple, [_drill_down(run, grids[0], _grids(windows, coarse_strides, inputs), inputs,
                                                    fraction, adapter.n)])

    def _drops(self, adapter, fm, inputs, baselines, grids, inc, perturbations_per_eval, show_progress,
               chosen: Tensor | None = None):
        """``(drops, dtype)``: ``F(x) - F(x occluded)`` ``(outputs, windows)`` of every
        window of every grid, or of the windows ``chosen`` ``(N, k)`` per example of the
        one grid, and the model output's dtype; a future of them for a future model."""
        n = adapter.n
        counts = [g.n_windows if chosen is None else chosen.shape[1] for g in grids]
        offsets = [1]  # block 0 is the unoccluded inputs
        for c in counts:
            offsets.append(offsets[-1] + c)

        def windows_of(blocks: Tensor, examples: Tensor, first: int, count: int):
            local = blocks - first
            valid = (local >= 0) & (local < count)
            local = local.clamp(0, count - 1)
            return (local if chosen is None else chosen[examples, local]), valid

        def build(blocks: Tensor, examples: Tensor):
            out = []
            for x, b, g, first, count in zip(inputs, baselines, grids, offsets, counts):
                rows = example_rows(x, examples, n)
                local, valid = windows_of(blocks, examples, first, count)
                if not bool(valid.any()):
                    out.append(rows)
                    continue
                covered = g.covered(local, valid, x.device)
                if rows.shape[0] != len(blocks):  # not batched (a whole-batch model): one block per call
                    covered = covered[:1]
                out.append(torch.where(covered, example_rows(b, examples, n), rows))
            if inc.engine is None:
                return tuple(out)
            return inc.rows(tuple(out), examples, *grids[0].boxes(*windows_of(blocks, examples, 1, counts[0])))

        def finish(blocks: Blocks):
            v = blocks.flat()
            return (v[0:1] - v[1:]).t().to(torch.float64), torch.promote_types(v.dtype, torch.float32)

        return then(self._blocks(adapter, fm, inputs, offsets[-1], build, perturbations_per_eval, show_progress,
                                 inc.cached_bytes), finish)


def _grids(windows, strides, inputs) -> list[_Grid]:
    return [_Grid(w, s, tuple(x.shape[1:])) for w, s, x in zip(windows, strides, inputs)]


def _spread(done, grids: list[_Grid], inputs) -> list[Tensor]:
    """Attributions from the drops of every window of every grid (see :meth:`Occlusion._drops`)."""
    drops, dtype = done
    out, first = [], 0
    for x, g in zip(inputs, grids):
        out.append(g.scatter(drops[:, first : first + g.n_windows]).to(device=x.device, dtype=dtype))
        first += g.n_windows
    return out


def _check_drill_down(drill_down, inputs) -> float:
    if isinstance(drill_down, bool) or not isinstance(drill_down, numbers.Real) or not 0 < drill_down <= 1:
        raise ValueError(f"drill_down must be a fraction in (0, 1] of the windows to refine; got {drill_down!r}")
    if len(inputs) != 1:
        raise ValueError(f"drill_down takes one input tensor; got {len(inputs)}")
    return float(drill_down)


def _drill_down(run, fine: _Grid, coarse_grids: list[_Grid], inputs, fraction: float, n: int) -> Tensor:
    """Adaptive drill-down (see :meth:`Occlusion.attribute`): ``run(grids, chosen)``
    gives the drops of a pass."""
    coarse = _spread(run(coarse_grids), coarse_grids, inputs)[0]
    if coarse.shape[0] != n:
        raise ValueError(
            f"drill_down needs one explained value per example; the model's output gives {coarse.shape[0]} "
            f"rows for {n} example(s) (give a target)"
        )
    importance = fine.window_means(coarse.abs().to(torch.float64))
    chosen = importance.topk(max(1, math.ceil(fraction * fine.n_windows)), dim=1).indices.cpu()
    drops, _ = run([fine], chosen)
    on = chosen.to(drops.device)
    weights = torch.zeros((n, fine.n_windows), dtype=drops.dtype, device=drops.device)
    values = weights.scatter(1, on, drops)
    refined = fine.scatter(values, weights.scatter_(1, on, 1.0)).to(device=coarse.device, dtype=coarse.dtype)
    return torch.where(refined.isnan(), coarse, refined)
