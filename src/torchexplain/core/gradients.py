"""The one gradient engine: gradients of the explained scalars over expanded rows,
through the one evaluator.

:func:`row_gradients` differentiates one scalar per row (or, with ``multi_output``,
several from the same forward pass: shap's ranked outputs) with respect to the
rows' inputs or to tensors the forward pass produced; :func:`layer_gradients` is it
with respect to watched layers (layer methods and gradient CAMs). :class:`RowRunner`
feeds the chunks, channels-last where that pays, with the one fallback for models
that need their layout; :func:`output_gap` is the convergence delta's reference."""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from .. import config
from .batching import evaluate_rows
from .forward import ForwardAdapter
from .hooks.layers import LayerTap, recording_all
from .hooks.model import frozen_parameters

Build = Callable[[Tensor, Tensor], Sequence[Tensor]]
Consume = Callable[[Tensor, Tensor, tuple, Tensor], None]


#: the keywords of ``torch.autograd.grad`` that ``grad_kwargs`` may set (the outputs,
#: inputs and output gradients are the method's own)
GRAD_KWARGS = ("retain_graph", "create_graph", "allow_unused", "materialize_grads")


def check_grad_kwargs(grad_kwargs) -> dict:
    """Captum's ``grad_kwargs`` (extra keywords for ``torch.autograd.grad``) as a dict;
    a TypeError naming ``grad_kwargs`` for anything else."""
    if grad_kwargs is None:
        return {}
    if not isinstance(grad_kwargs, dict):
        raise TypeError(f"grad_kwargs must be a dict of torch.autograd.grad keywords; got {type(grad_kwargs).__name__}")
    unknown = [k for k in grad_kwargs if k not in GRAD_KWARGS]
    if unknown:
        raise TypeError(
            f"grad_kwargs has keyword(s) {unknown} that the method cannot pass to torch.autograd.grad; "
            f"allowed: {', '.join(GRAD_KWARGS)}"
        )
    return dict(grad_kwargs)


def input_gradients(scalars: Tensor, inputs: Sequence[Tensor], what: str = "inputs",
                    grad_kwargs: dict | None = None) -> tuple[Tensor, ...]:
    """d(sum of scalars)/d(inputs), with a clear error when an input is not on a
    differentiable path to the output; ``what`` names the inputs in it.
    ``grad_kwargs`` (checked by :func:`check_grad_kwargs`) go to ``torch.autograd.grad``;
    with ``materialize_grads=True`` an input the output does not reach gets zeros."""
    options = {"allow_unused": True, **(grad_kwargs or {})}
    if not scalars.requires_grad:
        if options.get("materialize_grads"):
            return tuple(torch.zeros_like(t) for t in inputs)
        hint = "" if what == "inputs" else (
            " (for a layer that does not reach the output, grad_kwargs={'materialize_grads': True} gives zeros)"
        )
        raise ValueError(
            f"the model output does not depend differentiably on the {what} (it does not require "
            f"grad); check that forward_func does not detach, round or argmax its output{hint}"
        )
    with torch.enable_grad():
        grads = torch.autograd.grad(scalars.sum(), tuple(inputs), **options)
    for i, g in enumerate(grads):
        if g is None:
            where = f"{what}[{i}]" if len(grads) > 1 else what
            raise ValueError(
                f"{where} has no differentiable path to the model output (its gradient is None); "
                "pass grad_kwargs={'materialize_grads': True} for zeros instead"
            )
    return grads


#: smallest chunk for which channels-last pays on CPU (measured on resnet18: slower
#: for a single image, 8-15% faster from about four)
CHANNELS_LAST_MIN_ROWS = 4
#: smaller images run slower in channels-last on CPU (resnet18 forward + backward, 2 threads:
#: 1.3-1.6x at 64x64, 1.0-1.1x at 128x128, 0.9x at 224x224), so they stay contiguous
CHANNELS_LAST_MIN_PIXELS = 128 * 128


