"""Summaries of attributions over many updates, with Captum's names and forms.

``Summarizer(stats)`` keeps the given statistics (:mod:`torchexplain.attr.stat`) of
each tensor passed to ``update``; ``summary`` maps each statistic's ``name`` to its
value (a dict, or a list of dicts when updates are tuples of tensors).
``ClassSummarizer`` also keeps one summary per label. The dependencies of a
statistic are added and updated first (``StdDev(k) -> Var(k) -> MSE -> Mean ->
Count``) but only the requested statistics appear in ``summary``.
"""

from __future__ import annotations

import copy
import numbers
from collections import defaultdict
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .stat import MSE, Count, Mean, Stat, StatValue, StdDev, Var, folds_rows

#: update order: a statistic comes after those it reads
_DEPENDENCY_ORDER = (Count, Mean, MSE, Var, StdDev)


def _check_stats(stats, name: str = "stats") -> List[Stat]:
    if isinstance(stats, Stat) or not isinstance(stats, (list, tuple)):
        raise TypeError(f"{name} must be a list of Stat objects (e.g. CommonStats()); got {type(stats).__name__}")
    for i, s in enumerate(stats):
        if not isinstance(s, Stat):
            raise TypeError(f"{name}[{i}] must be a Stat (Mean(), Var(), ...); got {type(s).__name__}")
    return list(stats)


def _reorder_stats(stats: Sequence[Stat]) -> Tuple[List[Stat], List[int]]:
    """Every stat needed (requested ones and their dependencies, one of each) in
    update order, and the positions of the requested ones in request order."""
    requested = list(dict.fromkeys(stats))
    needed = dict.fromkeys(requested)
    for s in requested:
        if isinstance(s, StdDev):
            needed.setdefault(Var(order=s.order))
    present = {type(s) for s in needed}
    for i, cls in enumerate(_DEPENDENCY_ORDER):
        if cls in present and cls is not StdDev:
            for dep in _DEPENDENCY_ORDER[:i]:
                needed.setdefault(dep())
    rank = {cls: i for i, cls in enumerate(_DEPENDENCY_ORDER)}
    ordered = sorted(needed, key=lambda s: rank.get(type(s), len(rank)))
    position = {s: i for i, s in enumerate(ordered)}
    return ordered, [position[s] for s in requested]


class SummarizerSingleTensor:
    """Summarizes one tensor: ``stats`` in update order (dependencies first) and the
    indices of the stats shown in ``summary``. Prefer :class:`Summarizer`."""

    def __init__(self, stats: List[Stat], summary_stats_indices: List[int]) -> None:
        self._stats = _check_stats(stats)
        self._stat_to_stat: Dict[Stat, Stat] = {s: s for s in self._stats}
        self._summary_stats = [self._stats[i] for i in summary_stats_indices]
        self._fold_rows = all(folds_rows(s) for s in self._stats)
        for s in self._stats:
            s._other_stats = self
            s.init()

    def update(self, x: Tensor) -> None:
        """Update every statistic with ``x``."""
        for s in self._stats:
            s.update(x)

    def update_rows(self, rows: Tensor) -> None:
        """The same as ``update(rows[i])`` for each ``i`` in order: at once for the
        built-in statistics, row by row otherwise."""
        if self._fold_rows:
            for s in self._stats:
                s._update_rows(rows)
            return
        for row in rows.unbind(0):
            self.update(row)

    def get(self, stat: Stat) -> Optional[Stat]:
        """This summarizer's statistic equal to ``stat`` (same class and parameters), or None."""
        return self._stat_to_stat.get(stat)

    @property
    def summary(self) -> Dict[str, Optional[StatValue]]:
        return {s.name: s.get() for s in self._summary_stats}


def _as_tensor(value, where: str) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, numbers.Number) and not isinstance(value, bool):
        return torch.tensor(value, dtype=torch.float)
    raise TypeError(f"{where} must be a tensor or a number; got {type(value).__name__}")


