"""Gradients of the explained scalars over expanded rows, through the one evaluator."""

from __future__ import annotations

import contextlib
from typing import Callable, Sequence

import torch
from torch import Tensor

from .. import config
from .batching import evaluate_rows
from .forward import ForwardAdapter
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


def wants_channels_last(tensors: Sequence[Tensor]) -> bool:
    """Whether to feed image batches in channels-last layout: by default for chunks of
    float32 4-D inputs on CPU, where convolutions run faster in it (values are
    unchanged). ``torchexplain.config.channels_last`` True / False forces the choice."""
    if not all(t.dim() == 4 for t in tensors):
        return False
    if config.channels_last is not None:
        return bool(config.channels_last)
    return all(
        t.device.type == "cpu" and t.dtype == torch.float32 and t.shape[0] >= CHANNELS_LAST_MIN_ROWS for t in tensors
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
) -> None:
    """Evaluate gradients for rows ``0 .. n_rows-1``; row ``r`` explains example
    ``r % adapter.n``. ``build(rows, examples)`` makes the rows' inputs;
    ``consume(rows, examples, grads, scalars)`` folds their gradients into the result.
    ``context`` wraps each forward (e.g. backward rules); ``score(chunk, rows, examples)``
    replaces ``adapter.scalars`` as the differentiated per-row scalar. ``wrt()``, called
    after each forward, gives the tensors to differentiate with respect to instead of
    the inputs (e.g. a hidden layer's values); the inputs then need no gradient.
    ``grad_kwargs``: Captum's extra ``torch.autograd.grad`` keywords (see
    :func:`input_gradients`)."""
    options = check_grad_kwargs(grad_kwargs)
    n = adapter.n
    score = score or (lambda chunk, rows, examples: adapter.scalars(chunk, examples))
    runner = RowRunner()

    def forward(chunk, rows, examples):
        if wrt is None:
            chunk = tuple(t.detach().requires_grad_(True) for t in chunk)
        with torch.enable_grad(), (context() if context else contextlib.nullcontext()):
            return chunk, score(chunk, rows, examples)

    def run(a: int, b: int) -> None:
        rows = torch.arange(a, b)
        examples = rows % n
        chunk, scalars = runner.call(build(rows, examples), lambda chunk: forward(chunk, rows, examples))
        grads = (input_gradients(scalars, chunk, grad_kwargs=options) if wrt is None
                 else input_gradients(scalars, wrt(), "layer's values", options))
        consume(rows, examples, grads, scalars.detach())

    with frozen_parameters(adapter.forward_func):
        evaluate_rows(n_rows, run, internal_batch_size, stats=runner.stats, probe_rows=8)


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
    falling back for good to the given layout if the model cannot take it."""

    def __init__(self):
        self.stats: dict = {}
        self.layout_ok = True

    def call(self, raw: Sequence[Tensor], fn: Callable):
        if not self.stats:
            self.stats["device"] = raw[0].device
            self.stats["row_bytes"] = sum(t[:1].numel() * t.element_size() for t in raw)
        channels_last = self.layout_ok and wants_channels_last(raw)
        if not channels_last:
            return fn(tuple(raw))
        try:
            return fn(tuple(t.contiguous(memory_format=torch.channels_last) for t in raw))
        except RuntimeError as err:
            if not is_layout_error(err):
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