def wants_channels_last(tensors: Sequence[Tensor]) -> bool:
    """Whether to feed image batches in channels-last layout: by default for chunks of
    at least 4 float32 4-D inputs of at least 128x128 on CPU, where convolutions run
    faster in it (values are unchanged). ``torchexplain.config.channels_last`` True /
    False forces the choice."""
    if not all(t.dim() == 4 for t in tensors):
        return False
    if config.channels_last is not None:
        return bool(config.channels_last)
    return all(
        t.device.type == "cpu" and t.dtype == torch.float32 and t.shape[0] >= CHANNELS_LAST_MIN_ROWS
        and t.shape[2] * t.shape[3] >= CHANNELS_LAST_MIN_PIXELS for t in tensors
    )


def row_gradients(
    adapter: ForwardAdapter,
    n_rows: int,
    build: Build,
    consume: Consume,
    *,
    internal_batch_size="auto",
    context: Callable[[], contextlib.AbstractContextManager] | None = None,
    score: Callable[[tuple, Tensor, Tensor], Tensor] | None = None,
    wrt: Callable[[], Sequence[Tensor]] | None = None,
    grad_kwargs: dict | None = None,
    multi_output: bool = False,
    runner: RowRunner | None = None,
) -> None:
    """Evaluate gradients for rows ``0 .. n_rows-1``; row ``r`` explains example
    ``r % adapter.n``. ``build(rows, examples)`` makes the rows' inputs;
    ``consume(rows, examples, grads, scalars)`` folds their gradients into the result.
    ``context`` wraps each forward (e.g. backward rules); ``score(chunk, rows, examples)``
    replaces ``adapter.scalars`` as the differentiated per-row scalar. ``wrt()``, called
    after each forward, gives the tensors to differentiate with respect to instead of
    the inputs (e.g. a hidden layer's values); the inputs then need no gradient.
    ``grad_kwargs``: Captum's extra ``torch.autograd.grad`` keywords (see
    :func:`input_gradients`).

    With ``multi_output`` the score gives ``(rows, K)``: K explained outputs per row
    (shap's ranked outputs), all from the same forward pass, each differentiated by a
    backward pass of its own; ``consume(rows, examples, grads, scalars, k)`` is then
    called once per output ``k`` with that column's gradients and scalars.
    ``runner`` (a :class:`RowRunner`) lets ``build``, ``score`` or a layer
    replacement put tensors in the layout the chunk is fed in (:meth:`RowRunner.layout`)."""
    options = check_grad_kwargs(grad_kwargs)
    n = adapter.n
    score = score or (lambda chunk, rows, examples: adapter.scalars(chunk, examples))
    runner = runner or RowRunner()

    def forward(chunk, rows, examples):
        if wrt is None:
            chunk = tuple(t.detach().requires_grad_(True) for t in chunk)
        with torch.enable_grad(), (context() if context else contextlib.nullcontext()):
            return chunk, score(chunk, rows, examples)

    def run(a: int, b: int) -> None:
        rows = torch.arange(a, b)
        examples = rows % n
        chunk, scalars = runner.call(build(rows, examples), lambda chunk: forward(chunk, rows, examples))
        targets, what = (chunk, "inputs") if wrt is None else (wrt(), "layer's values")
        if not multi_output:
            consume(rows, examples, input_gradients(scalars, targets, what, options), scalars.detach())
            return
        count = scalars.shape[1]
        for k in range(count):
            keep = {**options, "retain_graph": True} if k + 1 < count else options
            consume(rows, examples, input_gradients(scalars[:, k], targets, what, keep), scalars[:, k].detach(), k)

    with frozen_parameters(adapter.forward_func):
        evaluate_rows(n_rows, run, internal_batch_size, stats=runner.stats, probe_rows=8)


