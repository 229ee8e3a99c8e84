"""Layer attributions along a path: LayerIntegratedGradients, LayerConductance,
InternalInfluence, LayerGradientShap (LayerDeepLift, which shares the layer path's
machinery, is in ``layer_deeplift``).

Every (step or sample, example) row goes through the one chunked evaluator, with
gradients taken with respect to the layer (never the inputs, which may be token ids).
Convergence deltas compare the attributions' sum with ``F(inputs) - F(baselines)``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..core.inputs import format_baseline_distribution, format_baselines
from ..core.sampling import PathDraws, Sampler
from .approximation import path_tables
from .base import RowTotals, per_row, take
from .layer_base import LayerAttribution, layer_output, split_layers
from .noise import _stdevs
from .seeding import positive_int


def _interpolate(starts: Sequence[Tensor], ends: Sequence[Tensor], alphas: Tensor, steps: Tensor, examples: Tensor):
    """Points ``start + alpha * (end - start)`` of each row (step, example)."""
    out = []
    for s, e in zip(starts, ends):
        s, e = take(s, examples), take(e, examples)
        out.append(s + per_row(alphas, steps, e) * (e - s))
    return tuple(out)


class _LayerPath(LayerAttribution):
    """A layer method comparing inputs with baselines."""

    def __init__(self, forward_func, layer, device_ids=None, multiply_by_inputs: bool = True,
                 output_selector=None, layer_call=None):
        super().__init__(forward_func, layer, device_ids, output_selector, layer_call)
        self._multiply_by_inputs = multiply_by_inputs

    def has_convergence_delta(self) -> bool:
        return True

    def _result(self, adapter, per_layer, baselines, inputs, return_convergence_delta):
        """Captum's return form of the attributions (one tuple per layer); with the
        convergence delta, ``sum over every layer's attributions - (F(x) - F(x0))``."""
        result = self._format_layers(per_layer)
        if not return_convergence_delta:
            return result
        return result, self._delta(adapter, [a for values in per_layer for a in values], baselines, inputs)


