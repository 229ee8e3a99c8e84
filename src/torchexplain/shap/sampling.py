"""Expected-gradients draws and the evaluator that differentiates several ranked
outputs per forward pass.

Work is organised in *pairs* (example, sample): pair ``p`` explains example
``p % N`` with sample ``p // N``. Each pair has one background row, one point
``t ~ U(0, 1)`` on the path and, with local smoothing, one noise draw; every ranked
output of the example uses the same pair, as in shap ("the same noise patterns for
each output class"). A chunk of pairs runs forward once and is differentiated once
per ranked output, so ranked outputs cost one backward pass each, not a forward pass
each.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from ..attr.base import per_row
from ..core.batching import evaluate_rows
from ..core.gradients import RowRunner
from ..core.hooks import frozen_parameters


class PairDraws:
    """The random draws of ``n * n_samples`` pairs, made up front from ``generator``
    (None: the global RNG), so results do not depend on chunking: background row
    ``picks[p]``, path point ``alphas[p]`` and, when ``smoothing > 0``, Gaussian noise
    of that standard deviation added to the example."""

    def __init__(self, inputs: Sequence[Tensor], background: Sequence[Tensor], n_samples: int,
                 smoothing: float, generator: torch.Generator | None):
        self.inputs, self.background = tuple(inputs), tuple(background)
        self.n = inputs[0].shape[0]
        n_pairs = self.n * n_samples
        self.picks = torch.randint(background[0].shape[0], (n_pairs,), generator=generator)
        self.alphas = torch.rand(n_pairs, generator=generator, dtype=torch.float64)
        self.noise = [
            None if smoothing == 0
            else (torch.randn((n_pairs,) + x.shape[1:], generator=generator, dtype=x.dtype) * smoothing).to(x.device)
            for x in inputs
        ]

    def examples(self, pairs: Tensor) -> Tensor:
        return pairs % self.n

    def ends(self, pairs: Tensor) -> tuple[Tensor, ...]:
        """The (smoothed) examples of ``pairs``."""
        return tuple(x if noise is None else x + noise[pairs.to(x.device)]
                     for x, noise in zip(self.rows_of(pairs, self.inputs), self.noise))

    def rows_of(self, pairs: Tensor, tensors: Sequence[Tensor]) -> tuple[Tensor, ...]:
        """Each pair's example row of ``tensors`` (rows of the examples), in their layout."""
        index = self.examples(pairs)
        return tuple(t[index.to(t.device)] for t in tensors)

    def starts(self, pairs: Tensor, rows: Sequence[Tensor] | None = None) -> tuple[Tensor, ...]:
        """The background rows of ``pairs``, taken from ``rows`` (default: the data),
        in their layout."""
        picks = self.picks[pairs]
        return tuple(b[picks.to(b.device)] for b in (rows or self.background))

    def between(self, pairs: Tensor, starts: Sequence[Tensor], ends: Sequence[Tensor]) -> tuple[Tensor, ...]:
        """The points ``start + alpha * (end - start)`` of ``pairs``."""
        return tuple(s + per_row(self.alphas, pairs, s) * (e - s) for s, e in zip(starts, ends))


def rank_gradients(
    model,
    n_pairs: int,
    build: Callable[[Tensor], Sequence[Tensor]],
    score: Callable[[tuple, Tensor], Tensor],
    consume: Callable[[Tensor, int, tuple], None],
    *,
    chunk="auto",
    wrt: Callable[[], Sequence[Tensor]] | None = None,
) -> None:
    """For each chunk of pairs: ``build(pairs)`` makes the model's inputs,
    ``score(inputs, pairs)`` runs the model and returns (pairs, K) scalars, and for
    each ranked output ``k`` the gradient of the sum of column ``k`` with respect to
    the inputs (or to ``wrt()``, e.g. a layer's values; zeros for a tensor that does
    not reach the output) goes to ``consume(pairs, k, grads)``. Chunks come from the one evaluator
    (:func:`~torchexplain.core.batching.evaluate_rows`); parameters are frozen."""
    runner = RowRunner()

    def forward(inputs, pairs):
        if wrt is None:
            inputs = tuple(t.detach().requires_grad_(True) for t in inputs)
        with torch.enable_grad():
            return inputs, score(inputs, pairs)

    def run(a: int, b: int) -> None:
        pairs = torch.arange(a, b)
        inputs, scalars = runner.call(build(pairs), lambda chunk: forward(chunk, pairs))
        targets = tuple(inputs if wrt is None else wrt())
        if not scalars.requires_grad:
            raise ValueError(
                "the model output does not depend differentiably on the explained values; check that the "
                "model does not detach, round or argmax its output"
            )
        n_ranks = scalars.shape[1]
        for k in range(n_ranks):
            grads = torch.autograd.grad(scalars[:, k].sum(), targets, retain_graph=k + 1 < n_ranks, allow_unused=True)
            # a tensor that does not reach the output: zero gradients (shap's answer)
            consume(pairs, k, tuple(torch.zeros_like(t) if g is None else g for g, t in zip(grads, targets)))

    with frozen_parameters(model):
        evaluate_rows(n_pairs, run, chunk, stats=runner.stats, probe_rows=8)


def channels_last_layout(t: Tensor) -> bool:
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def same_layout(t: Tensor, like: Tensor) -> Tensor:
    """``t`` in ``like``'s memory layout (channels-last or contiguous)."""
    return t.contiguous(memory_format=torch.channels_last if channels_last_layout(like) else torch.contiguous_format)


class RankTotals:
    """Per ranked output, the sums over samples of each example's attributions."""

    def __init__(self, n: int, n_ranks: int):
        self.n, self.n_ranks = n, n_ranks
        self.sums: list[list[Tensor]] = []

    def add(self, examples: Tensor, k: int, values: Sequence[Tensor]) -> None:
        if not self.sums:  # in the values' layout: index_add_ across layouts is many times slower
            self.sums = [[same_layout(v.new_zeros((self.n,) + v.shape[1:]), v) for v in values]
                         for _ in range(self.n_ranks)]
        for total, v in zip(self.sums[k], values):
            total.index_add_(0, examples.to(v.device), v)

    def means(self, n_samples: int) -> list[Tensor]:
        """Per explained tensor, (N, K, *features) means over the samples."""
        return [torch.stack([per_rank[i] for per_rank in self.sums], 1) / n_samples for i in range(len(self.sums[0]))]
