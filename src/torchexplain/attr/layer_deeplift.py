"""DeepLIFT at a layer: LayerDeepLift (rescale-rule multipliers of the layer times its
change), and LayerDeepLiftShap, the same against every row of a baseline distribution,
averaged (Captum's ``LayerDeepLift`` and ``LayerDeepLiftShap``).

LayerDeepLiftShap is built on LayerDeepLift as
:class:`~torchexplain.attr.DeepLiftShap` is built on DeepLift: the (example, baseline)
pairs are rows of the one chunked evaluator, each row running as ``[inputs; references]``
under the rescale rule.
"""

from __future__ import annotations

from torch import Tensor

from ..core.gradients import check_grad_kwargs
from ..core.hooks import FunctionRules
from ..core.inputs import format_baseline_distribution, format_baselines
from ..core.rules import Rescale
from .base import RowTotals, take
from .deeplift import multiplier_attributions, pair_points, paired_score
from .layer_base import layer_output
from .layer_path import _LayerPath


class LayerDeepLift(_LayerPath):
    r"""DeepLIFT at a layer (Shrikumar et al. 2017): rescale-rule multipliers of the
    layer times the layer's change between inputs and baselines; ``custom_attribution_func(multipliers,
    layer_inputs, layer_baselines)`` may replace the product. The rule applies to
    every activation and max-pool the model computes, as in :class:`DeepLift`.
    ``grad_kwargs`` (Captum's) go to ``torch.autograd.grad``; with
    ``materialize_grads=True`` a layer that does not reach the output gets zeros.

    Formula:
        $$\phi_j = m_j \left(h_j(x) - h_j(x')\right)$$

        with \(h_j\) a unit of the layer's output (input, with
        ``attribute_to_layer_input=True``), \(x'\) the baseline (zero by default) and
        \(m_j\) its multiplier: the backward pass from the target output \(F\) to the
        layer in which every activation (and max-pool) \(y = f(z)\) passes back the
        secant slope \((f(z) - f(z')) / (z - z')\) between its inputs for \(x\) and
        \(x'\) (the derivative where \(|z - z'| <\) ``eps``). With
        ``multiply_by_inputs=False`` the result is \(m_j\). Summation to delta:
        \(\sum_j \phi_j = F(x) - F(x')\) when the model above the layer is made of
        ReLU / max-pool / eval-mode BatchNorm and affine layers; ``return_convergence_delta``
        returns the gap.

    Cost:
        One forward and one backward pass per example, each chunk of examples run
        together with its baselines as one batch ``[x; x']`` (twice the rows); two more
        forward passes for ``return_convergence_delta``. Chunks follow
        ``internal_batch_size``.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import LayerDeepLift
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> x = torch.randn(2, 3)
        >>> ldl = LayerDeepLift(model, model[0])
        >>> attributions, delta = ldl.attribute(x, target=0, return_convergence_delta=True)
        >>> attributions.shape, delta.shape
        (torch.Size([2, 4]), torch.Size([2]))
        >>> gap = model(x)[:, 0] - model(torch.zeros(1, 3))[:, 0]
        >>> bool(torch.allclose(attributions.sum(1), gap, atol=1e-5))
        True
    """

    def __init__(
        self, model, layer, multiply_by_inputs: bool = True, eps: float = 1e-10, output_selector=None, layer_call=None
    ):
        super().__init__(model, layer, None, multiply_by_inputs, output_selector, layer_call)
        self.eps = eps

    def attribute(
        self,
        inputs,
        baselines=None,
        target=None,
        additional_forward_args=None,
        return_convergence_delta: bool = False,
        attribute_to_layer_input: bool = False,
        custom_attribution_func=None,
        grad_kwargs=None,
        forward_kwargs=None,
        internal_batch_size="auto",
    ):
        inputs, _, adapter = self._prepare(inputs, target, additional_forward_args, forward_kwargs)
        baselines = format_baselines(baselines, inputs)
        if check_grad_kwargs(grad_kwargs).get("create_graph"):
            raise ValueError(
                "grad_kwargs={'create_graph': True} is not supported by LayerDeepLift: the rescale "
                "rule's backward pass is not itself differentiable"
            )
        results: list[Tensor] = []

        def keep(rows, examples, attrs):
            if not results:
                results.extend(a.new_empty((adapter.n,) + a.shape[1:]) for a in attrs)
            for out, a in zip(results, attrs):
                out[rows.to(out.device)] = a

        with self._guard():
            self._pairs(
                adapter,
                inputs,
                lambda rows: tuple(take(b, rows) for b in baselines),
                adapter.n,
                keep,
                attribute_to_layer_input,
                custom_attribution_func,
                self._chunk(internal_batch_size),
                grad_kwargs,
            )
            return self._result(adapter, [tuple(results)], baselines, inputs, return_convergence_delta)

    def _pairs(
        self, adapter, inputs, references, n_rows: int, fold, to_input: bool, custom, chunk, grad_kwargs=None
    ) -> None:
        """DeepLIFT at the layer for rows ``r`` (example ``r % n``) against the
        reference rows ``references(rows)``: each chunk runs as one batch ``[rows;
        references]`` under the rescale rule, and ``fold(rows, examples, attributions)``
        takes the chunk's layer attributions."""

        def consume(rows, examples, grads, values, scalars):
            k = len(rows)
            grads, xs, refs = [g[:k] for g in grads], [v[:k] for v in values], [v[k:] for v in values]
            fold(rows, examples, multiplier_attributions(grads, xs, refs, custom, self._multiply_by_inputs))

        self._layer_gradients(
            adapter,
            n_rows,
            lambda rows, examples: tuple(take(x, examples) for x in inputs),
            consume,
            to_input=to_input,
            chunk=chunk,
            context=lambda: FunctionRules(Rescale(self.eps)),
            score=paired_score(adapter, references),
            grad_kwargs=grad_kwargs,
        )


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
