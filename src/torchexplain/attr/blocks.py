"""What every perturbation method shares: blocks of perturbed inputs and their values.

A perturbation method describes its work as *blocks*: block ``b`` is one perturbation
of every example (the original inputs, one ablated feature, one coalition...). How
the blocks run depends on the model, which the first block tells:

* a model with one output row per example: row ``b * n + i`` is block ``b`` of
  example ``i``, and every row runs through
  :func:`~torchexplain.core.perturb.forward_rows` (inference mode, memory-sized
  chunks that may span several blocks);
* a model with one output for the whole batch (a loss, a Python number, an output
  whose first dimension is not the batch): each block runs alone, as one batch
  (Captum's "aggregate" mode). So do the blocks of inputs whose first dimensions
  differ (a sparse index list beside a batch), which cannot be cut into rows.

:func:`block_values` returns a :class:`Blocks` table, ``(n_blocks, *out_shape)``: the
explained values of every block, where ``out_shape`` is ``(n, *rest)`` per example
(``rest`` is what ``target`` leaves of each example's output: nothing for one value,
everything for ``target=None``) or the output's own shape for a whole-batch model.
The method folds it into attributions without further forward passes. For models
that return ``torch.futures.Future`` (``attribute_future``) the table is a future.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor
from torch.futures import collect_all

from ..core.forward import ForwardAdapter, is_batch_output, is_future
from ..core.inputs import as_tuple, validate_inputs
from ..core.perturb import ProgressBar, forward_rows
from .base import Attribution
from .feature_mask import FeatureMask, format_feature_mask


def then(value, fn: Callable):
    """``fn(value)``, or a future of it when ``value`` is a future."""
    if is_future(value):
        return value.then(lambda done: fn(done.value()))
    return fn(value)


def example_rows(t: Tensor, examples: Tensor, n: int) -> Tensor:
    """Rows ``examples`` of an input or baseline batched over ``n`` examples. A
    broadcast view (stride 0 over the batch: a scalar or batch-1 baseline) stays one
    row that broadcasts; a tensor whose first dimension is not the batch (only with a
    whole-batch model) is taken whole."""
    if t.dim() == 0 or t.shape[0] != n:
        return t
    if t.shape[0] > 1 and t.stride(0) == 0:
        return t[:1]
    if examples.numel() == n and (n == 0 or bool((examples == torch.arange(n)).all())):
        return t
    return t.index_select(0, examples.to(t.device))


class Blocks:
    """The explained values of every block: ``values`` ``(n_blocks, *out_shape)``;
    ``batch`` says whether the model gave one output for the whole batch."""

    def __init__(self, values: Tensor, batch: bool, n: int):
        self.values, self.batch, self.n = values, batch, n

    @property
    def out_shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape[1:])

    def flat(self) -> Tensor:
        """``(n_blocks, n_outputs)``."""
        return self.values.reshape(self.values.shape[0], -1)

    def output_examples(self) -> Tensor:
        """The example each flattened output belongs to (0 for a whole-batch model)."""
        n_outputs = math.prod(self.out_shape)
        if self.batch or self.n == 0:
            return torch.zeros(n_outputs, dtype=torch.long)
        return torch.arange(n_outputs) // (n_outputs // self.n)

    def attributions(self, fm: FeatureMask, per_feature: Tensor, inputs: Sequence[Tensor], dtype,
                     shaped: bool = False) -> list[Tensor]:
        """Per-output, per-feature values ``(n_outputs, n_features)`` spread over the
        inputs: ``(n_outputs, *input.shape[1:])`` each, or ``(*out_shape,
        *input.shape[1:])`` with ``shaped``."""
        out = []
        for a, x in zip(fm.expand(per_feature, self.output_examples()), inputs):
            a = a.to(device=x.device, dtype=dtype)
            out.append(a.reshape(self.out_shape + tuple(x.shape[1:])) if shaped else a)
        return out


def block_values(
    adapter: ForwardAdapter,
    n_blocks: int,
    build: Callable[[Tensor, Tensor], tuple],
    *,
    perturbations_per_eval="auto",
    show_progress: bool = False,
    desc: str = "perturbations",
    shared_masks: bool = True,
    batched_inputs: bool = True,
    reserved_bytes: Callable[[], float] | None = None,
):
    """The :class:`Blocks` of ``n_blocks`` blocks (see the module docstring), or a
    future of it. ``build(blocks, examples)`` returns the inputs of rows given by
    their block and example indices. ``shared_masks`` is False for per-example
    feature masks, which a whole-batch model refuses; ``batched_inputs`` is False
    when the inputs' first dimensions differ (each block then runs whole);
    ``reserved_bytes`` goes to :func:`~torchexplain.core.perturb.forward_rows`."""
    n = adapter.n
    every = torch.arange(n)
    with torch.inference_mode():
        first = adapter.selected(build(torch.zeros(n, dtype=torch.long), every), every)
        first = first.wait() if is_future(first) else first
    batch_output = is_batch_output(first, n)
    if batch_output:
        _check_batch_model(first, n, perturbations_per_eval, shared_masks)
        explain = adapter.batch_target
    else:
        explain = lambda out: adapter.target.values(adapter.check_rows(out, n), every)  # noqa: E731
    if batch_output or not batched_inputs:  # each block runs alone, as one batch
        return _whole_blocks(adapter, n_blocks, build, explain, explain(first), batch_output, show_progress, desc)
    start = explain(first)
    table = torch.empty((n_blocks * n,) + tuple(start.shape[1:]), dtype=start.dtype, device=start.device)
    table[:n] = start

    def consume(rows: Tensor, examples: Tensor, values: Tensor) -> None:
        table[rows.to(values.device) + n] = values.to(table.dtype)

    done = forward_rows(
        adapter, (n_blocks - 1) * n, lambda rows, examples: build(rows // n + 1, examples), consume,
        perturbations_per_eval=perturbations_per_eval, show_progress=show_progress, desc=desc, per_element=True,
        reserved_bytes=reserved_bytes,
    )
    blocks = lambda _=None: Blocks(table.view((n_blocks, n) + tuple(start.shape[1:])), False, n)  # noqa: E731
    return done.then(blocks) if is_future(done) else blocks()


def _check_batch_model(first: Tensor, n: int, perturbations_per_eval, shared_masks: bool) -> None:
    shape = tuple(first.shape)
    if isinstance(perturbations_per_eval, int) and perturbations_per_eval > 1:
        raise ValueError(
            f"perturbations_per_eval must be 1 (or \"auto\"): forward_func returns one output of shape {shape} for the "
            f"whole batch of {n}, which cannot hold several perturbations"
        )
    if not shared_masks:
        raise ValueError(
            f"forward_func returns one output of shape {shape} for the whole batch of {n}, so feature_mask must be "
            "shared by every example (first dimension 1): attributions are given for the batch, not per example"
        )


def _whole_blocks(adapter: ForwardAdapter, n_blocks: int, build, explain: Callable, start: Tensor, batch: bool,
                  show_progress: bool, desc: str):
    """Each block as one batch: for a whole-batch model, or inputs whose first
    dimensions differ. ``explain(output)`` gives a block's explained values."""
    every = torch.arange(adapter.n)
    bar = ProgressBar(n_blocks, desc) if show_progress else None
    outputs: list = []
    try:
        with torch.inference_mode():
            for b in range(1, n_blocks):
                outputs.append(then(adapter.selected(build(torch.full((adapter.n,), b), every), every), explain))
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    def stacked(values: list[Tensor]) -> Blocks:
        shapes = {tuple(v.shape) for v in values}
        if len(shapes) > 1:
            raise ValueError(
                f"forward_func returned outputs of different shapes for the perturbed batches: {sorted(shapes)}"
            )
        return Blocks(torch.stack([v.clone() for v in values]), batch, adapter.n)

    if adapter.futures:
        return collect_all(outputs).then(lambda done: stacked([start] + [f.value() for f in done.value()]))
    return stacked([start] + outputs)


