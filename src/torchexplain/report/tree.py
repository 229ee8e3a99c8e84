"""The neural-backed decision tree in a report: each input's decisions, and the tree
as an outline with that path open and the rest collapsed."""

from __future__ import annotations

from ..nbdt.render import TREE_CSS, TREE_JS, steps_html, tree_data, tree_view
from .page import Section, esc

TREE_SECTION_CSS = TREE_CSS + """
.tree-row{margin:6px 0 10px}
.tree-row>summary{cursor:pointer}
.tree-row .nbdt{margin:6px 0 0 1.2em}
"""


class TreeSection(Section):
    """``tree``: a :class:`~torchexplain.nbdt.TreeDecisions`. Each row gives its
    caption, prediction and decisions; its outline is folded under them unless
    ``open_trees``. ``lead``: an HTML sentence on where the tree came from;
    ``link``: the address of a page with the whole tree, linked from the lead."""

    anchor = "tree"
    style = TREE_SECTION_CSS
    script = TREE_JS

    def __init__(self, tree, lead: str = "", open_trees: bool = False, title: str = "Neural-backed decision tree",
                 link: str = ""):
        self.tree, self.lead, self.open_trees, self.title, self.link = tree, lead, open_trees, title, link

    @property
    def data_id(self) -> str:
        return f"nbdt-data-{self.uid}"

    def _row(self, index: int, caption: str, decisions: list[dict]) -> str:
        view = tree_view(self.tree.hierarchy, decisions or None, self.data_id)
        if not decisions:
            return f'<div class="tree-row">{f"<h3>{esc(caption)}</h3>" if caption else ""}{view}</div>'
        prediction = self.tree.prediction(index)
        summary = (f"<b>{esc(caption)}</b>: " if caption else "") + \
            f"predicted <b>{esc(prediction)}</b> &middot; {steps_html(decisions)}"
        state = " open" if self.open_trees else ""
        return f'<details class="tree-row" data-row="{index}"{state}><summary>{summary}</summary>{view}</details>'

    def body(self) -> str:
        h = self.tree.hierarchy
        kind = "hard (greedy)" if self.tree.hard else "soft"
        lead = self.lead or (f"{h.n_classes} classes under {h.n_nodes - h.n_classes} inner nodes, "
                             f"depth {h.depth()}; {kind} inference.")
        link = f' <a href="{esc(self.link)}">The tree on a page of its own</a>.' if self.link else ""
        rows = self.tree.rows or [("", [])]
        body = "".join(self._row(i, c, d) for i, (c, d) in enumerate(rows))
        hint = ("Each input's path is open, with the probability of each decision; its siblings are collapsed: "
                "click &#9656; to open one.")
        return f'<p class="lead">{lead}{link} {hint}</p>{body}{tree_data(h, self.data_id)}'
