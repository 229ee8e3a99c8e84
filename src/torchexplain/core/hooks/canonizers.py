"""Canonizers: reversible rewrites of a model's parameters that keep its function.

:class:`BatchNormFolding` folds each eval-mode batch norm into the dense or
convolutional layer that feeds it, so that LRP sees one affine layer instead of two.
Inside the block the layer computes ``a * (W x + b - mean) + beta`` and the batch norm
is the exact identity; on every exit path (exceptions included) every parameter,
buffer and attribute it touched is restored bit for bit.

:func:`batchnorm_pairs` finds the pairs that can be folded by tracing one forward pass:
a batch norm qualifies when its input is the output of a layer that nothing else
consumes, both modules run once, and the layer's weight is not shared.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from .model import module_hooks

LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _check_pair(layer, norm, where: str) -> None:
    if not isinstance(layer, LAYERS):
        raise TypeError(f"{where}[0] must be an nn.Linear or nn.Conv1d/2d/3d; got {type(layer).__name__}")
    if not isinstance(norm, NORMS):
        raise TypeError(f"{where}[1] must be an nn.BatchNorm1d/2d/3d; got {type(norm).__name__}")
    if norm.training or norm.running_mean is None or norm.running_var is None:
        raise ValueError(f"{where}[1] must be in eval mode with running statistics to be folded")
    if layer.weight.shape[0] != norm.num_features:
        raise ValueError(
            f"{where}: the layer has {layer.weight.shape[0]} output channels but the batch norm "
            f"has {norm.num_features} features"
        )


def _fold(layer: nn.Module, norm: nn.Module) -> Callable[[], None]:
    """Fold ``norm`` into ``layer`` in place; returns the function that undoes it."""
    tensors = [layer.weight, layer.bias, norm.weight, norm.bias, norm.running_mean, norm.running_var]
    saved = [(t, t.detach().clone()) for t in tensors if t is not None]
    had_bias, norm_eps = layer.bias is not None, norm.eps
    with torch.no_grad():
        scale = torch.rsqrt(norm.running_var + norm.eps)
        scale = scale if norm.weight is None else norm.weight * scale
        shift = -norm.running_mean * scale if norm.bias is None else norm.bias - norm.running_mean * scale
        bias = shift if layer.bias is None else layer.bias * scale + shift
        weight = layer.weight * scale.reshape((-1,) + (1,) * (layer.weight.dim() - 1))

    def undo() -> None:
        with torch.no_grad():
            if not had_bias:
                layer.register_parameter("bias", None)
            for t, value in saved:
                t.copy_(value)
            norm.eps = norm_eps

    try:
        with torch.no_grad():
            layer.weight.copy_(weight)
            if had_bias:
                layer.bias.copy_(bias)
            else:
                layer.register_parameter("bias", nn.Parameter(bias.to(layer.weight.dtype), requires_grad=False))
            norm.running_mean.zero_()
            norm.running_var.fill_(1.0)
            norm.eps = 0.0
            if norm.weight is not None:
                norm.weight.fill_(1.0)
                norm.bias.zero_()
    except BaseException:
        undo()
        raise
    return undo


class BatchNormFolding:
    """Context manager folding each ``(layer, batch_norm)`` pair; see the module
    docstring. Reusable, not re-entrant."""

    def __init__(self, pairs: Iterable[tuple[nn.Module, nn.Module]]):
        self.pairs = list(pairs)
        seen: set[int] = set()
        for i, pair in enumerate(self.pairs):
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise TypeError(f"pairs[{i}] must be a (layer, batch_norm) tuple; got {type(pair).__name__}")
            _check_pair(*pair, f"pairs[{i}]")
            if id(pair[0]) in seen or id(pair[1]) in seen:
                raise ValueError(f"pairs[{i}] repeats a module already folded by another pair")
            seen.update((id(pair[0]), id(pair[1])))
        self._undo: list[Callable[[], None]] = []

    @classmethod
    def traced(cls, model: nn.Module, *args, **kwargs) -> "BatchNormFolding":
        """The folding of every pair found by running ``model(*args, **kwargs)``."""
        return cls(batchnorm_pairs(model, lambda: model(*args, **kwargs)))

    def __enter__(self) -> "BatchNormFolding":
        if self._undo:
            raise RuntimeError("BatchNormFolding is already active; it is not re-entrant")
        try:
            for layer, norm in self.pairs:
                self._undo.append(_fold(layer, norm))
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, *exc) -> bool:
        self._restore()
        return False

    def _restore(self) -> None:
        while self._undo:
            self._undo.pop()()


class _Consumers(TorchFunctionMode):
    """Counts the tensor-producing calls that read each watched tensor."""

    def __init__(self, watched: dict[int, Tensor]):
        super().__init__()
        self.watched = watched
        self.uses: Counter = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if any(isinstance(o, Tensor) for o in tree_flatten(out)[0]):
            for a in tree_flatten((args, kwargs or {}))[0]:
                if isinstance(a, Tensor) and self.watched.get(id(a)) is a:
                    self.uses[id(a)] += 1
        return out


def _shared_weights(model: nn.Module) -> set[int]:
    owners = Counter(id(p) for m in model.modules() for p in m.parameters(recurse=False))
    return {key for key, n in owners.items() if n > 1}


def batchnorm_pairs(model: nn.Module, run: Callable[[], Any]) -> list[tuple[nn.Module, nn.Module]]:
    """The ``(layer, batch_norm)`` pairs of ``model`` that can be folded, found by
    tracing ``run()`` (a call of the model) without gradients."""
    produced: dict[int, Tensor] = {}
    source: dict[int, nn.Module] = {}
    calls: Counter = Counter()
    norm_inputs: list[tuple[nn.Module, Tensor]] = []

    def after_layer(module, inputs, output):
        calls[module] += 1
        if isinstance(output, Tensor):
            produced[id(output)], source[id(output)] = output, module

    def before_norm(module, inputs):
        calls[module] += 1
        if inputs and isinstance(inputs[0], Tensor):
            norm_inputs.append((module, inputs[0]))

    modules = list(model.modules())
    hooks = [(m, "forward", after_layer) for m in modules if isinstance(m, LAYERS)]
    hooks += [(m, "forward_pre", before_norm) for m in modules if isinstance(m, NORMS)]
    consumers = _Consumers(produced)
    with torch.no_grad(), module_hooks(hooks), consumers:
        run()
    shared = _shared_weights(model)
    pairs = []
    for norm, t in norm_inputs:
        layer = source.get(id(t)) if produced.get(id(t)) is t else None
        if layer is None or calls[layer] != 1 or calls[norm] != 1 or consumers.uses[id(t)] != 1:
            continue
        if id(layer.weight) in shared or norm.training or norm.running_mean is None:
            continue
        if layer.weight.shape[0] == norm.num_features:
            pairs.append((layer, norm))
    return pairs
