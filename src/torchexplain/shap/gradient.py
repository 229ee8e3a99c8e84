"""shap's GradientExplainer (expected gradients) on the batched row evaluator."""

from __future__ import annotations

import numbers
from typing import Sequence

import torch
from torch import Tensor

from ..attr.seeding import make_generator, positive_int
from ..core.batching import check_chunk_size
from ..core.forward import ForwardAdapter
from ..core.gradients import RowRunner, row_gradients
from ..core.hooks.layers import LayerTap, layer_name, resolve_layer
from ..core.sampling import PathDraws, Sampler
from ..core.targets import output_ranks
from .explanation import Explanation
from .forms import (
    background_tensors,
    borrowed,
    checked_output,
    expected_value,
    explained_inputs,
    model_outputs,
    rank_scalars,
    shap_form,
    with_ranks,
)
from .layer import layer_inputs, output_passes_through, probe_feeds, split_model

COMPAT = (None, "shap")


class GradientExplainer:
    r"""Expected gradients (Erion et al. 2021), shap's ``GradientExplainer``.

    ``GradientExplainer(model, data)`` explains the model's inputs;
    ``GradientExplainer((model, layer), data)`` explains the input of ``layer`` (a
    module of the model or its dotted name). ``data`` is the background: a tensor, or
    a list of tensors for a model with several inputs (``X`` then takes the same form).

    For each explained example ``x`` and each of ``nsamples`` samples, a background
    row ``b`` and a point ``t ~ U(0, 1)`` are drawn (and, with ``local_smoothing``
    = s > 0, ``x`` is replaced by ``x + N(0, s^2)`` noise). The attributions are the
    sample means of

    * inputs: ``grad f(b + t (x - b)) * (x - b)``, whose sum over features tends to
      ``f(x) - E[f(background)]``;
    * a layer, by default (additive): with ``h(.)`` the layer's input and ``F`` the
      model as a function of it, ``grad F(h(b) + t (h(x) - h(b))) * (h(x) - h(b))``:
      the interpolation happens at the layer, so the attributions' sum over the
      layer's features also tends to ``f(x) - E[f(background)]`` when the layer's
      input is a cut of the model (every path from the inputs to the output passes
      through it; otherwise the rest of the model sees the example's values, as in
      Captum's LayerIntegratedGradients). The layer's prefix runs for the examples
      and the background only, not per sample;
    * a layer with ``compat="shap"``: shap's own formula, ``grad F(h(x_t)) * h(x_t)``
      with ``x_t = b + t (x - b)`` interpolated in input space. It multiplies by the
      layer's value at the interpolated point rather than by a difference, so it
      does not add up to ``f(x) - E[f(background)]``; use it to reproduce shap's
      numbers.

    An input (or a layer input) that does not reach the output gets zero values, as
    in shap. ``expected_value`` (beyond shap's GradientExplainer) is the model's mean
    output over the background. The model runs in eval mode, as in shap, and is left
    as it was found. ``explainer(X)`` returns an :class:`~torchexplain.shap.Explanation`.

    Formula:
        $$\phi_i(x) = \mathbb{E}_{b \sim D,\, t \sim U(0, 1)}\Big[(x_i - b_i)\,
        \frac{\partial f(b + t (x - b))}{\partial x_i}\Big]
        \approx \frac{1}{S} \sum_{s=1}^{S} (x_i - b_{s,i})\, \frac{\partial f(b_s + t_s (x - b_s))}{\partial x_i}$$

        for each explained output \(f\), with \(D\) the background ``data``, \(S\) =
        ``nsamples`` draws of a background row \(b_s\) and a point \(t_s\), and \(x\)
        replaced by \(x + \epsilon_s\), \(\epsilon_s \sim N(0, \sigma^2)\), for
        ``local_smoothing`` \(= \sigma > 0\) (a layer: the same with \(h(x)\), \(h(b)\) as
        above). In expectation \(\sum_i \phi_i(x) = f(x) - \mathbb{E}_{b \sim D} f(b)\)
        (with \(\sigma = 0\); for a layer, when its input is a cut of the model).

    Cost:
        One forward pass of ``data`` at construction; per call, one forward of ``X`` (to
        rank the outputs), then ``nsamples`` forward passes per example, each followed
        by \(K\) backward passes, one per explained output (every output, or the
        ``ranked_outputs``), ``batch_size`` rows per chunk. The additive layer form also
        runs the layer's prefix once on ``data`` and, without smoothing, once on ``X``
        plus a single-row probe per distinct example (and one background row); where
        that finds the layer's input to be a cut, the prefix runs once per chunk, not
        once per row.

    Examples:
        >>> import torch
        >>> from torchexplain.shap import GradientExplainer
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> background, x = torch.randn(8, 3), torch.randn(2, 3)
        >>> values = GradientExplainer(model, background).shap_values(x, nsamples=50, rseed=0)
        >>> values.shape, values.dtype  # (examples, features, outputs)
        ((2, 3, 2), dtype('float32'))
        >>> linear = torch.nn.Linear(3, 2)  # linear, one background row: exact
        >>> explainer = GradientExplainer(linear, torch.zeros(1, 3))
        >>> values = explainer.shap_values(x, nsamples=20, rseed=0)
        >>> with torch.no_grad():
        ...     gap = linear(x).numpy() - explainer.expected_value
        >>> bool(abs(values.sum(1) - gap).max() < 1e-5)
        True
    """

    def __init__(self, model, data, batch_size=50, local_smoothing=0, compat: str | None = None):
        model, layer = split_model(model)
        if compat not in COMPAT:
            raise ValueError(f'compat must be None (additive) or "shap"; got {compat!r}')
        if isinstance(local_smoothing, bool) or not isinstance(local_smoothing, numbers.Real) or local_smoothing < 0:
            raise ValueError(f"local_smoothing must be a non-negative number; got {local_smoothing!r}")
        self.model = model
        self.layer = None if layer is None else resolve_layer(model, layer)
        self.data, self.multi_input = background_tensors(data)
        self.batch_size = check_chunk_size(batch_size, "batch_size")
        self.local_smoothing = float(local_smoothing)
        self.compat = compat
        with borrowed(model):
            self.expected_value = expected_value(model_outputs(model, self.data, self.batch_size))

    def __call__(self, X, nsamples: int = 200) -> Explanation:
        """The values of ``X`` for every output, as an Explanation (shap's ``explainer(X, nsamples)``)."""
        return Explanation.of(self.shap_values(X, nsamples=nsamples), self.expected_value, X)

    def shap_values(self, X, nsamples: int = 200, ranked_outputs=None, output_rank_order: str = "max", rseed=None):
        """Attributions of ``X`` (a tensor, or a list as the background data).

        Returns, per explained tensor, a NumPy array ``(N, *features, K)`` for the K
        explained outputs (every output, or the ``ranked_outputs`` top ones ordered by
        ``output_rank_order``: "max", "min", "max_abs", or "custom" with
        ``ranked_outputs`` listing output indices); a list of arrays when several
        tensors are explained. With ``ranked_outputs`` the result is
        ``(values, indexes)``, ``indexes`` an (N, K) LongTensor of the explained
        outputs. A model with a single output (shape (batch,) or (batch, 1)) gives
        K = 1. ``rseed`` makes the draws reproducible without touching the global RNG.
        """
        floating = self.layer is None or self.compat == "shap" or self.local_smoothing > 0
        inputs = explained_inputs(X, self.data, self.multi_input, floating=floating)
        nsamples = positive_int(nsamples, "nsamples")
        sampler = Sampler(make_generator(seed=rseed))
        n = inputs[0].shape[0]
        adapter = ForwardAdapter(self.model, n)
        with borrowed(self.model):
            ranks = output_ranks(model_outputs(self.model, inputs, self.batch_size), ranked_outputs, output_rank_order)
            draws = PathDraws(inputs, self.data, nsamples, (self.local_smoothing,) * len(inputs), sampler)
            totals = RankTotals(n, ranks.shape[1])
            paths = self._paths(adapter, draws, ranks, totals)
            # every ranked output from one forward pass, one backward each; a tensor
            # that does not reach the output gets zero gradients (shap's answer)
            row_gradients(
                adapter, n * nsamples, paths.build, paths.consume, internal_batch_size=self.batch_size,
                score=paths.score, wrt=paths.wrt, grad_kwargs={"materialize_grads": True}, multi_output=True,
                runner=paths.runner,
            )
        return with_ranks(shap_form(totals.means(nsamples)), ranks, ranked_outputs)

    def _paths(self, adapter, draws, ranks, totals):
        if self.layer is None:
            return InputPaths(adapter, draws, ranks, totals)
        tap = LayerTap(self.layer, to_input=True, name=layer_name(self.model, self.layer))
        if self.compat == "shap":
            return ShapLayerPaths(adapter, draws, ranks, totals, tap)
        return AdditiveLayerPaths(adapter, draws, ranks, totals, tap, self.batch_size)


