"""LimeBase: Captum's lower-level Lime, a surrogate model fitted on user-defined samples.

For ``n_samples`` draws, ``perturb_func(inputs, **kwargs)`` gives a sample, either in
the interpretable space (a ``(1, M)`` vector ``z``, turned into a model input by
``from_interp_rep_transform(z, inputs, **kwargs)``) or in the input space (turned into
``z`` by ``to_interp_rep_transform(sample, inputs, **kwargs)``). Each sample gets the
weight ``similarity_func(inputs, model_input, z, **kwargs)`` and the label
``F(model_input)`` (the target output). ``interpretable_model`` is fitted on the
``(z, F, weight)`` triples, and its ``representation()`` is returned (for a linear
model, its coefficients).

The samples' model inputs go through the chunked evaluator
(:func:`torchexplain.core.perturb.forward_rows`): ``perturbations_per_eval`` samples
per forward (Captum's default 1), or ``"auto"`` to size the chunks from the memory
budget. Each sample is one whole copy of ``inputs``: the forward must give one value
per sample, i.e. inputs of one example, or a forward returning one scalar for the
batch (then ``perturbations_per_eval`` must be 1).
"""

from __future__ import annotations

import inspect
import warnings

import torch
from torch import Tensor

from ..core.forward import ForwardAdapter, select_output
from ..core.inputs import as_tuple, format_additional_args, format_forward_kwargs
from ..core.perturb import forward_rows
from .ablation import PerturbationAttribution
from .seeding import positive_int
from .surrogate import check_interpretable_model, fit_model


def _identity(output):
    return output


class _SampleForward:
    """Runs ``forward_func`` on a block of samples, each a whole copy of the inputs
    (``B`` rows), concatenated along dimension 0 as Captum does; returns one value
    per sample (the target output). Extra arguments and ``forward_kwargs`` batched
    over the ``B`` rows are repeated for every sample."""

    def __init__(self, forward_func, batch: int, target, additional_forward_args, output_selector,
                 forward_kwargs=None):
        self.forward_func = forward_func
        self.batch = batch
        # the target's scalar of each row, through the forward adapter's own selection
        self.target = None if target is None else ForwardAdapter(_identity, batch, target)
        self.args = format_additional_args(additional_forward_args)
        self.kwargs = format_forward_kwargs(forward_kwargs)
        self.output_selector = output_selector

    def _expanded(self, a, r: int):
        return torch.cat([a] * r) if isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == self.batch else a

    def __call__(self, *stacked: Tensor) -> Tensor:
        r = stacked[0].shape[0]
        flat = tuple(t.reshape((r * self.batch,) + tuple(t.shape[2:])) for t in stacked)
        args = tuple(self._expanded(a, r) for a in self.args)
        out = self.forward_func(*flat, *args, **{k: self._expanded(v, r) for k, v in self.kwargs.items()})
        if self.output_selector is not None:
            out = select_output(out, self.output_selector)
        if not isinstance(out, Tensor):
            out = torch.tensor([float(out)], device=flat[0].device)
        if self.target is not None and out.dim() > 0 and out.shape[0] == r * self.batch:
            out = self.target.scalars((out,), torch.arange(r * self.batch) % self.batch)
        if out.numel() != r:
            raise ValueError(
                f"LimeBase needs one model output per perturbed sample: the forward gave {out.numel()} values "
                f"for {r} sample(s) of {self.batch} example(s); give inputs of one example, a target, or a "
                "forward returning one scalar per batch (with perturbations_per_eval=1)"
            )
        return out.reshape(r)


