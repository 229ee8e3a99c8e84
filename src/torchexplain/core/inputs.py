"""Normalising the forms users pass: inputs, baselines, targets, extra arguments.

Everything here runs once at the public boundary; deeper code trusts its values.
"""

from __future__ import annotations

import inspect
import numbers
from typing import Any, Sequence

import torch
from torch import Tensor


def as_tuple(inputs, name: str = "inputs") -> tuple[tuple[Tensor, ...], bool]:
    """``inputs`` as a tuple of tensors, and whether the caller gave a tuple."""
    is_tuple = isinstance(inputs, (tuple, list))
    items = tuple(inputs) if is_tuple else (inputs,)
    if not items:
        raise ValueError(
            f"{name} must be a tensor or a non-empty tuple of tensors; got an empty {type(inputs).__name__}"
        )
    for i, t in enumerate(items):
        if not isinstance(t, Tensor):
            where = f"{name}[{i}]" if is_tuple else name
            raise TypeError(f"{where} must be a torch.Tensor; got {type(t).__name__}")
    return items, is_tuple


def format_output(is_tuple: bool, values: Sequence[Tensor]):
    """Return ``values`` in the form the caller used for the inputs."""
    values = tuple(values)
    return values if is_tuple else values[0]


def validate_inputs(
    inputs: tuple[Tensor, ...], *, floating: bool = True, name: str = "inputs", same_batch: bool = True
) -> int:
    """Check a tuple of input tensors and return their common batch size (the first
    tensor's with ``same_batch=False``, where first dimensions may differ)."""
    sizes = []
    for i, t in enumerate(inputs):
        where = f"{name}[{i}]" if len(inputs) > 1 else name
        if t.dim() == 0:
            raise ValueError(f"{where} must have a batch dimension; got a 0-d tensor")
        if floating and not t.is_floating_point():
            raise TypeError(f"{where} must be a floating-point tensor to take gradients; got dtype {t.dtype}")
        if t.is_floating_point() and bool(torch.isnan(t).any()):
            raise ValueError(f"{where} contains NaN values")
        sizes.append(t.shape[0])
    if same_batch and len(set(sizes)) > 1:
        raise ValueError(f"all {name} must share the batch size (dimension 0); got batch sizes {sizes}")
    return sizes[0]


def _baseline_dtype(b, inp: Tensor, promote: bool) -> torch.dtype:
    """The dtype of a baseline for ``inp``: the input's own, or with ``promote`` (for
    perturbed integer or boolean inputs) the wider of the two, so a float baseline of
    an int input is never truncated."""
    if not promote or inp.is_floating_point() or inp.is_complex():
        return inp.dtype
    other = b.dtype if isinstance(b, Tensor) else torch.tensor(b).dtype
    return torch.promote_types(inp.dtype, other)


def _baseline_tensor(b, inp: Tensor, where: str, promote: bool = False) -> Tensor:
    if b is None:
        return torch.zeros((), dtype=inp.dtype, device=inp.device).expand_as(inp)
    if isinstance(b, numbers.Number) and not isinstance(b, complex):
        return torch.full((), b, dtype=_baseline_dtype(b, inp, promote), device=inp.device).expand_as(inp)
    if not isinstance(b, Tensor):
        raise TypeError(f"{where} must be None, a number or a tensor; got {type(b).__name__}")
    b = b.to(device=inp.device, dtype=_baseline_dtype(b, inp, promote))
    try:
        return b.expand_as(inp)
    except RuntimeError:
        raise ValueError(
            f"{where} of shape {tuple(b.shape)} cannot broadcast to the input's shape {tuple(inp.shape)}; "
            "give a tensor of the input's shape, of batch size 1, or a scalar"
        ) from None


def _split_baselines(baselines, inputs: tuple[Tensor, ...]) -> tuple:
    if isinstance(baselines, (tuple, list)):
        if len(baselines) != len(inputs):
            raise ValueError(
                f"baselines must give one entry per input tensor: {len(inputs)} inputs but {len(baselines)} baselines"
            )
        return tuple(baselines)
    if isinstance(baselines, Tensor) and len(inputs) > 1:
        raise ValueError("baselines must be a tuple with one entry per input tensor when inputs is a tuple")
    return (baselines,) * len(inputs)