class Summarizer:
    """Keeps ``stats`` of every tensor passed to :meth:`update`.

    Args:
        stats: list of :class:`~torchexplain.attr.Stat` (e.g. ``[Mean(), Var()]`` or
            ``CommonStats()``).

    ``update(x)`` takes a tensor, a number, or a tuple of them (each position
    summarized separately; use the same form at every update). ``summary`` is None
    before the first update, then ``{name: value}`` (a list of such dicts for tuples).
    """

    def __init__(self, stats: List[Stat]) -> None:
        self._summarizers: List[SummarizerSingleTensor] = []
        self._is_inputs_tuple: Optional[bool] = None
        self._stats, self._summary_stats_indicies = _reorder_stats(_check_stats(stats))

    def _copy_stats(self) -> List[Stat]:
        return copy.deepcopy(self._stats)

    def _parts(self, x) -> Tuple[Tensor, ...]:
        is_tuple = isinstance(x, tuple)
        if self._is_inputs_tuple is None:
            self._is_inputs_tuple = is_tuple
        elif self._is_inputs_tuple != is_tuple:
            was = "tuples" if self._is_inputs_tuple else "single tensors"
            raise ValueError(f"x must keep the form of the first update ({was}); got a {type(x).__name__}")
        parts = x if is_tuple else (x,)
        return tuple(_as_tensor(p, f"x[{i}]" if is_tuple else "x") for i, p in enumerate(parts))

    def _single(self, i: int) -> SummarizerSingleTensor:
        while len(self._summarizers) <= i:  # each tensor position gets its own copies of the stats
            self._summarizers.append(SummarizerSingleTensor(self._copy_stats(), self._summary_stats_indicies))
        return self._summarizers[i]

    def update(self, x: Union[float, Tensor, Tuple[Union[float, Tensor], ...]]) -> None:
        """Update the statistics with ``x`` (one observation per tensor position)."""
        for i, t in enumerate(self._parts(x)):
            self._single(i).update(t)

    def _update_rows(self, rows: Tuple[Tensor, ...]) -> None:
        """Each row of ``rows`` (a tuple of tensors sharing dimension 0) is one
        observation of a tuple update."""
        self._parts(tuple(rows))
        for i, t in enumerate(rows):
            self._single(i).update_rows(t)

    @property
    def summary(self) -> Optional[Union[Dict[str, Optional[StatValue]], List[Dict[str, Optional[StatValue]]]]]:
        if not self._summarizers:
            return None
        summaries = [s.summary for s in self._summarizers]
        return summaries if self._is_inputs_tuple else summaries[0]


def _label_list(labels, n: int) -> List[Any]:
    if isinstance(labels, Tensor):
        labels = labels.reshape(-1).tolist() if labels.dim() <= 1 else [tuple(r) for r in labels.tolist()]
    elif isinstance(labels, list):
        labels = list(labels)
    else:
        labels = [labels]
    if len(labels) not in (1, n):
        raise ValueError(
            f"labels must give one label for the whole batch or one per example ({n}); got {len(labels)}"
        )
    return labels * n if len(labels) == 1 else labels


class ClassSummarizer(Summarizer):
    """A :class:`Summarizer` that also keeps one summary per label.

    ``update(x, labels)``: ``x`` is a tensor or tuple of tensors whose dimension 0 is
    the batch; ``labels`` one label (any hashable, for every example) or one per
    example (a list or a tensor; tensor labels become Python numbers). Each example
    updates its label's summary and the total ``summary`` (both as tuples, so their
    summaries are lists). With ``labels=None``, ``x`` is one observation of the total.
    ``class_summaries`` maps each label to its summary.
    """

    def __init__(self, stats: List[Stat]) -> None:
        super().__init__(stats)
        self._requested = _check_stats(stats)
        self.summaries: Dict[Any, Summarizer] = defaultdict(lambda: Summarizer(stats=self._requested))

    def update(self, x, labels=None) -> None:  # type: ignore[override]
        if labels is None:
            super().update(x)
            return
        parts = tuple(x) if isinstance(x, (tuple, list)) else (x,)
        for i, t in enumerate(parts):
            if not isinstance(t, Tensor) or t.dim() == 0:
                raise TypeError(f"x[{i}] must be a tensor with a batch dimension when labels are given")
        n = parts[0].shape[0]
        if any(t.shape[0] != n for t in parts):
            raise ValueError(f"every tensor of x must share the batch size; got {[t.shape[0] for t in parts]}")
        per_example = _label_list(labels, n)
        self._update_rows(parts)
        groups: Dict[Any, List[int]] = defaultdict(list)
        for i, label in enumerate(per_example):
            groups[label].append(i)
        for label, rows in groups.items():
            index = torch.tensor(rows, device=parts[0].device)
            self.summaries[label]._update_rows(tuple(t.index_select(0, index) for t in parts))

    @property
    def class_summaries(self) -> Dict[Any, Any]:
        """``{label: summary}`` for every label seen."""
        return {label: s.summary for label, s in self.summaries.items()}


__all__ = ["ClassSummarizer", "Summarizer", "SummarizerSingleTensor"]
