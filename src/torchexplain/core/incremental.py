"""Incremental inference for occlusion-style perturbations (Krypton: Nakandala, Kumar
& Papakonstantinou, SIGMOD 2019).

A perturbed copy of an image differs from the image only inside a box (the occluding
patch). Through a convolution, a pooling or an elementwise layer the difference stays
inside a box grown by the kernel's reach (its projective field); everywhere else the
activation equals the unperturbed image's. A :class:`Changed` tensor is a batch of
such rows: the unperturbed activation ``base`` (one per example, computed once and
cached by the :class:`Engine`) and, per row, a ``patch`` of a size common to the batch
at ``start``, which covers the row's changed box ``[lo, hi)``.

The model's own ``forward`` runs on it unchanged: PyTorch's ``__torch_function__``
protocol hands every function call on a :class:`Changed` tensor (``conv2d``,
``batch_norm``, ``relu``, pooling, ``add``, ``cat``, ...) to the rules of
:mod:`.incremental_rules`, which compute the patch (reading the halo its kernel
needs) for every row at once. The first call without a rule (``flatten``, a global
mixing, attention) receives ordinary tensors, the rows in full; the report names it and
the rest of the model runs as usual. A layer whose change covers most of its output is
computed whole.

Exact mode gives the full computation's values: the same arithmetic on a cut-out
region. Approximate mode (``threshold < 1``) caps each layer's changed box at
``threshold`` of the layer's size per spatial dimension, centred on the change, and
treats the rest as unchanged: Krypton's projective-field threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_map

#: a layer whose changed box covers at least this share of its output is computed whole
WHOLE_FRACTION = 0.6
#: the cached unperturbed activations may use at most this share of the memory budget
CACHE_SHARE = 0.5


@dataclass
class IncrementalReport:
    """How an incremental run went: ``mode`` ("exact" or "approximate");
    ``interception`` (how the model's calls were seen: ``"torch_function"``, the
    tensor-subclass protocol, so functional, in-place and reused layers all count);
    ``incremental_ops`` (calls computed on patches); ``whole_ops`` (supported calls
    computed whole because the change covered most of the layer); ``fallback`` (the
    first function without an incremental rule, from which the model ran in full; None
    if none); ``cached_bytes`` (the unperturbed activations kept)."""

    mode: str
    interception: str = "torch_function"
    incremental_ops: int = 0
    whole_ops: int = 0
    fallback: str | None = None
    cached_bytes: int = 0


class Engine:
    """One attribution call's state: the unperturbed activations and the report.

    ``base`` is the unperturbed input batch ``(n, C, *spatial)``; ``threshold`` 1 is
    exact, less is approximate; ``cache_limit`` bounds the bytes of cached activations
    (beyond it they are recomputed per batch)."""

    def __init__(self, base: Tensor, threshold: float = 1.0, cache_limit: float = math.inf, mode: str = "exact"):
        self.base, self.threshold, self.cache_limit = base, float(threshold), cache_limit
        self.report = IncrementalReport(mode)
        self._cache: dict = {}
        self.batches = 0  # calls of rows(): the first is the unperturbed batch

    def rows(self, rows: Tensor, examples: Tensor, lo: Tensor, hi: Tensor) -> "Changed":
        """``rows`` ``(R, C, *spatial)``, each equal to ``base[examples[r]]`` outside
        the box ``[lo[r], hi[r])`` (``(R, k)`` each; an empty box for an unperturbed row)."""
        self.batches += 1
        lo, hi = lo.to(rows.device), hi.to(rows.device)
        start, size, lo, hi = place(lo, hi, tuple(rows.shape[2:]), 1.0)
        every = torch.arange(rows.shape[0], device=rows.device)
        patch = _gather(rows, every, _positions(start, size)) if 0 not in size else _empty(rows, len(rows), size)
        return Changed(self, self.base, examples.to(rows.device), patch, start, lo, hi)

    def base_of(self, func, args, kwargs, compute: Callable[[], Tensor]) -> Tensor:
        """The unperturbed result of ``func(*args, **kwargs)``, without autograd:
        cached, during the first batch (the unperturbed one), by the function and the
        identity of its arguments (a :class:`Changed` argument by its base), so every
        later batch reuses it. A later miss (an argument made anew by every forward, a
        weight-normalised kernel) is recomputed, not stored."""
        leaves, spec = tree_flatten((args, kwargs))
        key = (func, spec, tuple(_key(v) for v in leaves))
        hit = self._cache.get(key)
        if hit is not None:
            return hit[0]
        with torch.no_grad():  # the base is an inference tensor when cached; the probe batch runs with autograd
            out = compute()
        size = out.numel() * out.element_size()
        if self.batches <= 1 and self.report.cached_bytes + size <= self.cache_limit:
            # the tensors of the key stay referenced, so their ids cannot be reused
            kept = [v.base if isinstance(v, Changed) else v for v in leaves if isinstance(v, Tensor)]
            self._cache[key] = (out, kept)
            self.report.cached_bytes += size
        return out

    def produce(self, like: "Changed", base: Tensor, lo: Tensor, hi: Tensor,
                compute: Callable[[Tensor, tuple[int, ...]], Tensor], whole: Callable[[], Tensor]):
        """The result of a supported call whose output differs from ``base`` inside
        ``[lo, hi)``: ``compute(start, size)`` gives the patch; ``whole()`` the full
        result, used when the change covers most of the output or the output has one
        position (global pooling)."""
        spatial = tuple(base.shape[2:])
        start, size, lo, hi = place(lo, hi, spatial, self.threshold)
        if math.prod(spatial) == 1 or math.prod(size) >= WHOLE_FRACTION * math.prod(spatial):
            self.report.whole_ops += 1
            return whole()
        self.report.incremental_ops += 1
        patch = compute(start, size) if 0 not in size else _empty(base, len(like.example), size)
        return Changed(self, base, like.example, patch, start, lo, hi)

    def in_full(self, func, after_whole: bool) -> None:
        """Record a call run on the rows in full: the continuation of a layer computed
        whole (``after_whole``: a full batch of rows is among its arguments), else a
        fallback at a function without a rule."""
        if after_whole:
            self.report.whole_ops += 1
        elif self.report.fallback is None:
            self.report.fallback = getattr(func, "__name__", repr(func))


def _key(v):
    if isinstance(v, Changed):
        return ("changed", id(v.base))
    if isinstance(v, Tensor):
        return ("tensor", id(v))
    try:
        hash(v)
    except TypeError:
        return ("repr", repr(v))
    return v


def _meets_full_rows(changed: "Changed", leaves) -> bool:
    """Whether the rows are already whole for this call: a plain tensor of
    ``changed``'s rows and spatial shape is among ``leaves`` (the result of a layer
    computed whole), or a changed batch was materialised (by such a layer)."""
    shape = changed.shape
    return any(
        (isinstance(v, Changed) and v.full is not None)
        or (isinstance(v, Tensor) and not isinstance(v, Changed) and v.dim() == len(shape)
            and v.shape[0] == shape[0] and v.shape[2:] == shape[2:])
        for v in leaves
    )


def _empty(like: Tensor, rows: int, size) -> Tensor:
    """An empty patch of ``rows`` rows with ``like``'s channels (a batch without change)."""
    return like.new_empty((rows, like.shape[1]) + tuple(size))


