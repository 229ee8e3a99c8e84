"""Several perturbed batches through the model in one forward: the grouping that
:class:`AttackComparator` and :class:`MinParamPerturbation` share.

A group is a list of model inputs, each a tensor or a (nested) tuple of tensors of
the same structure; the group is concatenated along the batch dimension, the extra
forward arguments are repeated once per member (tensors with a batch dimension are
tiled, everything else is shared), and the model's output is split back into one
slice per member. As in Captum, the model gets each input as one positional
argument (a tuple stays a tuple) followed by the extra arguments.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor


def concat(values: Sequence[Any]) -> Any:
    """``values`` joined along dimension 0: tensors (moved to the first one's
    device) directly, tuples or lists element by element."""
    first = values[0]
    if isinstance(first, Tensor):
        return torch.cat([v.to(first.device) for v in values])
    if isinstance(first, (tuple, list)) and first:
        return tuple(concat([v[i] for v in values]) for i in range(len(first)))
    raise TypeError(
        "perturbations_per_eval > 1 needs the model inputs (the output of preproc_fn, or the inputs when there is "
        f"none) to be tensors or tuples of tensors; got {type(first).__name__}"
    )


def rows_of(value: Any) -> int:
    """The batch size of a model input (a tensor, or a tuple whose first entry is one)."""
    while isinstance(value, (tuple, list)) and value:
        value = value[0]
    if not isinstance(value, Tensor):
        raise TypeError(f"cannot tell the batch size of a model input of type {type(value).__name__}")
    return value.shape[0]


def tile_args(args: tuple, times: int) -> tuple:
    """The extra forward arguments for ``times`` batches in a row."""
    if times == 1:
        return args
    return tuple(torch.cat([a] * times) if isinstance(a, Tensor) and a.dim() > 0 else a for a in args)


def grouped_outputs(forward_func: Callable, group: Sequence[Any], args: tuple) -> list:
    """The model's output for each member of ``group``, from one forward without gradients."""
    with torch.no_grad():
        if len(group) == 1:
            return [forward_func(group[0], *args)]
        out = forward_func(concat(group), *tile_args(args, len(group)))
    slices, start = [], 0
    for member in group:
        size = rows_of(member)
        slices.append(out[start:start + size])
        start += size
    return slices
