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
    r"""KernelSHAP (Lundberg and Lee 2017): Lime with the Shapley kernel, so that with
    enough samples the coefficients approach the Shapley values of the features
    (with features set to ``baselines`` when absent).

    Formula:
        $$(b, c) = \operatorname{argmin}_{b,\, c} \sum_{s=1}^{S} \pi_s \big(F(h(z_s)) - b - c^\top z_s\big)^2
        + \lambda \lVert c \rVert^2$$

        with \(h\) as in :class:`Lime`, \(z_1 = \mathbf{1}\) and \(z_2 = \mathbf{0}\) of
        weight \(\pi = 10^6\), and the other \(z_s\) of weight 1, drawn with \(k\) ones at
        random positions, \(k\) with probability proportional to \((M - 1) / (k (M - k))\):
        sampling from the Shapley kernel \(\frac{M - 1}{\binom{M}{k} k (M - k)}\) rather than
        weighting by it; \(\lambda = 10^{-6} \operatorname{median}_s \pi_s\). The heavy end
        points make efficiency hold closely: \(\sum_f c_f \approx F(x) - F(x')\).

    Cost:
        \(S\) = ``n_samples`` forward passes per example and no backward pass, as in
        :class:`Lime`, then one least-squares fit per example.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import KernelShap
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> x = torch.randn(2, 3)
        >>> coefficients = KernelShap(model).attribute(x, target=0, n_samples=100, seed=0)
        >>> coefficients.shape
        torch.Size([2, 3])
        >>> gap = model(x)[:, 0] - model(torch.zeros(1, 3))[:, 0]
        >>> bool(torch.allclose(coefficients.sum(1), gap, atol=1e-4))
        True
    """

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