def _positions(start: Tensor, size: tuple[int, ...]) -> list[Tensor]:
    """Per spatial dimension, the ``(R, size[d])`` coordinates of each row's region."""
    return [start[:, d : d + 1] + torch.arange(s, device=start.device) for d, s in enumerate(size)]


def _gather(src: Tensor, rows: Tensor, pos: list[Tensor]) -> Tensor:
    """``src[rows[r], :, pos[0][r], pos[1][r], ...]`` as ``(R, C, *sizes)``
    (channels-last in memory); coordinates are clamped into ``src``."""
    k, n_rows = len(pos), rows.shape[0]
    index = [rows.view((n_rows,) + (1,) * k)]
    for d, p in enumerate(pos):
        shape = [n_rows] + [1] * k
        shape[1 + d] = p.shape[1]
        index.append(p.clamp(0, src.shape[2 + d] - 1).view(shape))
    return src.movedim(1, -1)[tuple(index)].movedim(-1, 1)


def _inside(pos: list[Tensor], bounds) -> Tensor:
    """Bool ``(R, 1, *sizes)``: which region positions lie in ``[0, bounds)``."""
    k = len(pos)
    mask = None
    for d, (p, b) in enumerate(zip(pos, bounds)):
        shape = [p.shape[0], 1] + [1] * k
        shape[2 + d] = p.shape[1]
        ok = ((p >= 0) & (p < b)).view(shape)
        mask = ok if mask is None else mask & ok
    return mask


def window_box(lo: Tensor, hi: Tensor, extent, stride, pad, out_size) -> tuple[Tensor, Tensor]:
    """The output box of a sliding window (``extent`` wide, moved by ``stride``, with
    ``pad`` positions of padding before the input) that reads ``[lo, hi)``: output
    ``o`` reads inputs ``[o*stride - pad, o*stride - pad + extent)``."""
    t = lambda v: torch.tensor(v, device=lo.device)  # noqa: E731
    ext, s, p, size = t(extent), t(stride), t(pad), t(out_size)
    first = -torch.div(-(lo + p - ext + 1), s, rounding_mode="floor")
    last = torch.div(hi - 1 + p, s, rounding_mode="floor") + 1
    first, last = first.clamp_min(0), torch.minimum(last, size)
    empty = ((hi <= lo) | (last <= first)).any(1, keepdim=True)
    return first.masked_fill(empty, 0), last.masked_fill(empty, 0)


