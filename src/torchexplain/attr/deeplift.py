"""DeepLIFT with the rescale rule (Shrikumar et al. 2017) and DeepLiftShap.

Inputs and references run through the model as one batch ``[inputs; references]``;
the rescale rule replaces the backward of every activation and max-pool the model
computes (module, functional, in-place or reused alike), so on ReLU / max-pool /
BatchNorm networks in eval mode the attributions sum to ``F(x) - F(x0)``. Softmax
(``nn.Softmax``, ``F.softmax``, ``tensor.softmax``) gets Captum's centred rescale,
completed so that it too sums to the output change
(:func:`~torchexplain.core.rules.softmax_multipliers`).
"""

from __future__ import annotations

import torch

from ..core.gradients import row_gradients
from ..core.hooks import FunctionRules
from ..core.inputs import format_baseline_distribution, format_baselines, format_output
from ..core.registry import register, zero_and_mean_baselines
from ..core.rules import Rescale
from .base import BaselineAttribution, RowTotals, take


def paired_score(adapter, references):
    """A row score that runs each chunk of rows together with its references, as one
    batch ``[rows; references(rows)]`` (the rescale rule compares the two halves),
    and explains the first half."""

    def score(chunk_inputs, rows, examples):
        both = tuple(torch.cat([x, r]) for x, r in zip(chunk_inputs, references(rows)))
        out = adapter.outputs(both, torch.cat([examples, examples]))
        return adapter.target.select(out[: len(rows)], examples)

    return score


