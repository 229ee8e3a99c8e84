"""Targets: which value of the model's output each example explains.

The one module that reads ``target``. :class:`Target` parses every form once, at the
public boundary, and is immutable afterwards:

* Captum's forms: None (the model gives one value per example, or, for perturbation
  methods, every output value is explained element by element), an int, a tuple of
  indices (for outputs with several non-batch dimensions), a list with one int or
  tuple per example, and a tensor of 0 or 1 dimension (or ``(N, d)`` index rows);
* beyond Captum: a callable ``output -> one value per row``, and ``"predicted"``
  (each example's arg-max entry, which is also what class activation maps explain
  when no target is given).

:func:`class_targets` resolves the forms of :func:`torchexplain.explain` ("top1",
"topk:K", class names) into explicit (example, class) rows, and :func:`output_ranks`
the ranked outputs of the shap-style explainers (``ranked_outputs``,
``output_rank_order``); "topk:K" is the K outputs ranked by "max".
"""

from __future__ import annotations

import numbers
import re
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

PREDICTED = "predicted"
RANK_ORDERS = ("max", "min", "max_abs", "custom")
_TOPK = re.compile(r"^top(?:k:|k)?(\d+)$")


def _index_tuple(t: tuple, where: str) -> tuple:
    for v in t:
        if isinstance(v, bool) or not isinstance(v, (numbers.Integral, Tensor)):
            raise TypeError(f"{where} must contain integer indices; got {t!r}")
    return tuple(int(v) for v in t)


