"""Shapley values over features: sampled (random orders) and exact (all coalitions).

A coalition is a set of features taken from the inputs; the others take the
baseline. ``v(S)`` is the explained output for coalition ``S``. Both methods describe
their coalitions as blocks for the batched forward-only evaluator and combine the
``(n_blocks, n)`` table of values afterwards, in float64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..core.inputs import format_output
from ..core.registry import grid_mask, register
from .ablation import perturbation_baselines, randperm
from .blocks import Blocks, PerturbationAttribution, example_rows, then
from .seeding import make_generator, positive_int

#: exact Shapley values evaluate 2**n_features coalitions per example
MAX_EXACT_FEATURES = 20


def _coalition_rows(inputs, baselines, fm, replaced: Tensor, examples: Tensor):
    n = inputs[0].shape[0]
    xs = [example_rows(x, examples, n) for x in inputs]
    bs = [example_rows(b, examples, n) for b in baselines]
    return fm.ablate(xs, bs, replaced, examples)


def _shapley_result(blocks: Blocks, phi: Tensor, fm, inputs, is_tuple):
    """Attributions ``(*out_shape, *input.shape[1:])`` (Captum's form: one row per
    example, or the whole-batch output's shape), at least float32."""
    dtype = torch.promote_types(blocks.values.dtype, torch.float32)
    return format_output(is_tuple, blocks.attributions(fm, phi, inputs, dtype, shaped=True))


@register("shapley_value_sampling", aliases=("shapley_sampling", "svs"), order=140,
          defaults=grid_mask(8, n_samples=4, seed=0),
          description="Shapley values of 8x8 grid cells from 4 sampled orders")
class ShapleyValueSampling(PerturbationAttribution):
    r"""Shapley value sampling (Castro et al. 2009; Strumbelj & Kononenko 2010): Shapley values from random orders.

    ``n_samples`` random orders of the features; each feature's attribution is the
    mean change of the output when it joins the features before it (starting from the
    baselines). Exact for models additive in the features (e.g. linear) with any
    ``n_samples``.

    The empty and the full coalition are shared by every order, so the method runs
    ``2 + n_samples * (n_features - 1)`` perturbations per example (Captum runs
    ``1 + n_samples * n_features``). ``generator`` or ``seed`` (beyond Captum) make the
    orders reproducible without touching torch's global generator, which is used (as in
    Captum, drawing the same orders for consecutive feature ids) when neither is given.

    Formula:
        $$\phi_f = \frac{1}{S} \sum_{s=1}^{S} \Big(v\big(P_f^{(s)} \cup \{f\}\big) - v\big(P_f^{(s)}\big)\Big),
        \qquad v(T) = F\big(x \odot \mathbb{1}_T + x' \odot (1 - \mathbb{1}_T)\big)$$

        with \(S\) = ``n_samples`` random orders of the \(M\) features, \(P_f^{(s)}\) the
        features before \(f\) in order \(s\), \(\mathbb{1}_T\) the indicator of the scalars
        of the features in \(T\) and \(x'\) the ``baselines`` (0 by default); every scalar
        of feature \(f\) gets \(\phi_f\). Each order telescopes, so efficiency holds
        exactly for any \(S\): \(\sum_f \phi_f = F(x) - F(x')\).

    Cost:
        \(2 + S (M - 1)\) forward passes per example and no backward pass, batched
        ``perturbations_per_eval`` coalitions per forward call (one forward of the
        batch per coalition for a whole-batch model).

    Examples:
        >>> import torch
        >>> from torchexplain.attr import ShapleyValueSampling
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        >>> x = torch.randn(2, 4)
        >>> attributions = ShapleyValueSampling(model).attribute(x, target=0, n_samples=3, seed=0)
        >>> attributions.shape
        torch.Size([2, 4])
        >>> gap = model(x)[:, 0] - model(torch.zeros(1, 4))[:, 0]
        >>> bool(torch.allclose(attributions.sum(1), gap, atol=1e-5))
        True
    """

    def attribute(self, inputs, baselines=None, target=None, additional_forward_args=None, feature_mask=None,
                  n_samples: int = 25, perturbations_per_eval="auto", show_progress: bool = False, forward_kwargs=None,
                  generator: torch.Generator | None = None, seed: int | None = None):
        return self._sampled(inputs, baselines, target, additional_forward_args, feature_mask, n_samples,
                             perturbations_per_eval, show_progress, forward_kwargs, generator, seed, futures=False)

    def attribute_future(self, inputs, baselines=None, target=None, additional_forward_args=None, feature_mask=None,
                         n_samples: int = 25, perturbations_per_eval="auto", show_progress: bool = False,
                         forward_kwargs=None, generator: torch.Generator | None = None, seed: int | None = None):
        """:meth:`attribute` for a ``forward_func`` returning ``torch.futures.Future``:
        every coalition is dispatched before any is waited for (but the first, whose
        output tells the model's form); returns a future of the attributions."""
        return self._sampled(inputs, baselines, target, additional_forward_args, feature_mask, n_samples,
                             perturbations_per_eval, show_progress, forward_kwargs, generator, seed, futures=True)

    def _sampled(self, inputs, baselines, target, additional_forward_args, feature_mask, n_samples,
                 perturbations_per_eval, show_progress, forward_kwargs, generator, seed, *, futures):
        n_samples = positive_int(n_samples, "n_samples")
        rng = make_generator(generator, seed)
        inputs, is_tuple, adapter, fm = self._setup(
            inputs, target, additional_forward_args, forward_kwargs, feature_mask, futures=futures
        )
        baselines = perturbation_baselines(baselines, inputs)
        n_features = fm.n_features
        orders = torch.stack([randperm(n_features, rng) for _ in range(n_samples)])  # (S, F) feature positions
        ranks = torch.empty_like(orders).scatter_(1, orders, torch.arange(n_features).expand(n_samples, -1))
        steps = max(n_features - 1, 0)  # coalition sizes 1 .. F-1 along each order

        def build(blocks: Tensor, examples: Tensor):
            # block 0: nothing from the inputs; 1: everything; 2 + s*steps + (t-1): the first t of order s
            inner = (blocks - 2).clamp_min(0)
            size = torch.where(blocks == 0, 0, torch.where(blocks == 1, n_features, inner % max(steps, 1) + 1))
            order_ranks = ranks[inner // max(steps, 1)]
            replaced = order_ranks >= size.unsqueeze(1)
            return _coalition_rows(inputs, baselines, fm, replaced, examples)

        def finish(blocks: Blocks):
            v = blocks.flat().to(torch.float64)  # (blocks, outputs)
            n_out = v.shape[1]
            chain = torch.cat(
                [v[0].expand(n_samples, 1, n_out), v[2:].reshape(n_samples, steps, n_out),
                 v[1].expand(n_samples, 1, n_out)], dim=1,
            )  # (S, F + 1, outputs): v of the first t features of each order
            gains = chain[:, 1:] - chain[:, :-1]  # (S, F, outputs): gain of the t-th feature of order s
            phi = torch.zeros(n_out, n_features, dtype=torch.float64, device=v.device)
            phi.index_add_(1, orders.reshape(-1).to(v.device), gains.reshape(-1, n_out).t())
            return _shapley_result(blocks, phi / n_samples, fm, inputs, is_tuple)

        n_blocks = 2 + n_samples * steps
        return then(self._blocks(adapter, fm, inputs, n_blocks, build, perturbations_per_eval, show_progress), finish)


def shapley_weights(n_features: int) -> Tensor:
    """``w[s] = s! (n - s - 1)! / n!``: the weight of a coalition of size ``s`` that a
    feature joins."""
    n = n_features
    return torch.tensor(
        [math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) for s in range(n)], dtype=torch.float64
    )


@register("shapley_values", aliases=("shapley",), order=150, defaults=grid_mask(3),
          description="exact Shapley values of 3x3 grid cells")
class ShapleyValues(ShapleyValueSampling):
    r"""Exact Shapley values (Shapley 1953) of the features, from every coalition.

    Every one of the ``2**n_features`` coalitions is evaluated
    once (Captum enumerates all ``n!`` orders, ``n * n!`` evaluations) and feature
    ``i`` gets ``sum over S without i of |S|! (n-|S|-1)! / n! * (v(S + i) - v(S))``.
    Refuses more than 20 features; use :class:`ShapleyValueSampling` there.

    Formula:
        $$\phi_f = \sum_{T \subseteq N \setminus \{f\}} \frac{|T|!\,(M - |T| - 1)!}{M!}
        \big(v(T \cup \{f\}) - v(T)\big)$$

        with \(N\) the \(M\) features and \(v(T)\) the explained output with the features of
        \(T\) from the input and the others at the ``baselines`` (as in
        :class:`ShapleyValueSampling`); every scalar of feature \(f\) gets \(\phi_f\). The
        Shapley axioms hold: efficiency \(\sum_f \phi_f = F(x) - F(x')\), symmetry,
        dummy and linearity; a linear model, each scalar a feature, gets \(w_i (x_i - x'_i)\).

    Cost:
        \(2^M\) forward passes per example and no backward pass (\(M \le 20\)), batched
        ``perturbations_per_eval`` coalitions per forward call.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import ShapleyValues
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        >>> x = torch.randn(2, 4)
        >>> attributions = ShapleyValues(model).attribute(x, target=0)
        >>> attributions.shape
        torch.Size([2, 4])
        >>> gap = model(x)[:, 0] - model(torch.zeros(1, 4))[:, 0]
        >>> bool(torch.allclose(attributions.sum(1), gap, atol=1e-5))
        True
        >>> linear = torch.nn.Linear(4, 1)
        >>> bool(torch.allclose(ShapleyValues(linear).attribute(x, target=0), linear.weight[0] * x, atol=1e-6))
        True
    """

    def attribute(self, inputs, baselines=None, target=None, additional_forward_args=None,  # type: ignore[override]
                  feature_mask=None, perturbations_per_eval="auto", show_progress: bool = False, forward_kwargs=None):
        return self._exact(inputs, baselines, target, additional_forward_args, feature_mask, perturbations_per_eval,
                           show_progress, forward_kwargs, futures=False)

    def attribute_future(self, inputs, baselines=None, target=None, additional_forward_args=None,  # type: ignore[override]
                         feature_mask=None, n_samples=None, perturbations_per_eval="auto", show_progress: bool = False,
                         forward_kwargs=None):
        """:meth:`attribute` for a ``forward_func`` returning ``torch.futures.Future``;
        returns a future of the attributions. ``n_samples`` is accepted for Captum's
        signature and ignored, as in Captum: every coalition is evaluated."""
        return self._exact(inputs, baselines, target, additional_forward_args, feature_mask, perturbations_per_eval,
                           show_progress, forward_kwargs, futures=True)

    def _exact(self, inputs, baselines, target, additional_forward_args, feature_mask, perturbations_per_eval,
               show_progress, forward_kwargs, *, futures):
        inputs, is_tuple, adapter, fm = self._setup(
            inputs, target, additional_forward_args, forward_kwargs, feature_mask, futures=futures
        )
        n_features = fm.n_features
        if n_features > MAX_EXACT_FEATURES:
            raise ValueError(
                f"ShapleyValues enumerates 2**n_features coalitions and accepts at most {MAX_EXACT_FEATURES} "
                f"features; feature_mask defines {n_features}. Group features with a coarser feature_mask "
                "(torchexplain.masks.grid or superpixels) or use "
                "ShapleyValueSampling(model).attribute(..., n_samples=...)"
            )
        baselines = perturbation_baselines(baselines, inputs)
        bits = 1 << torch.arange(n_features)

        def build(blocks: Tensor, examples: Tensor):
            replaced = (blocks.unsqueeze(1) & bits) == 0  # bit i set: feature i from the inputs
            return _coalition_rows(inputs, baselines, fm, replaced, examples)

        def finish(blocks: Blocks):
            v = blocks.flat().to(torch.float64)  # (coalitions, outputs)
            coalitions = torch.arange(1 << n_features, device=v.device)
            sizes = torch.zeros_like(coalitions)
            for i in range(n_features):
                sizes += (coalitions >> i) & 1
            weights = shapley_weights(n_features).to(v.device)
            phi = torch.empty(v.shape[1], n_features, dtype=torch.float64, device=v.device)
            for i in range(n_features):  # vectorised over the 2**(n-1) coalitions without i
                without = coalitions[((coalitions >> i) & 1) == 0]
                gains = v[without | (1 << i)] - v[without]  # (2**(n-1), outputs)
                phi[:, i] = weights[sizes[without]] @ gains
            return _shapley_result(blocks, phi, fm, inputs, is_tuple)

        return then(
            self._blocks(adapter, fm, inputs, 1 << n_features, build, perturbations_per_eval, show_progress), finish
        )