def pair_points(inputs, baselines, n: int):
    """``(starts, ends)`` of the rows ``r = j * n + i`` that pair example ``i`` with
    baseline row ``j`` (DeepLiftShap's rows), as
    :meth:`~torchexplain.attr.base.RowTotals.expanded_delta` takes them."""

    def starts(rows, examples):
        return [take(b, rows // n) for b in baselines]

    def ends(rows, examples):
        return [take(x, examples) for x in inputs]

    return starts, ends


def multiplier_attributions(multipliers, xs, refs, custom=None, multiply: bool = True):
    """DeepLIFT attributions from multipliers: ``custom(multipliers, xs, refs)`` when
    given, else ``multipliers * (xs - refs)`` (the multipliers alone when not
    ``multiply``)."""
    if custom is not None:
        attrs = custom(tuple(multipliers), tuple(xs), tuple(refs))
        return attrs if isinstance(attrs, (tuple, list)) else (attrs,)
    if multiply:
        return [g * (x - r) for g, x, r in zip(multipliers, xs, refs)]
    return list(multipliers)


@register("deeplift", aliases=("deep_lift",), delta=True, order=80, description="DeepLIFT (rescale)")
class DeepLift(BaselineAttribution):
    r"""DeepLIFT with the rescale rule (Shrikumar et al. 2017): multipliers propagated
    back from the target output, times the input's difference from the baseline.
    ``custom_attribution_func(multipliers, inputs, baselines)`` may replace
    ``multipliers * (inputs - baselines)``.

    Formula:
        $$\phi_i = m_i \, (x_i - x'_i), \qquad
        m_{\mathrm{in}} = m_{\mathrm{out}} \odot \frac{f(z) - f(z')}{z - z'}$$

        with \(x'\) the baseline (zero by default) and \(m_i\) the multiplier of input
        \(x_i\): the backward pass from the target output \(F\), in which every
        activation (and max-pool) \(y = f(z)\) passes back the secant slope between its
        input \(z\) and its input \(z'\) for the baseline (the ordinary derivative where
        \(|z - z'| <\) ``eps``) instead of its derivative. With
        ``multiply_by_inputs=False`` the result is \(m_i\). Summation to delta:
        \(\sum_i \phi_i = F(x) - F(x')\) for ReLU / max-pool / eval-mode BatchNorm
        networks; ``return_convergence_delta`` returns the gap.

    Cost:
        One forward and one backward pass per example, each chunk of examples run
        together with its baselines as one batch ``[x; x']`` (twice the rows); two more
        forward passes (of \(x\) and of \(x'\)) for ``return_convergence_delta``. Chunks
        follow ``internal_batch_size``.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import DeepLift
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> x = torch.randn(2, 3)
        >>> attributions, delta = DeepLift(model).attribute(x, target=0, return_convergence_delta=True)
        >>> attributions.shape, delta.shape
        (torch.Size([2, 3]), torch.Size([2]))
        >>> gap = model(x)[:, 0] - model(torch.zeros(1, 3))[:, 0]
        >>> bool(torch.allclose(attributions.sum(1), gap, atol=1e-5))
        True
    """

    def __init__(self, model, multiply_by_inputs: bool = True, eps: float = 1e-10, output_selector=None):
        super().__init__(model, multiply_by_inputs, output_selector)
        self.eps = eps

    def attribute(
        self,
        inputs,
        baselines=None,
        target=None,
        additional_forward_args=None,
        return_convergence_delta: bool = False,
        custom_attribution_func=None,
        forward_kwargs=None,
        internal_batch_size="auto",
    ):
        inputs, is_tuple, adapter = self._prepare(inputs, target, additional_forward_args, forward_kwargs)
        baselines = format_baselines(baselines, inputs)
        with self._guard():
            attributions = self._compare(
                inputs, baselines, adapter, 1, self._chunk(internal_batch_size), custom_attribution_func,
                reference_of=lambda rows: rows,
            ).sums
            delta = self._delta(adapter, attributions, baselines, inputs) if return_convergence_delta else None
        result = format_output(is_tuple, attributions)
        return (result, delta) if return_convergence_delta else result

    def _compare(self, inputs, baselines, adapter, n_refs, chunk, custom, reference_of):
        """Compare every example with ``n_refs`` references: row ``r`` compares example
        ``r % n`` with baseline row ``reference_of(r)``. Returns the
        :class:`RowTotals` of the attributions."""
        n = adapter.n
        totals = RowTotals(inputs, n * n_refs)

        def references(rows):
            return tuple(take(b, reference_of(rows)) for b in baselines)

        def build(rows, examples):
            return tuple(take(x, examples) for x in inputs)

        def consume(rows, examples, grads, scalars):
            attrs = multiplier_attributions(grads, build(rows, examples), references(rows), custom,
                                            self._multiply_by_inputs)
            totals.add(rows, examples, attrs)

        rule = Rescale(self.eps)
        row_gradients(
            adapter, n * n_refs, build, consume,
            internal_batch_size=chunk, context=lambda: FunctionRules(rule), score=paired_score(adapter, references),
        )
        return totals


@register("deeplift_shap", aliases=("deepliftshap", "deep_shap"), delta=True, order=90,
          defaults=lambda x: {"baselines": zero_and_mean_baselines(x)},
          description="DeepLIFT averaged over a zero and a mean-image baseline")
class DeepLiftShap(DeepLift):
    r"""DeepLiftShap (Lundberg & Lee 2017): DeepLIFT against each row of a baseline
    distribution, averaged, an approximation of SHAP values. With
    ``return_convergence_delta`` the delta has one entry per (example, baseline row),
    example-major, each for DeepLIFT against that row, as in Captum.

    Formula:
        $$\phi_i = \frac{1}{B} \sum_{j=1}^{B} m_i^{(j)} \, (x_i - b_{j,i})$$

        with \(b_1, \dots, b_B\) the rows of ``baselines`` and \(m^{(j)}\) the DeepLIFT
        (rescale) multipliers of \(x\) against \(b_j\) (see :class:`DeepLift`); with
        ``multiply_by_inputs=False`` the multipliers alone are averaged. Where DeepLIFT
        sums to delta: \(\sum_i \phi_i = F(x) - \frac{1}{B} \sum_j F(b_j)\).

    Cost:
        \(B\) forward and backward passes per example, one per baseline row: all
        (example, baseline) pairs are rows of one chunked evaluation, each chunk run
        together with its baselines as one batch (twice the rows); \(2B\) more forward
        passes for ``return_convergence_delta``. Chunks follow ``internal_batch_size``.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import DeepLiftShap
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> x, baselines = torch.randn(2, 3), torch.randn(5, 3)
        >>> dls = DeepLiftShap(model)
        >>> attributions, delta = dls.attribute(x, baselines, target=0, return_convergence_delta=True)
        >>> attributions.shape, delta.shape
        (torch.Size([2, 3]), torch.Size([10]))
        >>> gap = model(x)[:, 0] - model(baselines)[:, 0].mean()
        >>> bool(torch.allclose(attributions.sum(1), gap, atol=1e-5))
        True
    """

    def attribute(
        self,
        inputs,
        baselines,
        target=None,
        additional_forward_args=None,
        return_convergence_delta: bool = False,
        custom_attribution_func=None,
        forward_kwargs=None,
        internal_batch_size="auto",
    ):
        inputs, is_tuple, adapter = self._prepare(inputs, target, additional_forward_args, forward_kwargs)
        baselines = format_baseline_distribution(baselines, inputs)
        n, n_refs = adapter.n, baselines[0].shape[0]
        with self._guard():
            totals = self._compare(
                inputs, baselines, adapter, n_refs, self._chunk(internal_batch_size), custom_attribution_func,
                reference_of=lambda rows: rows // n,
            )
            attributions = [s / n_refs for s in totals.sums]
            delta = None
            if return_convergence_delta:
                delta = totals.expanded_delta(adapter, n_refs, *pair_points(inputs, baselines, n))
        result = format_output(is_tuple, attributions)
        return (result, delta) if return_convergence_delta else result
