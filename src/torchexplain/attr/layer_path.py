"""Layer attributions along a path: LayerIntegratedGradients, LayerConductance,
InternalInfluence, LayerGradientShap, LayerDeepLift.

Every (step or sample, example) row goes through the one chunked evaluator, with
gradients taken with respect to the layer (never the inputs, which may be token ids).
Convergence deltas compare the attributions' sum with ``F(inputs) - F(baselines)``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..core.hooks import FunctionRules
from ..core.inputs import format_baseline_distribution, format_baselines
from ..core.rules import Rescale
from .approximation import path_tables
from .base import RowTotals, example_major_rows, per_row, take
from .deeplift import multiplier_attributions, paired_score
from .layer_base import LayerAttribution, layer_output
from .noise import SampledPaths, _stdevs
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

    def _result(self, adapter, attributions, baselines, inputs, return_convergence_delta):
        delta = self._delta(adapter, attributions, baselines, inputs) if return_convergence_delta else None
        result = layer_output(attributions)
        return (result, delta) if return_convergence_delta else result


class LayerIntegratedGradients(_LayerPath):
    """Integrated gradients of the layer's values (Captum's LayerIntegratedGradients):
    the model runs on the inputs with the layer's output replaced by points between
    its values at the baselines and at the inputs. Works on ``nn.Embedding`` layers
    of text models (integer inputs, baselines such as a padding token id)."""

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
        forward_kwargs=None,
    ):
        inputs, _, adapter = self._prepare(inputs, target, additional_forward_args, forward_kwargs, floating=False)
        baselines = format_baselines(baselines, inputs)
        sizes, alphas = path_tables(method, n_steps)
        chunk, n, to_input = self._chunk(internal_batch_size), adapter.n, attribute_to_layer_input
        with self._guard():
            ends = self._layer_values(adapter, inputs, to_input=to_input)
            starts = self._layer_values(adapter, [b.expand_as(x) for b, x in zip(baselines, inputs)], to_input=to_input)
            totals = [torch.zeros_like(e) for e in ends]

            def build(rows, examples):
                return tuple(take(x, examples) for x in inputs)

            def replace(rows, examples, values):
                return _interpolate(starts, ends, alphas, rows // n, examples)

            def consume(rows, examples, grads, values, scalars):
                for total, g in zip(totals, grads):
                    total.index_add_(0, examples.to(g.device), g * per_row(sizes, rows // n, g))

            self._layer_gradients(adapter, len(sizes) * n, build, consume, to_input=to_input, chunk=chunk, replace=replace)
            if self._multiply_by_inputs:
                totals = [t * (e - s) for t, e, s in zip(totals, ends, starts)]
            return self._result(adapter, totals, baselines, inputs, return_convergence_delta)


class InternalInfluence(LayerAttribution):
    """Internal influence (Leino et al. 2018): the layer's gradients integrated along
    the straight path from the baselines to the inputs (in input space)."""

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
                adapter, len(sizes) * n, lambda rows, examples: _interpolate(baselines, inputs, alphas, rows // n, examples),
                consume, to_input=attribute_to_layer_input, chunk=self._chunk(internal_batch_size),
            )
        return layer_output(totals)


class LayerConductance(_LayerPath):
    """Layer conductance (Dhamdhere et al. 2018), as Captum: along ``n_steps + 1``
    points of the input path, the gradient with respect to the layer at each point
    times the change of the layer's values to the next point, summed."""

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
                state.update(total=[g.new_zeros((n,) + g.shape[1:]) for g in grads],
                             grad=[g.new_empty((n,) + g.shape[1:]) for g in grads],
                             value=[v.new_empty((n,) + v.shape[1:]) for v in values])
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
                adapter, (n_steps + 1) * n,
                lambda rows, examples: _interpolate(baselines, inputs, alphas, rows // n, examples),
                consume, to_input=attribute_to_layer_input, chunk=self._chunk(internal_batch_size),
            )
            return self._result(adapter, state["total"], baselines, inputs, return_convergence_delta)


class LayerGradientShap(_LayerPath):
    """GradientSHAP at a layer: gradients with respect to the layer at random points
    between the (noisy) inputs and baselines drawn from a distribution, times the
    layer's change between the two, averaged over ``n_samples``. ``generator``
    (beyond Captum) makes the draws reproducible."""

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
        paths = SampledPaths(inputs, baselines, n_samples, _stdevs(stdevs, len(inputs)), generator)
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
            examples, samples = example_major_rows(n, n_samples)
            rows = samples * n + examples
            gap = self._gap(adapter, paths.starts(rows), paths.ends(rows, examples), examples)
            return attributions, totals[0].example_major(n, n_samples) - gap


class LayerDeepLift(_LayerPath):
    """DeepLIFT (rescale rule) multipliers of the layer times the layer's change
    between inputs and baselines; ``custom_attribution_func(multipliers,
    layer_inputs, layer_baselines)`` may replace the product. The rule applies to
    every activation and max-pool the model computes, as in :class:`DeepLift`."""

    def __init__(self, model, layer, multiply_by_inputs: bool = True, eps: float = 1e-10,
                 output_selector=None, layer_call=None):
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
        forward_kwargs=None,
        internal_batch_size="auto",
    ):
        inputs, _, adapter = self._prepare(inputs, target, additional_forward_args, forward_kwargs)
        baselines = format_baselines(baselines, inputs)
        results: list[Tensor] = []
        rule = Rescale(self.eps)

        def references(rows):
            return tuple(take(b, rows) for b in baselines)

        def consume(rows, examples, grads, values, scalars):
            k = len(rows)
            grads, xs, refs = [g[:k] for g in grads], [v[:k] for v in values], [v[k:] for v in values]
            attrs = multiplier_attributions(grads, xs, refs, custom_attribution_func, self._multiply_by_inputs)
            if not results:
                results.extend(a.new_empty((adapter.n,) + a.shape[1:]) for a in attrs)
            for out, a in zip(results, attrs):
                out[rows.to(out.device)] = a

        with self._guard():
            self._layer_gradients(
                adapter, adapter.n, lambda rows, examples: tuple(take(x, examples) for x in inputs), consume,
                to_input=attribute_to_layer_input, chunk=self._chunk(internal_batch_size),
                context=lambda: FunctionRules(rule), score=paired_score(adapter, references),
            )
            return self._result(adapter, results, baselines, inputs, return_convergence_delta)