def union(boxes: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """The per-row bounding box of several boxes (empty ones ignored)."""
    big = torch.iinfo(torch.long).max // 4
    los, his = [], []
    for lo, hi in boxes:
        empty = (hi <= lo).any(1, keepdim=True)
        los.append(lo.masked_fill(empty, big))
        his.append(hi.masked_fill(empty, -big))
    lo, hi = torch.stack(los).amin(0), torch.stack(his).amax(0)
    empty = (hi <= lo).any(1, keepdim=True)
    return lo.masked_fill(empty, 0), hi.masked_fill(empty, 0)


def place(lo: Tensor, hi: Tensor, out_size: tuple[int, ...], threshold: float):
    """One patch size for every row and each row's patch start, inside the layer:
    ``(start, size, lo, hi)``. Exact (``threshold`` 1): the largest box, each row's
    box inside its patch. Approximate: at most ``threshold`` of the layer per
    dimension, centred on each row's box, which is cut to its patch."""
    extent = (hi - lo).clamp_min(0)
    size = extent.amax(0).tolist() if extent.shape[0] else [0] * len(out_size)
    if threshold < 1:
        size = [min(s, max(1, math.ceil(threshold * o))) for s, o in zip(size, out_size)]
    size_t = torch.tensor(size, device=lo.device)
    start = lo + torch.div((extent - size_t).clamp_min(0), 2, rounding_mode="floor")
    start = torch.minimum(start.clamp_min(0), torch.tensor(out_size, device=lo.device) - size_t)
    if threshold < 1:
        lo, hi = torch.maximum(lo, start), torch.minimum(hi, start + size_t)
    return start, tuple(size), lo, hi


class Changed(Tensor):
    """A batch of rows equal to their examples' ``base`` activation outside a box.

    Row ``r`` is ``base[example[r]]`` with ``patch[r]`` written at ``start[r]``; its
    change lies in ``[lo[r], hi[r])``. Once a call without a rule needs it whole it is
    materialised once (:meth:`materialize`), and from then on it is that tensor (an
    in-place change to it is seen by every later use)."""

    engine: Engine
    base: Tensor
    example: Tensor
    patch: Tensor
    start: Tensor
    lo: Tensor
    hi: Tensor
    full: Tensor | None

    @staticmethod
    def __new__(cls, engine, base, example, patch, start, lo, hi):
        shape = (example.shape[0],) + tuple(base.shape[1:])
        self = Tensor._make_wrapper_subclass(cls, shape, dtype=base.dtype, device=base.device)
        self.engine, self.base, self.example, self.patch = engine, base, example, patch
        self.start, self.lo, self.hi, self.full = start, lo, hi, None
        return self

    def __init__(self, *args, **kwargs):  # the fields are set by __new__
        pass

    def __repr__(self, *, tensor_contents=None):
        return f"Changed(rows={self.shape[0]}, patch={tuple(self.patch.shape[2:])})"

    def box(self) -> tuple[Tensor, Tensor]:
        return self.lo, self.hi

    def with_patch(self, base: Tensor, patch: Tensor) -> "Changed":
        """A result of the same geometry (an elementwise function of this one)."""
        return Changed(self.engine, base, self.example, patch, self.start, self.lo, self.hi)

    def become(self, other: "Changed") -> "Changed":
        """Take ``other``'s values in place (an in-place function's result)."""
        self.base, self.patch, self.start, self.lo, self.hi = other.base, other.patch, other.start, other.lo, other.hi
        return self

    def read(self, start: Tensor, size: tuple[int, ...], fill: float = 0.0) -> Tensor:
        """Each row's region ``[start, start + size)``, ``(R, C, *size)``; positions
        outside the layer hold ``fill`` (a padding value)."""
        if tuple(self.patch.shape[2:]) == tuple(size) and bool((start == self.start).all()):
            return self.patch
        pos = _positions(start, size)
        out = _gather(self.base, self.example, pos)
        inside = _inside(pos, self.shape[2:])
        if not bool(inside.all()):
            out = out.masked_fill(~inside, fill)
        if self.patch.numel():
            rel = [p - self.start[:, d : d + 1] for d, p in enumerate(pos)]
            in_patch = _inside(rel, self.patch.shape[2:])
            every = torch.arange(self.shape[0], device=out.device)
            out = torch.where(in_patch, _gather(self.patch, every, rel), out)
        return out

    def materialize(self) -> Tensor:
        """The rows in full, ``(R, C, *spatial)``, contiguous; computed once."""
        if self.full is None:
            zero = torch.zeros_like(self.start)
            self.full = self.read(zero, tuple(self.shape[2:])).contiguous()
        return self.full

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _rules.PASS_THROUGH:
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **kwargs)
        rule = _rules.RULES.get(func)
        if rule is not None:
            out = rule(func, *args, **kwargs)
            if out is not NotImplemented:
                return out
        leaves = tree_flatten((args, kwargs))[0]
        changed = [v for v in leaves if isinstance(v, Changed)]
        changed[0].engine.in_full(func, _meets_full_rows(changed[0], leaves))
        whole = lambda v: v.materialize() if isinstance(v, Changed) else v  # noqa: E731
        return func(*tree_map(whole, args), **tree_map(whole, kwargs))

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise RuntimeError(
            f"incremental inference: {func} reached a Changed tensor's (absent) storage; every call should have "
            "been intercepted (please report this model)"
        )


from . import incremental_rules as _rules  # noqa: E402  (the rules need Changed, defined above)
