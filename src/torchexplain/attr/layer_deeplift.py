"""LayerDeepLiftShap: DeepLIFT at a layer against every row of a baseline
distribution, averaged (Captum's ``LayerDeepLiftShap``).

Built on :class:`~torchexplain.attr.LayerDeepLift` as
:class:`~torchexplain.attr.DeepLiftShap` is built on DeepLift: the (example, baseline)
pairs are rows of the one chunked evaluator, each row running as ``[inputs; references]``
under the rescale rule.
"""

from __future__ import annotations

from ..core.inputs import format_baseline_distribution
from .base import RowTotals, take
from .deeplift import pair_points
from .layer_base import layer_output
from .layer_path import LayerDeepLift


class LayerDeepLiftShap(LayerDeepLift):
    r"""DeepLiftShap at a layer (Lundberg & Lee 2017): DeepLIFT (rescale rule) at ``layer``
    against each row ``b_j`` of a baseline distribution, averaged:
    ``A = mean_j m_j * (layer(x) - layer(b_j))``, with ``m_j`` the layer's multipliers
    for the pair ``(x, b_j)`` (``custom_attribution_func(multipliers, layer_inputs,
    layer_baselines)`` may replace the product; with ``multiply_by_inputs=False`` the
    multipliers alone are averaged).

    ``baselines``: a tensor (or tuple) of baseline rows ``(B, *input.shape[1:])``, or a
    callable returning one. Returns the layer's form (a tensor, or a tuple for several
    outputs; the layer's input with ``attribute_to_layer_input=True``); with
    ``return_convergence_delta``, also one delta per (example, baseline) pair,
    example-major as in Captum: ``sum(A_ij) - (F(x_i) - F(b_j))``.

    Formula:
        $$A = \frac{1}{B} \sum_{j=1}^{B} m^{(j)} \odot (h(x) - h(b_j))$$

        with \(h\) the layer's output (input, with ``attribute_to_layer_input=True``),
        \(b_1, \dots, b_B\) the baseline rows and \(m^{(j)}\) the DeepLIFT (rescale)
        multipliers of the target output \(F\) with respect to \(h\) for the pair
        \((x, b_j)\) (see :class:`DeepLift`). Where DeepLIFT sums to delta:
        \(\sum A = F(x) - \frac{1}{B} \sum_j F(b_j)\).

    Cost:
        \(B\) forward and backward passes per example, one per baseline row: all
        (example, baseline) pairs are rows of one chunked evaluation, each chunk run
        together with its baselines as one batch (twice the rows); \(2B\) more forward
        passes for ``return_convergence_delta``. Chunks follow ``internal_batch_size``.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import LayerDeepLiftShap
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> x, baselines = torch.randn(2, 3), torch.randn(5, 3)
        >>> ldls = LayerDeepLiftShap(model, model[0])
        >>> attributions, delta = ldls.attribute(x, baselines, target=0, return_convergence_delta=True)
        >>> attributions.shape, delta.shape
        (torch.Size([2, 4]), torch.Size([10]))
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
        attribute_to_layer_input: bool = False,
        custom_attribution_func=None,
        forward_kwargs=None,
        internal_batch_size="auto",
    ):
        inputs, _, adapter = self._prepare(inputs, target, additional_forward_args, forward_kwargs)
        baselines = format_baseline_distribution(baselines, inputs)
        n, n_refs = adapter.n, baselines[0].shape[0]
        with self._guard():
            totals = self._compare(inputs, baselines, adapter, n_refs, attribute_to_layer_input,
                                   custom_attribution_func, self._chunk(internal_batch_size))
            attributions = layer_output([s / n_refs for s in totals.sums])
            if not return_convergence_delta:
                return attributions
            return attributions, totals.expanded_delta(adapter, n_refs, *pair_points(inputs, baselines, n))

    def _compare(self, inputs, baselines, adapter, n_refs, to_input, custom, chunk) -> RowTotals:
        """Rows ``r = j * n + i`` pair example ``i`` with baseline row ``j``; returns
        the :class:`RowTotals` of their layer attributions."""
        n = adapter.n
        found: list[RowTotals] = []

        def add(rows, examples, attrs):
            if not found:
                found.append(RowTotals([a.new_zeros((n,) + a.shape[1:]) for a in attrs], n * n_refs))
            found[0].add(rows, examples, attrs)

        self._pairs(adapter, inputs, lambda rows: tuple(take(b, rows // n) for b in baselines), n * n_refs, add,
                    to_input, custom, chunk)
        return found[0]
