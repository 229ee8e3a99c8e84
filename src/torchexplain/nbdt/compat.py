"""nbdt's constructor arguments, ``HardNBDT(pretrained=..., dataset=..., arch=...,
model=..., hierarchy=...)``, resolved to a model and a :class:`Hierarchy`.

Nothing is downloaded: nbdt's pretrained checkpoints and its shipped WordNet trees are
not available, and asking for them is a clear error that says what to pass instead.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from .hierarchy import Hierarchy, induce_hierarchy
from .utils import dataset_classes

#: nbdt's positional order, and ours
NBDT_ORDER = ("dataset", "model", "arch", "path_graph", "path_wnids", "classes", "hierarchy", "pretrained")
OUR_ORDER = ("model", "hierarchy")
KEYWORDS = frozenset(NBDT_ORDER)


def nbdt_arguments(args: tuple, kwargs: dict) -> tuple[nn.Module, Hierarchy]:
    """``(model, hierarchy)`` from either form: ours, ``(model, hierarchy)``, or
    nbdt's, ``(dataset, model, arch, path_graph, path_wnids, classes, hierarchy,
    pretrained)`` (recognised by a dataset name first)."""
    order = NBDT_ORDER if args and isinstance(args[0], str) else OUR_ORDER
    if len(args) > len(order):
        raise TypeError(f"at most {len(order)} positional arguments ({', '.join(order)}); got {len(args)}")
    unknown = sorted(set(kwargs) - KEYWORDS)
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {', '.join(unknown)}; accepted: {', '.join(NBDT_ORDER)}")
    given = dict(zip(order, args))
    twice = sorted(set(given) & set(kwargs))
    if twice:
        raise TypeError(f"argument(s) {', '.join(twice)} given both by position and by keyword")
    given.update(kwargs)
    return _resolve(**given)


def _resolve(model=None, hierarchy=None, dataset=None, arch=None, pretrained=False, path_graph=None,
             path_wnids=None, classes=None) -> tuple[nn.Module, Hierarchy]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module (the classifier whose logits the tree decides on); "
                        f"got {type(model).__name__}")
    if pretrained:
        what = f"the checkpoint of {arch} on {dataset}" if arch or dataset else "a checkpoint"
        raise ValueError(
            f"pretrained=True asks nbdt for {what}, which would be downloaded; torchexplain downloads nothing. "
            "Load the weights into the model yourself (model.load_state_dict(torch.load(PATH))) and pass "
            "pretrained=False (the default), with hierarchy= a tree JSON path or 'induced'"
        )
    if path_wnids is not None:
        raise ValueError("path_wnids (WordNet ids) is not used: nodes are named from the class names; "
                         "pass classes=[names...] or dataset= instead")
    names = _class_names(classes, dataset)
    if hierarchy is None:
        hierarchy = path_graph
    elif path_graph is not None:
        raise ValueError("give hierarchy= or path_graph=, not both")
    return model, _hierarchy(hierarchy, model, names)


def _class_names(classes, dataset) -> list[str] | None:
    if classes is not None:
        if isinstance(classes, str) or not all(isinstance(c, str) for c in classes):
            raise TypeError("classes must be a sequence of class names (strings)")
        return list(classes)
    return None if dataset is None else dataset_classes(dataset)


def _hierarchy(hierarchy, model: nn.Module, names) -> Hierarchy:
    """A Hierarchy as given; a JSON tree (a path, a JSON string or a dict); or, for
    None and nbdt's "induced" / "induced-ARCH", the tree induced from the model's
    final linear layer (nbdt's induced hierarchy)."""
    if isinstance(hierarchy, Hierarchy):
        if names is not None and len(names) != hierarchy.n_classes:
            raise ValueError(f"the hierarchy has {hierarchy.n_classes} classes but {len(names)} class names "
                             "were given (classes= or dataset=)")
        return hierarchy
    if hierarchy is None or (isinstance(hierarchy, str) and hierarchy.split("-", 1)[0] == "induced"):
        return induce_hierarchy(model, names)
    if isinstance(hierarchy, dict) or isinstance(hierarchy, Path):
        return Hierarchy.from_json(hierarchy, names)
    if isinstance(hierarchy, str):
        text = hierarchy.strip()
        if text.startswith("{") or text.endswith(".json") or Path(text).is_file():
            return Hierarchy.from_json(hierarchy, names)
        raise ValueError(
            f"hierarchy {hierarchy!r} names one of nbdt's shipped trees, which torchexplain does not have; "
            "pass a tree JSON path, a Hierarchy, or 'induced' (from the model's final linear layer)"
        )
    raise TypeError("hierarchy must be a Hierarchy, a tree JSON path, a dict or 'induced'; "
                    f"got {type(hierarchy).__name__}")