class LimeBase(PerturbationAttribution):
    r"""LIME's general form (Ribeiro et al. 2016; Captum's ``LimeBase``): a surrogate fitted on user-drawn samples.

    See the module docstring for the protocol.

    Formula:
        $$g = \operatorname{argmin}_{g} \sum_{s=1}^{S} \pi_s \big(F(x_s) - g(z_s)\big)^2$$

        for a least-squares surrogate (``interpretable_model`` minimises its own loss):
        \(z_s\) the interpretable sample and \(x_s\) its model input (one from the other
        through ``from_interp_rep_transform`` or ``to_interp_rep_transform``), \(\pi_s\) =
        ``similarity_func(inputs, x_s, z_s)`` and \(F(x_s)\) the target output. The
        result is ``interpretable_model.representation()`` (or its ``coef_``): for a
        linear surrogate, one coefficient per interpretable feature.

    Cost:
        \(S\) = ``n_samples`` forward passes of a whole copy of ``inputs`` and no
        backward pass, ``perturbations_per_eval`` samples per forward call (default 1);
        ``perturb_func``, a transform and ``similarity_func`` are called once per sample,
        then the surrogate is fitted once.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import LimeBase
        >>> from torchexplain.attr.surrogate import WeightedLinearRegression
        >>> model = torch.nn.Linear(3, 1)
        >>> x = torch.randn(1, 3)
        >>> draws = torch.Generator().manual_seed(0)
        >>> lime = LimeBase(
        ...     model, WeightedLinearRegression(),
        ...     similarity_func=lambda original, perturbed, z, **kwargs: 1.0,
        ...     perturb_func=lambda original, **kwargs: (torch.rand(1, 3, generator=draws) < 0.5).float(),
        ...     perturb_interpretable_space=True,
        ...     from_interp_rep_transform=lambda z, original, **kwargs: original * z,  # absent: 0
        ...     to_interp_rep_transform=None,
        ... )
        >>> coefficients = lime.attribute(x, target=0, n_samples=40)
        >>> coefficients.shape, coefficients.dtype
        (torch.Size([3]), torch.float64)
        >>> bool(torch.allclose(coefficients.float(), model.weight[0] * x[0], atol=1e-4))
        True

    Args:
        forward_func: the model or any function.
        interpretable_model: the surrogate: ``fit(DataLoader of (z, y, w))`` and
            ``representation()`` (Captum's ``Model``), scikit-learn style
            ``fit(X, y, sample_weight=w)`` with ``coef_``, or
            :class:`~torchexplain.attr.surrogate.WeightedLinearRegression`.
        similarity_func: ``(original_input, perturbed_input, z, **kwargs) -> weight``.
        perturb_func: ``(original_input, **kwargs) -> sample`` or a generator function
            yielding samples.
        perturb_interpretable_space: whether samples are ``z`` vectors (True) or model
            inputs (False).
        from_interp_rep_transform: ``(z, original_input, **kwargs) -> model input``;
            required when ``perturb_interpretable_space``.
        to_interp_rep_transform: ``(sample, original_input, **kwargs) -> z``; required
            otherwise.
    """

    def __init__(
        self,
        forward_func,
        interpretable_model,
        similarity_func,
        perturb_func,
        perturb_interpretable_space: bool,
        from_interp_rep_transform,
        to_interp_rep_transform,
        output_selector=None,
    ) -> None:
        super().__init__(forward_func, output_selector)
        check_interpretable_model(interpretable_model)
        for name, fn in (
            ("similarity_func", similarity_func), ("perturb_func", perturb_func),
            ("from_interp_rep_transform", from_interp_rep_transform),
            ("to_interp_rep_transform", to_interp_rep_transform),
        ):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable; got {type(fn).__name__}")
        if perturb_interpretable_space and from_interp_rep_transform is None:
            raise ValueError("from_interp_rep_transform is required when perturb_interpretable_space is True")
        if not perturb_interpretable_space and to_interp_rep_transform is None:
            raise ValueError("to_interp_rep_transform is required when perturb_interpretable_space is False")
        self.interpretable_model = interpretable_model
        self.similarity_func = similarity_func
        self.perturb_func = perturb_func
        self.perturb_interpretable_space = bool(perturb_interpretable_space)
        self.from_interp_rep_transform = from_interp_rep_transform
        self.to_interp_rep_transform = to_interp_rep_transform

    def attribute(
        self,
        inputs,
        target=None,
        additional_forward_args=None,
        n_samples: int = 50,
        perturbations_per_eval=1,
        show_progress: bool = False,
        forward_kwargs=None,
        **kwargs,
    ):
        """Fit the surrogate on ``n_samples`` samples and return its
        ``representation()`` (or ``coef_``) as the model gives it. ``kwargs`` go to
        ``perturb_func``, the transforms and ``similarity_func``; ``forward_kwargs``
        (beyond Captum) to the model, as keyword arguments."""
        if self.perturb_func is None or self.similarity_func is None:
            raise ValueError("LimeBase needs perturb_func and similarity_func")
        z, y, weights = self._samples_and_labels(
            inputs, target, additional_forward_args, n_samples, perturbations_per_eval, show_progress, kwargs,
            self.perturb_func, self.similarity_func, forward_kwargs,
        )
        return fit_model(self.interpretable_model, z, y, weights)

    def _samples_and_labels(
        self, inputs, target, additional_forward_args, n_samples, perturbations_per_eval, show_progress, kwargs,
        perturb_func, similarity_func, forward_kwargs=None,
    ):
        """The surrogate's training data: ``z`` ``(S, M)``, labels ``(S,)`` and weights ``(S,)``."""
        parts, _ = as_tuple(inputs)
        n_samples = positive_int(n_samples, "n_samples")
        forward_kwargs = format_forward_kwargs(forward_kwargs)
        with self._guard():
            with torch.no_grad():
                z, samples, weights = self._draw_samples(inputs, n_samples, kwargs, perturb_func, similarity_func)
            y = self._evaluate_samples(
                parts, samples, target, additional_forward_args, perturbations_per_eval, show_progress, forward_kwargs
            )
        return z, y, weights

    def attribute_future(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not support attribute_future")

    @property
    def multiplies_by_inputs(self) -> bool:
        return False

    def has_convergence_delta(self) -> bool:
        return False

    def _draw_samples(self, inputs, n_samples: int, kwargs: dict, perturb_func, similarity_func):
        """``z`` ``(S, M)`` float, the samples' model inputs as stacked tuples
        ``(S, B, ...)``, and their weights ``(S,)``."""
        stream = perturb_func(inputs, **kwargs) if inspect.isgeneratorfunction(perturb_func) else None
        zs, model_inputs, weights = [], [], []
        for _ in range(n_samples):
            try:
                sample = next(stream) if stream is not None else perturb_func(inputs, **kwargs)
            except StopIteration:
                warnings.warn(f"perturb_func's generator stopped after {len(zs)} of {n_samples} samples", stacklevel=3)
                break
            if self.perturb_interpretable_space:
                z, model_input = sample, self.from_interp_rep_transform(sample, inputs, **kwargs)
            else:
                z, model_input = self.to_interp_rep_transform(sample, inputs, **kwargs), sample
            weight = similarity_func(inputs, model_input, z, **kwargs)
            zs.append(torch.as_tensor(z).reshape(1, -1).float().cpu())
            model_inputs.append(as_tuple(model_input, "perturbed input")[0])
            weights.append(float(weight.reshape(-1)[0]) if isinstance(weight, Tensor) else float(weight))
        if not zs:
            raise ValueError("perturb_func gave no samples")
        stacked = tuple(torch.stack(column) for column in zip(*model_inputs))
        return torch.cat(zs), stacked, torch.tensor(weights)

    def _evaluate_samples(self, parts, samples, target, additional_forward_args, perturbations_per_eval, show,
                          forward_kwargs=None):
        n_samples, batch = samples[0].shape[0], parts[0].shape[0]
        wrapped = _SampleForward(
            self.forward_func, batch, target, additional_forward_args, self.output_selector, forward_kwargs
        )
        adapter = ForwardAdapter(wrapped, 1)
        y = torch.empty(n_samples, dtype=torch.float32)

        def build(rows: Tensor, examples: Tensor):
            return tuple(s.index_select(0, rows.to(s.device)) for s in samples)

        def consume(rows: Tensor, examples: Tensor, scalars: Tensor) -> None:
            y[rows] = scalars.detach().float().cpu()

        forward_rows(
            adapter, n_samples, build, consume, perturbations_per_eval=perturbations_per_eval, show_progress=show,
            desc=type(self).__name__,
        )
        return y


def default_from_interp_rep_transform(curr_sample, original_inputs, **kwargs):
    """Lime's transform: each input position keeps its value where its feature's
    entry of ``curr_sample`` (``(1, M)``) is nonzero and takes the baseline elsewhere
    (kwargs ``feature_mask`` and ``baselines``, in the inputs' form)."""
    if "feature_mask" not in kwargs or "baselines" not in kwargs:
        raise ValueError("default_from_interp_rep_transform needs the feature_mask and baselines keyword arguments")
    inputs, is_tuple = as_tuple(original_inputs)
    masks = kwargs["feature_mask"] if is_tuple else (kwargs["feature_mask"],)
    baselines = kwargs["baselines"] if is_tuple else (kwargs["baselines"],)
    keep = torch.as_tensor(curr_sample).reshape(-1) != 0
    out = tuple(
        torch.where(keep.to(m.device)[m.long()], x, torch.as_tensor(b, dtype=x.dtype, device=x.device))
        for x, m, b in zip(inputs, masks, baselines)
    )
    return out if is_tuple else out[0]


__all__ = ["LimeBase", "default_from_interp_rep_transform"]
