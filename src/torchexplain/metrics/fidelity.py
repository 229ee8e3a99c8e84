"""Infidelity and max-sensitivity (Yeh et al. 2019), with Captum 0.9's arguments,
results and sampling order (so a seeded perturbation gives Captum's numbers).

Both expand every example ``k`` times (example-major, ``repeat_interleave``) for a
round of ``k`` perturbations; ``max_examples_per_batch`` caps the rows of a round as
in Captum. The rounds are blocks of the one chunked evaluator
(:func:`~torchexplain.core.batching.evaluate_rows` over the perturbation samples) and
the model runs through the forward adapter. Everything runs without gradients except
the explanation function, which decides for itself.
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable

import torch
from torch import Tensor

from ..core.batching import evaluate_rows
from ..core.forward import ForwardAdapter
from ..core.gradients import forward_scalars
from ..core.hooks import model_guard
from ..core.inputs import as_tuple, format_baselines, repeat_per_example


def _check_samples(n_samples) -> None:
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_perturb_samples must be a positive int; got {n_samples!r}")


def in_rounds(n_samples: int, batch: int, max_examples_per_batch: int | None, run: Callable[[int], None]) -> None:
    """``run(k)`` for each round of ``k`` perturbations of every example, in order:
    Captum's rounds of ``max_examples_per_batch // batch`` samples (at least one;
    every sample in one round when it is None), as blocks of the chunked evaluator."""
    per_round = None if max_examples_per_batch is None else min(max(max_examples_per_batch // batch, 1), n_samples)
    evaluate_rows(n_samples, lambda a, b: run(b - a), per_round)


def _check_pairs(inputs, attributions) -> None:
    if len(inputs) != len(attributions):
        raise ValueError(f"attributions has {len(attributions)} tensor(s) but inputs has {len(inputs)}")
    for i, (x, a) in enumerate(zip(inputs, attributions)):
        if x.shape != a.shape:
            raise ValueError(f"attributions[{i}] has shape {tuple(a.shape)} but the input has {tuple(x.shape)}")


def infidelity(
    forward_func: Callable,
    perturb_func: Callable,
    inputs,
    attributions,
    baselines=None,
    additional_forward_args=None,
    target=None,
    n_perturb_samples: int = 10,
    max_examples_per_batch: int | None = None,
    normalize: bool = False,
) -> Tensor:
    r"""Infidelity (Yeh et al. 2019): the expected squared error between
    ``attributions . I`` and ``F(x) - F(x - I)`` over perturbations ``I``:
    ``perturb_func(inputs[, baselines]) -> (perturbations, perturbed inputs)``. With
    ``normalize`` the attributions are first rescaled by the least-squares factor. One
    value per example (lower is better).

    Formula:
        $$\operatorname{INFD} = \frac{1}{K} \sum_{k=1}^{K}
        \Big( \beta \sum_i \phi_i I^{(k)}_i - \big(F(x) - F(\tilde{x}^{(k)})\big) \Big)^2$$

        with \((I^{(k)}, \tilde{x}^{(k)})\) the \(K\) = ``n_perturb_samples`` draws of
        ``perturb_func`` (\(\tilde{x} = x - I\) by convention), \(\phi\) the attributions,
        \(F\) the output for ``target``; \(\beta = 1\), or with ``normalize`` the
        least-squares \(\beta = \sum_k u_k v_k / \sum_k u_k^2\) of the dot products
        \(u_k\) and output changes \(v_k\) (0 when every \(u_k = 0\)). Accumulated in
        float64.

    Cost:
        ``n_perturb_samples + 1`` forward passes per example (\(F(x)\) once, then one
        per perturbation), no backward pass, without gradients; the perturbations of
        every example run in rounds of ``max_examples_per_batch // N`` samples (None:
        one round), plus ``perturb_func``'s own cost.

    Examples:
        >>> import torch
        >>> from torchexplain.metrics import infidelity
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Linear(4, 1)
        >>> x = torch.randn(2, 4)
        >>> def perturb(inputs):
        ...     noise = 0.1 * torch.randn_like(inputs)
        ...     return noise, inputs - noise
        >>> gradients = model.weight.detach().expand_as(x)  # exact for a linear model
        >>> scores = infidelity(model, perturb, x, gradients, target=0, n_perturb_samples=5)
        >>> scores.shape, bool(scores.max() < 1e-8)
        (torch.Size([2]), True)
    """
    inputs, is_tuple = as_tuple(inputs)
    attributions, _ = as_tuple(attributions, "attributions")
    _check_pairs(inputs, attributions)
    _check_samples(n_perturb_samples)
    baselines = format_baselines(baselines, inputs) if baselines is not None else None
    n = inputs[0].shape[0]
    adapter = ForwardAdapter(forward_func, n, target, additional_forward_args)
    sums = [torch.zeros(n, dtype=torch.float64, device=inputs[0].device) for _ in range(3)]

    def round_of(k: int) -> None:
        dots, diffs = _explained_changes(adapter, perturb_func, inputs, is_tuple, baselines, attributions, f_inputs, k)
        if normalize:
            for total, part in zip(sums, (dots * dots, dots * diffs, diffs * diffs)):
                total += part.sum(1)
        else:
            sums[0] += (dots - diffs).pow(2).sum(1)

    with torch.no_grad(), model_guard(forward_func):
        f_inputs = forward_scalars(adapter, inputs)
        in_rounds(n_perturb_samples, n, max_examples_per_batch, round_of)
    if normalize:
        beta = torch.where(sums[0] != 0, sums[1] / sums[0].where(sums[0] != 0, torch.ones_like(sums[0])),
                           torch.zeros_like(sums[0]))
        values = beta * beta * sums[0] - 2 * beta * sums[1] + sums[2]
    else:
        values = sums[0]
    return (values / n_perturb_samples).to(f_inputs.dtype)


def _explained_changes(adapter, perturb_func, inputs, is_tuple, baselines, attributions, f_inputs, k: int):
    """One round of infidelity: ``k`` perturbations of every example, and per
    (example, perturbation) ``(attributions . I, F(x) - F(x - I))``, each ``(n, k)``."""
    n = adapter.n
    expanded = tuple(x.repeat_interleave(k, 0) for x in inputs)
    args = [expanded if is_tuple else expanded[0]]
    if baselines is not None:
        based = tuple(repeat_per_example(b, n, k) if b.shape[0] == n and n > 1 else b for b in baselines)
        args.append(based if is_tuple else based[0])
    perturbations, perturbed = perturb_func(*args)
    perturbations, _ = as_tuple(perturbations, "perturbations")
    perturbed, _ = as_tuple(perturbed, "perturbed inputs")
    examples = torch.arange(n).repeat_interleave(k)
    diffs = (f_inputs.repeat_interleave(k) - forward_scalars(adapter, perturbed, examples)).view(n, k).double()
    dots = sum((a.repeat_interleave(k, 0) * p).reshape(n * k, -1).sum(1) for a, p in zip(attributions, perturbations))
    return dots.view(n, k).double(), diffs


def default_perturb_func(inputs, perturb_radius: float = 0.02):
    """Uniform noise in ``[-perturb_radius, perturb_radius]`` added to every input
    (from the global generator, as Captum's default)."""
    inputs, _ = as_tuple(inputs)
    return tuple(x + torch.empty(x.shape, dtype=torch.float32).uniform_(-perturb_radius, perturb_radius).to(x.device)
                 for x in inputs)


def infidelity_perturb_func_decorator(multiply_by_inputs: bool = True) -> Callable:
    """Captum's decorator for a ``perturb_func`` that returns only the perturbed
    inputs: the decorated function returns ``(perturbations, perturbed inputs)``, as
    :func:`infidelity` wants, with perturbations ``I = (x - x') / (x - baseline)``
    (``(x - x') / x`` without baselines; a zero denominator counts as 1) when
    ``multiply_by_inputs``, else ``I = x - x'``. The wrapped function is called
    as ``perturb_func(inputs, baselines)`` when baselines are given, else
    ``perturb_func(inputs)``; both results are tuples of tensors."""

    def decorate(perturb_func: Callable) -> Callable:
        def perturbations_and_inputs(inputs, baselines=None):
            perturbed = perturb_func(inputs) if baselines is None else perturb_func(inputs, baselines)
            perturbed, _ = as_tuple(perturbed, "the perturbed inputs")
            xs, _ = as_tuple(inputs)
            if baselines is None:
                refs = (0.0,) * len(xs)
            else:
                refs = baselines if isinstance(baselines, tuple) else (baselines,)
            if len(perturbed) != len(xs) or len(refs) != len(xs):
                raise ValueError(
                    f"perturb_func returned {len(perturbed)} tensor(s) for {len(xs)} input(s) "
                    f"and {len(refs)} baseline(s)"
                )
            if not multiply_by_inputs:
                return tuple(x - p for x, p in zip(xs, perturbed)), perturbed
            return tuple(_safe_div(x - p, x - r) for x, p, r in zip(xs, perturbed, refs)), perturbed

        return functools.wraps(perturb_func)(perturbations_and_inputs)

    return decorate


def _safe_div(numerator: Tensor, denominator) -> Tensor:
    """``numerator / denominator``, dividing by 1 where the denominator is 0."""
    if not isinstance(denominator, Tensor):
        return numerator / (denominator if denominator != 0 else 1.0)
    return numerator / torch.where(denominator != 0, denominator, torch.ones_like(denominator))


def _expanded_kwargs(kwargs: dict, inputs, n: int, k: int) -> dict:
    out = dict(kwargs)
    if "target" in out:
        out["target"] = repeat_per_example(out["target"], n, k)
    if out.get("additional_forward_args") is not None:
        extra = out["additional_forward_args"]
        out["additional_forward_args"] = (tuple(repeat_per_example(a, n, k) for a in extra) if isinstance(extra, tuple)
                                          else repeat_per_example(extra, n, k))
    if out.get("baselines") is not None:
        out["baselines"] = _expanded_baselines(out["baselines"], inputs, n, k)
    return out


def _expanded_baselines(given, inputs, n: int, k: int):
    """Per-example baselines (the first one shaped as its input) follow the rows: each
    tensor of ``n > 1`` rows is repeated ``k`` times per example. Anything else, e.g.
    GradientShap's set of baselines to draw from, or scalars, is passed unchanged."""
    baselines = given if isinstance(given, tuple) else (given,)
    if not (isinstance(baselines[0], Tensor) and baselines[0].shape == inputs[0].shape):
        return given
    expanded = tuple(
        b.repeat_interleave(k, 0) if isinstance(b, Tensor) and b.dim() > 0 and b.shape[0] == x.shape[0] == n and n > 1
        else b
        for b, x in zip(baselines, inputs)
    )
    return expanded if isinstance(given, tuple) else expanded[0]


def sensitivity_max(
    explanation_func: Callable,
    inputs,
    perturb_func: Callable = default_perturb_func,
    perturb_radius: float = 0.02,
    n_perturb_samples: int = 10,
    norm_ord: str = "fro",
    max_examples_per_batch: int | None = None,
    **kwargs,
) -> Tensor:
    r"""Max-sensitivity (Yeh et al. 2019): the largest relative change
    ``||e(x') - e(x)|| / ||e(x)||`` of the explanation
    ``explanation_func(inputs, **kwargs)`` over ``n_perturb_samples`` perturbed
    inputs ``x'`` (uniform noise of ``perturb_radius`` by default). Per-example
    ``target``, ``additional_forward_args`` and ``baselines`` in ``kwargs`` follow
    the expanded rows. One value per example (lower is more stable).

    Formula:
        $$\operatorname{SENS}_{\max} = \max_{k = 1, \dots, K}
        \frac{\lVert \Phi(\tilde{x}^{(k)}) - \Phi(x) \rVert}{\lVert \Phi(x) \rVert}$$

        with \(\Phi\) = ``explanation_func`` (the tensors of a tuple it returns flattened together),
        \(\tilde{x}^{(k)}\) the \(K\) = ``n_perturb_samples`` outputs of ``perturb_func``
        (default: \(x + u\), \(u\) uniform in \([-r, r]\), \(r\) = ``perturb_radius``) and
        \(\lVert \cdot \rVert\) the ``norm_ord`` norm of the flattened map; a zero
        \(\lVert \Phi(x) \rVert\) counts as 1.

    Cost:
        ``n_perturb_samples + 1`` calls of ``explanation_func`` per example, each with
        its own forward and backward passes (one forward and one backward for a
        gradient map such as :class:`~torchexplain.attr.Saliency`); the perturbed
        copies of every example go in rounds of ``max_examples_per_batch // N``
        samples per call (None: one call for all of them). The comparison itself runs
        without gradients; ``explanation_func`` must enable them if it needs them
        (torchexplain's methods do).

    Examples:
        >>> import torch
        >>> from torchexplain.attr import Saliency
        >>> from torchexplain.metrics import sensitivity_max
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> x = torch.randn(2, 4)
        >>> scores = sensitivity_max(Saliency(model).attribute, x, n_perturb_samples=4, target=0)
        >>> scores.shape, bool((scores >= 0).all())
        (torch.Size([2]), True)
        >>> linear = torch.nn.Linear(4, 3)  # its gradient does not depend on x
        >>> bool(sensitivity_max(Saliency(linear).attribute, x, target=0).max() < 1e-6)
        True
    """
    inputs, _ = as_tuple(inputs)
    _check_samples(n_perturb_samples)
    n = inputs[0].shape[0]
    takes_radius = len(inspect.signature(perturb_func).parameters) > 1
    best: list[Tensor] = []

    def round_of(k: int) -> None:
        expanded = tuple(x.repeat_interleave(k, 0) for x in inputs)
        arg = expanded[0] if len(expanded) == 1 else expanded
        perturbed = perturb_func(arg, perturb_radius) if takes_radius else perturb_func(arg)
        explained = as_tuple(explanation_func(perturbed, **_expanded_kwargs(kwargs, inputs, n, k)), "explanation")[0]
        change = torch.cat([(e.repeat_interleave(k, 0) - p).reshape(n * k, -1) for e, p in zip(base, explained)], 1)
        change = torch.norm(change, p=norm_ord, dim=1, keepdim=True)
        worst = (change / norms.repeat_interleave(k, 0)).view(n, k).max(1).values
        best[:] = [worst if not best else torch.maximum(best[0], worst)]

    with torch.no_grad():
        base = as_tuple(explanation_func(inputs, **kwargs), "explanation")[0]
        flat = torch.cat([e.reshape(n, -1) for e in base], 1)
        norms = torch.norm(flat, p=norm_ord, dim=1, keepdim=True)
        norms = torch.where(norms == 0, torch.ones_like(norms), norms)
        in_rounds(n_perturb_samples, n, max_examples_per_batch, round_of)
    return best[0]
