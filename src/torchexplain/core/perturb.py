"""Forward-only evaluation of perturbed rows, through the one chunked evaluator.

Perturbation methods (occlusion, ablation, Shapley sampling, LIME, RISE...) describe
their work as rows: row ``r`` is a perturbed copy of example ``r % n``. The rows run
under ``torch.inference_mode`` in chunks: ``perturbations_per_eval="auto"`` sizes them
from the memory budget (the first chunk is measured), an int is Captum's
perturbations per forward (each perturbation covering every example).
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

import torch
from torch import Tensor
from torch.futures import Future, collect_all

from .batching import check_chunk_size, evaluate_rows
from .forward import ForwardAdapter, is_future
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
    per_element: bool = False,
    reserved_bytes: Callable[[], float] | None = None,
) -> Future | None:
    """Evaluate the explained scalar of rows ``0 .. n_rows-1`` (row ``r`` perturbs
    example ``r % adapter.n``): ``build(rows, examples)`` makes their inputs and
    ``consume(rows, examples, scalars)`` folds the outputs into the result. With
    ``per_element`` each row's explained values may be several (``target=None`` on
    a model with several outputs): ``scalars`` is then ``(rows, *rest)``.

    For an adapter of a model that returns futures, every chunk is dispatched before
    any is waited for; the returned future completes when every chunk is consumed
    (None otherwise). ``reserved_bytes()`` is memory the call holds beside the chunks
    (cached activations; asked before the first chunk), left out of their budget."""
    n = adapter.n
    runner = RowRunner()
    pending: list[Future] = []
    bar = ProgressBar(n_rows, desc) if show_progress else None
    explained = adapter.values if per_element else adapter.scalars

    def forward(chunk, examples, probing: bool):
        if probing:  # measured block: let autograd save activations so their size is seen
            with torch.enable_grad():
                grad_inputs = tuple(t.detach().requires_grad_(t.is_floating_point()) for t in chunk)
                return detached(explained(grad_inputs, examples))
        with torch.inference_mode():
            return explained(chunk, examples)

    def run(a: int, b: int) -> None:
        probing = not runner.stats and perturbations_per_eval == "auto" and not adapter.futures
        rows = torch.arange(a, b)
        examples = rows % n
        scalars = runner.call(build(rows, examples), lambda chunk: forward(chunk, examples, probing))
        if is_future(scalars):
            pending.append(scalars.then(lambda done: consume(rows, examples, done.value().clone())))
        else:
            consume(rows, examples, scalars.clone())
        if bar is not None:
            bar.update(b - a)

    try:
        evaluate_rows(
            n_rows, run, rows_per_chunk(perturbations_per_eval, n), stats=runner.stats, probe_rows=max(n, 8),
            saved_fraction=INFERENCE_LIVE_FRACTION, cpu_chunk_bytes=CPU_CHUNK_BYTES, forward_only=True,
            reserved_bytes=reserved_bytes() if reserved_bytes is not None else 0,
        )
    finally:
        if bar is not None:
            bar.close()
    return collect_all(pending) if adapter.futures else None


def detached(value):
    """``value.detach()``, also for a future of a tensor."""
    return value.then(lambda done: done.value().detach()) if is_future(value) else value.detach()


class ProgressBar:
    """A tqdm bar on stderr titled as Captum's ("Feature Ablation attribution" for a
    ``desc`` of "FeatureAblation") that shows its final state before it is cleared."""

    def __init__(self, total: int, desc: str):
        from tqdm.auto import tqdm

        title = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", desc)
        self.bar = tqdm(total=total, desc=f"{title} attribution", unit="row", leave=False)

    def update(self, k: int) -> None:
        self.bar.update(k)

    def close(self) -> None:
        self.bar.refresh()
        self.bar.close()
