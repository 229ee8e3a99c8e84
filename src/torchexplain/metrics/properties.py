"""Properties of an attribution alone or against the model: completeness and
sparseness."""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.forward import ForwardAdapter
from ..core.gradients import output_gap
from ..core.hooks import model_guard
from ..core.inputs import as_tuple, format_baselines


def completeness(attributions, model, inputs, baselines=0.0, target=None, additional_forward_args=None) -> Tensor:
    r"""The convergence delta of any attributions: ``sum(attributions) - (F(inputs) -
    F(baselines))`` per example (0 for methods that satisfy completeness, such as
    integrated gradients with enough steps and DeepLIFT).

    Formula:
        $$\delta = \sum_i \phi_i - \big(F(x) - F(x')\big)$$

        with \(\phi\) the attributions (summed over every input tensor), \(F\) the
        model's output for ``target`` and \(x'\) the baselines (default 0). A method
        satisfies completeness when \(\delta = 0\).

    Cost:
        Two forward passes per example (\(F(x)\) and \(F(x')\)), each over the whole
        batch at once, without gradients; no backward pass.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import IntegratedGradients, Saliency
        >>> from torchexplain.metrics import completeness
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        >>> x = torch.randn(2, 4)
        >>> delta = completeness(IntegratedGradients(model).attribute(x, target=0), model, x, 0.0, target=0)
        >>> delta.shape, bool(delta.abs().max() < 1e-4)
        (torch.Size([2]), True)
        >>> gradients = Saliency(model).attribute(x, target=0, abs=False)
        >>> bool(completeness(gradients, model, x, target=0).abs().max() < 1e-4)  # gradients alone are not complete
        False
    """
    return delta_and_gap(attributions, model, inputs, baselines, target, additional_forward_args)[0]


def delta_and_gap(attributions, model, inputs, baselines=0.0, target=None,
                  additional_forward_args=None) -> tuple[Tensor, Tensor]:
    """:func:`completeness`'s delta and the gap ``F(inputs) - F(baselines)`` it measures
    against, per example (two forward passes in all)."""
    inputs, _ = as_tuple(inputs)
    attributions, _ = as_tuple(attributions, "attributions")
    if len(attributions) != len(inputs):
        raise ValueError(f"attributions has {len(attributions)} tensor(s) but inputs has {len(inputs)}")
    baselines = format_baselines(baselines, inputs)
    n = inputs[0].shape[0]
    adapter = ForwardAdapter(model, n, target, additional_forward_args)
    with model_guard(model):
        gap = output_gap(adapter, baselines, inputs)
    total = sum(a.reshape(n, -1).sum(1) for a in attributions)
    return total.to(gap.dtype) - gap, gap


def sparseness(attributions) -> Tensor:
    r"""The Gini index of the absolute attributions of each example (Chalasani et al.
    2020): 0 when every feature gets the same share, towards 1 when one feature gets
    everything. Higher is sparser.

    Formula:
        $$G = \frac{\sum_{i=1}^{m} (2i - m - 1)\, a_{(i)}}{m \sum_{i=1}^{m} a_{(i)}}$$

        with \(a_{(1)} \le \dots \le a_{(m)}\) the example's \(m\) absolute attributions
        (every input tensor flattened together) in increasing order; \(G = 0\) when they
        are all 0. One feature holding everything gives \((m - 1) / m\).

    Cost:
        No forward or backward pass: a sort of the \(m\) values per example (float64),
        every example at once.

    Examples:
        >>> import torch
        >>> from torchexplain.metrics import sparseness
        >>> sparseness(torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 4.0]]))
        tensor([0.0000, 0.7500])
    """
    attributions, _ = as_tuple(attributions, "attributions")
    n = attributions[0].shape[0]
    a = torch.cat([t.detach().reshape(n, -1).abs().double() for t in attributions], 1)
    a, _ = a.sort(dim=1)
    m = a.shape[1]
    i = torch.arange(1, m + 1, dtype=a.dtype, device=a.device)
    total = a.sum(1)
    gini = ((2 * i - m - 1) * a).sum(1) / (m * total.where(total > 0, torch.ones_like(total)))
    return gini.where(total > 0, torch.zeros_like(gini)).float()
