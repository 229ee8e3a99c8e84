"""Keeping a borrowed model as it was: state snapshots and temporary forward hooks."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable

import torch
from torch import nn

# the per-module dictionaries of hooks (forward, backward, state-dict... hooks)
_HOOK_DICTS = tuple(
    n for n, v in vars(nn.Module()).items() if n.startswith("_") and n.endswith("hooks") and isinstance(v, dict)
)


@contextlib.contextmanager
def model_guard(model):
    """Leave ``model`` exactly as found: training flags, requires_grad flags, buffers,
    parameter ``.grad`` and hook dictionaries are restored when the block exits."""
    if not isinstance(model, nn.Module):
        yield
        return
    modules = list(model.modules())
    training = [m.training for m in modules]
    hooks = [{n: dict(d) for n in _HOOK_DICTS if (d := m.__dict__.get(n))} for m in modules]
    params = list(model.parameters())
    requires = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    # (kernels such as batch_norm update running statistics without bumping the
    # version counter, so values are compared)
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    finally:
        for m, flag, saved in zip(modules, training, hooks):
            m.training = flag
            for name in _HOOK_DICTS:
                current = m.__dict__.get(name)
                entries = saved.get(name, {})
                if isinstance(current, dict) and current.keys() != entries.keys():
                    current.clear()
                    current.update(entries)
        with torch.no_grad():
            for p, flag, g in zip(params, requires, grads):
                p.requires_grad_(flag)
                p.grad = g
            for b, value in buffers:
                if not torch.equal(b, value):
                    b.copy_(value)


@contextlib.contextmanager
def module_hooks(registrations: Iterable[tuple[nn.Module, str, Callable]]):
    """Register hooks given as (module, kind, fn), with kind one of "forward",
    "forward_pre"; remove them all on exit."""
    handles = []
    try:
        for module, kind, fn in registrations:
            register = {"forward": module.register_forward_hook, "forward_pre": module.register_forward_pre_hook}[kind]
            handles.append(register(fn))
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def frozen_parameters(model):
    """Parameters of ``model`` (when it is a module) stop requiring grad inside the
    block: attributions never need weight gradients, and without them autograd saves
    nothing for the layers that lie between the inputs and what is differentiated.
    The flags are restored on exit."""
    params = [p for p in model.parameters() if p.requires_grad] if isinstance(model, nn.Module) else []
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p in params:
            p.requires_grad_(True)