def format_baselines(baselines, inputs: tuple[Tensor, ...], *, promote: bool = False) -> tuple[Tensor, ...]:
    """One baseline per input, broadcast (as a view) to the input's shape, in the
    input's dtype (see :func:`_baseline_dtype` for ``promote``)."""
    parts = _split_baselines(baselines, inputs)
    out = []
    for i, (b, x) in enumerate(zip(parts, inputs)):
        where = f"baselines[{i}]" if len(inputs) > 1 else "baselines"
        b = _baseline_tensor(b, x, where, promote)
        if b.is_floating_point() and bool(torch.isnan(b).any()):
            raise ValueError(f"{where} contains NaN values")
        out.append(b)
    return tuple(out)


def _takes_no_arguments(fn) -> bool:
    """Whether ``fn`` is called without arguments (Captum's baseline callables may
    take the inputs or nothing)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return not any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params)


def format_baseline_distribution(baselines, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Baselines given as a distribution of rows (GradientShap, DeepLiftShap).

    Each is a tensor ``(B, *input.shape[1:])`` (B >= 1, the same B for every input), a
    number, or a callable returning either form, called with the inputs or, when it
    takes no arguments, with none (both Captum's forms).
    """
    if callable(baselines) and not isinstance(baselines, Tensor):
        if _takes_no_arguments(baselines):
            baselines = baselines()
        else:
            baselines = baselines(*inputs) if len(inputs) > 1 else baselines(inputs[0])
    if baselines is None:
        raise ValueError(
            "baselines must be given: a tensor of baseline rows (B, *input.shape[1:]) or a callable returning one"
        )
    parts = _split_baselines(baselines, inputs)
    out = []
    for i, (b, x) in enumerate(zip(parts, inputs)):
        where = f"baselines[{i}]" if len(inputs) > 1 else "baselines"
        if isinstance(b, numbers.Number) and not isinstance(b, bool):
            b = torch.full((1,) + x.shape[1:], float(b), dtype=x.dtype, device=x.device)
        elif not isinstance(b, Tensor):
            raise TypeError(f"{where} must be a tensor or a number; got {type(b).__name__}")
        b = b.to(device=x.device, dtype=x.dtype)
        if b.dim() != x.dim() or b.shape[1:] != x.shape[1:]:
            raise ValueError(
                f"{where} must have shape (B, {', '.join(map(str, x.shape[1:]))}) to match the input; "
                f"got {tuple(b.shape)}"
            )
        out.append(b)
    counts = {b.shape[0] for b in out}
    if len(counts) > 1:
        raise ValueError(f"every baselines tensor must have the same number of rows; got {sorted(counts)}")
    return tuple(out)


def argument_rows(value: Any, rows: Tensor, n: int) -> Any:
    """Select ``rows`` (example indices) of a batched extra forward argument.

    Tensors whose first dimension equals the batch size ``n`` are indexed per row;
    everything else (non-tensors, shared tensors) is passed unchanged.
    """
    if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == n:
        return value.index_select(0, rows.to(value.device))
    return value


def take(t: Tensor, index: Tensor) -> Tensor:
    """Rows ``index`` of ``t``, in ``t``'s memory layout; ``t`` itself when ``index``
    is every row in order."""
    if index.numel() == t.shape[0] and (t.shape[0] == 0 or (int(index[0]) == 0 and bool((index.diff() == 1).all()))):
        return t
    return t[index.to(t.device)]


def per_row(values: Tensor, rows: Tensor, like: Tensor) -> Tensor:
    """``values[rows]`` shaped to broadcast over rows of ``like``, in its dtype and device."""
    return values[rows].to(device=like.device, dtype=like.dtype).view((-1,) + (1,) * (like.dim() - 1))


def format_additional_args(args) -> tuple:
    if args is None:
        return ()
    return tuple(args) if isinstance(args, tuple) else (args,)


def format_forward_kwargs(kwargs) -> dict:
    if kwargs is None:
        return {}
    if not isinstance(kwargs, dict):
        raise TypeError(f"forward_kwargs must be a dict of keyword arguments; got {type(kwargs).__name__}")
    return dict(kwargs)


def repeat_per_example(value, n: int, k: int):
    """Repeat each example's entry ``k`` times (example-major, as ``repeat_interleave``)
    when ``value`` is batched over ``n`` examples (a tensor or a list); other values
    are returned as they are."""
    if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == n:
        return value.repeat_interleave(k, 0)
    if isinstance(value, list) and len(value) == n:
        return [v for v in value for _ in range(k)]
    return value
