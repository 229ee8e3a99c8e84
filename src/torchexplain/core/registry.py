"""The method registry behind :func:`torchexplain.explain`: each method's name, aliases
and one-call defaults, registered by a decorator on its class::

    @register("integrated_gradients", aliases=("ig",), delta=True, order=30,
              description="integrated gradients from a zero baseline")
    class IntegratedGradients(...): ...

and :class:`MethodCall`, the one step that builds a registered method for a model,
merges its defaults with the caller's keyword arguments and calls ``attribute``
(used by ``explain``, ``evaluate`` and ``randomization_check``).

The table fills as the method modules are imported; :mod:`torchexplain.methods`
imports them all, so look names up there (``methods.resolve``, ``methods.available``).
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import torch
from torch import Tensor


def _no_defaults(x: Tensor) -> dict:
    return {}


@dataclass(frozen=True)
class MethodSpec:
    """How :func:`explain` builds and calls one method: ``build(model)`` gives the
    attribution object, ``defaults(inputs)`` the ``attribute`` keyword arguments a
    one-call user gets, ``delta`` whether it returns a convergence delta. ``order``
    places it in :func:`available` (the demo's column order); ``listed=False`` keeps
    it out of :func:`available` (and so out of ``method="all"``, the demo and the
    app) while :func:`resolve` still finds it by name: an adversarial attack is
    input-shaped but not an attribution."""

    name: str
    build: Callable  # model -> attribution object
    defaults: Callable[[Tensor], dict] = _no_defaults  # inputs -> attribute() kwargs
    aliases: tuple[str, ...] = ()
    delta: bool = False  # returns a convergence delta
    description: str = ""
    extra: dict = field(default_factory=dict)
    order: float = math.inf
    listed: bool = True


METHODS: dict[str, MethodSpec] = {}  # name or alias -> spec, in the order of available()
_INDEX: dict[str, int] = {}  # name -> when it was first registered (ties of ``order``)


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def _constant(values: dict) -> Callable[[Tensor], dict]:
    def defaults(x: Tensor) -> dict:
        return dict(values)

    return defaults


def add(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` to the table (re-adding a name replaces its spec); a name or alias
    that another method holds is a ValueError."""
    keys = [spec.name, *spec.aliases]
    if len(set(keys)) != len(keys) or any(_key(k) != k for k in keys):
        raise ValueError(f"method names and aliases must be distinct, lower case, with '_' for spaces; got {keys}")
    taken = [k for k in keys if k in METHODS and METHODS[k].name != spec.name]
    if taken:
        raise ValueError(f"method {spec.name!r}: {', '.join(taken)} already name(s) method {METHODS[taken[0]].name!r}")
    _INDEX.setdefault(spec.name, len(_INDEX))
    table = {k: s for k, s in METHODS.items() if s.name != spec.name}
    table.update(dict.fromkeys(keys, spec))
    order = sorted(table.items(), key=lambda item: (item[1].order, _INDEX[item[1].name]))
    METHODS.clear()
    METHODS.update(order)
    return spec


def register(name: str, *, aliases: tuple[str, ...] = (), delta: bool = False, description: str = "",
             defaults: Callable[[Tensor], dict] | dict | None = None, build: Callable | None = None,
             order: float = math.inf, extra: dict | None = None, listed: bool = True):
    """Class decorator: register the decorated class under ``name`` (and ``aliases``).
    ``build(model)`` makes the object (the class itself by default: ``cls(model)``);
    ``defaults`` is a dict, or a function of the inputs giving one; ``order`` places
    the method in :func:`available` (unordered methods come last, as registered);
    ``extra``: anything a front end wants to know about the method; ``listed``: see
    :class:`MethodSpec`. Stack several
    decorators to register one class under several names."""

    def decorate(cls):
        add(MethodSpec(
            name, cls if build is None else build,
            _no_defaults if defaults is None else _constant(defaults) if isinstance(defaults, dict) else defaults,
            tuple(aliases), bool(delta), description, dict(extra or {}), order, bool(listed),
        ))
        return cls

    return decorate


def resolve(name: str) -> MethodSpec:
    """The spec for a method name or alias (case and dashes ignored)."""
    if not isinstance(name, str):
        raise TypeError(f"method must be a name or a list of names; got {type(name).__name__}")
    key = _key(name)
    if key not in METHODS:
        known = list(dict.fromkeys(spec.name for spec in METHODS.values()))
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(known)}")
    return METHODS[key]


