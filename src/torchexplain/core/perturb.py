"""Forward-only evaluation of perturbed rows, through the one chunked evaluator.

Perturbation methods (occlusion, ablation, Shapley sampling, LIME, RISE...) describe
their work as rows: row ``r`` is a perturbed copy of example ``r % n``. The rows run
under ``torch.inference_mode`` in chunks: ``perturbations_per_eval="auto"`` sizes them
from the memory budget (the first chunk is measured), an int is Captum's
perturbations per forward (each perturbation covering every example).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from .batching import check_chunk_size, evaluate_rows
from .forward import ForwardAdapter
from .gradients import RowRunner

#: share of a forward's activations alive at once without autograd (a layer's input
#: and output at a time, against every layer's saved for backward)
INFERENCE_LIVE_FRACTION = 0.25
#: on CPU, forward-only chunks stay within this many bytes of live activations:
#: resnet18 at 224x224 runs 10-15% faster per image in chunks of about 8 than of 32
CPU_CHUNK_BYTES = 64 << 20

Build = Callable[[Tensor, Tensor], Sequence[Tensor]]
ConsumeScalars = Callable[[Tensor, Tensor, Tensor], None]


def rows_per_chunk(perturbations_per_eval, n_examples: int):
    """Chunk size in rows for ``perturbations_per_eval`` ("auto", None or an int)."""
    value = check_chunk_size(perturbations_per_eval, "perturbations_per_eval")
    return value * n_examples if isinstance(value, int) else value


def forward_rows(
    adapter: ForwardAdapter,
    n_rows: int,
    build: Build,
    consume: ConsumeScalars,
    *,
    perturbations_per_eval="auto",
    show_progress: bool = False,
    desc: str = "perturbations",
) -> None:
    """Evaluate the explained scalar of rows ``0 .. n_rows-1`` (row ``r`` perturbs
    example ``r % adapter.n``): ``build(rows, examples)`` makes their inputs and
    ``consume(rows, examples, scalars)`` folds the outputs into the result."""
    n = adapter.n
    runner = RowRunner()
    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_rows, desc=desc, unit="row", leave=False)

    def forward(chunk, examples, probing: bool):
        if probing:  # measured block: let autograd save activations so their size is seen
            with torch.enable_grad():
                grad_inputs = tuple(t.detach().requires_grad_(t.is_floating_point()) for t in chunk)
                return adapter.scalars(grad_inputs, examples).detach()
        with torch.inference_mode():
            return adapter.scalars(chunk, examples)

    def run(a: int, b: int) -> None:
        probing = not runner.stats and perturbations_per_eval == "auto"
        rows = torch.arange(a, b)
        examples = rows % n
        scalars = runner.call(build(rows, examples), lambda chunk: forward(chunk, examples, probing))
        consume(rows, examples, scalars.clone())
        if bar is not None:
            bar.update(b - a)

    try:
        evaluate_rows(
            n_rows, run, rows_per_chunk(perturbations_per_eval, n), stats=runner.stats, probe_rows=max(n, 8),
            saved_fraction=INFERENCE_LIVE_FRACTION, cpu_chunk_bytes=CPU_CHUNK_BYTES,
        )
    finally:
        if bar is not None:
            bar.close()