class Target:
    """A parsed ``target`` for a batch of ``n_examples`` (see the module docstring).

    ``none`` says what ``target=None`` means: ``"scalar"`` (Captum: the output needs
    no index, or perturbation methods explain every output element) or
    ``"predicted"`` (class activation maps, metrics: each example's arg-max).
    """

    __slots__ = ("n", "fn", "shared", "table", "predicted")

    def __init__(self, target=None, n_examples: int = 1, *, none: str = "scalar"):
        self.n = n_examples
        self.fn: Callable | None = None
        self.shared: tuple | None = None  # one index tuple for every example
        self.table: Tensor | None = None  # (n, d) index rows, one per example
        self.predicted = False
        if target is None:
            self.predicted = none == PREDICTED
        elif isinstance(target, str):
            if target.strip().lower() not in (PREDICTED, "top1"):
                raise TypeError(
                    "target must be None, an int, a tuple of ints, a list, an integer tensor, a callable or "
                    f'"predicted"; got the string {target!r} (class names are resolved by '
                    "torchexplain.explain(..., class_names=...))"
                )
            self.predicted = True
        elif callable(target) and not isinstance(target, Tensor):
            self.fn = target
        elif isinstance(target, Tensor):
            self._from_tensor(target)
        elif isinstance(target, numbers.Integral) and not isinstance(target, bool):
            self.shared = (int(target),)
        elif isinstance(target, tuple):
            self.shared = _index_tuple(target, "target")
        elif isinstance(target, list):
            self._from_list(target)
        else:
            raise TypeError(
                "target must be None, an int, a tuple of ints, a list with one entry per example, "
                f"an integer tensor or a callable; got {type(target).__name__}"
            )

    @classmethod
    def of(cls, target, n_examples: int, *, none: str = "scalar") -> "Target":
        """``target`` parsed, or returned as it is when it already is a Target."""
        return target if isinstance(target, Target) else cls(target, n_examples, none=none)

    @classmethod
    def rows(cls, table: Tensor) -> "Target":
        """A per-example target from index rows ``(n, d)`` (or ``(n,)``)."""
        table = table.detach().long().cpu()
        table = table.unsqueeze(1) if table.dim() == 1 else table
        return cls(table, table.shape[0])

    def _from_tensor(self, target: Tensor) -> None:
        n = self.n
        if target.dtype.is_floating_point or target.dtype == torch.bool:
            raise TypeError(f"target tensor must hold integer class indices; got dtype {target.dtype}")
        if target.numel() == 1 and (target.dim() == 0 or n != 1):
            self.shared = (int(target.item()),)
        elif target.dim() == 1 and target.numel() == n:
            self.table = target.detach().long().cpu().reshape(n, 1)
        elif target.dim() == 2 and target.shape[0] == n:
            self.table = target.detach().long().cpu()
        else:
            raise ValueError(
                f"target tensor must be 0-d or hold one index per example ({n}); got shape {tuple(target.shape)}"
            )

    def _from_list(self, target: list) -> None:
        n = self.n
        if len(target) != n:
            raise ValueError(f"target list has {len(target)} entries but the batch has {n} examples")
        rows = [_index_tuple(t if isinstance(t, tuple) else (t,), f"target[{i}]") for i, t in enumerate(target)]
        if len({len(r) for r in rows}) > 1:
            raise ValueError("every entry of a target list must have the same number of indices")
        self.table = torch.tensor(rows, dtype=torch.long).reshape(n, -1)

    @property
    def unset(self) -> bool:
        """No index, callable or prediction: the output itself is explained."""
        return self.fn is None and self.shared is None and self.table is None and not self.predicted

    def resolved(self, output: Tensor) -> "Target":
        """A ``"predicted"`` target turned into each example's arg-max index of
        ``output`` (one row per example), so that perturbed inputs keep explaining
        the class predicted for the original ones; other targets are returned as they are."""
        if not self.predicted or output[0].numel() == 1:
            return self
        index = output.reshape(output.shape[0], -1).argmax(1).cpu()
        return Target.rows(torch.stack(torch.unravel_index(index, tuple(output.shape[1:])), 1))

    def _check_range(self, output: Tensor, table: Tensor) -> None:
        dims = output.shape[1:]
        if table.shape[-1] > len(dims):
            raise ValueError(
                f"target has {table.shape[-1]} index(es) per example but the model output (per-example "
                f"shape {tuple(dims)}) has only {len(dims)} non-batch dimension(s)"
            )
        for j in range(table.shape[-1]):
            col, size = table[..., j], dims[j]
            bad = (col >= size) | (col < -size)
            if bool(bad.any()):
                raise ValueError(
                    f"target index {int(col[bad][0])} is out of range for the model output (per-example shape "
                    f"{tuple(dims)}; dimension {j + 1} has size {size})"
                )

    def values(self, output: Tensor, examples: Tensor) -> Tensor:
        """The explained values of each row of ``output`` (``examples`` maps rows to
        example indices): ``(rows, *rest)``, where ``rest`` is what the target leaves
        of the per-example output (nothing for one value per example; the whole
        per-example output for ``target=None``)."""
        n_rows = output.shape[0]
        if self.fn is not None:
            picked = self.fn(output)
            if not isinstance(picked, Tensor) or picked.numel() != n_rows:
                got = tuple(picked.shape) if isinstance(picked, Tensor) else type(picked).__name__
                raise ValueError(
                    "a callable target must return one scalar per example: a tensor of shape (N,) "
                    f"for a model output of N rows; got {got} for {n_rows} rows"
                )
            return picked.reshape(n_rows)
        if self.predicted:
            flat = output.reshape(n_rows, -1)
            return flat.gather(1, flat.argmax(1, keepdim=True))[:, 0]
        if self.shared is not None:
            self._check_range(output, torch.tensor([self.shared]))
            return output[(slice(None),) + self.shared]
        if self.table is not None:
            self._check_range(output, self.table)
            table = self.table.to(output.device)[examples.to(output.device)]
            rows = torch.arange(n_rows, device=output.device)
            return output[(rows,) + tuple(table[:, j] for j in range(table.shape[1]))]
        return output

    def select(self, output: Tensor, examples: Tensor) -> Tensor:
        """Exactly one explained scalar per row of ``output``: ``(rows,)``."""
        picked = self.values(output, examples)
        if picked.dim() == 1:
            return picked
        per_row = picked[0].numel() if picked.shape[0] else 1
        if per_row != 1:
            if self.unset:
                raise ValueError(
                    f"target is required: the model output has {output[0].numel()} values per example "
                    f"(per-example shape {tuple(output.shape[1:])}); pass target=<class index> (or a callable)"
                )
            raise ValueError(
                f"target selects {per_row} values per example from a model output of "
                f"per-example shape {tuple(output.shape[1:])}; it must select exactly one"
            )
        return picked.reshape(output.shape[0])


def predicted(outputs: Tensor) -> Tensor:
    """Each example's arg-max class of ``(N, classes)`` scores, on the CPU."""
    return outputs.detach().reshape(outputs.shape[0], -1).argmax(1).cpu()


