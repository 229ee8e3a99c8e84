"""shap's DeepExplainer on torchexplain's DeepLiftShap (inputs) and LayerDeepLift (a layer's input)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ..attr.deeplift import DeepLiftShap
from ..attr.layer_deeplift import LayerDeepLift
from ..core.hooks.layers import resolve_layer
from ..core.targets import output_ranks
from .explanation import Explanation
from .forms import (
    background_tensors,
    borrowed,
    expected_value,
    explained_inputs,
    model_outputs,
    shap_form,
    with_ranks,
)
from .layer import split_model

#: shap's bound on |sum of values - (f(x) - E[f(background)])| for check_additivity
ADDITIVITY_TOLERANCE = 1e-2


class AdditivityError(AssertionError):
    """The values do not add up to ``f(x) - E[f(background)]`` (an AssertionError, as in shap)."""


class _ZeroGradient(torch.autograd.Function):
    """A zero per row whose gradient is zero: it gives every input a (zero) gradient."""

    @staticmethod
    def forward(ctx, x):
        ctx.shape, ctx.dtype = x.shape, x.dtype
        return x.new_zeros(x.shape[0])

    @staticmethod
    def backward(ctx, grad):
        return grad.new_zeros(ctx.shape, dtype=ctx.dtype)


class _EveryInputReaches(nn.Module):
    """The model, with its output unchanged; an input that does not reach it gets zero
    gradients (zero multipliers, hence zero values: shap's answer) instead of none."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, *inputs):
        out = self.model(*inputs)
        if not (isinstance(out, Tensor) and out.requires_grad):
            return out  # a detached output is reported by the evaluator
        zero = sum(_ZeroGradient.apply(x) for x in inputs if isinstance(x, Tensor) and x.requires_grad)
        if not isinstance(zero, Tensor):
            return out
        return out + zero.to(out.dtype).reshape((-1,) + (1,) * (out.dim() - 1))


class DeepExplainer:
    r"""Deep SHAP (Lundberg & Lee 2017), shap's ``DeepExplainer``: DeepLIFT with the
    rescale rule against each background row ``b``, averaged:
    ``phi_i(x) = mean_b m_i(x, b) (x_i - b_i)``, ``m`` the DeepLIFT multipliers.

    ``DeepExplainer(model, data)`` explains the model's inputs;
    ``DeepExplainer((model, layer), data)`` explains the input of ``layer`` (a module of
    the model or its dotted name), as shap does: ``m`` are the multipliers at the
    layer's input and ``x_i - b_i`` its change between the example and the
    background row. When the layer's input is a cut of the model (every path from
    the inputs to the output passes through it), the values add up to
    ``f(x) - E[f(background)]``. (Each (example, output, background row) is one row
    of the evaluator, so the layer form holds ``N * K * len(data)`` copies of the
    inputs.) An input that does not reach the output gets zero values, as in shap.

    The rescale rule is applied at the function level, so in-place, reused and
    functional activations (every torchvision ResNet) are handled, and nothing is
    written onto the model's modules. Max-pooling follows DeepLIFT's rule for
    max-pool (shap uses its own), so values agree with shap on networks without
    max-pooling. ``expected_value`` is the mean model output over ``data``.
    The model runs in eval mode, as in shap, and is left as it was found.
    ``explainer(X)`` returns an :class:`~torchexplain.shap.Explanation`.

    Formula:
        $$\phi_i(x) = \frac{1}{B} \sum_{j=1}^{B} m_i(x, b_j)\, (x_i - b_{j,i})$$

        for each explained output, with \(b_1, \dots, b_B\) the rows of ``data`` and
        \(m(x, b_j)\) the DeepLIFT (rescale) multipliers of \(x\) against \(b_j\) (for a
        layer, at the layer's input, with \(x_i - b_{j,i}\) its change). Summation to
        delta, checked by ``check_additivity``:
        \(\sum_i \phi_i(x) = f(x) - \frac{1}{B} \sum_j f(b_j)\).

    Cost:
        One forward pass of ``data`` at construction; per call, one forward of ``X``,
        then one forward and one backward pass per (example, explained output,
        background row): \(B K\) per example, batched in chunks, each chunk run with its
        reference rows (twice the rows).

    Examples:
        >>> import torch
        >>> from torchexplain.shap import DeepExplainer
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> background, x = torch.randn(8, 3), torch.randn(2, 3)
        >>> explainer = DeepExplainer(model, background)
        >>> values = explainer.shap_values(x)
        >>> values.shape  # (examples, features, outputs)
        (2, 3, 2)
        >>> with torch.no_grad():
        ...     gap = model(x).numpy() - explainer.expected_value
        >>> bool(abs(values.sum(1) - gap).max() < 1e-5)
        True
    """

    def __init__(self, model, data):
        model, layer = split_model(model)
        self.model = model
        self.layer = None if layer is None else resolve_layer(model, layer)
        self.data, self.multi_input = background_tensors(data)
        with borrowed(model):
            self.expected_value = expected_value(model_outputs(model, self.data, None))

    def __call__(self, X) -> Explanation:
        """The values of ``X`` for every output, as an Explanation (shap's ``explainer(X)``)."""
        return Explanation.of(self.shap_values(X), self.expected_value, X)

    def shap_values(self, X, ranked_outputs=None, output_rank_order: str = "max", check_additivity: bool = True):
        """Values of ``X`` (a tensor, or a list as the background data) in shap's
        forms: NumPy ``(N, *features, K)`` per explained tensor (a list for several),
        ``(values, indexes)`` with ``ranked_outputs``. With ``check_additivity`` an
        :class:`AdditivityError` is raised when a sum of values misses
        ``f(x) - E[f(background)]`` by more than shap's tolerance (0.01)."""
        inputs = explained_inputs(X, self.data, self.multi_input, floating=True)
        with borrowed(self.model):
            outputs = model_outputs(self.model, inputs, None)
            ranks = output_ranks(outputs, ranked_outputs, output_rank_order)
            target = None if outputs.dim() == 1 else ranks.reshape(-1).to(outputs.device)
            if self.layer is None:
                per_tensor = self._input_values(inputs, ranks, target)
            else:
                per_tensor = self._layer_values(inputs, ranks, target)
        if check_additivity:
            self._check_additivity(per_tensor, outputs, ranks)
        return with_ranks(shap_form(per_tensor), ranks, ranked_outputs)

    def _input_values(self, inputs, ranks: Tensor, target) -> list[Tensor]:
        n, k = ranks.shape
        # one row per (example, ranked output), each with its own target: every row
        # goes through the same batched DeepLIFT passes
        rows = tuple(x.repeat_interleave(k, 0) for x in inputs)
        values = DeepLiftShap(_EveryInputReaches(self.model)).attribute(rows, baselines=self.data, target=target)
        return [a.detach().reshape((n, k) + a.shape[1:]) for a in values]

    def _layer_values(self, inputs, ranks: Tensor, target) -> list[Tensor]:
        n, k = ranks.shape
        b = self.data[0].shape[0]
        # row (i, k, j): example i against background row j for ranked output k
        rows = tuple(x.repeat_interleave(k * b, 0) for x in inputs)
        refs = tuple(d.repeat((n * k,) + (1,) * (d.dim() - 1)) for d in self.data)
        targets = None if target is None else target.repeat_interleave(b)
        values = LayerDeepLift(self.model, self.layer).attribute(
            rows, baselines=refs, target=targets, attribute_to_layer_input=True
        )
        values = values if isinstance(values, tuple) else (values,)
        return [a.detach().reshape((n, k, b) + a.shape[1:]).mean(2) for a in values]

    def _check_additivity(self, per_tensor, outputs, ranks) -> None:
        totals = sum(a.flatten(2).sum(2).double().cpu() for a in per_tensor)
        out = outputs.double().cpu()
        expected = torch.as_tensor(np.atleast_1d(self.expected_value), dtype=torch.float64)
        if out.dim() == 1:
            gap = (out - expected[0]).unsqueeze(1)
        else:
            gap = out.gather(1, ranks) - expected[ranks]
        worst = float((totals - gap).abs().max())
        if not worst < ADDITIVITY_TOLERANCE:
            cut = " or the layer's input is not a cut of the model," if self.layer is not None else ""
            raise AdditivityError(
                f"the SHAP values do not add up to f(x) - E[f(background)]: off by up to {worst:.4g} "
                f"(tolerance {ADDITIVITY_TOLERANCE}). An operation of the model may have no DeepLIFT rule "
                f"(e.g. a multiplication of two activations),{cut} or the model is not deterministic. Pass "
                "check_additivity=False to return the values anyway."
            )
