"""Aggregating per-example metric values."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class MetricResult:
    """Per-example ``values`` of one metric, with their mean and standard error.
    ``higher_is_better`` says which way the metric ranks methods (None: it does not)."""

    name: str
    values: Tensor
    higher_is_better: bool | None = None

    def __post_init__(self):
        self.values = torch.as_tensor(self.values).detach().reshape(-1)

    @property
    def mean(self) -> float:
        return float(self.values.double().mean())

    @property
    def stderr(self) -> float:
        """Standard error of the mean; NaN for one example (there is none), which
        tables show as "n/a"."""
        n = self.values.numel()
        return float(self.values.double().std() / math.sqrt(n)) if n > 1 else math.nan

    def __repr__(self) -> str:
        from .table import format_stderr

        return f"MetricResult({self.name}: {self.mean:.4g} ± {format_stderr(self.stderr)}, n={self.values.numel()})"
