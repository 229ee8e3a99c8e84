"""NoiseTunnel (SmoothGrad, SmoothGrad-squared, VarGrad) and GradientShap."""

from __future__ import annotations

import numbers

import torch

from ..core.batching import evaluate_rows
from ..core.gradients import row_gradients
from ..core.inputs import (
    as_tuple,
    format_additional_args,
    format_baseline_distribution,
    format_output,
    repeat_per_example,
    validate_inputs,
)
from ..core.registry import noise_level, register, zero_and_mean_baselines
from ..core.sampling import BY_SAMPLE, PathDraws, Sampler
from .base import Attribution, BaselineAttribution, RowTotals, take
from .gradient import Saliency
from .seeding import positive_int

NT_TYPES = ("smoothgrad", "smoothgrad_sq", "vargrad")


def _stdevs(stdevs, n_inputs: int) -> tuple[float, ...]:
    values = tuple(stdevs) if isinstance(stdevs, (tuple, list)) else (stdevs,) * n_inputs
    if len(values) != n_inputs:
        raise ValueError(f"stdevs must be a number or one number per input tensor ({n_inputs}); got {len(values)}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or v < 0:
            raise ValueError(f"stdevs must be non-negative numbers; got {stdevs!r}")
    return tuple(float(v) for v in values)


@register("smoothgrad", aliases=("smooth_grad", "noise_tunnel"), order=50,
          build=lambda model: NoiseTunnel(Saliency(model)),
          defaults=lambda x: {"nt_type": "smoothgrad", "nt_samples": 16, "stdevs": noise_level(x),
                              "generator": torch.Generator().manual_seed(0)},
          description="SmoothGrad: saliency averaged over noisy copies")
class NoiseTunnel(Attribution):
    r"""Averages another method's attributions over noisy copies of the inputs
    (SmoothGrad, Smilkov et al. 2017; VarGrad, Adebayo et al. 2018).

    ``generator`` (beyond Captum, on any device) makes the noise reproducible without
    touching the global RNG (see :mod:`torchexplain.core.sampling`). Noisy copies are
    built ``nt_samples_batch_size`` samples at a time (all at once by default); the
    wrapped method chunks its own rows as usual.

    Formula:
        $$\bar{A} = \frac{1}{N} \sum_{s=1}^{N} A(x + \epsilon_s), \qquad
        \overline{A^2} = \frac{1}{N} \sum_{s=1}^{N} A(x + \epsilon_s)^2, \qquad
        \epsilon_s \sim \mathcal{N}(0, \sigma^2 I)$$

        with \(A\) the wrapped method, \(N\) = ``nt_samples`` and \(\sigma\) = ``stdevs``
        (one per input tensor). ``nt_type="smoothgrad"`` returns \(\bar{A}\),
        ``"smoothgrad_sq"`` returns \(\overline{A^2}\) and ``"vargrad"`` returns
        \(\overline{A^2} - \bar{A}^2\) (elementwise). With
        ``draw_baseline_from_distrib=True`` each noisy copy gets one baseline row drawn
        at random from ``baselines``.

    Cost:
        ``nt_samples`` times the wrapped method's forward and backward passes per
        example: the wrapped method is called once per block of
        ``nt_samples_batch_size`` samples (once by default) on all of that block's noisy
        copies, and batches them itself.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import NoiseTunnel, Saliency
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> x = torch.randn(2, 3)
        >>> nt = NoiseTunnel(Saliency(model))
        >>> smooth = nt.attribute(x, nt_type="smoothgrad", nt_samples=8, stdevs=0.1, target=0,
        ...                       generator=torch.Generator().manual_seed(0))
        >>> smooth.shape
        torch.Size([2, 3])
        >>> linear = torch.nn.Linear(3, 2)  # a constant gradient: the noise changes nothing
        >>> smooth = NoiseTunnel(Saliency(linear)).attribute(x, nt_samples=4, stdevs=0.5, target=0)
        >>> bool(torch.allclose(smooth, Saliency(linear).attribute(x, target=0)))
        True
    """

    def __init__(self, attribution_method: Attribution):
        if not hasattr(attribution_method, "attribute"):
            raise TypeError(
                f"attribution_method must be an attribution method; got {type(attribution_method).__name__}"
            )
        super().__init__(attribution_method.forward_func, getattr(attribution_method, "output_selector", None))
        self.attribution_method = attribution_method

    @property
    def multiplies_by_inputs(self) -> bool:
        return self.attribution_method.multiplies_by_inputs

    def has_convergence_delta(self) -> bool:
        return self.attribution_method.has_convergence_delta()

    def attribute(
        self,
        inputs,
        nt_type: str = "smoothgrad",
        nt_samples: int = 5,
        nt_samples_batch_size=None,
        stdevs=1.0,
        draw_baseline_from_distrib: bool = False,
        generator: torch.Generator | None = None,
        **kwargs,
    ):
        if nt_type not in NT_TYPES:
            raise ValueError(f"nt_type must be one of {', '.join(NT_TYPES)}; got {nt_type!r}")
        inputs, is_tuple = as_tuple(inputs)
        n = validate_inputs(inputs)
        nt_samples = positive_int(nt_samples, "nt_samples")
        batch = None if nt_samples_batch_size is None else positive_int(nt_samples_batch_size, "nt_samples_batch_size")
        stds = _stdevs(stdevs, len(inputs))
        want_delta = bool(kwargs.get("return_convergence_delta", False))
        if want_delta and not self.has_convergence_delta():
            raise ValueError(f"{type(self.attribution_method).__name__} has no convergence delta")
        sums = [torch.zeros_like(x) for x in inputs]
        squares = [torch.zeros_like(x) for x in inputs]
        deltas = []
        sampler = Sampler(generator)

        def run(a: int, b: int) -> None:
            k = b - a
            # draws are made sample by sample, so they do not depend on the block size
            draws = sampler.noise(inputs, stds, k, BY_SAMPLE)
            noisy = tuple((x.unsqueeze(1) + d).flatten(0, 1) for x, d in zip(inputs, draws))
            inner = self._expand_kwargs(kwargs, inputs, n, k, draw_baseline_from_distrib, sampler)
            out = self.attribution_method.attribute(noisy if is_tuple else noisy[0], **inner)
            if want_delta:
                out, delta = out
                deltas.append(delta)
            for total, sq, attr in zip(sums, squares, as_tuple(out)[0]):
                attr = attr.reshape((n, k) + attr.shape[1:])
                total += attr.sum(1)
                sq += (attr * attr).sum(1)

        evaluate_rows(nt_samples, run, batch)
        mean = [s / nt_samples for s in sums]
        mean_sq = [s / nt_samples for s in squares]
        if nt_type == "smoothgrad":
            result = mean
        elif nt_type == "smoothgrad_sq":
            result = mean_sq
        else:
            result = [sq - m * m for sq, m in zip(mean_sq, mean)]
        result = format_output(is_tuple, result)
        return (result, torch.cat(deltas)) if want_delta else result

    @staticmethod
    def _expand_kwargs(kwargs, inputs, n, k, draw_baseline, sampler: Sampler):
        inner = dict(kwargs)
        if "target" in inner and not callable(inner["target"]):
            inner["target"] = repeat_per_example(inner["target"], n, k)
        if inner.get("additional_forward_args") is not None:
            args = format_additional_args(inner["additional_forward_args"])
            inner["additional_forward_args"] = tuple(repeat_per_example(v, n, k) for v in args)
        if inner.get("forward_kwargs"):
            inner["forward_kwargs"] = {key: repeat_per_example(v, n, k) for key, v in inner["forward_kwargs"].items()}
        if inner.get("feature_mask") is not None:  # a per-example mask follows its example's noisy copies
            masks = inner["feature_mask"]
            repeated = tuple(repeat_per_example(m, n, k) if n > 1 else m for m in as_tuple(masks, "feature_mask")[0])
            inner["feature_mask"] = repeated if isinstance(masks, (tuple, list)) else repeated[0]
        if inner.get("baselines") is not None:
            baselines = inner["baselines"]
            if draw_baseline:
                rows = format_baseline_distribution(baselines, inputs)
                picks = sampler.picks(rows[0].shape[0], n, k)  # example-major, drawn sample by sample
                drawn = tuple(take(b, picks) for b in rows)
                inner["baselines"] = drawn if len(inputs) > 1 or isinstance(baselines, tuple) else drawn[0]
            elif isinstance(baselines, tuple):
                inner["baselines"] = tuple(repeat_per_example(b, n, k) for b in baselines)
            else:
                inner["baselines"] = repeat_per_example(baselines, n, k)
        return inner


@register(
    "gradient_shap",
    aliases=("gradshap", "expected_gradients"),
    delta=True,
    order=40,
    defaults=lambda x: {"baselines": zero_and_mean_baselines(x), "n_samples": 20,
                        "generator": torch.Generator().manual_seed(0)},
    description="GradientSHAP over a zero and a mean-image baseline",
)
class GradientShap(BaselineAttribution):
    r"""GradientSHAP (Lundberg & Lee 2017): expected gradients between the inputs
    (plus Gaussian noise of ``stdevs``) and baselines drawn at random from a
    distribution, at random points of the straight path, times the difference.

    All ``n_samples`` x batch rows go through the chunked evaluator in one pass.
    ``generator`` (beyond Captum, on any device) makes the draws reproducible
    (:class:`~torchexplain.core.sampling.PathDraws`).

    Formula:
        $$\phi_i = \frac{1}{S} \sum_{s=1}^{S} (\tilde{x}_{s,i} - b_{s,i})
        \frac{\partial F(b_s + \alpha_s (\tilde{x}_s - b_s))}{\partial x_i}, \qquad
        \tilde{x}_s = x + \epsilon_s$$

        with \(S\) = ``n_samples``, each sample's baseline \(b_s\) drawn uniformly from
        the rows of ``baselines``, \(\alpha_s\) uniform in \([0, 1)\) and
        \(\epsilon_s \sim \mathcal{N}(0, \sigma^2 I)\), \(\sigma\) = ``stdevs``. With
        ``multiply_by_inputs=False`` the factor \((\tilde{x}_s - b_s)\) is left out.
        Completeness holds only approximately (exactly for a linear model):
        ``return_convergence_delta`` gives, per (example, sample), the sample's summed
        term minus \(F(\tilde{x}_s) - F(b_s)\).

    Cost:
        ``n_samples`` forward and backward passes per example, all rows batched in
        chunks of ``internal_batch_size``; \(2S\) more forward passes per example for
        ``return_convergence_delta``.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import GradientShap
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 2))
        >>> x, baselines = torch.randn(2, 3), torch.randn(4, 3)
        >>> gs = GradientShap(model)
        >>> attributions, delta = gs.attribute(x, baselines, n_samples=8, target=0, return_convergence_delta=True,
        ...                                    generator=torch.Generator().manual_seed(0))
        >>> attributions.shape, delta.shape
        (torch.Size([2, 3]), torch.Size([16]))
        >>> bool(delta.abs().max() < 1e-5)  # a linear model: every sample is exact
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
        forward_kwargs=None,
        internal_batch_size="auto",
        generator: torch.Generator | None = None,
    ):
        inputs, is_tuple, adapter = self._prepare(inputs, target, additional_forward_args, forward_kwargs)
        baselines = format_baseline_distribution(baselines, inputs)
        n_samples = positive_int(n_samples, "n_samples")
        stds = _stdevs(stdevs, len(inputs))
        chunk = self._chunk(internal_batch_size)
        n_rows = adapter.n * n_samples
        paths = PathDraws(inputs, baselines, n_samples, stds, Sampler(generator))
        totals = RowTotals(inputs, n_rows)

        def consume(rows, examples, grads, scalars):
            if self._multiply_by_inputs:
                grads = [g * (e - s) for g, e, s in zip(grads, paths.ends(rows, examples), paths.starts(rows))]
            totals.add(rows, examples, grads)

        with self._guard():
            row_gradients(adapter, n_rows, paths.points, consume, internal_batch_size=chunk)
            attributions = [s / n_samples for s in totals.sums]
            delta = None
            if return_convergence_delta:
                delta = totals.expanded_delta(adapter, n_samples, lambda rows, _: paths.starts(rows), paths.ends)
        result = format_output(is_tuple, attributions)
        return (result, delta) if return_convergence_delta else result
