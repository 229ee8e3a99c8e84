"""Layer activations of concept examples, streamed to the cache.

Each batch of a concept's ``data_iter`` runs through the model in chunks sized by
the one evaluator (:func:`~torchexplain.core.batching.evaluate_rows`, forward-only,
as the perturbation methods do); every chunk's values at every requested layer go
to disk at once, so no more than one chunk's activations are alive. The forward
pass stops as soon as every requested layer has produced its values: the layers
after them never run. A layer is read at its first call in a forward pass.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch
from torch import Tensor, nn

from ..core.batching import check_chunk_size, evaluate_rows
from ..core.gradients import RowRunner
from ..core.hooks import model_guard
from ..core.perturb import CPU_CHUNK_BYTES, INFERENCE_LIVE_FRACTION

#: rows of the first, measured block of each batch (with autograd on, as the evaluator needs)
PROBE_ROWS = 2


class _Enough(Exception):
    """Raised by the last needed hook: the rest of the forward pass is not needed."""


def example_tensors(batch, where: str) -> tuple[Tensor, ...]:
    """A ``data_iter`` batch as the model's inputs: a tensor, or a tuple/list of tensors."""
    values = (batch,) if isinstance(batch, Tensor) else batch
    if not isinstance(values, (tuple, list)) or not values or not all(isinstance(v, Tensor) for v in values):
        raise TypeError(f"{where} must yield tensors or tuples of tensors (the model's inputs); got "
                        f"{type(batch).__name__}")
    sizes = {v.shape[0] if v.dim() else None for v in values}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"{where} yielded inputs without a common batch dimension: shapes "
                         f"{[tuple(v.shape) for v in values]}")
    return tuple(values)


@contextlib.contextmanager
def _watching(modules: Sequence[nn.Module], to_input: bool, found: dict):
    """Record each module's first output (or input) into ``found[k]``; raise
    :class:`_Enough` once every module has one."""

    def hook_for(k: int):
        def record(values):
            if k in found:
                return
            values = values[0] if isinstance(values, (tuple, list)) and len(values) == 1 else values
            if not isinstance(values, Tensor):
                raise TypeError(f"the watched layer {k} gives a {type(values).__name__}; TCAV needs one tensor")
            flat = values.detach().reshape(values.shape[0], -1)
            # a view would change with a later in-place operation (ReLU(inplace=True))
            found[k] = flat.clone() if flat.data_ptr() == values.data_ptr() else flat
            if len(found) == len(modules):
                raise _Enough

        if to_input:
            return lambda module, args: record(args)
        return lambda module, args, output: record(output)

    handles = []
    try:
        for k, m in enumerate(modules):
            hook = hook_for(k)
            handles.append(m.register_forward_pre_hook(hook) if to_input else m.register_forward_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


def layer_values(model: nn.Module, modules: Sequence[nn.Module], chunk: tuple[Tensor, ...], to_input: bool,
                 probing: bool = False) -> list[Tensor]:
    """Every module's values for the rows ``chunk``, flattened per row."""
    found: dict[int, Tensor] = {}
    grad = torch.enable_grad() if probing else torch.inference_mode()
    if probing:  # the measured block: autograd saves activations so that their size is seen
        chunk = tuple(t.detach().requires_grad_(t.is_floating_point()) for t in chunk)
    with grad, _watching(modules, to_input, found):
        try:
            model(*chunk)
        except _Enough:
            pass
    missing = [k for k in range(len(modules)) if k not in found]
    if missing:
        raise ValueError(f"layer(s) {missing} did not run in the model's forward pass")
    return [found[k].detach() for k in range(len(modules))]


def stream_activations(model: nn.Module, modules: Sequence[nn.Module], data_iter, writers: Sequence,
                       to_input: bool, where: str, chunk_size="auto") -> None:
    """Run every batch of ``data_iter`` through ``model`` in chunks; ``writers[k].add``
    gets each chunk's values at ``modules[k]``; each writer is committed at the end."""
    chunk_size = check_chunk_size(chunk_size)
    device = next((p.device for p in model.parameters()), None)
    runner = RowRunner()
    with model_guard(model):
        for batch in data_iter:
            inputs = example_tensors(batch, where)
            if device is not None:
                inputs = tuple(t.to(device) for t in inputs)
            n = inputs[0].shape[0]

            def run(a: int, b: int, inputs=inputs, n=n) -> None:
                # evaluate_rows measures its first block of PROBE_ROWS rows when it chunks
                probing = chunk_size == "auto" and a == 0 and b == PROBE_ROWS < n
                rows = tuple(t[a:b] for t in inputs)
                values = runner.call(rows, lambda c: layer_values(model, modules, c, to_input, probing))
                for writer, v in zip(writers, values):
                    writer.add(v)

            evaluate_rows(n, run, chunk_size, stats=runner.stats, probe_rows=PROBE_ROWS,
                          saved_fraction=INFERENCE_LIVE_FRACTION, cpu_chunk_bytes=CPU_CHUNK_BYTES, forward_only=True)
    for writer in writers:
        if writer.rows == 0:
            raise ValueError(f"{where} yielded no examples")
        writer.commit()