def _class_index(value, class_names, n_classes: int, where: str) -> int:
    if isinstance(value, str):
        if not class_names or value not in class_names:
            known = f"; known class names: {', '.join(map(str, class_names[:20]))}..." if class_names else ""
            raise ValueError(f"{where}: unknown class name {value!r}{known}")
        return list(class_names).index(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where} must be a class index or a class name; got {value!r}")
    if not -n_classes <= int(value) < n_classes:
        raise ValueError(f"{where}: class index {value} is out of range for {n_classes} classes")
    return int(value) % n_classes


def class_targets(target, outputs: Tensor, class_names: Sequence[str] | None = None) -> tuple[Tensor, Tensor]:
    """(example index, class index) of every explained row of a classifier's
    ``(N, classes)`` scores.

    ``target``: "top1" or "predicted" (each example's best class), "topk:K" (its K
    best classes, K rows per example), an int or class name for every example, or a
    per-example list or tensor of ints / names."""
    n, n_classes = outputs.shape[0], outputs.shape[-1]
    examples = torch.arange(n)
    if isinstance(target, str):
        key = target.strip().lower()
        if key == PREDICTED:
            key = "top1"
        match = _TOPK.match(key)
        if match:
            k = int(match.group(1))
            if not 1 <= k <= n_classes:
                raise ValueError(f"target {target!r}: k must lie in 1..{n_classes}")
            return examples.repeat_interleave(k), output_ranks(outputs, k).reshape(-1)
    if isinstance(target, Tensor):
        target = target.tolist() if target.dim() else int(target)
    if isinstance(target, (list, tuple)):
        if len(target) != n:
            raise ValueError(f"target has {len(target)} entries but there are {n} inputs")
        classes = [_class_index(t, class_names, n_classes, f"target[{i}]") for i, t in enumerate(target)]
        return examples, torch.tensor(classes, dtype=torch.long)
    return examples, torch.full((n,), _class_index(target, class_names, n_classes, "target"))


def output_ranks(outputs: Tensor, ranked_outputs, order: str = "max") -> Tensor:
    """(N, K) indices of the explained outputs of each example, a CPU LongTensor.

    ``ranked_outputs=None``: every output; an int k: the k top outputs of each example
    by ``order`` ("max", "min", "max_abs"); with ``order="custom"``, ``ranked_outputs``
    lists the output indices, shared ([3, 7]) or per example (N rows)."""
    n = outputs.shape[0]
    n_out = 1 if outputs.dim() == 1 else outputs.shape[1]
    if order not in RANK_ORDERS:
        raise ValueError(f"output_rank_order must be one of {', '.join(map(repr, RANK_ORDERS))}; got {order!r}")
    if ranked_outputs is None:
        return torch.arange(n_out).expand(n, n_out).clone()
    if order == "custom":
        return _custom_ranks(ranked_outputs, n, n_out)
    if isinstance(ranked_outputs, bool) or not isinstance(ranked_outputs, numbers.Integral) or ranked_outputs < 1:
        raise ValueError(f"ranked_outputs must be None or a positive int; got {ranked_outputs!r}")
    if n_out == 1:
        return torch.zeros(n, 1, dtype=torch.long)
    if ranked_outputs > n_out:
        raise ValueError(f"ranked_outputs={ranked_outputs} but the model has only {n_out} outputs")
    keys = {"max": outputs, "min": -outputs, "max_abs": outputs.abs()}[order]
    return torch.sort(keys.detach().cpu(), dim=1, descending=True, stable=True).indices[:, :ranked_outputs].long()


def _custom_ranks(ranked_outputs, n: int, n_out: int) -> Tensor:
    try:
        table = torch.as_tensor(np.asarray(ranked_outputs))
    except (TypeError, ValueError):
        table = None
    if table is None or table.dtype.is_floating_point or table.dtype == torch.bool or table.dim() not in (1, 2):
        raise ValueError(
            'with output_rank_order="custom", ranked_outputs must list output indices: '
            f"a sequence of ints or an (N, K) array; got {ranked_outputs!r}"
        )
    table = table.long()
    if table.dim() == 1:
        table = table.expand(n, -1).clone()
    if table.shape[0] != n or table.shape[1] == 0:
        raise ValueError(f"ranked_outputs must have {n} rows of output indices; got shape {tuple(table.shape)}")
    if bool(((table < 0) | (table >= n_out)).any()):
        raise ValueError(f"ranked_outputs holds an index outside the model's {n_out} outputs")
    return table
