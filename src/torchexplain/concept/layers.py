"""TCAV's ``layers`` argument: names or modules of the model, resolved once."""

from __future__ import annotations

import difflib

from torch import nn

from ..core.hooks.layers import layer_name


def resolve_layers(model: nn.Module, layers) -> list[tuple[str, nn.Module]]:
    """``layers`` (a dotted module name such as ``"layer3"`` or ``"conv.1"``, a
    module of ``model``, or a non-empty list of those) as ``(name, module)`` pairs.
    A name that is not a module is a ValueError naming it and listing close
    matches (or the first modules of the model)."""
    many = isinstance(layers, (list, tuple))
    if not many and not isinstance(layers, (str, nn.Module)):
        raise TypeError(f"layers must be a module name, a module or a list of those; got {type(layers).__name__}")
    items = list(layers) if many else [layers]
    if not items:
        raise ValueError("layers must name at least one layer; got an empty list")
    modules = dict(model.named_modules())
    out: list[tuple[str, nn.Module]] = []
    for i, item in enumerate(items):
        where = f"layers[{i}]" if many else "layers"
        if isinstance(item, str):
            if not item or item not in modules:
                names = [n for n in modules if n]
                close = difflib.get_close_matches(item, names, n=5, cutoff=0.5)
                hint = f"close matches: {', '.join(close)}" if close else f"its modules include: {', '.join(names[:8])}"
                raise ValueError(f"{where} {item!r} is not a module of the model; {hint}")
            out.append((item, modules[item]))
        elif isinstance(item, nn.Module):
            if not any(m is item for m in modules.values()) or item is model:
                raise ValueError(f"{where} ({type(item).__name__}) is not a submodule of the model")
            out.append((layer_name(model, item), item))
        else:
            raise TypeError(f"{where} must be a module name or a module; got {type(item).__name__}")
    names = [n for n, _ in out]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"layers names the same layer more than once: {', '.join(repeated)}")
    return out
