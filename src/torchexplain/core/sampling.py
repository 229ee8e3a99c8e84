"""The one sampler: noise, baseline picks and points on paths, for every sampling
gradient method (NoiseTunnel, GradientShap and its layer and neuron forms, shap's
GradientExplainer).

Every draw is made from the caller's generator on the generator's own device (a
CPU generator draws on the CPU, a CUDA one on its GPU) and then moved to the device
of the tensors it is for; without a generator, torch's default CPU generator is
used, so a seed gives the same samples whatever device the inputs are on. Indices
and path points stay on the CPU, where rows are numbered.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .inputs import per_row, take

#: NoiseTunnel's order: sample by sample, each sample drawing every input in turn
BY_SAMPLE = "by_sample"
#: the paths' order: input by input, each input drawing every sample at once
BY_INPUT = "by_input"


class Sampler:
    """Draws from ``generator`` (None: torch's default CPU generator) on its device,
    returned on the device they are used on."""

    def __init__(self, generator: torch.Generator | None = None):
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None; got {type(generator).__name__}")
        self.generator = generator
        self.device = torch.device("cpu") if generator is None else generator.device

    def normal(self, shape: Sequence[int], std: float, like: Tensor) -> Tensor:
        """``N(0, std^2)`` noise of ``shape`` in ``like``'s dtype, on ``like``'s device."""
        noise = torch.randn(tuple(shape), generator=self.generator, dtype=like.dtype, device=self.device) * std
        return noise.to(like.device)

    def indices(self, high: int, count: int) -> Tensor:
        """``count`` integers drawn uniformly from ``0 .. high-1`` (a CPU LongTensor)."""
        return torch.randint(high, (count,), generator=self.generator, device=self.device).cpu()

    def uniform(self, count: int) -> Tensor:
        """``count`` float64 points drawn uniformly from [0, 1) (on the CPU)."""
        return torch.rand(count, generator=self.generator, dtype=torch.float64, device=self.device).cpu()

    def noise(self, inputs: Sequence[Tensor], stds: Sequence[float], n_samples: int,
              order: str = BY_INPUT) -> list[Tensor | None]:
        """Gaussian noise for ``n_samples`` copies of every example of each input.

        ``order`` is the order of the draws, which decides the values: ``BY_INPUT``
        draws each input's ``(n_samples * n, *features)`` noise at once (rows
        sample-major: row ``s * n + i`` is sample ``s`` of example ``i``) and gives
        None for an input with ``std == 0``; ``BY_SAMPLE`` draws sample after sample,
        every input's ``(n, *features)`` in turn, and gives ``(n, n_samples,
        *features)`` per input (zeros, drawn from nothing, where ``std == 0``)."""
        if order == BY_INPUT:
            return [None if s == 0 else self.normal((n_samples * x.shape[0],) + tuple(x.shape[1:]), s, x)
                    for x, s in zip(inputs, stds)]
        if order != BY_SAMPLE:
            raise ValueError(f"order must be {BY_INPUT!r} or {BY_SAMPLE!r}; got {order!r}")
        draws = [[torch.zeros_like(x) if s == 0 else self.normal(x.shape, s, x) for x, s in zip(inputs, stds)]
                 for _ in range(n_samples)]
        return [torch.stack([sample[i] for sample in draws], 1) for i in range(len(inputs))]

    def picks(self, high: int, n: int, n_samples: int) -> Tensor:
        """A row of ``0 .. high-1`` for each of ``n_samples`` copies of ``n`` examples,
        drawn sample after sample, given example-major (``i * n_samples + s``)."""
        return torch.stack([self.indices(high, n) for _ in range(n_samples)], 1).flatten()


class PathDraws:
    """The draws of ``n * n_samples`` rows of sampled straight paths (GradientShap,
    expected gradients): row ``r`` explains example ``r % n`` with sample ``r // n``.
    Its path starts at baseline row ``picks[r]`` and ends at the example plus, for an
    input with ``stds > 0``, Gaussian noise; ``alphas[r]`` in [0, 1) is its point.
    Everything is drawn up front from ``sampler``, in the order picks, points, noise
    (input by input), so results do not depend on chunking."""

    def __init__(self, inputs: Sequence[Tensor], baselines: Sequence[Tensor], n_samples: int,
                 stds: Sequence[float], sampler: Sampler):
        self.inputs, self.baselines = tuple(inputs), tuple(baselines)
        self.n = self.inputs[0].shape[0]
        n_rows = self.n * n_samples
        self.picks = sampler.indices(self.baselines[0].shape[0], n_rows)
        self.alphas = sampler.uniform(n_rows)
        self.noise = sampler.noise(self.inputs, stds, n_samples, BY_INPUT)

    @property
    def smoothed(self) -> bool:
        """Whether any input gets noise."""
        return any(e is not None for e in self.noise)

    def examples(self, rows: Tensor) -> Tensor:
        return rows % self.n

    def example_values(self, rows: Tensor, tensors: Sequence[Tensor] | None = None) -> tuple[Tensor, ...]:
        """Each row's example of ``tensors`` (tensors over the examples; default the
        inputs), in their layout."""
        examples = self.examples(rows)
        return tuple(take(t, examples) for t in (self.inputs if tensors is None else tensors))

    def ends(self, rows: Tensor, examples: Tensor | None = None) -> tuple[Tensor, ...]:
        """The (noisy) examples that end the rows' paths."""
        clean = self.example_values(rows) if examples is None else tuple(take(x, examples) for x in self.inputs)
        return tuple(x if e is None else x + take(e, rows) for x, e in zip(clean, self.noise))

    def starts(self, rows: Tensor, source: Sequence[Tensor] | None = None) -> tuple[Tensor, ...]:
        """The baseline rows that start the rows' paths, taken from ``source`` (rows
        like the baselines, e.g. a layer's values for them; default the baselines)."""
        picks = self.picks[rows]
        return tuple(b[picks.to(b.device)] for b in (self.baselines if source is None else source))

    def between(self, rows: Tensor, starts: Sequence[Tensor], ends: Sequence[Tensor]) -> tuple[Tensor, ...]:
        """The rows' points ``start + alpha * (end - start)``."""
        return tuple(s + per_row(self.alphas, rows, s) * (e - s) for s, e in zip(starts, ends))

    def points(self, rows: Tensor, examples: Tensor | None = None) -> tuple[Tensor, ...]:
        """The rows' points on the input paths (a ``build`` for the row evaluator)."""
        return self.between(rows, self.starts(rows), self.ends(rows, examples))
