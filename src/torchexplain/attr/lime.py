"""Lime (Ribeiro et al. 2016) and KernelShap (Lundberg and Lee 2017), with Captum 0.9's
names, arguments and return forms.

Both explain one scalar of the model per example with a linear surrogate fitted on
binary interpretable vectors ``z`` (one entry per feature of ``feature_mask``): a
feature is kept where ``z = 1`` and set to its baseline where ``z = 0``. They differ in
how ``z`` is drawn and weighted:

* Lime: ``z`` uniform over {0, 1}^M, weighted by an exponential kernel of the cosine
  distance between the input and the perturbed input (``similarity_func``).
* KernelShap: first the all-ones and all-zeros vectors, then ``k`` ones with
  ``p(k) ~ (M - 1) / (k (M - k))`` at uniformly random positions, i.e. the Shapley
  kernel; the two end points get a large weight (1e6) so that the fit meets them.

Every example gets its own samples and surrogate. The default sampling, weighting and
fitting are vectorised over samples and examples; all perturbed inputs go through the
one chunked evaluator (``perturbations_per_eval="auto"``, or an int as in Captum).
User ``perturb_func`` / ``similarity_func`` follow Captum's per-sample protocol and are
called once per sample. As in Captum, a batch whose forward gives one value for the
whole batch (a loss; found by one forward of the inputs) gets one surrogate, fitted
through :class:`~torchexplain.attr.LimeBase`: coefficients ``(1, ...)``.

Differences from Captum: the default surrogate is :class:`WeightedLinearRegression`
(torch-native least squares with a tiny ridge) rather than scikit-learn's
``Lasso(alpha=0.01)``; interpretable features are the feature ids that occur in the
mask, in sorted order (Captum's ``0 .. max id`` when ids have no gaps); ``generator``
/ ``seed`` make the default sampling reproducible.
"""

from __future__ import annotations

import inspect
import numbers
import warnings

import torch
from torch import Tensor

from ..core.inputs import format_baselines, format_output
from ..core.perturb import forward_rows
from ..core.registry import grid_mask, register
from .feature_mask import FeatureMask, format_feature_mask
from .lime_base import LimeBase, default_from_interp_rep_transform
from .seeding import make_generator, positive_int
from .surrogate import WeightedLinearRegression, fit_coefficients


def _flat(values) -> Tensor:
    parts = values if isinstance(values, (tuple, list)) else (values,)
    return torch.cat([t.reshape(-1) for t in parts]).double()


class ExpKernelSimilarity:
    """``exp(-d^2 / (2 kernel_width^2))`` with ``d`` the cosine distance (``1 - cos``) or
    the Euclidean distance between the flattened original and perturbed inputs.

    Callable per sample with Captum's signature ``(original, perturbed, z, **kwargs)``;
    Lime evaluates it for all samples at once from per-feature sums instead.
    """

    def __init__(self, distance_mode: str = "cosine", kernel_width: float = 1.0):
        if distance_mode not in ("cosine", "euclidean"):
            raise ValueError(f'distance_mode must be "cosine" or "euclidean"; got {distance_mode!r}')
        if isinstance(kernel_width, bool) or not isinstance(kernel_width, numbers.Real) or kernel_width <= 0:
            raise ValueError(f"kernel_width must be a positive number; got {kernel_width!r}")
        self.distance_mode = distance_mode
        self.kernel_width = float(kernel_width)

    def _kernel(self, distance: Tensor) -> Tensor:
        return torch.exp(-(distance**2) / (2 * self.kernel_width**2))

    def __call__(self, original_inp, perturbed_inp, perturbed_interpretable_input=None, **kwargs) -> float:
        x, p = _flat(original_inp), _flat(perturbed_inp)
        if self.distance_mode == "cosine":
            distance = 1 - (x @ p) / (x.norm().clamp_min(1e-8) * p.norm().clamp_min(1e-8))
        else:
            distance = (x - p).norm()
        return float(self._kernel(distance))

    def batched(self, inputs, baselines, fm: FeatureMask, z: Tensor) -> Tensor:
        """Weights ``(N, S)`` of the samples ``z`` (bool ``(N, S, M)``) from per-feature
        sums of ``x*x``, ``x*b``, ``b*b`` (cosine) or ``(x-b)^2`` (Euclidean)."""
        zf = z.to(torch.float64)
        if self.distance_mode == "euclidean":
            gap = _feature_sums(fm, [(x.double() - b.double()) ** 2 for x, b in zip(inputs, baselines)])
            distance = ((1 - zf) @ gap.unsqueeze(-1)).squeeze(-1).clamp_min(0).sqrt()
            return self._kernel(distance)
        xx = _feature_sums(fm, [x.double() ** 2 for x in inputs])
        xb = _feature_sums(fm, [x.double() * b.double() for x, b in zip(inputs, baselines)])
        bb = _feature_sums(fm, [b.double() ** 2 for b in baselines])
        dot = (zf @ (xx - xb).unsqueeze(-1)).squeeze(-1) + xb.sum(-1, keepdim=True)
        norm_p = ((zf @ (xx - bb).unsqueeze(-1)).squeeze(-1) + bb.sum(-1, keepdim=True)).clamp_min(0).sqrt()
        norm_x = xx.sum(-1, keepdim=True).sqrt()
        cosine = dot / (norm_x.clamp_min(1e-8) * norm_p.clamp_min(1e-8))
        return self._kernel(1 - cosine)


