"""The forward adapter: call the model, pick its output, reduce to one scalar per row.

Rows are the expanded evaluations of a method (examples x steps / samples). Each row
knows its example index, which selects that example's extra arguments and target.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable

import torch
from torch import Tensor

from .inputs import format_additional_args, format_forward_kwargs, rows_of


class Target:
    """A parsed ``target``: which scalar of the model output each example explains.

    Accepts Captum's forms (None, int, tuple, list of ints or tuples, tensor of 0 or 1
    dimension) and, beyond Captum, a callable ``output -> per-row scalar``.
    """

    def __init__(self, target, n_examples: int):
        self.n = n_examples
        self.fn: Callable | None = None
        self.shared: tuple | None = None  # one index tuple for every example
        self.per_example: Tensor | None = None  # (n, d) index table
        if target is None:
            return
        if callable(target) and not isinstance(target, Tensor):
            self.fn = target
            return
        if isinstance(target, Tensor):
            if target.dtype.is_floating_point or target.dtype == torch.bool:
                raise TypeError(f"target tensor must hold integer class indices; got dtype {target.dtype}")
            if target.numel() == 1 and (target.dim() == 0 or n_examples != 1):
                self.shared = (int(target.item()),)
                return
            if target.dim() == 1 and target.numel() == n_examples:
                self.per_example = target.detach().long().cpu().reshape(n_examples, 1)
                return
            if target.dim() == 2 and target.shape[0] == n_examples:
                self.per_example = target.detach().long().cpu()
                return
            raise ValueError(
                f"target tensor must be 0-d or hold one index per example ({n_examples}); got shape {tuple(target.shape)}"
            )
        if isinstance(target, numbers.Integral) and not isinstance(target, bool):
            self.shared = (int(target),)
            return
        if isinstance(target, tuple):
            self.shared = self._index_tuple(target, "target")
            return
        if isinstance(target, list):
            if len(target) != n_examples:
                raise ValueError(f"target list has {len(target)} entries but the batch has {n_examples} examples")
            rows = [self._index_tuple(t if isinstance(t, tuple) else (t,), f"target[{i}]") for i, t in enumerate(target)]
            if len({len(r) for r in rows}) > 1:
                raise ValueError("every entry of a target list must have the same number of indices")
            self.per_example = torch.tensor(rows, dtype=torch.long).reshape(n_examples, -1)
            return
        raise TypeError(
            "target must be None, an int, a tuple of ints, a list with one entry per example, "
            f"an integer tensor or a callable; got {type(target).__name__}"
        )

    @staticmethod
    def _index_tuple(t: tuple, where: str) -> tuple:
        for v in t:
            if isinstance(v, bool) or not isinstance(v, (numbers.Integral, Tensor)):
                raise TypeError(f"{where} must contain integer indices; got {t!r}")
        return tuple(int(v) for v in t)

    def _check_range(self, output: Tensor, table: Tensor) -> None:
        dims = output.shape[1:]
        if table.shape[-1] > len(dims):
            raise ValueError(
                f"target has {table.shape[-1]} index(es) per example but the model output (per-example "
                f"shape {tuple(dims)}) has only {len(dims)} non-batch dimension(s)"
            )
        for j in range(table.shape[-1]):
            col = table[..., j]
            size = dims[j]
            if bool(((col >= size) | (col < -size)).any()):
                bad = int(col[(col >= size) | (col < -size)][0])
                raise ValueError(
                    f"target index {bad} is out of range for the model output (per-example shape "
                    f"{tuple(dims)}; dimension {j + 1} has size {size})"
                )

    def select(self, output: Tensor, examples: Tensor) -> Tensor:
        """One scalar per row of ``output``; ``examples`` maps rows to example indices."""
        if self.fn is not None:
            values = self.fn(output)
            if not isinstance(values, Tensor) or values.numel() != output.shape[0]:
                got = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
                raise ValueError(
                    "a callable target must return one scalar per example: a tensor of shape (N,) "
                    f"for a model output of N rows; got {got} for {output.shape[0]} rows"
                )
            return values.reshape(output.shape[0])
        if self.shared is None and self.per_example is None:
            if output[0].numel() != 1:
                raise ValueError(
                    f"target is required: the model output has {output[0].numel()} values per example "
                    f"(per-example shape {tuple(output.shape[1:])}); pass target=<class index> (or a callable)"
                )
            return output.reshape(output.shape[0])
        if self.shared is not None:
            self._check_range(output, torch.tensor([self.shared]))
            picked = output[(slice(None),) + self.shared]
        else:
            self._check_range(output, self.per_example)
            table = self.per_example.to(output.device)[examples.to(output.device)]
            rows = torch.arange(output.shape[0], device=output.device)
            picked = output[(rows,) + tuple(table[:, j] for j in range(table.shape[1]))]
        if picked.dim() != 1:
            picked = picked.reshape(output.shape[0], -1)
            if picked.shape[1] != 1:
                raise ValueError(
                    f"target selects {picked.shape[1]} values per example from a model output of "
                    f"per-example shape {tuple(output.shape[1:])}; it must select exactly one"
                )
            picked = picked[:, 0]
        return picked


def select_output(output: Any, selector) -> Tensor:
    """Pick the explained tensor from a model output that may be a tuple or dict."""
    if selector is not None:
        if callable(selector):
            output = selector(output)
        else:
            try:
                output = output[selector]
            except (KeyError, IndexError, TypeError):
                raise ValueError(f"output_selector {selector!r} does not select anything from the model output") from None
    elif isinstance(output, dict) or isinstance(output, (tuple, list)):
        raise ValueError(
            f"the model returned a {type(output).__name__}; pass output_selector=<index, key or callable> "
            "to pick the tensor to explain"
        )
    if not isinstance(output, Tensor):
        raise TypeError(f"the selected model output must be a tensor; got {type(output).__name__}")
    if output.dim() == 0:
        output = output.reshape(1)
    return output


class ForwardAdapter:
    """Calls ``forward_func`` on rows and reduces each row to the explained scalar."""

    def __init__(
        self,
        forward_func: Callable,
        n_examples: int,
        target=None,
        additional_forward_args=None,
        forward_kwargs=None,
        output_selector=None,
    ):
        if not callable(forward_func):
            raise TypeError(f"forward_func must be callable (an nn.Module or function); got {type(forward_func).__name__}")
        self.forward_func = forward_func
        self.n = n_examples
        self.target = target if isinstance(target, Target) else Target(target, n_examples)
        self.args = format_additional_args(additional_forward_args)
        self.kwargs = format_forward_kwargs(forward_kwargs)
        self.output_selector = output_selector

    def outputs(self, inputs: tuple[Tensor, ...], examples: Tensor) -> Tensor:
        """The selected model output for rows whose example indices are ``examples``."""
        args = tuple(rows_of(a, examples, self.n) for a in self.args)
        kwargs = {k: rows_of(v, examples, self.n) for k, v in self.kwargs.items()}
        out = select_output(self.forward_func(*inputs, *args, **kwargs), self.output_selector)
        if out.shape[0] != inputs[0].shape[0] and out.numel() != inputs[0].shape[0]:
            raise ValueError(
                f"the model output has {out.shape[0]} rows for {inputs[0].shape[0]} input rows; "
                "its first dimension must be the batch"
            )
        return out

    def scalars(self, inputs: tuple[Tensor, ...], examples: Tensor) -> Tensor:
        """One explained scalar per row."""
        return self.target.select(self.outputs(inputs, examples), examples)
