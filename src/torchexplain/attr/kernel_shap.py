"""KernelShap (Lundberg and Lee 2017) with Captum 0.9's names, arguments and return
forms: :class:`~torchexplain.attr.Lime` with the Shapley kernel's sampling and weights
(see :mod:`torchexplain.attr.lime` for what they share)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.registry import grid_mask, register
from .feature_mask import FeatureMask
from .lime import Lime
from .surrogate import WeightedLinearRegression


@register("kernel_shap", aliases=("kernelshap",), order=160, defaults=grid_mask(8, n_samples=200, seed=0),
          description="KernelSHAP over 8x8 grid cells, 200 samples")
class KernelShap(Lime):
    """KernelSHAP (Lundberg and Lee 2017): Lime with the Shapley kernel, so that with
    enough samples the coefficients approach the Shapley values of the features
    (with features set to ``baselines`` when absent)."""

    #: weight of the all-ones and all-zeros samples ("infinite" in the paper)
    inf_weight = 1e6

    def __init__(self, forward_func, output_selector=None):
        super().__init__(forward_func, WeightedLinearRegression(), output_selector=output_selector)

    def _draw(self, n: int, n_samples: int, n_features: int, gen) -> Tensor:
        ends = torch.stack([torch.ones(n_features, dtype=torch.bool), torch.zeros(n_features, dtype=torch.bool)])
        ends = ends[: min(2, n_samples)].expand(n, -1, -1)
        rest = n_samples - ends.shape[1]
        if rest == 0:
            return ends.clone()
        if n_features == 1:
            middle = torch.rand((n, rest, 1), generator=gen) < 0.5
        else:
            k = torch.arange(1, n_features, dtype=torch.float64)
            probs = (n_features - 1) / (k * (n_features - k))
            # example by example, so that an example's samples are the same in a batch as alone
            # (given the generator's state), as with Captum's example-by-example sampling
            middle = torch.stack([self._coalitions(probs, rest, n_features, gen) for _ in range(n)])
        return torch.cat([ends, middle], 1)

    @staticmethod
    def _coalitions(probs: Tensor, count: int, n_features: int, gen) -> Tensor:
        """``count`` coalitions: a size drawn by the Shapley kernel, then that many features."""
        sizes = torch.multinomial(probs, count, replacement=True, generator=gen).view(count, 1) + 1
        ranks = torch.rand((count, n_features), generator=gen).argsort(-1).argsort(-1)
        return ranks < sizes

    def _sample_weight(self, original, perturbed, z, **kwargs) -> float:
        size = int(torch.as_tensor(z).sum())
        return self.inf_weight if size in (0, torch.as_tensor(z).numel()) else 1.0

    def _weights(self, inputs, is_tuple, base, fm: FeatureMask, z: Tensor) -> Tensor:
        """Shapley kernel: weight 1 (the sampling already follows the kernel), and
        ``inf_weight`` for the empty and the full coalition."""
        size = z.sum(-1)
        ends = (size == 0) | (size == z.shape[-1])
        return torch.where(ends, self.inf_weight, 1.0).to(torch.float64)
