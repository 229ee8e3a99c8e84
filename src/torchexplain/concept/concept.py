"""Concepts, experimental sets and the interpreter base class.

A :class:`Concept` is a named set of examples (a ``data_iter`` yielding input
batches: a tensor, or a tuple of tensors for a model with several inputs). An
experimental set is a list of at least two concepts whose activations a linear
classifier separates; its key is the concept ids joined by ``"-"`` ("0-1"), as in
Captum.
"""

from __future__ import annotations

import numbers
from typing import Iterable, Sequence


class Concept:
    """A human-friendly concept given by examples, as Captum's ``Concept``.

    ``id`` (an int) identifies the concept and is its classifier label: two
    different concepts in the same call must not share it. ``name`` is a label;
    ``data_iter`` (a ``DataLoader`` or any re-iterable) yields the example batches;
    it may be None when the concept's activations are already cached.
    """

    def __init__(self, id, name: str, data_iter: Iterable | None) -> None:
        if isinstance(id, bool) or not isinstance(id, numbers.Integral):
            raise TypeError(f"Concept id must be an int (it is the concept's label); got {type(id).__name__} {id!r}")
        if not isinstance(name, str):
            raise TypeError(f"Concept name must be a str; got {type(name).__name__}")
        if not name or "/" in name or "\\" in name:
            raise ValueError(f"Concept name must be non-empty without '/' or '\\' (it names a folder); got {name!r}")
        if data_iter is not None and not hasattr(data_iter, "__iter__"):
            raise TypeError(
                f"Concept data_iter must be iterable (a DataLoader) or None; got {type(data_iter).__name__}"
            )
        self.id = int(id)
        self.name = name
        self.data_iter = data_iter

    @property
    def identifier(self) -> str:
        """``"<name>-<id>"``: the folder of this concept's cached activations."""
        return f"{self.name}-{self.id}"

    def __repr__(self) -> str:
        return f"Concept({self.id!r}, {self.name!r})"


class ConceptInterpreter:
    """Base of concept-based interpreters (Captum's ``ConceptInterpreter``): a model
    and an ``interpret(inputs, ...)`` method that subclasses define."""

    def __init__(self, model) -> None:
        self.model = model

    def interpret(self, inputs, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not implement interpret")


def concepts_to_str(concepts: Sequence[Concept]) -> str:
    """The key of an experimental set: its concept ids joined by ``"-"``."""
    return "-".join(str(c.id) for c in concepts)


def check_experimental_sets(experimental_sets, argname: str = "experimental_sets") -> list[list[Concept]]:
    """``experimental_sets`` as a list of lists of concepts, each of at least two
    distinct concepts, where an id always names the same concept object; a
    ValueError (TypeError for wrong types) naming the argument otherwise."""
    if isinstance(experimental_sets, (str, bytes)) or not isinstance(experimental_sets, Sequence):
        raise TypeError(f"{argname} must be a list of lists of Concept; got {type(experimental_sets).__name__}")
    if len(experimental_sets) == 0:
        raise ValueError(f"{argname} must contain at least one experimental set; got an empty list")
    by_id: dict = {}
    out = []
    for i, concepts in enumerate(experimental_sets):
        where = f"{argname}[{i}]"
        if isinstance(concepts, (str, bytes)) or not isinstance(concepts, Sequence):
            raise TypeError(f"{where} must be a list of Concept; got {type(concepts).__name__}")
        if len(concepts) < 2:
            raise ValueError(
                f"{where} must hold at least 2 concepts (a classifier separates them); got {len(concepts)}"
            )
        for j, c in enumerate(concepts):
            if not isinstance(c, Concept) and not all(hasattr(c, a) for a in ("id", "name", "data_iter")):
                raise TypeError(f"{where}[{j}] must be a Concept; got {type(c).__name__}")
            first = by_id.setdefault(c.id, c)
            if first is not c:
                raise ValueError(
                    f"{argname}: concept id {c.id!r} is used by two different concepts ({first!r} and {c!r}); "
                    "reuse the same Concept object or give each concept its own id"
                )
        ids = [c.id for c in concepts]
        if len(set(ids)) != len(ids):
            repeated = sorted({str(x) for x in ids if ids.count(x) > 1})
            raise ValueError(f"{where} repeats concept id(s) {', '.join(repeated)}; a set needs distinct concepts")
        out.append(list(concepts))
    return out
