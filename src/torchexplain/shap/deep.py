"""shap's DeepExplainer on torchexplain's DeepLiftShap."""

from __future__ import annotations

import numpy as np
import torch

from ..attr.deeplift import DeepLiftShap
from .forms import (
    background_tensors,
    borrowed,
    expected_value,
    explained_inputs,
    model_outputs,
    output_ranks,
    shap_form,
    with_ranks,
)

#: shap's bound on |sum of values - (f(x) - E[f(background)])| for check_additivity
ADDITIVITY_TOLERANCE = 1e-2


class AdditivityError(AssertionError):
    """The values do not add up to ``f(x) - E[f(background)]`` (an AssertionError, as in shap)."""


class DeepExplainer:
    """Deep SHAP (Lundberg & Lee 2017), shap's ``DeepExplainer``: DeepLIFT with the
    rescale rule against each background row, averaged.

    The rescale rule is applied at the function level, so in-place, reused and
    functional activations (every torchvision ResNet) are handled, and nothing is
    written onto the model's modules. Max-pooling follows DeepLIFT's rule for
    max-pool (shap uses its own), so values agree with shap on networks without
    max-pooling. ``expected_value`` is the mean model output over ``data``.
    The model runs in eval mode, as in shap, and is left as it was found.
    """

    def __init__(self, model, data):
        if isinstance(model, tuple):
            raise TypeError(
                "DeepExplainer explains the model's inputs; for a layer use GradientExplainer((model, layer), data) "
                "or torchexplain.attr.LayerDeepLift"
            )
        if not callable(model):
            raise TypeError(f"model must be callable (an nn.Module or function); got {type(model).__name__}")
        self.model = model
        self.data, self.multi_input = background_tensors(data)
        with borrowed(model):
            self.expected_value = expected_value(model_outputs(model, self.data, None))

    def shap_values(self, X, ranked_outputs=None, output_rank_order: str = "max", check_additivity: bool = True):
        """Values of ``X`` (a tensor, or a list as the background data) in shap's
        forms: NumPy ``(N, *features, K)`` per input (a list for several inputs),
        ``(values, indexes)`` with ``ranked_outputs``. With ``check_additivity`` an
        :class:`AdditivityError` is raised when a sum of values misses
        ``f(x) - E[f(background)]`` by more than shap's tolerance (0.01)."""
        inputs = explained_inputs(X, self.data, self.multi_input, floating=True)
        with borrowed(self.model):
            outputs = model_outputs(self.model, inputs, None)
            ranks = output_ranks(outputs, ranked_outputs, output_rank_order)
            n, k = ranks.shape
            # one row per (example, ranked output), each with its own target: every row
            # goes through the same batched DeepLIFT passes
            rows = tuple(x.repeat_interleave(k, 0) for x in inputs)
            target = None if outputs.dim() == 1 else ranks.reshape(-1).to(outputs.device)
            attributions = DeepLiftShap(self.model).attribute(rows, baselines=self.data, target=target)
        per_tensor = [a.detach().reshape((n, k) + a.shape[1:]) for a in attributions]
        if check_additivity:
            self._check_additivity(per_tensor, outputs, ranks)
        return with_ranks(shap_form(per_tensor), ranks, ranked_outputs)

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
            raise AdditivityError(
                f"the SHAP values do not add up to f(x) - E[f(background)]: off by up to {worst:.4g} "
                f"(tolerance {ADDITIVITY_TOLERANCE}). An operation of the model may have no DeepLIFT rule "
                "(e.g. a multiplication of two activations), or the model is not deterministic. Pass "
                "check_additivity=False to return the values anyway."
            )
