"""The methods :func:`torchexplain.explain` knows, by name: each is registered by a
``@register(...)`` decorator on its class (:mod:`torchexplain.core.registry`), with
its aliases and the defaults a one-call user gets (baselines, noise levels, grids).
Importing this module imports the method families, so the table is complete.

:func:`run_methods` runs named methods on a classifier's batch for its target
classes; :func:`torchexplain.explain` and :func:`torchexplain.evaluate` both stand on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from . import attr, cam  # noqa: F401  (their classes register themselves)
from .core.hooks import model_guard
from .core.registry import (
    METHODS,
    Attributed,
    MethodCall,
    MethodSpec,
    accepted,
    add,
    available,
    method_calls,
    register,
    resolve,
)
from .core.targets import class_targets
from .robust import explain as _robust_explain  # noqa: F401  (registers "fgsm" and "pgd", unlisted)

__all__ = [
    "METHODS", "Attributed", "MethodCall", "MethodRun", "MethodSpec", "accepted", "add", "available", "method_calls",
    "register", "resolve", "run_methods",
]  # fmt: skip


@dataclass
class MethodRun:
    """Named methods run on a batch: the explained rows (one per example and target
    class), which example each row is, its target class, the model's outputs on the
    batch, and per method (canonical name) what its call gave."""

    inputs: Tensor
    example_index: Tensor
    target: Tensor
    outputs: Tensor
    results: dict[str, Attributed]


def run_methods(model, inputs: Tensor, method: str | Sequence[str], target="top1", method_kwargs: dict | None = None,
                *, class_names=None, show_progress: bool = False) -> MethodRun:
    """Run the named method(s) on ``inputs`` for ``target`` (as :func:`explain` takes
    them), each with its defaults and the entries of ``method_kwargs`` it accepts; an
    entry that no chosen method takes is a TypeError naming it."""
    if not isinstance(inputs, Tensor) or inputs.dim() < 2:
        raise ValueError("inputs must be a batched tensor (N, ...); add a batch dimension with x.unsqueeze(0)")
    names = [method] if isinstance(method, str) else list(method)
    if not names:
        raise ValueError("method must name at least one method")
    specs = [resolve(name) for name in names]
    with model_guard(model), torch.no_grad():
        outputs = model(inputs)
    if not isinstance(outputs, Tensor) or outputs.dim() != 2:
        raise ValueError(
            "explain() needs a classifier returning (N, classes) scores; use torchexplain.attr for other models"
        )
    examples, classes = class_targets(target, outputs, class_names)
    rows = inputs[examples.to(inputs.device)]
    calls = method_calls(specs, model, method_kwargs or {})
    steps = calls
    if show_progress:
        from tqdm.auto import tqdm

        steps = tqdm(calls, desc="explaining", unit="method", leave=False)
    results = {}
    for call in steps:
        results[call.spec.name] = call(rows, classes.to(rows.device), delta=True)
    return MethodRun(rows, examples, classes, outputs.detach(), results)