def available() -> list[str]:
    """Canonical names of the listed methods (the attributions), in registry order."""
    return list(dict.fromkeys(spec.name for spec in METHODS.values() if spec.listed))


# -- one-call defaults ------------------------------------------------------------------
def zero_and_mean_baselines(x: Tensor) -> Tensor:
    """A small baseline distribution: the black image and the batch's mean image."""
    return torch.cat([torch.zeros_like(x[:1]), x.mean(0, keepdim=True)])


def _cells(x: Tensor, per_side: int) -> int:
    return max(1, -(-min(x.shape[-2:]) // per_side))


def grid_mask(per_side: int, **fixed) -> Callable[[Tensor], dict]:
    """Image inputs get a grid of about ``per_side`` x ``per_side`` feature cells;
    other inputs keep one feature per value. ``fixed``: further keyword arguments."""

    def defaults(x: Tensor) -> dict:
        if x.dim() != 4:
            return dict(fixed)
        from ..masks import grid

        return {"feature_mask": grid(x, _cells(x, per_side)), **fixed}

    return defaults


def occlusion_window(x: Tensor) -> dict:
    """A window of about an eighth of the image side, sliding by half a window."""
    if x.dim() != 4:
        return {"sliding_window_shapes": (1,) * (x.dim() - 1)}
    side = _cells(x, 8)
    step = max(1, side // 2)
    return {"sliding_window_shapes": (x.shape[1], side, side), "strides": (x.shape[1], step, step)}


def noise_level(x: Tensor) -> float:
    """SmoothGrad's suggestion: noise of about 15% of the input's range."""
    return float(0.15 * (x.max() - x.min()).clamp_min(1e-12))


# -- build and call ---------------------------------------------------------------------
def accepted(method, kwargs: dict) -> dict:
    """The entries of ``kwargs`` that ``method.attribute`` takes (all of them when it
    takes ``**kwargs``, as NoiseTunnel does for its wrapped method)."""
    params = inspect.signature(method.attribute).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(kwargs)
    return {k: v for k, v in kwargs.items() if k in params}


class Attributed(NamedTuple):
    """What one :class:`MethodCall` gives: the attributions as ``attribute`` returned
    them, the convergence delta (or None), the keyword arguments ``attribute`` got
    (without ``return_convergence_delta``) and the seconds it took."""

    attributions: object
    delta: Tensor | None
    arguments: dict
    seconds: float


@dataclass(frozen=True)
class MethodCall:
    """A registered method built for one model, with the caller's keyword arguments
    that its ``attribute`` takes (:func:`accepted`)."""

    spec: MethodSpec
    method: object
    kwargs: dict

    @classmethod
    def build(cls, spec: MethodSpec, model, kwargs: dict) -> "MethodCall":
        method = spec.build(model)
        return cls(spec, method, accepted(method, kwargs))

    def __call__(self, inputs: Tensor, target, *, delta: bool = False) -> Attributed:
        """``attribute(inputs, target=target, **defaults(inputs), **kwargs)``; with
        ``delta`` (and a method that has one), also the convergence delta."""
        arguments = {**self.spec.defaults(inputs), **self.kwargs}
        delta = delta and self.spec.delta
        flag = {"return_convergence_delta": True} if delta else {}
        start = time.perf_counter()
        out = self.method.attribute(inputs, target=target, **arguments, **flag)
        seconds = time.perf_counter() - start
        attributions, convergence = out if delta else (out, None)
        return Attributed(attributions, convergence, arguments, seconds)


def method_calls(specs, model, kwargs: dict, *, strict: bool = True) -> list[MethodCall]:
    """Every spec built for ``model`` with the entries of ``kwargs`` it takes; with
    ``strict``, an entry that no method takes is a TypeError naming it."""
    calls = [MethodCall.build(spec, model, kwargs) for spec in specs]
    unused = set(kwargs).difference(*(call.kwargs for call in calls))
    if strict and unused:
        raise TypeError(f"no chosen method takes the argument(s) {', '.join(sorted(unused))}")
    return calls