def layer_gradients(
    adapter: ForwardAdapter,
    taps: Sequence[LayerTap],
    n_rows: int,
    build: Build,
    consume: Callable,
    *,
    chunk="auto",
    replace: Callable | None = None,
    context: Callable | None = None,
    score: Callable | None = None,
    grad_kwargs: dict | None = None,
) -> list[int]:
    """:func:`row_gradients` with respect to the values of the layers ``taps``
    watch: for each chunk of rows, ``consume(rows, examples, layer_grads,
    layer_values, scalars)``, the layers' tensors flattened in order.
    ``replace(rows, examples, k, values) -> values`` substitutes layer ``k``'s values
    of the chunk; ``score(chunk, rows, examples)`` replaces the adapter's scalars;
    ``grad_kwargs`` go to ``torch.autograd.grad`` (``materialize_grads=True``: zeros
    for a layer the output does not reach). Returns the number of tensors of each
    layer."""
    seen: dict = {}
    score = score or (lambda chunk_inputs, rows, examples: adapter.scalars(chunk_inputs, examples))

    def swap(rows, examples, k):
        return None if replace is None else (lambda values: replace(rows, examples, k, values))

    def scored(chunk_inputs, rows, examples):
        swaps = [swap(rows, examples, k) for k in range(len(taps))]
        with recording_all(taps, replace=swaps, grad=True) as records:
            scalars = score(chunk_inputs, rows, examples)
        seen["counts"] = [len(record.values) for record in records]
        seen["values"] = tuple(v for record in records for v in record.values)
        return scalars

    def consumed(rows, examples, grads, scalars):
        consume(rows, examples, grads, tuple(v.detach() for v in seen.pop("values")), scalars)

    row_gradients(
        adapter, n_rows, build, consumed, internal_batch_size=chunk, context=context, score=scored,
        wrt=lambda: seen["values"], grad_kwargs=grad_kwargs,
    )
    return seen["counts"]


_LAYOUT_WORDS = ("stride", "contiguous", "memory format", "memory_format", "view size")


def is_layout_error(err: RuntimeError) -> bool:
    """Whether an error looks like a model's need for the contiguous layout (a
    ``.view`` of a channels-last tensor, a kernel that wants contiguous input), as
    opposed to an error of its own that must reach the user at once."""
    text = str(err).lower()
    return any(word in text for word in _LAYOUT_WORDS)


class RowRunner:
    """Per-call state shared by the row evaluators: it records the rows' device and
    size for chunk sizing, and feeds 4-D chunks channels-last where that is faster,
    falling back for good to the given layout if the model cannot take it. The one
    place of that fallback: values a method substitutes inside the model (a layer's
    replaced input) take their layout from :meth:`layout` and fall back with it."""

    def __init__(self):
        self.stats: dict = {}
        self.layout_ok = True
        self._converted = False

    def layout(self, tensors: Sequence[Tensor], otherwise=None) -> tuple[Tensor, ...]:
        """``tensors`` channels-last where that pays (:func:`wants_channels_last`)
        and the model has not refused it; else in the memory format ``otherwise``
        (None: as they are)."""
        if self.layout_ok and wants_channels_last(tensors):
            self._converted = True
            return tuple(t.contiguous(memory_format=torch.channels_last) for t in tensors)
        if otherwise is None:
            return tuple(tensors)
        return tuple(t.contiguous(memory_format=otherwise) for t in tensors)

    def call(self, raw: Sequence[Tensor], fn: Callable):
        """``fn(chunk)`` on the rows ``raw``, in the layout :meth:`layout` picks; a
        layout error after any conversion runs ``fn`` again, as given, for good."""
        if not self.stats:
            self.stats["device"] = raw[0].device
            self.stats["row_bytes"] = sum(math.prod(t.shape[1:]) * t.element_size() for t in raw)
        self._converted = False
        try:
            return fn(self.layout(raw))
        except RuntimeError as err:
            if not (self._converted and is_layout_error(err)):
                raise
        # the model needs the given layout (e.g. it calls .view): run it as given
        self.layout_ok = False
        return fn(tuple(raw))


def forward_scalars(adapter: ForwardAdapter, inputs: Sequence[Tensor], examples: Tensor | None = None) -> Tensor:
    """The explained scalar of each row, without gradients; rows are the examples
    themselves unless ``examples`` maps them to example indices."""
    if examples is None:
        examples = torch.arange(inputs[0].shape[0])
    with torch.no_grad():
        return adapter.scalars(tuple(inputs), examples)


def output_gap(adapter: ForwardAdapter, starts: Sequence[Tensor], ends: Sequence[Tensor],
               examples: Tensor | None = None) -> Tensor:
    """``F(end) - F(start)`` per row, without gradients (the convergence delta's
    reference); rows are the examples unless ``examples`` says otherwise."""
    f_end = forward_scalars(adapter, ends, examples)
    return f_end - forward_scalars(adapter, tuple(s.expand_as(e) for s, e in zip(starts, ends)), examples)