class PerturbationAttribution(Attribution):
    """Base of the forward-only methods: inputs may be of any dtype (token ids
    included); the model runs under inference mode and is left unchanged. As in
    Captum, ``multiplies_by_inputs`` is True."""

    @property
    def multiplies_by_inputs(self) -> bool:
        return True

    def _setup(self, inputs, target, additional_forward_args, forward_kwargs, feature_mask, *, futures=False):
        """(inputs tuple, is_tuple, adapter, feature mask); the inputs' first
        dimensions may differ (checked against the model by :func:`block_values`)."""
        inputs, is_tuple = as_tuple(inputs)
        validate_inputs(inputs, floating=False, same_batch=False)
        adapter = ForwardAdapter(
            self.forward_func,
            inputs[0].shape[0],
            target,
            additional_forward_args,
            forward_kwargs,
            self.output_selector,
            futures=futures,
        )
        return inputs, is_tuple, adapter, format_feature_mask(feature_mask, inputs)

    def _blocks(self, adapter, fm: FeatureMask, inputs, n_blocks: int, build, perturbations_per_eval, show_progress,
                reserved_bytes: Callable[[], float] | None = None):
        """:func:`block_values` under the model guard, titled with the class name."""
        with self._guard():
            return block_values(
                adapter,
                n_blocks,
                build,
                perturbations_per_eval=perturbations_per_eval,
                show_progress=show_progress,
                desc=type(self).__name__,
                shared_masks=not fm.per_example,
                batched_inputs=len({x.shape[0] for x in inputs}) == 1,
                reserved_bytes=reserved_bytes,
            )