def _image_layout(values: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return tuple(v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v for v in values)


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


class _Paths:
    """One form of expected gradients, for :func:`~torchexplain.core.gradients.row_gradients`:
    ``build`` feeds the model a chunk of rows (row ``r``: example ``r % N``, sample
    ``r // N``), ``score`` runs it and gives the rows' ranked outputs, and ``consume``
    adds ``grads * deltas`` of one ranked output; ``wrt`` (None: the inputs) gives
    what is differentiated, and ``runner`` the layout the chunk is fed in."""

    wrt = None

    def __init__(self, adapter: ForwardAdapter, draws: PathDraws, ranks: Tensor, totals: RankTotals):
        self.adapter, self.draws, self.ranks, self.totals = adapter, draws, ranks, totals
        self.deltas: tuple[Tensor, ...] = ()
        self.runner = RowRunner()

    def scores(self, out, rows: Tensor) -> Tensor:
        out = checked_output(out, len(rows))
        if not out.requires_grad:
            raise ValueError(
                "the model output does not depend differentiably on the explained values; check that the "
                "model does not detach, round or argmax its output"
            )
        return rank_scalars(out, self.ranks[self.draws.examples(rows)])

    def consume(self, rows: Tensor, examples: Tensor, grads, scalars, k: int) -> None:
        self.totals.add(examples, k, [g * d for g, d in zip(grads, self.deltas)])


class InputPaths(_Paths):
    """Expected gradients of the inputs: the model runs at the interpolated points."""

    def build(self, rows: Tensor, examples: Tensor):
        starts, ends = self.draws.starts(rows), self.draws.ends(rows)
        self.deltas = tuple(e - s for s, e in zip(starts, ends))
        return self.draws.between(rows, starts, ends)

    def score(self, inputs, rows: Tensor, examples: Tensor) -> Tensor:
        return self.scores(self.adapter.call(inputs, examples), rows)


class _LayerPaths(_Paths):
    """Gradients with respect to a layer's input, recorded (or replaced) by ``tap``."""

    def __init__(self, adapter, draws, ranks, totals, tap: LayerTap):
        super().__init__(adapter, draws, ranks, totals)
        self.tap = tap
        self.values: tuple[Tensor, ...] = ()

    def wrt(self):
        return self.values

    def run(self, inputs, rows: Tensor, examples: Tensor, replace=None) -> Tensor:
        with self.tap.recording(replace=replace, grad=True) as record:
            out = self.adapter.call(inputs, examples)
        self.values = record.values
        return self.scores(out, rows)


class ShapLayerPaths(_LayerPaths):
    """shap's layer formula: the model runs at points interpolated in input space;
    gradients with respect to the layer's input there, times that input."""

    def build(self, rows: Tensor, examples: Tensor):
        return self.draws.between(rows, self.draws.starts(rows), self.draws.ends(rows))

    def score(self, inputs, rows: Tensor, examples: Tensor) -> Tensor:
        scores = self.run(inputs, rows, examples)
        self.deltas = tuple(v.detach() for v in self.values)
        return scores


class AdditiveLayerPaths(_LayerPaths):
    """The additive layer formula: the layer's input is replaced by points between
    its values at the background row and at the example, and the gradient there is
    multiplied by their difference.

    Without local smoothing the examples' and the background's layer inputs are
    computed once (forward passes stopped at the layer); when the layer's input is a
    cut of the model, each chunk feeds the model a single example row and the
    prefix's result is replaced by the chunk's points. Otherwise the model is fed
    each row's (smoothed) example and the points start from the layer input it
    computed. The points take the layout of the chunk from the runner (channels-last
    where that is faster, with the runner's one fallback)."""

    def __init__(self, adapter, draws, ranks, totals, tap: LayerTap, batch_size):
        super().__init__(adapter, draws, ranks, totals, tap)
        model = adapter.forward_func
        # kept channels-last where 4-D: chunks of points are fed that way (faster on CPU),
        # and elementwise work between layouts is slow
        self.starts = _image_layout(layer_inputs(model, tap, draws.baselines, batch_size))
        self.ends = None
        if not draws.smoothed:
            ends = layer_inputs(model, tap, draws.inputs, batch_size)
            two_rows = tuple(torch.cat([e[:1], s[:1]]) for e, s in zip(ends, self.starts))
            if output_passes_through(model, tap, probe_feeds(draws.inputs, draws.baselines), two_rows):
                self.ends = _image_layout(ends)
        self.single_feed = tuple(x[:1] for x in draws.inputs)

    def build(self, rows: Tensor, examples: Tensor):
        return self.single_feed if self.ends is not None else self.draws.ends(rows)

    def score(self, inputs, rows: Tensor, examples: Tensor) -> Tensor:
        fed = examples if self.ends is None else torch.zeros(1, dtype=torch.long)  # the single feed: example 0
        return self.run(inputs, rows, fed, self.replacement(rows))

    def replacement(self, rows: Tensor):
        """The layer-input replacement for ``rows``: their points, in the runner's layout."""

        def replace(found):
            starts = self.draws.starts(rows, self.starts)
            ends = found if self.ends is None else self.draws.example_values(rows, self.ends)
            ends = tuple(same_layout(e, s) for e, s in zip(ends, starts))
            self.deltas = tuple(e - s for s, e in zip(starts, ends))
            return self.runner.layout(self.draws.between(rows, starts, ends), torch.contiguous_format)

        return replace
