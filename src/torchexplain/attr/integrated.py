"""Integrated Gradients (Sundararajan et al. 2017)."""

from __future__ import annotations

import numbers

import torch

from ..core.gradients import row_gradients
from ..core.inputs import format_baselines, format_output
from ..core.registry import register
from .approximation import path_tables
from .base import BaselineAttribution, per_row, row_sums, take
from .seeding import positive_int


@register("integrated_gradients", aliases=("ig",), delta=True, order=30,
          description="integrated gradients from a zero baseline")
class IntegratedGradients(BaselineAttribution):
    r"""Integrated Gradients (Sundararajan et al. 2017): the gradient averaged along
    the straight path from the baseline \(x'\) to the input \(x\), times \(x - x'\).

    Every (step, example) row goes through the chunked evaluator, so memory stays
    within ``torchexplain.config.memory_budget`` whatever ``n_steps`` is.
    ``n_steps="auto"`` doubles the steps from 16 until the relative convergence delta
    ``|delta| / |F(x) - F(x0)|`` of every example is below ``tol`` (or the next doubling would pass
    ``max_steps``; fewer than 16 if ``max_steps`` is smaller);
    the steps used are kept in ``self.n_steps_used`` and on the returned delta as
    ``delta.n_steps``.

    Formula:
        $$\phi_i = (x_i - x'_i) \int_0^1 \frac{\partial F(x' + \alpha (x - x'))}{\partial x_i}\, d\alpha
        \approx (x_i - x'_i) \sum_{k=1}^{m} w_k \frac{\partial F(x' + \alpha_k (x - x'))}{\partial x_i}$$

        with the \(m\) = ``n_steps`` points \(\alpha_k\) and weights \(w_k\) of ``method``
        (Gauss-Legendre by default). Completeness: \(\sum_i \phi_i = F(x) - F(x')\) up to
        the returned convergence delta.

    Cost:
        ``n_steps`` forward and backward passes per example (one more forward each for
        ``return_convergence_delta``), batched in chunks from the memory budget;
        ``n_steps="auto"`` repeats with 16, 32, ... steps until the delta is small.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import IntegratedGradients
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
        >>> x = torch.randn(2, 3)
        >>> ig = IntegratedGradients(model)
        >>> attributions, delta = ig.attribute(x, target=1, return_convergence_delta=True)
        >>> attributions.shape, delta.shape
        (torch.Size([2, 3]), torch.Size([2]))
        >>> bool(delta.abs().max() < 1e-4)
        True
    """

    def __init__(self, forward_func, multiply_by_inputs: bool = True, output_selector=None):
        super().__init__(forward_func, multiply_by_inputs, output_selector)
        self.n_steps_used: int | None = None

    def attribute(
        self,
        inputs,
        baselines=None,
        target=None,
        additional_forward_args=None,
        n_steps=50,
        method: str = "gausslegendre",
        internal_batch_size="auto",
        return_convergence_delta: bool = False,
        forward_kwargs=None,
        tol: float = 0.01,
        max_steps: int = 1024,
    ):
        inputs, is_tuple, adapter = self._prepare(inputs, target, additional_forward_args, forward_kwargs)
        baselines = format_baselines(baselines, inputs)
        chunk = self._chunk(internal_batch_size)
        auto = n_steps == "auto"
        if not auto and (isinstance(n_steps, bool) or not isinstance(n_steps, numbers.Integral) or n_steps < 1):
            raise ValueError(f'n_steps must be a positive int or "auto"; got {n_steps!r}')
        if auto and not (tol > 0):
            raise ValueError(f"tol must be positive; got {tol!r}")
        if auto:
            max_steps = positive_int(max_steps, "max_steps")
        with self._guard():
            if not auto:
                attributions = self._integrate(inputs, baselines, adapter, int(n_steps), method, chunk)
                self.n_steps_used = int(n_steps)
                delta = self._delta(adapter, attributions, baselines, inputs) if return_convergence_delta else None
            else:
                attributions, delta = self._integrate_auto(inputs, baselines, adapter, method, chunk, tol, max_steps)
        result = format_output(is_tuple, attributions)
        return (result, delta) if return_convergence_delta else result

    def _integrate_auto(self, inputs, baselines, adapter, method, chunk, tol, max_steps):
        n_steps = min(16, max_steps)
        gap = self._gap(adapter, baselines, inputs)
        while True:
            attributions = self._integrate(inputs, baselines, adapter, n_steps, method, chunk)
            delta = row_sums(attributions) - gap
            relative = delta.abs() / gap.abs().clamp_min(1e-12)
            if bool((relative < tol).all()) or n_steps * 2 > max_steps:
                break
            n_steps *= 2
        self.n_steps_used = n_steps
        delta.n_steps = n_steps
        return attributions, delta

    def _integrate(self, inputs, baselines, adapter, n_steps, method, chunk):
        sizes_t, alphas_t = path_tables(method, n_steps)
        n = adapter.n
        totals = [torch.zeros_like(x) for x in inputs]

        def build(rows, examples):
            out = []
            for x, b in zip(inputs, baselines):
                xs, bs = take(x, examples), take(b, examples)
                out.append(bs + per_row(alphas_t, rows // n, xs) * (xs - bs))
            return out

        def consume(rows, examples, grads, scalars):
            for total, g in zip(totals, grads):
                total.index_add_(0, examples.to(g.device), g * per_row(sizes_t, rows // n, g))

        row_gradients(adapter, n_steps * n, build, consume, internal_batch_size=chunk)
        if self._multiply_by_inputs:
            return [t * (x - b) for t, x, b in zip(totals, inputs, baselines)]
        return totals