def get_exp_kernel_similarity_function(distance_mode: str = "cosine", kernel_width: float = 1.0) -> ExpKernelSimilarity:
    """Captum's similarity-function factory (the default of Lime: cosine, width 1)."""
    return ExpKernelSimilarity(distance_mode, kernel_width)


def _feature_sums(fm: FeatureMask, values) -> Tensor:
    """``(N, M)`` float64: per example, the sum of ``values`` over each feature's positions."""
    n = values[0].shape[0]
    out = torch.zeros((n, fm.n_features), dtype=torch.float64, device=values[0].device)
    for idx, v in zip(fm.index, values):
        if v.numel():
            out.scatter_add_(1, idx.expand(v.shape).reshape(n, -1).to(v.device), v.reshape(n, -1))
    return out


@register("lime", order=170, defaults=grid_mask(8, n_samples=200, seed=0),
          description="LIME over 8x8 grid cells, 200 samples")
class Lime(LimeBase):
    r"""LIME (Ribeiro et al. 2016): a weighted linear surrogate fitted on random subsets of the features.

    Lime with Captum's arguments (a :class:`LimeBase` sampling in the
    interpretable space). ``interpretable_model``: any model following the
    protocols of :mod:`torchexplain.attr.surrogate` (default
    :class:`WeightedLinearRegression`); ``similarity_func(original, perturbed, z,
    **kwargs)`` and ``perturb_func(original, **kwargs)`` (returning a ``(1, M)`` binary
    vector, or a generator of them) as in Captum; they are called for one example at
    a time with the kwargs ``baselines``, ``feature_mask`` (ids renumbered ``0 .. M-1``
    in sorted order, as the columns of the samples) and ``num_interp_features``.

    Formula:
        $$(b, c) = \operatorname{argmin}_{b,\, c} \sum_{s=1}^{S} \pi(z_s) \big(F(h(z_s)) - b - c^\top z_s\big)^2
        + \lambda \lVert c \rVert^2, \qquad h(z) = x \odot \mathbb{1}_z + x' \odot (1 - \mathbb{1}_z)$$

        with \(z_s \in \{0, 1\}^M\) (each entry 1 with probability 1/2 by default),
        \(\mathbb{1}_z\) the indicator of the scalars of the features kept in \(z\), \(x'\)
        the ``baselines`` (0 by default), \(\pi(z) = \exp\big(-\frac{d(x, h(z))^2}{2 \sigma^2}\big)\) with
        the cosine distance \(d = 1 - \cos\) and \(\sigma = 1\) by default, and
        \(\lambda = 10^{-6} \operatorname{median}_s \pi(z_s)\) (the default surrogate).
        Each scalar gets its feature's coefficient \(c_f\). A model additive in the
        features is recovered (up to the tiny ridge) once the samples span them:
        \(c_f = F(x) - F(x \text{ with } f \text{ at its baseline})\).

    Cost:
        \(S\) = ``n_samples`` forward passes per example and no backward pass, in
        batches of ``perturbations_per_eval`` samples; for a batch of several examples
        one more forward of the batch tells whether the model gives one value for the
        whole batch (then each sample is one forward of the batch and one surrogate is
        fitted). Then one weighted least-squares fit per example (batched over the
        examples for the default surrogate).

    Examples:
        >>> import torch
        >>> from torchexplain.attr import Lime
        >>> model = torch.nn.Linear(3, 1)
        >>> x = torch.randn(2, 3)
        >>> coefficients = Lime(model).attribute(x, target=0, n_samples=50, seed=0)
        >>> coefficients.shape, coefficients.dtype
        (torch.Size([2, 3]), torch.float32)
        >>> bool(torch.allclose(coefficients, model.weight[0] * x, atol=1e-4))  # linear: recovered
        True
    """

    def __init__(
        self, forward_func, interpretable_model=None, similarity_func=None, perturb_func=None, output_selector=None
    ):
        if interpretable_model is None:
            interpretable_model = WeightedLinearRegression()
        if similarity_func is None:
            similarity_func = get_exp_kernel_similarity_function()
        super().__init__(
            forward_func, interpretable_model, similarity_func, perturb_func, True,
            default_from_interp_rep_transform, None, output_selector,
        )

    def attribute(
        self,
        inputs,
        baselines=None,
        target=None,
        additional_forward_args=None,
        feature_mask=None,
        n_samples: int = 25,
        perturbations_per_eval="auto",
        return_input_shape: bool = True,
        show_progress: bool = False,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        forward_kwargs=None,
    ):
        """Fit one surrogate per example and return its coefficients (in the model
        output's dtype, at least float32).

        Args:
            baselines: values of absent features (Captum's forms; 0 by default).
            feature_mask: integer ids grouping input positions into interpretable
                features, global across a tuple of inputs (Captum 0.9); None makes
                every scalar its own feature.
            n_samples: perturbed samples per example (Captum's default 25).
            perturbations_per_eval: ``"auto"`` (batches sized from the memory
                budget) or an int, as in Captum; results do not depend on it.
            return_input_shape: coefficients in the inputs' shapes (each position
                gets its feature's value), else an ``(N, n_features)`` tensor.
            generator: (beyond Captum) a ``torch.Generator`` for the default sampling.
            seed: (beyond Captum) an int seed for it; either makes the result reproducible.
            forward_kwargs (beyond Captum): keyword arguments of the model; tensors
                batched over the examples follow their example.
        """
        inputs, is_tuple, adapter = self._prepare(inputs, target, additional_forward_args, forward_kwargs,
                                                  floating=False)
        n_samples = positive_int(n_samples, "n_samples")
        gen = make_generator(generator, seed)
        base = format_baselines(baselines, inputs)
        fm = format_feature_mask(feature_mask, inputs)
        if fm.n_features > 10000:
            warnings.warn(
                f"Lime/KernelShap with {fm.n_features} interpretable features is slow and memory hungry; "
                "group inputs into fewer features with feature_mask (e.g. torchexplain.masks.superpixels)",
                stacklevel=2,
            )
        if adapter.n > 1 and self._one_value_per_batch(adapter, inputs):
            coefs = self._attribute_batch(
                inputs, is_tuple, base, fm, target, additional_forward_args, n_samples, gen, show_progress,
                forward_kwargs,
            )
            return coefs if not return_input_shape else format_output(is_tuple, fm.expand(coefs))
        with self._guard():
            if self.perturb_func is None:
                z = self._draw(adapter.n, n_samples, fm.n_features, gen).to(inputs[0].device)
            else:
                z = self._user_samples(inputs, is_tuple, base, fm, n_samples)
            weights = self._weights(inputs, is_tuple, base, fm, z)
            y, out_dtype = self._evaluate(adapter, inputs, base, fm, z, perturbations_per_eval, show_progress)
        coefs = self._fit(z, y, weights).to(torch.promote_types(out_dtype, torch.float32))
        if not return_input_shape:
            return coefs
        return format_output(is_tuple, fm.expand(coefs))

    # -- forward functions returning one value for the whole batch -------------------
    def _one_value_per_batch(self, adapter, inputs) -> bool:
        """Whether the model gives one value for the whole batch (e.g. a loss), as
        Captum's Lime checks with one forward of the unperturbed inputs."""
        with self._guard(), torch.no_grad():
            out = adapter.selected(tuple(inputs), torch.arange(adapter.n))
        return out.numel() == 1

    def _sample_weight(self, original, perturbed, z, **kwargs) -> float:
        """The weight of one sample (Lime: ``similarity_func``)."""
        return self.similarity_func(original, perturbed, z, **kwargs)

    def _attribute_batch(self, inputs, is_tuple, base, fm, target, additional_forward_args, n_samples, gen, show,
                         forward_kwargs=None):
        """One surrogate for the whole batch (Captum's Lime when the forward returns one
        value per batch): ``(1, M)`` coefficients, features shared by every example."""
        if fm.per_example:
            raise ValueError(
                "feature_mask must be shared by the batch (first dimension 1) when forward_func returns one "
                "value for the whole batch"
            )
        kwargs = {
            "baselines": format_output(is_tuple, base),
            "feature_mask": format_output(is_tuple, fm.index),
            "num_interp_features": fm.n_features,
        }
        perturb = self.perturb_func
        if perturb is None:
            drawn = self._draw(1, n_samples, fm.n_features, gen)[0].long()

            def perturb(original, **unused):
                yield from (row.view(1, -1) for row in drawn)

        z, y, w = self._samples_and_labels(
            format_output(is_tuple, inputs), target, additional_forward_args, n_samples, 1, show, kwargs,
            perturb, self._sample_weight, forward_kwargs,
        )
        return fit_coefficients(self.interpretable_model, z, y, w).view(1, -1).float()

    # -- sampling ---------------------------------------------------------------------
    def _draw(self, n: int, n_samples: int, n_features: int, gen) -> Tensor:
        """Default samples: bool ``(N, S, M)``, each entry kept with probability 1/2."""
        return torch.rand((n, n_samples, n_features), generator=gen) < 0.5

    @staticmethod
    def _example(values, e: int, is_tuple: bool, n: int):
        picked = tuple(v[e : e + 1] if v.shape[0] == n else v for v in values)
        return format_output(is_tuple, picked)

    def _user_kwargs(self, e: int, inputs, is_tuple, base, fm: FeatureMask) -> dict:
        n = inputs[0].shape[0]
        return {
            "baselines": self._example(base, e, is_tuple, n),
            "feature_mask": self._example(fm.index, e, is_tuple, n),
            "num_interp_features": fm.n_features,
        }

    def _user_samples(self, inputs, is_tuple, base, fm: FeatureMask, n_samples: int) -> Tensor:
        """``perturb_func`` called per example and sample, in Captum's order."""
        n, m = inputs[0].shape[0], fm.n_features
        per_example = []
        for e in range(n):
            original = self._example(inputs, e, is_tuple, n)
            kwargs = self._user_kwargs(e, inputs, is_tuple, base, fm)
            if inspect.isgeneratorfunction(self.perturb_func):
                stream = self.perturb_func(original, **kwargs)
                draw = lambda stream=stream: next(stream, None)  # noqa: E731
            else:
                draw = lambda original=original, kwargs=kwargs: self.perturb_func(original, **kwargs)  # noqa: E731
            rows = []
            for _ in range(n_samples):
                sample = draw()
                if sample is None:
                    message = f"perturb_func's generator stopped after {len(rows)} of {n_samples} samples"
                    warnings.warn(message, stacklevel=3)
                    break
                sample = torch.as_tensor(sample).reshape(-1)
                if sample.numel() != m:
                    raise ValueError(
                        f"perturb_func must return a binary vector of shape (1, {m}) (num_interp_features); "
                        f"got {sample.numel()} values"
                    )
                rows.append(sample.to(inputs[0].device) != 0)
            if not rows:
                raise ValueError("perturb_func gave no samples")
            per_example.append(torch.stack(rows))
        count = min(r.shape[0] for r in per_example)
        return torch.stack([r[:count] for r in per_example])

    # -- weighting --------------------------------------------------------------------
    def _weights(self, inputs, is_tuple, base, fm: FeatureMask, z: Tensor) -> Tensor:
        """``(N, S)`` float64 sample weights."""
        if isinstance(self.similarity_func, ExpKernelSimilarity):
            return self.similarity_func.batched(inputs, base, fm, z)
        n, n_samples = z.shape[:2]
        weights = torch.empty((n, n_samples), dtype=torch.float64)
        for e in range(n):
            original = self._example(inputs, e, is_tuple, n)
            kwargs = self._user_kwargs(e, inputs, is_tuple, base, fm)
            examples = torch.full((n_samples,), e, dtype=torch.long)
            perturbed = self._perturbed(inputs, base, fm, z[e], examples)
            for s in range(n_samples):
                one = format_output(is_tuple, [p[s : s + 1] for p in perturbed])
                value = self.similarity_func(original, one, z[e, s : s + 1].long(), **kwargs)
                weights[e, s] = float(value.reshape(-1)[0]) if isinstance(value, Tensor) else float(value)
        return weights.to(z.device)

    # -- evaluation and fit -------------------------------------------------------------
    @staticmethod
    def _perturbed(inputs, base, fm: FeatureMask, z: Tensor, examples: Tensor) -> tuple[Tensor, ...]:
        index = examples.to(inputs[0].device)
        rows = [x.index_select(0, index) for x in inputs]
        fills = [b.index_select(0, index) for b in base]
        return fm.ablate(rows, fills, ~z, examples)

    def _evaluate(self, adapter, inputs, base, fm, z: Tensor, perturbations_per_eval, show_progress):
        """The explained scalar ``(N, S)`` of every sample (row ``r`` is sample
        ``r // N`` of example ``r % N``) in float64, and the model output's dtype."""
        n, n_samples = z.shape[:2]
        y = torch.empty((n, n_samples), dtype=torch.float64, device=z.device)
        seen = {"dtype": torch.float32}

        def build(rows: Tensor, examples: Tensor):
            return self._perturbed(inputs, base, fm, z[examples.to(z.device), (rows // n).to(z.device)], examples)

        def consume(rows: Tensor, examples: Tensor, scalars: Tensor) -> None:
            y[examples.to(y.device), (rows // n).to(y.device)] = scalars.to(y.device, torch.float64)
            seen["dtype"] = scalars.dtype

        forward_rows(
            adapter, n * n_samples, build, consume, perturbations_per_eval=perturbations_per_eval,
            show_progress=show_progress, desc=type(self).__name__,
        )
        return y, seen["dtype"]

    def _fit(self, z: Tensor, y: Tensor, weights: Tensor) -> Tensor:
        """``(N, M)`` float64 coefficients, one surrogate per example."""
        model = self.interpretable_model
        if isinstance(model, WeightedLinearRegression):
            return model.fit(z.to(torch.float64), y, weights).coef_
        return torch.stack([fit_coefficients(model, z[e].float(), y[e], weights[e]) for e in range(z.shape[0])])


from .kernel_shap import KernelShap  # noqa: E402  (Lime's subclass, after Lime; its module's name kept)

__all__ = [
    "ExpKernelSimilarity", "KernelShap", "Lime", "WeightedLinearRegression", "get_exp_kernel_similarity_function",
]
