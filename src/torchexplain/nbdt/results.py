"""A tree's decisions for a batch, as data: the hierarchy and, per input, its caption
and the path ``forward_with_decisions`` gave. ``to_dict()`` is JSON-ready and
``TreeDecisions.from_dict`` reads it back; :class:`~torchexplain.report.TreeSection`
draws it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .hierarchy import Hierarchy


def _plain(step: dict) -> dict:
    parent = step.get("parent")
    return {"node": int(step["node"]), "name": str(step["name"]), "prob": float(step["prob"]),
            "parent": None if parent is None else int(parent)}


def _hierarchy(data: dict) -> Hierarchy:
    """The hierarchy ``Hierarchy.to_dict`` wrote, with its node ids kept (the
    decisions refer to them; ``Hierarchy.from_json`` renumbers)."""
    ids = [int(node["id"]) for node in data["nodes"]]
    if sorted(ids) != list(range(len(ids))):
        return Hierarchy.from_json(data)
    children: list[list[int]] = [[] for _ in ids]
    for link in data.get("links", data.get("edges", [])):
        children[int(link["source"])].append(int(link["target"]))
    classes: list = [None] * len(ids)
    names = [""] * len(ids)
    for node in data["nodes"]:
        classes[int(node["id"])] = node.get("class")
        names[int(node["id"])] = str(node.get("label", node["id"]))
    graph = data.get("graph", {})
    return Hierarchy(children, classes, names, int(graph.get("root", 0)), list(graph.get("class_names", [])))


@dataclass
class TreeDecisions:
    """``rows[i]`` is ``(caption, decisions)``: the decisions in nbdt's form (the root
    entry first, then one ``{"node", "name", "prob", "parent"}`` per decision), or an
    empty list for a row shown without a path. ``hard``: hard (greedy) inference."""

    hierarchy: Hierarchy
    rows: list[tuple[str, list[dict]]] = field(default_factory=list)
    hard: bool = False

    def prediction(self, row: int) -> str | None:
        """The class name the path of ``rows[row]`` ends at (None without a path)."""
        steps = [s for s in self.rows[row][1] if s.get("parent") is not None]
        if not steps:
            return None
        leaf = int(steps[-1]["node"])
        cls = self.hierarchy.classes[leaf]
        return self.hierarchy.class_names[cls] if cls is not None else self.hierarchy.names[leaf]

    def to_dict(self) -> dict:
        return {"hierarchy": self.hierarchy.to_dict(), "hard": self.hard,
                "rows": [{"caption": c, "decisions": [_plain(s) for s in d]} for c, d in self.rows]}

    @classmethod
    def from_dict(cls, data: dict) -> "TreeDecisions":
        rows = [(str(r["caption"]), [_plain(s) for s in r["decisions"]]) for r in data.get("rows", [])]
        return cls(_hierarchy(data["hierarchy"]), rows, bool(data.get("hard", False)))

    def to_json(self, path: str | Path | None = None) -> str:
        """:meth:`to_dict` as JSON text; written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            Path(path).write_text(text)
        return text