class LayerIntegratedGradients(_LayerPath):
    r"""Integrated gradients of a layer's values (Sundararajan et al. 2017; Captum's
    LayerIntegratedGradients): the model runs on the inputs with the layer's output (input, with
    ``attribute_to_layer_input=True``) replaced by points ``v0 + alpha * (v - v0)``
    between its values at the baselines (``v0``) and at the inputs (``v``);
    ``A = (v - v0) * sum_k w_k dF/dv(point_k)`` (the gradient sum alone with
    ``multiply_by_inputs=False``). Works on ``nn.Embedding`` layers of text models
    (integer inputs, baselines such as a padding token id).

    ``layer`` may be a list of layers, as in Captum: all of them are replaced at once
    (along one path; none may compute another's values) and the result is a list with
    one entry per layer; the convergence delta sums every layer's attributions.
    ``grad_kwargs`` (Captum's) go to ``torch.autograd.grad``; with
    ``materialize_grads=True`` a layer that does not reach the output gets zeros.

    Formula:
        $$\phi_j = (h_j - h'_j) \int_0^1 \frac{\partial F_x(h' + \alpha (h - h'))}{\partial h_j}\, d\alpha
        \approx (h_j - h'_j) \sum_{k=1}^{m} w_k \frac{\partial F_x(h' + \alpha_k (h - h'))}{\partial h_j}$$

        with \(h\) and \(h'\) the layer's values for the input \(x\) and the baseline
        \(x'\) (zero by default), \(F_x(v)\) the target output of the model run on \(x\)
        with the layer's values replaced by \(v\), and the \(m\) = ``n_steps`` points
        \(\alpha_k\) and weights \(w_k\) of ``method`` (Gauss-Legendre by default). With
        ``multiply_by_inputs=False`` the factor \((h_j - h'_j)\) is left out.
        Completeness: \(\sum_j \phi_j = F_x(h) - F_x(h')\) up to the quadrature error,
        which is \(F(x) - F(x')\) when the output depends on the inputs only through the
        layer; ``return_convergence_delta`` returns the sum minus \(F(x) - F(x')\).

    Cost:
        Two forward passes without gradients (the layer's values for the inputs and for
        the baselines), then ``n_steps`` forward and backward passes per example, batched
        in chunks of ``internal_batch_size`` rows (``"auto"``: from the memory budget);
        two more forward passes for ``return_convergence_delta``. A list of layers costs
        the same passes as one layer.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import LayerIntegratedGradients
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
        >>> x = torch.randn(2, 3)
        >>> lig = LayerIntegratedGradients(model, model[0])
        >>> attributions, delta = lig.attribute(x, target=1, return_convergence_delta=True)
        >>> attributions.shape, delta.shape
        (torch.Size([2, 4]), torch.Size([2]))
        >>> bool(delta.abs().max() < 1e-4)
        True
    """

    _takes_layer_list = True

    def attribute(
        self,
        inputs,
        baselines=None,
        target=None,
        additional_forward_args=None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size="auto",
        return_convergence_delta: bool = False,
        attribute_to_layer_input: bool = False,
        grad_kwargs=None,
        forward_kwargs=None,
    ):
        inputs, _, adapter = self._prepare(inputs, target, additional_forward_args, forward_kwargs, floating=False)
        baselines = format_baselines(baselines, inputs)
        sizes, alphas = path_tables(method, n_steps)
        chunk, n, to_input = self._chunk(internal_batch_size), adapter.n, attribute_to_layer_input
        with self._guard():
            ends = self._all_layer_values(adapter, inputs, to_input=to_input)
            starts = self._all_layer_values(adapter, [b.expand_as(x) for b, x in zip(baselines, inputs)],
                                            to_input=to_input)
            totals = [torch.zeros_like(e) for values in ends for e in values]

            def build(rows, examples):
                return tuple(take(x, examples) for x in inputs)

            def replace(rows, examples, k, values):
                return _interpolate(starts[k], ends[k], alphas, rows // n, examples)

            def consume(rows, examples, grads, values, scalars):
                for total, g in zip(totals, grads):
                    total.index_add_(0, examples.to(g.device), g * per_row(sizes, rows // n, g))

            self._layer_gradients(adapter, len(sizes) * n, build, consume, to_input=to_input, chunk=chunk,
                                  replace=replace, grad_kwargs=grad_kwargs)
            per_layer = split_layers(totals, [len(values) for values in ends])
            if self._multiply_by_inputs:
                per_layer = [tuple(t * (e - s) for t, e, s in zip(*trio)) for trio in zip(per_layer, ends, starts)]
            return self._result(adapter, per_layer, baselines, inputs, return_convergence_delta)


class InternalInfluence(LayerAttribution):
    r"""Internal influence (Leino et al. 2018): the layer's gradients integrated along
    the straight path from the baselines to the inputs (in input space),
    ``sum_k w_k dF/dlayer(x0 + alpha_k (x - x0))``. ``grad_kwargs`` (Captum's) go to
    ``torch.autograd.grad``.

    Formula:
        $$\phi_j = \int_0^1 \frac{\partial F(x' + \alpha (x - x'))}{\partial h_j}\, d\alpha
        \approx \sum_{k=1}^{m} w_k \frac{\partial F(x' + \alpha_k (x - x'))}{\partial h_j}$$

        with \(h_j\) a unit of the layer's output (input, with
        ``attribute_to_layer_input=True``), \(F\) the target output, \(x'\) the baseline
        (zero by default) and the \(m\) = ``n_steps`` points \(\alpha_k\) and weights
        \(w_k\) of ``method`` (Gauss-Legendre by default). The gradient is not multiplied
        by any difference, so there is no completeness property.

    Cost:
        ``n_steps`` forward and backward passes per example, batched in chunks of
        ``internal_batch_size`` rows (``"auto"``: from the memory budget).

    Examples:
        >>> import torch
        >>> from torchexplain.attr import InternalInfluence
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> x = torch.randn(2, 3)
        >>> attributions = InternalInfluence(model, model[1]).attribute(x, target=0)
        >>> attributions.shape
        torch.Size([2, 4])
        >>> # above a linear head the gradient is the head's weights at every point
        >>> bool(torch.allclose(attributions, model[2].weight[0].expand(2, 4), atol=1e-6))
        True
    """

    def attribute(
        self,
        inputs,
        baselines=None,
        target=None,
        additional_forward_args=None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size="auto",
        attribute_to_layer_input: bool = False,
        grad_kwargs=None,
        forward_kwargs=None,
    ):
        inputs, _, adapter = self._prepare(inputs, target, additional_forward_args, forward_kwargs)
        baselines = format_baselines(baselines, inputs)
        sizes, alphas = path_tables(method, n_steps)
        totals: list[Tensor] = []
        n = adapter.n

        def consume(rows, examples, grads, values, scalars):
            if not totals:
                totals.extend(g.new_zeros((n,) + g.shape[1:]) for g in grads)
            for total, g in zip(totals, grads):
                total.index_add_(0, examples.to(g.device), g * per_row(sizes, rows // n, g))

        with self._guard():
            self._layer_gradients(
                adapter,
                len(sizes) * n,
                lambda rows, examples: _interpolate(baselines, inputs, alphas, rows // n, examples),
                consume,
                to_input=attribute_to_layer_input,
                chunk=self._chunk(internal_batch_size),
                grad_kwargs=grad_kwargs,
            )
        return layer_output(totals)


class LayerConductance(_LayerPath):
    r"""Layer conductance (Dhamdhere et al. 2018), as Captum: along ``n_steps + 1``
    points of the input path, the gradient with respect to the layer at each point
    times the change of the layer's values to the next point, summed.
    ``grad_kwargs`` (Captum's) go to ``torch.autograd.grad``.

    Formula:
        $$\phi_j = \sum_{k=1}^{m} \frac{\partial F(x_{k-1})}{\partial h_j} \left(h_j(x_k) - h_j(x_{k-1})\right),
        \qquad x_k = x' + \alpha_k (x - x')$$

        with \(h_j\) a unit of the layer, \(F\) the target output, \(x'\) the baseline
        (zero by default) and \(\alpha_0, \dots, \alpha_m\) the \(m + 1\) =
        ``n_steps + 1`` points of ``method`` (its weights are not used). Summed over the
        layer, the attributions approximate \(F(x) - F(x')\) when the output depends on
        the inputs only through the layer; the sum telescopes exactly when the head
        above the layer is linear and the points include 0 and 1 (``riemann_trapezoid``;
        the Gauss-Legendre points do not). ``return_convergence_delta`` returns the sum
        minus \(F(x) - F(x')\).

    Cost:
        ``n_steps + 1`` forward and backward passes per example, batched in chunks of
        ``internal_batch_size`` rows (``"auto"``: from the memory budget); two more
        forward passes for ``return_convergence_delta``.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import LayerConductance
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> x = torch.randn(2, 3)
        >>> lc = LayerConductance(model, model[1])
        >>> attributions, delta = lc.attribute(x, target=0, n_steps=10, method="riemann_trapezoid",
        ...                                    return_convergence_delta=True)
        >>> attributions.shape, delta.shape
        (torch.Size([2, 4]), torch.Size([2]))
        >>> bool(delta.abs().max() < 1e-5)
        True
    """

    def __init__(self, forward_func, layer, device_ids=None, output_selector=None, layer_call=None):
        super().__init__(forward_func, layer, device_ids, True, output_selector, layer_call)

    def attribute(
        self,
        inputs,
        baselines=None,
        target=None,
        additional_forward_args=None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size="auto",
        return_convergence_delta: bool = False,
        attribute_to_layer_input: bool = False,
        grad_kwargs=None,
        forward_kwargs=None,
    ):
        inputs, _, adapter = self._prepare(inputs, target, additional_forward_args, forward_kwargs)
        baselines = format_baselines(baselines, inputs)
        n_steps = positive_int(n_steps, "n_steps")
        _, alphas = path_tables(method, n_steps + 1)
        n = adapter.n
        state: dict[str, list[Tensor]] = {}

        def consume(rows, examples, grads, values, scalars):
            if not state:  # per example: the running sum, and the previous step's gradient and values
                state.update(
                    total=[g.new_zeros((n,) + g.shape[1:]) for g in grads],
                    grad=[g.new_empty((n,) + g.shape[1:]) for g in grads],
                    value=[v.new_empty((n,) + v.shape[1:]) for v in values],
                )
            steps = rows // n
            for step in steps.unique().tolist():  # rows arrive in order; a chunk may span steps
                here = (steps == step).nonzero().squeeze(1)
                ex = examples[here].to(grads[0].device)
                for total, prev_g, prev_v, g, v in zip(state["total"], state["grad"], state["value"], grads, values):
                    g, v = g[here.to(g.device)], v[here.to(v.device)]
                    if step > 0:
                        total.index_add_(0, ex, prev_g[ex] * (v - prev_v[ex]))
                    prev_g[ex], prev_v[ex] = g, v

        with self._guard():
            self._layer_gradients(
                adapter,
                (n_steps + 1) * n,
                lambda rows, examples: _interpolate(baselines, inputs, alphas, rows // n, examples),
                consume,
                to_input=attribute_to_layer_input,
                chunk=self._chunk(internal_batch_size),
                grad_kwargs=grad_kwargs,
            )
            return self._result(adapter, [tuple(state["total"])], baselines, inputs, return_convergence_delta)


class LayerGradientShap(_LayerPath):
    r"""GradientSHAP at a layer (Lundberg & Lee 2017): gradients with respect to the
    layer at random points between the (noisy) inputs and baselines drawn from a
    distribution, times the layer's change between the two, averaged over
    ``n_samples``. ``generator`` (beyond Captum, on any device) makes the draws reproducible
    (:class:`~torchexplain.core.sampling.PathDraws`, as :class:`GradientShap`).

    Formula:
        $$\phi_j = \frac{1}{S} \sum_{s=1}^{S} \left(h_j(\tilde{x}_s) - h_j(b_s)\right)
        \frac{\partial F(b_s + \alpha_s (\tilde{x}_s - b_s))}{\partial h_j}, \qquad
        \tilde{x}_s = x + \epsilon_s$$

        with \(h_j\) a unit of the layer, \(F\) the target output, \(S\) = ``n_samples``,
        each sample's baseline \(b_s\) drawn uniformly from the rows of ``baselines``,
        \(\alpha_s\) uniform in \([0, 1)\) and \(\epsilon_s \sim \mathcal{N}(0, \sigma^2 I)\),
        \(\sigma\) = ``stdevs``. With ``multiply_by_inputs=False`` the layer's difference
        is left out. Completeness holds only approximately (exactly when the model above
        the layer is linear): ``return_convergence_delta`` gives, per (example, sample),
        the sample's summed term minus \(F(\tilde{x}_s) - F(b_s)\).

    Cost:
        ``n_samples`` forward and backward passes per example, batched in chunks of
        ``internal_batch_size`` rows (``"auto"``: from the memory budget); with
        ``multiply_by_inputs`` two more forward passes without gradients per sample (the
        layer's values at both ends of its path); \(2S\) more forward passes per example
        for ``return_convergence_delta``.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import LayerGradientShap
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> x, baselines = torch.randn(2, 3), torch.randn(5, 3)
        >>> lgs = LayerGradientShap(model, model[1])
        >>> attributions, delta = lgs.attribute(x, baselines, n_samples=8, target=0, return_convergence_delta=True,
        ...                                     generator=torch.Generator().manual_seed(0))
        >>> attributions.shape, delta.shape
        (torch.Size([2, 4]), torch.Size([16]))
        >>> bool(delta.abs().max() < 1e-5)  # a linear head: every sample is exact
        True
    """

    def attribute(
        self,
        inputs,
        baselines,
        n_samples: int = 5,
        stdevs=0.0,
        target=None,
        additional_forward_args=None,
        return_convergence_delta: bool = False,
        attribute_to_layer_input: bool = False,
        forward_kwargs=None,
        internal_batch_size="auto",
        generator: torch.Generator | None = None,
    ):
        inputs, _, adapter = self._prepare(inputs, target, additional_forward_args, forward_kwargs)
        baselines = format_baseline_distribution(baselines, inputs)
        n_samples = positive_int(n_samples, "n_samples")
        paths = PathDraws(inputs, baselines, n_samples, _stdevs(stdevs, len(inputs)), Sampler(generator))
        to_input, n = attribute_to_layer_input, adapter.n
        totals: list[RowTotals] = []

        def consume(rows, examples, grads, values, scalars):
            if self._multiply_by_inputs:
                end = self._layer_values(adapter, paths.ends(rows, examples), examples, to_input)
                start = self._layer_values(adapter, paths.starts(rows), examples, to_input)
                grads = [g * (e - s) for g, e, s in zip(grads, end, start)]
            if not totals:
                totals.append(RowTotals([g.new_zeros((n,) + g.shape[1:]) for g in grads], n * n_samples))
            totals[0].add(rows, examples, grads)

        with self._guard():
            self._layer_gradients(
                adapter, n * n_samples, paths.points, consume, to_input=to_input, chunk=self._chunk(internal_batch_size)
            )
            attributions = layer_output([s / n_samples for s in totals[0].sums])
            if not return_convergence_delta:
                return attributions
            # one delta per (example, sample), example-major, as Captum's GradientShap
            return attributions, totals[0].expanded_delta(
                adapter, n_samples, lambda rows, _: paths.starts(rows), paths.ends
            )
