"""What every attribution method shares: the public-boundary checks and the
convergence delta."""

from __future__ import annotations

import functools
from typing import Sequence

import torch
from torch import Tensor

from ..core.batching import check_chunk_size
from ..core.forward import ForwardAdapter
from ..core.gradients import input_gradients, output_gap
from ..core.hooks import model_guard
from ..core.inputs import as_tuple, format_baselines, validate_inputs
from ..core.inputs import per_row as per_row  # re-exported: the methods import them from here
from ..core.inputs import take as take


def example_major_rows(n: int, n_samples: int) -> tuple[Tensor, Tensor]:
    """(example index, sample index) of each expanded row in Captum's example-major order."""
    rows = torch.arange(n * n_samples)
    return rows // n_samples, rows % n_samples


def row_sums(attributions: Sequence[Tensor]) -> Tensor:
    """Sum of every attribution value of each example, over all input tensors."""
    return sum(a.reshape(a.shape[0], -1).sum(1) for a in attributions)


class RowTotals:
    """Accumulates per-row attributions into per-example sums and per-row totals
    (the latter for per-row convergence deltas)."""

    def __init__(self, inputs: Sequence[Tensor], n_rows: int):
        self.sums = [torch.zeros_like(x) for x in inputs]
        dtype = functools.reduce(torch.promote_types, (x.dtype for x in inputs))
        self.rows = torch.zeros(n_rows, dtype=dtype, device=inputs[0].device)

    def add(self, rows: Tensor, examples: Tensor, attributions: Sequence[Tensor]) -> None:
        for total, a in zip(self.sums, attributions):
            total.index_add_(0, examples.to(a.device), a)
        self.rows[rows.to(self.rows.device)] = row_sums(attributions)

    def example_major(self, n: int, n_samples: int) -> Tensor:
        """Per-row totals reordered from sample-major (row = s*n + i) to example-major
        (i*n_samples + s), Captum's order for expanded deltas."""
        return self.rows.view(n_samples, n).t().reshape(-1)

    def expanded_delta(self, adapter: ForwardAdapter, n_samples: int, starts, ends) -> Tensor:
        """Captum's convergence delta of expanded rows (GradientShap's samples,
        DeepLiftShap's baseline rows), one per (example, sample) in example-major
        order: ``row total - (F(end) - F(start))``. ``starts(rows, examples)`` and
        ``ends(rows, examples)`` give the points of rows numbered sample-major
        (``r = s * n + i``)."""
        n = adapter.n
        examples, samples = example_major_rows(n, n_samples)
        rows = samples * n + examples
        gap = output_gap(adapter, starts(rows, examples), ends(rows, examples), examples)
        return self.example_major(n, n_samples) - gap


class Attribution:
    """Base of every attribution method: ``Method(forward_func).attribute(inputs, ...)``.

    ``output_selector`` (beyond Captum) picks the explained tensor when the model
    returns a tuple or dict: an index, a key, or a callable.
    """

    def __init__(self, forward_func, output_selector=None):
        if not callable(forward_func):
            raise TypeError(
                f"forward_func must be callable (an nn.Module or function); got {type(forward_func).__name__}"
            )
        self.forward_func = forward_func
        self.output_selector = output_selector

    _multiply_by_inputs = False

    def has_convergence_delta(self) -> bool:
        return False

    @property
    def multiplies_by_inputs(self) -> bool:
        return self._multiply_by_inputs

    def attribute_future(self, *args, **kwargs):
        """Attribution for a ``forward_func`` returning ``torch.futures.Future``: only
        FeatureAblation, FeaturePermutation and ShapleyValueSampling have it, as in Captum."""
        raise NotImplementedError(
            f"{type(self).__name__} has no attribute_future; FeatureAblation, FeaturePermutation and "
            "ShapleyValueSampling take forward functions that return futures"
        )

    def _prepare(self, inputs, target=None, additional_forward_args=None, forward_kwargs=None, *, floating=True):
        """Validate the public arguments; returns (inputs tuple, is_tuple, adapter)."""
        inputs, is_tuple = as_tuple(inputs)
        n = validate_inputs(inputs, floating=floating)
        adapter = ForwardAdapter(
            self.forward_func, n, target, additional_forward_args, forward_kwargs, self.output_selector
        )
        return inputs, is_tuple, adapter

    def _guard(self):
        """The model is borrowed: flags, buffers, hooks and grads are restored on exit."""
        return model_guard(self.forward_func)

    @staticmethod
    def _chunk(value, name: str = "internal_batch_size"):
        return check_chunk_size(value, name)

    _gap = staticmethod(output_gap)

    def _delta(self, adapter: ForwardAdapter, attributions, starts, ends) -> Tensor:
        """Convergence delta: sum(attributions) - (F(end) - F(start)), per example."""
        return row_sums(attributions) - self._gap(adapter, starts, ends)

    def compute_convergence_delta(
        self, attributions, start_point, end_point, target=None, additional_forward_args=None
    ) -> Tensor:
        """Captum's convergence delta for any attributions, start and end points."""
        attributions, _ = as_tuple(attributions, "attributions")
        ends, _ = as_tuple(end_point, "end_point")
        starts = format_baselines(start_point, ends)
        adapter = ForwardAdapter(
            self.forward_func, ends[0].shape[0], target, additional_forward_args, None, self.output_selector
        )
        with self._guard():
            return self._delta(adapter, attributions, starts, ends)


def compute_gradients(forward_fn, inputs, target_ind=None, additional_forward_args=None) -> tuple[Tensor, ...]:
    """Captum's ``gradient_func``: d(sum over examples of the target output)/d(inputs),
    a tuple with one gradient per input tensor."""
    inputs, _ = as_tuple(inputs)
    n = validate_inputs(inputs)
    adapter = ForwardAdapter(forward_fn, n, target_ind, additional_forward_args)
    with torch.enable_grad():
        leaves = tuple(x if x.requires_grad else x.detach().requires_grad_(True) for x in inputs)
        scalars = adapter.scalars(leaves, torch.arange(n))
        return input_gradients(scalars, leaves)


class GradientAttribution(Attribution):
    """Base of the gradient methods (Captum's ``GradientAttribution``): an
    :class:`Attribution` whose ``gradient_func`` (``compute_gradients`` by default,
    Captum's signature) gives input gradients, and whose convergence delta is
    ``sum(attributions) - (F(end_point) - F(start_point))`` per example."""

    def __init__(self, forward_func, output_selector=None):
        Attribution.__init__(self, forward_func, output_selector)  # not cooperative: layer bases take more
        self.gradient_func = compute_gradients


class BaselineAttribution(GradientAttribution):
    """A method that compares the inputs with baselines: it has a convergence delta
    and, by default, multiplies its gradients by ``inputs - baselines``."""

    def __init__(self, forward_func, multiply_by_inputs: bool = True, output_selector=None):
        super().__init__(forward_func, output_selector)
        self._multiply_by_inputs = multiply_by_inputs

    def has_convergence_delta(self) -> bool:
        return True
