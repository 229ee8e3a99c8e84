"""Drawing a hierarchy: an indented text tree, and an HTML outline of the tree that
fits any screen.

The outline opens the decision path (each decision with its probability) and shows
every sibling along it collapsed, with the number of classes under it; a click on a
collapsed node opens it (a few lines of inline script build its children from the
tree, embedded once per page as JSON). A 1000-class tree is as wide as its depth.
Pages are composed by :mod:`torchexplain.report` (:class:`~torchexplain.report.TreeSection`).
"""

from __future__ import annotations

import html
import json
from typing import Sequence


def _real(decisions: Sequence[dict] | None) -> list[dict]:
    """The decisions without nbdt's root entry (``parent`` None)."""
    return [d for d in (decisions or []) if d.get("parent", -1) is not None]


def _chosen(decisions: Sequence[dict] | None) -> dict[int, float]:
    return {int(d["node"]): float(d["prob"]) for d in _real(decisions)}


def tree_text(hierarchy, decisions: Sequence[dict] | None = None) -> str:
    """One line per node, indented by depth; nodes on the decision path are marked
    with ``*`` and their probability."""
    chosen = _chosen(decisions)
    lines = []

    def walk(node: int, depth: int) -> None:
        mark = f"  * {100 * chosen[node]:.2f}%" if node in chosen else ""
        lines.append(f"{'  ' * depth}{hierarchy.names[node]}{mark}")
        for child in hierarchy.children[node]:
            walk(child, depth + 1)

    walk(hierarchy.root, 0)
    return "\n".join(lines)


def steps_html(decisions: Sequence[dict]) -> str:
    """The decisions as ``name (p%) → name (p%) …`` HTML."""
    return " &rarr; ".join(f"{html.escape(d['name'])} ({100 * d['prob']:.2f}%)" for d in _real(decisions))


def tree_data(hierarchy, data_id: str) -> str:
    """The tree as JSON in a ``<script type="application/json">`` block, for the
    outline's script: node names, children and the number of classes under each."""
    counts = [0] * hierarchy.n_nodes

    def count(node: int) -> int:
        counts[node] = 1 if hierarchy.is_leaf(node) else sum(count(c) for c in hierarchy.children[node])
        return counts[node]

    count(hierarchy.root)
    data = {"names": hierarchy.names, "children": hierarchy.children, "classes": counts}
    text = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return f'<script type="application/json" id="{html.escape(data_id)}">{text}</script>'


def _node(hierarchy, node: int, chosen: dict[int, float], open_nodes: set[int], counts) -> str:
    name = html.escape(hierarchy.names[node])
    kids = hierarchy.children[node]
    if node in chosen:
        p = chosen[node]
        label = (f'<span class="nbdt-name">{name}</span> <span class="nbdt-prob">{100 * p:.1f}%</span>'
                 f'<span class="nbdt-bar" style="width:{60 * p:.0f}px"></span>')
    else:
        label = f'<span class="nbdt-name">{name}</span>'
    cls = ["nbdt-node"] + (["nbdt-path"] if node in chosen or node == hierarchy.root else [])
    if not kids:
        return f'<li class="{" ".join(cls + ["nbdt-leaf"])}" data-node="{node}">{label}</li>'
    if node in open_nodes:
        inner = "".join(_node(hierarchy, c, chosen, open_nodes, counts) for c in kids)
        return (f'<li class="{" ".join(cls)}" data-node="{node}"><button class="nbdt-toggle" '
                f'aria-expanded="true" title="collapse">&#9662;</button>{label}<ul>{inner}</ul></li>')
    return (f'<li class="{" ".join(cls)}" data-node="{node}"><button class="nbdt-toggle" aria-expanded="false" '
            f'title="expand">&#9656;</button>{label} <span class="nbdt-count">{counts[node]} classes</span></li>')


def tree_view(hierarchy, decisions: Sequence[dict] | None, data_id: str) -> str:
    """The outline of ``hierarchy`` (an HTML fragment): the decision path open,
    everything else collapsed; without ``decisions``, the root and its children.
    ``data_id`` names the :func:`tree_data` block that its script reads."""
    chosen = _chosen(decisions)
    open_nodes = {hierarchy.root} | {n for n in chosen if hierarchy.children[n]}
    counts = [len(hierarchy.leaves(n)) for n in range(hierarchy.n_nodes)]
    body = _node(hierarchy, hierarchy.root, chosen, open_nodes, counts)
    return f'<div class="nbdt" data-tree="{html.escape(data_id)}"><ul>{body}</ul></div>'


TREE_CSS = """
.nbdt ul{list-style:none;margin:0;padding-left:1.4em;border-left:1px solid #ccd}
.nbdt>ul{border-left:none;padding-left:0}
.nbdt li{margin:2px 0;white-space:nowrap}
.nbdt-toggle{border:none;background:none;cursor:pointer;width:1.4em;padding:0;color:#555;font-size:.9em}
.nbdt-leaf{padding-left:1.4em}
.nbdt-path>.nbdt-name{color:#b2182b;font-weight:600}
.nbdt-prob{color:#b2182b;font-variant-numeric:tabular-nums;margin-left:.3em}
.nbdt-bar{display:inline-block;height:.55em;background:#b2182b;opacity:.55;margin-left:.4em;border-radius:2px}
.nbdt-count{color:#888;font-size:.85em;margin-left:.3em}
"""

#: opens and closes outline nodes; builds a collapsed node's children on first open
TREE_JS = """
(function(){
var cache={};
function data(id){return cache[id]||(cache[id]=JSON.parse(document.getElementById(id).textContent));}
function esc(s){var d=document.createElement('span');d.textContent=s;return d.innerHTML;}
function item(t,n){
  var li=document.createElement('li');li.className='nbdt-node';li.dataset.node=n;
  var name='<span class="nbdt-name">'+esc(t.names[n])+'</span>';
  if(!t.children[n].length){li.className+=' nbdt-leaf';li.innerHTML=name;return li;}
  li.innerHTML='<button class="nbdt-toggle" aria-expanded="false" title="expand">&#9656;</button>'+name+
    ' <span class="nbdt-count">'+t.classes[n]+' classes</span>';
  return li;
}
document.addEventListener('click',function(e){
  var b=e.target.closest&&e.target.closest('.nbdt-toggle');if(!b)return;
  var li=b.parentElement,ul=li.querySelector(':scope>ul');
  if(!ul){
    var t=data(li.closest('.nbdt').dataset.tree);ul=document.createElement('ul');
    t.children[li.dataset.node].forEach(function(c){ul.appendChild(item(t,c));});
    li.appendChild(ul);
  }else{ul.hidden=!ul.hidden;}
  b.setAttribute('aria-expanded',String(!ul.hidden));b.innerHTML=ul.hidden?'&#9656;':'&#9662;';
  b.title=ul.hidden?'expand':'collapse';
});
})();
"""


def trees_html(hierarchy, rows: Sequence[tuple[str, Sequence[dict] | None]],
               title: str = "Neural-backed decision tree") -> str:
    """A self-contained page: for each ``(caption, decisions)`` row, the decisions and
    the outline with that path open (one plain outline when ``rows`` is empty)."""
    from ..report import Page, TreeSection
    from .results import TreeDecisions

    tree = TreeDecisions(hierarchy, [(c, list(d) if d else []) for c, d in rows])
    return Page(title).add(TreeSection(tree, open_trees=True, title="")).html()


def tree_html(hierarchy, decisions: Sequence[dict] | None = None, title: str = "Neural-backed decision tree") -> str:
    return trees_html(hierarchy, [("", decisions)], title)
