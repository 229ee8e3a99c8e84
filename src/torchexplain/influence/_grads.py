"""Per-example gradients of the loss with respect to chosen parameters.

The main path is ``torch.func``: ``vmap(grad(loss of one example))`` over a batch,
with the model called through ``functional_call`` on detached copies of its
parameters, so no ``.grad`` is written and ``requires_grad`` does not matter. Each
example's loss is the loss function applied to that example alone and summed, which
is the per-example loss whatever the reduction: for ``reduction="mean"`` it is what
Captum obtains by scaling the batch mean's gradient by the batch size.

Where ``vmap`` cannot run the model (batch-norm using batch statistics, i.e. in train
mode; data-dependent control flow; ops without a batching rule) the fallback runs the
batch forward once and takes the Jacobian of the per-example losses with one
batched backward (``is_grads_batched``), or, failing that, one backward per example.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from ._data import rows

REDUCTIONS = ("none", "sum", "mean")


def check_loss_fn(loss_fn, name: str) -> str:
    """The reduction of ``loss_fn`` ("none", "sum" or "mean"; "sum" when it has no
    ``reduction`` attribute or is None)."""
    if loss_fn is None:
        return "sum"
    if not callable(loss_fn):
        raise ValueError(f"{name}: expected a callable loss (output, labels) -> loss, or None; got {loss_fn!r}")
    reduction = getattr(loss_fn, "reduction", None)
    if reduction is None:
        return "sum"
    if reduction not in REDUCTIONS:
        raise ValueError(f"{name}: expected a loss with reduction in {list(REDUCTIONS)}; got reduction={reduction!r}")
    return str(reduction)


def _named_modules(model: nn.Module) -> dict:
    return dict(model.named_modules())


def layer_parameter_names(model: nn.Module, layers) -> tuple[list[str], list[nn.Module]]:
    """Names (as in ``model.named_parameters()``) of the parameters of ``layers``
    (module names or modules), and the modules."""
    if isinstance(layers, (str, nn.Module)) or not isinstance(layers, (list, tuple)) or not layers:
        raise ValueError(f"layers: expected a non-empty list of layer names or modules of model; got {layers!r}")
    by_name = _named_modules(model)
    by_id = {id(m): n for n, m in by_name.items()}
    modules, prefixes = [], []
    for layer in layers:
        if isinstance(layer, str) and layer in by_name:
            modules.append(by_name[layer])
            prefixes.append(layer)
        elif isinstance(layer, nn.Module) and id(layer) in by_id:
            modules.append(layer)
            prefixes.append(by_id[id(layer)])
        else:
            known = [n for n in by_name if n][:12]
            raise ValueError(f"layers: {layer!r} is not a layer of model (layers include {known}); got {layers!r}")
    ids = {id(p) for m in modules for p in m.parameters()}
    names = [n for n, p in model.named_parameters() if id(p) in ids]
    if not names:
        raise ValueError(f"layers: the layers {layers!r} have no parameters")
    return names, modules


def default_parameter_names(model: nn.Module) -> list[str]:
    """Every parameter that requires grad (every parameter when none does)."""
    named = list(model.named_parameters())
    if not named:
        raise ValueError("model: expected a model with parameters; it has none")
    chosen = [n for n, p in named if p.requires_grad]
    return chosen or [n for n, _ in named]


def _batch_stat_layers(model: nn.Module) -> list[str]:
    out = []
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training:
            out.append(name or type(m).__name__)
        elif isinstance(m, nn.modules.instancenorm._InstanceNorm) and m.training and m.track_running_stats:
            out.append(name or type(m).__name__)
    return out


def _flat(grads: dict, names, n: int) -> torch.Tensor:
    return torch.cat([grads[k].reshape(n, -1) for k in names], dim=1)


def _one_output(out):
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"model: expected the model to return a tensor; got {type(out).__name__}")
    return out


def _vmapped(model, names, inputs, targets, loss_fn):
    params = dict(model.named_parameters())
    chosen = {k: params[k].detach() for k in names}
    rest = {k: v.detach() for k, v in params.items() if k not in chosen}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    batched = tuple(isinstance(a, torch.Tensor) and a.dim() > 0 for a in inputs)
    target_batched = isinstance(targets, torch.Tensor) and targets.dim() > 0

    def loss_of_one(p, args, y):
        xs = tuple(a.unsqueeze(0) if b else a for a, b in zip(args, batched))
        out = _one_output(functional_call(model, (p, rest, buffers), xs))
        if loss_fn is None:
            return out.sum()
        return loss_fn(out, y.unsqueeze(0) if target_batched else y).sum()

    dims = (None, tuple(0 if b else None for b in batched), 0 if target_batched else None)
    return vmap(grad(loss_of_one), in_dims=dims, randomness="different")(chosen, tuple(inputs), targets)


def _per_example_losses(out, targets, loss_fn, reduction, n):
    if loss_fn is None:
        return out.reshape(n, -1).sum(1)
    if reduction == "none":
        loss = loss_fn(out, targets)
        if loss.dim() > 0 and loss.shape[0] == n:
            return loss.reshape(n, -1).sum(1)
    # a reducing loss: apply it to each example alone (cheap: no backward per example)
    return torch.stack([loss_fn(out[i:i + 1], targets[i:i + 1]).sum() for i in range(n)])


def _batched_backward(model, names, inputs, targets, loss_fn, reduction, n):
    params = dict(model.named_parameters())
    leaves = {k: params[k].detach().requires_grad_(True) for k in names}
    rest = {k: v.detach() for k, v in params.items() if k not in leaves}
    buffers = dict(model.named_buffers())  # the model's own: train-mode statistics update as in a plain forward
    with torch.enable_grad():
        out = _one_output(functional_call(model, (leaves, rest, buffers), tuple(inputs)))
        losses = _per_example_losses(out, targets, loss_fn, reduction, n)
        wrt = list(leaves.values())
        try:
            eye = torch.eye(n, dtype=losses.dtype, device=losses.device)
            gs = torch.autograd.grad(losses, wrt, grad_outputs=eye, is_grads_batched=True, allow_unused=True)
        except RuntimeError:
            per = [torch.autograd.grad(losses[i], wrt, retain_graph=True, allow_unused=True) for i in range(n)]
            gs = [torch.stack([torch.zeros_like(w) if p[j] is None else p[j] for p in per]) for j, w in
                  enumerate(wrt)]
    gs = [torch.zeros((n, *w.shape), dtype=w.dtype, device=w.device) if g is None else g for g, w in zip(gs, wrt)]
    return dict(zip(names, gs))


class PerExampleGrads:
    """Computes ``[n, P]`` per-example gradients (parameters ``names``, flattened and
    concatenated in that order) of ``loss_fn`` for batches of ``model``."""

    def __init__(self, model: nn.Module, names: list[str]):
        self.model = model
        self.names = list(names)
        self._warned = False

    def _warn(self, why: str) -> None:
        if not self._warned:
            warnings.warn(
                f"per-example gradients: torch.func.vmap cannot be used ({why}); falling back to one batched "
                "backward over the per-example losses (slower)",
                stacklevel=4,
            )
            self._warned = True

    def __call__(self, inputs: tuple, targets, loss_fn, reduction: str) -> torch.Tensor:
        n = rows(inputs, targets)
        stats = _batch_stat_layers(self.model)
        if stats:
            self._warn(f"batch-norm layers use batch statistics in train mode: {stats[:4]}")
            return _flat(_batched_backward(self.model, self.names, inputs, targets, loss_fn, reduction, n),
                         self.names, n)
        try:
            grads = _vmapped(self.model, self.names, inputs, targets, loss_fn)
        except (RuntimeError, NotImplementedError) as err:
            if "vmap" not in str(err) and "functorch" not in str(err) and "batch" not in str(err).lower():
                raise
            self._warn(str(err).splitlines()[0][:160])
            grads = _batched_backward(self.model, self.names, inputs, targets, loss_fn, reduction, n)
        return _flat(grads, self.names, n)
