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
    """The convergence delta of any attributions: ``sum(attributions) - (F(inputs) -
    F(baselines))`` per example (0 for methods that satisfy completeness, such as
    integrated gradients with enough steps and DeepLIFT)."""
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
    return total.to(gap.dtype) - gap


def sparseness(attributions) -> Tensor:
    """The Gini index of the absolute attributions of each example (Chalasani et al.
    2020): 0 when every feature gets the same share, towards 1 when one feature gets
    everything. Higher is sparser."""
    attributions, _ = as_tuple(attributions, "attributions")
    n = attributions[0].shape[0]
    a = torch.cat([t.detach().reshape(n, -1).abs().double() for t in attributions], 1)
    a, _ = a.sort(dim=1)
    m = a.shape[1]
    i = torch.arange(1, m + 1, dtype=a.dtype, device=a.device)
    total = a.sum(1)
    gini = ((2 * i - m - 1) * a).sum(1) / (m * total.where(total > 0, torch.ones_like(total)))
    return gini.where(total > 0, torch.zeros_like(gini)).float()
