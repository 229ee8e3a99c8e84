"""The one chunked evaluator.

Methods describe their work as rows (examples x steps, noise samples, baseline
samples...) and a ``run(start, stop)`` that evaluates a contiguous block of rows. This
module decides the blocks: an ``int`` chunk size behaves as Captum's
``internal_batch_size``; ``"auto"`` evaluates a small first block while measuring the
memory that autograd saves for it, then sizes the remaining blocks to fit
``torchexplain.config.memory_budget``.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable

import torch

from .. import config

AUTO = "auto"


def check_chunk_size(value, name: str = "internal_batch_size"):
    """Validate an ``int >= 1``, ``None`` (everything at once) or ``"auto"``."""
    if value is None or value == AUTO:
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f'{name} must be "auto", None or a positive int; got {value!r}')
    return int(value)


class _SavedBytes:
    """Counts the bytes autograd saves for backward inside the block.

    With ``keep=False`` (forward-only work, whose graph is never differentiated) the
    saved tensors are counted and dropped: a pack hook that returns its tensor keeps a
    reference cycle through C++ (an op's saved output -> its grad_fn -> the saved
    output) that only a backward pass breaks, so every probed block's activations
    would otherwise stay alive for good."""

    def __init__(self, keep: bool = True):
        self.total = 0
        self.keep = keep
        self._seen: set[int] = set()

    def pack(self, t):
        if isinstance(t, torch.nn.Parameter) or isinstance(t._base, torch.nn.Parameter):
            return t  # weights (and views of them, a linear layer's transposed weight) do not grow with the rows
        try:
            key = t.untyped_storage().data_ptr()
        except (RuntimeError, NotImplementedError):
            key = id(t)
        if key not in self._seen:
            self._seen.add(key)
            self.total += t.numel() * t.element_size()
        return t if self.keep else None

    @staticmethod
    def _unpack(t):
        if t is None:
            raise RuntimeError("evaluate_rows(forward_only=True): a probed block's graph was differentiated")
        return t

    def __enter__(self):
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self.pack, self._unpack)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def _even_blocks(start: int, stop: int, max_size: int):
    remaining = stop - start
    if remaining <= 0:
        return
    n_blocks = math.ceil(remaining / max(1, max_size))
    size = math.ceil(remaining / n_blocks)
    for a in range(start, stop, size):
        yield a, min(a + size, stop)


def evaluate_rows(
    n_rows: int,
    run: Callable[[int, int], None],
    chunk_size="auto",
    *,
    stats: dict | None = None,
    probe_rows: int = 1,
    saved_fraction: float = 1.0,
    cpu_chunk_bytes: float | None = None,
    forward_only: bool = False,
    reserved_bytes: float = 0,
) -> None:
    """Call ``run(start, stop)`` over consecutive blocks covering ``range(n_rows)``.

    With ``"auto"``, ``run`` may fill ``stats`` during the first (probe) block with
    ``device`` and ``row_bytes`` (the bytes of one row's inputs, counted three times:
    input, gradient, and the method's temporaries); ``probe_rows`` is that block's size.
    ``saved_fraction`` is the share of the measured activations that stays alive at
    once (1 when a backward pass follows; less for forward-only work).
    ``cpu_chunk_bytes`` caps the budget on CPU, where blocks larger than the caches
    run slower per row. ``forward_only``: ``run`` never differentiates what it computes
    (its saved tensors are only measured). ``reserved_bytes`` of the budget are
    already in use for the whole call (cached activations), and left out.
    """
    stats = {} if stats is None else stats
    if n_rows <= 0:
        return
    if chunk_size is None:
        run(0, n_rows)
        return
    if chunk_size != AUTO:
        for a in range(0, n_rows, chunk_size):
            run(a, min(a + chunk_size, n_rows))
        return
    first = max(1, min(n_rows, probe_rows))
    if first == n_rows:
        run(0, n_rows)
        return
    with _SavedBytes(keep=not forward_only) as saved:
        run(0, first)
    per_row = saved_fraction * saved.total / first + 3 * stats.get("row_bytes", 0)
    device = torch.device(stats.get("device", "cpu"))
    budget = max(1, config.resolve_memory_budget(device) - reserved_bytes)
    if cpu_chunk_bytes is not None and device.type == "cpu":
        budget = min(budget, cpu_chunk_bytes)
    max_rows = max(1, int(budget // max(per_row, 1.0)))
    for a, b in _even_blocks(first, n_rows, max_rows):
        run(a, b)

