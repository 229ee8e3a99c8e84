"""Reproducible draws for the sampling methods: ``generator`` or ``seed``, checked once."""

from __future__ import annotations

import numbers

import torch


def make_generator(generator=None, seed=None) -> torch.Generator | None:
    """The CPU generator to draw from: ``generator`` itself, a fresh one seeded with
    ``seed``, or None (the global RNG). Draws are made on the CPU and then moved, so a
    seed gives the same samples on every device."""
    if generator is not None and seed is not None:
        raise ValueError("give either generator or seed, not both")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator; got {type(generator).__name__}")
        if generator.device.type != "cpu":
            raise ValueError(
                f"generator must be a CPU generator (draws are made on the CPU); got one on {generator.device}"
            )
        return generator
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise ValueError(f"seed must be an int; got {seed!r}")
        return torch.Generator().manual_seed(int(seed))
    return None


def positive_int(value, name: str) -> int:
    """``value`` as an int >= 1, or a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
    return int(value)
