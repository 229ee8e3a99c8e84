"""The public-boundary checks of the robustness family: each failure is a ValueError
(or a TypeError for a wrong type) that names the argument, says what was expected
and what was given."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

#: the norms PGD projects onto, by the names Captum uses
NORMS = ("Linf", "L2")


def real_number(value, name: str) -> float:
    """``value`` (a Python number or a one-element tensor) as a float."""
    if isinstance(value, Tensor) and value.numel() == 1 and not value.dtype.is_complex:
        return float(value.item())
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__} {value!r}")
    return float(value)


def non_negative(value, name: str) -> float:
    """``value`` as a float >= 0 (NaN refused)."""
    number = real_number(value, name)
    if math.isnan(number) or number < 0:
        raise ValueError(f"{name} must be a number >= 0; got {value!r}")
    return number


def count(value, name: str, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}")
    return int(value)


def step_count(step_num, random_start: bool) -> int:
    """PGD's ``step_num``: an int >= 1, or 0 with ``random_start`` (the random
    starting point alone, as Captum's own tests use it)."""
    if isinstance(step_num, bool) or not isinstance(step_num, numbers.Integral) or step_num < 0 or (
        step_num == 0 and not random_start
    ):
        raise ValueError(
            "step_num must be an int >= 1 (or 0 with random_start=True, which returns the random starting point); "
            f"got {step_num!r}" + (" with random_start=False" if step_num == 0 else "")
        )
    return int(step_num)


def norm_name(norm) -> str:
    """``norm`` as one of :data:`NORMS` (case ignored)."""
    if isinstance(norm, str):
        for choice in NORMS:
            if norm.strip().lower() == choice.lower():
                return choice
    raise ValueError(f"norm must be one of {', '.join(map(repr, NORMS))}; got {norm!r}")


def bounds(lower_bound, upper_bound) -> tuple[float, float]:
    """The clamping range ``lower_bound <= upper_bound`` (either may be infinite)."""
    low = real_number(lower_bound, "lower_bound")
    high = real_number(upper_bound, "upper_bound")
    if math.isnan(low) or math.isnan(high) or low > high:
        raise ValueError(
            f"lower_bound must be <= upper_bound (the range inputs are clamped to); got lower_bound={lower_bound!r}, "
            f"upper_bound={upper_bound!r}"
        )
    return low, high


def masks(mask, inputs: tuple[Tensor, ...]) -> tuple[Tensor | None, ...]:
    """One mask per input (None: every element is perturbed), each a tensor that
    broadcasts to its input, on its device, in its dtype."""
    if mask is None:
        return (None,) * len(inputs)
    parts = tuple(mask) if isinstance(mask, (tuple, list)) else (mask,)
    if len(parts) != len(inputs):
        raise ValueError(
            f"mask must give one tensor per input tensor: {len(inputs)} input(s) but {len(parts)} mask(s)"
        )
    out = []
    for i, (m, x) in enumerate(zip(parts, inputs)):
        where = f"mask[{i}]" if len(inputs) > 1 else "mask"
        if m is None:
            out.append(None)
            continue
        if not isinstance(m, Tensor):
            raise TypeError(f"{where} must be a tensor of zeros and ones (or None); got {type(m).__name__}")
        try:
            torch.broadcast_shapes(m.shape, x.shape)
        except RuntimeError:
            raise ValueError(
                f"{where} of shape {tuple(m.shape)} does not broadcast to the input's shape {tuple(x.shape)}"
            ) from None
        if torch.broadcast_shapes(m.shape, x.shape) != x.shape:
            raise ValueError(f"{where} of shape {tuple(m.shape)} is larger than the input's shape {tuple(x.shape)}")
        out.append(m.to(device=x.device, dtype=x.dtype))
    return tuple(out)
