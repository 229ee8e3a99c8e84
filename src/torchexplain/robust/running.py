"""Running statistics of metric values over updates: the mean, minimum and maximum
that :class:`AttackComparator` keeps, with Captum's arithmetic (a rolling mean;
numbers become float32 tensors, integer tensors a float64 mean)."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import torch
from torch import Tensor

STATS = ("mean", "min", "max")


def _tensor(value) -> Tensor:
    return value if isinstance(value, Tensor) else torch.tensor(value, dtype=torch.float)


def batch_mean(value: Any) -> Any:
    """A metric value averaged over its first dimension (tensors; tuples entry by
    entry; numbers unchanged): one batch's contribution to the running summary."""
    if isinstance(value, Tensor):
        return value.mean(dim=0)
    if isinstance(value, tuple):
        return tuple(batch_mean(v) for v in value)
    return value


class Running:
    """The statistics ``stats`` (names from :data:`STATS`) of the values passed to
    :meth:`update`: numbers, tensors, or tuples of them (then per entry)."""

    def __init__(self, stats=("mean",)):
        self.stats = tuple(stats)
        self.count = 0
        self.is_tuple: bool | None = None
        self.values: list[dict[str, Tensor]] = []

    def update(self, value: Any) -> None:
        is_tuple = isinstance(value, tuple)
        if self.is_tuple is None:
            self.is_tuple = is_tuple
        elif self.is_tuple != is_tuple:
            raise ValueError("a metric must return the same form every time: a single value or a tuple")
        parts = [_tensor(v) for v in (value if is_tuple else (value,))]
        self.count += 1
        if self.count == 1:
            self.values = [{"mean": p.clone() if p.is_floating_point() else p.double(), "min": p, "max": p}
                           for p in parts]
            return
        if len(parts) != len(self.values):
            raise ValueError(f"a metric returned {len(parts)} values after returning {len(self.values)}")
        for entry, p in zip(self.values, parts):
            entry["mean"] = entry["mean"] + (p - entry["mean"]) / self.count
            entry["min"] = torch.min(entry["min"], p)
            entry["max"] = torch.max(entry["max"], p)

    def result(self, out_format: type | None = None) -> dict[str, Any]:
        """``{stat: value}``; for tuple updates, ``{stat: tuple of values}`` (an
        ``out_format`` named tuple when the metric returned named tuples)."""
        if not self.is_tuple:
            return {s: self.values[0][s] for s in self.stats}
        out = {}
        for s in self.stats:
            values = tuple(entry[s] for entry in self.values)
            out[s] = out_format(*values) if out_format is not None else values
        return out


def named_format(value: Any) -> type | None:
    """A named tuple type of ``value``'s name and fields when it is a named tuple."""
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return namedtuple(type(value).__name__, value._fields)
    return None
