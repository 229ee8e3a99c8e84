"""Running statistics of tensors, with Captum's names (``captum.attr._utils.stat``).

A :class:`Stat` is updated with one tensor at a time (``update(x)``) and read with
``get()``; statistics that need others (``Var`` needs ``MSE`` and ``Count``) find
them in the summarizer that owns them (:class:`~torchexplain.attr.SummarizerSingleTensor`)
through ``_get_stat``. Two stats are equal when they have the same class and
parameters, so a summarizer keeps one of each.

Values are element-wise over the updated tensors. The built-in statistics also fold
a block of ``k`` rows at once (``_update_rows``); the results equal ``k`` single
updates, by Chan's merge of (count, mean, squared deviations):

    n' = n + k
    mean' = mean + sum_i (x_i - mean) / n'
    M2' = M2 + sum_i (x_i - mean) (x_i - mean')

(the last sum equals ``M2_block + k n / n' (mean_block - mean)^2``; for ``k = 1`` it is
Welford's update).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor

#: what ``Stat.get`` returns (Captum's alias)
StatValue = Union[Tensor, int, float]


class Stat:
    """A statistic updated with tensors and read at any time.

    Args:
        name: key of the statistic in a summary; by default the class name in lower
            case, followed by its parameters when it has any.
        **kwargs: the parameters that define the statistic (they take part in
            equality and hashing).
    """

    def __init__(self, name: Optional[str] = None, **kwargs: Any) -> None:
        self.params: dict = kwargs
        self._name = name
        self._other_stats = None

    def init(self) -> None:
        """Called once the owning summarizer is set: look up the stats this one needs."""

    def _get_stat(self, stat: "Stat") -> Optional["Stat"]:
        if self._other_stats is None:
            raise RuntimeError(f"{type(self).__name__} is not part of a summarizer yet; add it to a Summarizer")
        return self._other_stats.get(stat)

    def update(self, x: Tensor) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement update(x)")

    def get(self) -> Optional[StatValue]:
        raise NotImplementedError(f"{type(self).__name__} must implement get()")

    def __hash__(self) -> int:
        return hash((type(self), frozenset(self.params.items())))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Stat):
            return False
        return type(self) is type(other) and frozenset(self.params.items()) == frozenset(other.params.items())

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    @property
    def name(self) -> str:
        """The key of this statistic in ``summary``."""
        if self._name is not None:
            return self._name
        default = type(self).__name__.lower()
        return f"{default}({self.params})" if self.params else default

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class _RowStat(Stat):
    """A statistic that can fold a block of rows at once (``_update_rows``)."""

    def update(self, x: Tensor) -> None:
        self._update_rows(x.unsqueeze(0))

    def _update_rows(self, rows: Tensor) -> None:
        raise NotImplementedError


def folds_rows(stat: Stat) -> bool:
    """Whether ``stat`` folds blocks of rows exactly as repeated ``update`` calls
    (a built-in statistic whose ``update`` was not overridden)."""
    return isinstance(stat, _RowStat) and type(stat).update is _RowStat.update


class Count(_RowStat):
    """The number of updates (tensors seen)."""

    def __init__(self, name: Optional[str] = None) -> None:
        super().__init__(name=name)
        self.n: Optional[int] = None

    def get(self) -> Optional[int]:
        return self.n

    def _update_rows(self, rows: Tensor) -> None:
        self.n = (self.n or 0) + rows.shape[0]


def _as_float(t: Tensor) -> Tensor:
    return t if t.is_floating_point() or t.is_complex() else t.double()


class Mean(_RowStat):
    """The running mean (float; integer inputs give float64)."""

    def __init__(self, name: Optional[str] = None) -> None:
        super().__init__(name=name)
        self.rolling_mean: Optional[Tensor] = None
        self.n: Optional[Count] = None

    def init(self) -> None:
        self.n = self._get_stat(Count())

    def get(self) -> Optional[Tensor]:
        return self.rolling_mean

    def _update_rows(self, rows: Tensor) -> None:
        rows = _as_float(rows)
        if self.rolling_mean is None:
            self.rolling_mean = rows.mean(0)
            return
        n = self.n.get()  # already counts these rows (Count updates first)
        self.rolling_mean = self.rolling_mean + (rows - self.rolling_mean).sum(0) / n


class MSE(_RowStat):
    """The sum of squared deviations from the mean, ``sum_i (x_i - mean)^2`` (Captum's
    name; ``Var`` divides it by ``n - order``)."""

    def __init__(self, name: Optional[str] = None) -> None:
        super().__init__(name=name)
        self.prev_mean: Optional[Tensor] = None
        self.mse: Optional[Tensor] = None
        self.mean: Optional[Mean] = None

    def init(self) -> None:
        self.mean = self._get_stat(Mean())

    def get(self) -> Optional[Tensor]:
        if self.mse is None and self.prev_mean is not None:
            return torch.zeros_like(self.prev_mean)
        return self.mse

    def _update_rows(self, rows: Tensor) -> None:
        mean = self.mean.get()  # already includes these rows (Mean updates first)
        if mean is None:
            return
        before = mean if self.prev_mean is None else self.prev_mean
        step = ((_as_float(rows) - before) * (_as_float(rows) - mean)).sum(0)
        if self.prev_mean is not None or rows.shape[0] > 1:
            self.mse = step if self.mse is None else self.mse + step
        self.prev_mean = mean.clone()


def _var_name(prefix: str, order: int) -> str:
    return {0: prefix, 1: f"sample_{prefix}"}.get(order, f"{prefix}({order})")


class Var(_RowStat):
    """The variance ``MSE / (n - order)`` in float64: ``order=0`` the population
    variance (name ``"variance"``), ``order=1`` the sample variance
    (``"sample_variance"``); zeros while ``n <= order``."""

    def __init__(self, name: Optional[str] = None, order: int = 0) -> None:
        super().__init__(name=_var_name("variance", order) if name is None else name, order=order)
        self.order = order
        self.mse_stat: Optional[MSE] = None
        self.n_stat: Optional[Count] = None

    def init(self) -> None:
        self.mse_stat = self._get_stat(MSE())
        self.n_stat = self._get_stat(Count())

    def _update_rows(self, rows: Tensor) -> None:
        pass  # computed from MSE and Count

    def get(self) -> Optional[Tensor]:
        mse = self.mse_stat.get()
        if mse is None:
            return None
        n = self.n_stat.get()
        if n is None or n <= self.order:
            return torch.zeros_like(mse)
        return mse.to(torch.float64) / (n - self.order)


class StdDev(_RowStat):
    """The square root of ``Var(order)``: names ``"std_dev"`` (order 0) and
    ``"sample_std_dev"`` (order 1), ``"std_dev(k)"`` otherwise."""

    def __init__(self, name: Optional[str] = None, order: int = 0) -> None:
        super().__init__(name=_var_name("std_dev", order) if name is None else name, order=order)
        self.order = order
        self.var_stat: Optional[Var] = None

    def init(self) -> None:
        self.var_stat = self._get_stat(Var(order=self.order))

    def _update_rows(self, rows: Tensor) -> None:
        pass  # computed from Var

    def get(self) -> Optional[Tensor]:
        var = self.var_stat.get()
        return None if var is None else torch.sqrt(var)


class GeneralAccumFn(_RowStat):
    """``result = fn(result, x)`` at each update (the first update sets ``result = x``)."""

    #: block reductions equal to folding rows with the default functions
    _BLOCK = {torch.min: torch.amin, torch.max: torch.amax}

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor], name: Optional[str] = None) -> None:
        super().__init__(name=name)
        if not callable(fn):
            raise TypeError(f"fn must be a callable (result, x) -> result; got {type(fn).__name__}")
        self.result: Optional[Tensor] = None
        self.fn = fn

    def get(self) -> Optional[Tensor]:
        return self.result

    def _reduce(self, rows: Tensor) -> Tensor:
        try:
            block = self._BLOCK.get(self.fn)
        except TypeError:  # an unhashable callable
            block = None
        if block is not None:
            return block(rows, 0)
        if self.fn is torch.add and rows.dtype != torch.bool:
            return rows.sum(0, dtype=rows.dtype)
        return functools.reduce(self.fn, rows.unbind(0))

    def _update_rows(self, rows: Tensor) -> None:
        if rows.shape[0] == 0:
            return
        if self.result is None:
            self.result = rows[0].clone() if rows.shape[0] == 1 else self._reduce(rows)
        elif rows.shape[0] == 1:
            self.result = self.fn(self.result, rows[0])
        else:
            self.result = self.fn(self.result, self._reduce(rows))


class Min(GeneralAccumFn):
    """The element-wise minimum (``min_fn(result, x)``, default ``torch.min``)."""

    def __init__(self, name: Optional[str] = None, min_fn: Callable[[Tensor, Tensor], Tensor] = torch.min) -> None:
        super().__init__(name=name, fn=min_fn)


class Max(GeneralAccumFn):
    """The element-wise maximum (``max_fn(result, x)``, default ``torch.max``)."""

    def __init__(self, name: Optional[str] = None, max_fn: Callable[[Tensor, Tensor], Tensor] = torch.max) -> None:
        super().__init__(name=name, fn=max_fn)


class Sum(GeneralAccumFn):
    """The element-wise sum (``add_fn(result, x)``, default ``torch.add``)."""

    def __init__(self, name: Optional[str] = None, add_fn: Callable[[Tensor, Tensor], Tensor] = torch.add) -> None:
        super().__init__(name=name, fn=add_fn)


def CommonStats() -> list:  # noqa: N802 - Captum's name
    """Mean, sample variance, sample standard deviation, min and max (Captum's set)."""
    return [Mean(), Var(order=1), StdDev(order=1), Min(), Max()]


__all__ = [
    "CommonStats", "Count", "GeneralAccumFn", "MSE", "Max", "Mean", "Min", "Stat", "StatValue", "StdDev", "Sum", "Var",
]
