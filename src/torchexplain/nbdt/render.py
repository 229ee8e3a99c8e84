"""Drawing a hierarchy: an indented text tree, and a self-contained HTML page with
an inline SVG tree (no scripts, no CDN) highlighting one sample's decisions."""

from __future__ import annotations

import html
from typing import Sequence

X_STEP, Y_STEP, MARGIN, RADIUS = 90, 80, 60, 7


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


def _layout(hierarchy) -> dict[int, tuple[float, float]]:
    """Leaves evenly spaced left to right in tree order; an inner node centred over
    its children; depth downwards."""
    pos: dict[int, tuple[float, float]] = {}
    next_x = [MARGIN]

    def place(node: int, depth: int) -> float:
        y = MARGIN + depth * Y_STEP
        kids = hierarchy.children[node]
        if not kids:
            x = next_x[0]
            next_x[0] += X_STEP
        else:
            xs = [place(child, depth + 1) for child in kids]
            x = (min(xs) + max(xs)) / 2
        pos[node] = (x, y)
        return x

    place(hierarchy.root, 0)
    return pos


def tree_svg(hierarchy, decisions: Sequence[dict] | None = None) -> str:
    chosen = _chosen(decisions)
    on_path = set(chosen) | ({hierarchy.root} if chosen else set())
    pos = _layout(hierarchy)
    width = max(x for x, _ in pos.values()) + MARGIN
    height = max(y for _, y in pos.values()) + MARGIN
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
             f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="sans-serif" font-size="12">']
    for parent, kids in enumerate(hierarchy.children):
        for child in kids:
            (x1, y1), (x2, y2) = pos[parent], pos[child]
            hot = parent in on_path and child in chosen
            colour, w = ("#d62728", 3) if hot else ("#999", 1)
            parts.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{colour}" '
                         f'stroke-width="{w}"/>')
            if hot:
                parts.append(f'<text x="{(x1 + x2) / 2 + 4:.1f}" y="{(y1 + y2) / 2:.1f}" fill="#d62728">'
                             f'{100 * chosen[child]:.1f}%</text>')
    for node, (x, y) in pos.items():
        fill = "#d62728" if node in on_path else ("#fff" if hierarchy.children[node] else "#ddd")
        name = html.escape(hierarchy.names[node])
        dy = -RADIUS - 4 if hierarchy.children[node] else RADIUS + 14
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{RADIUS}" fill="{fill}" stroke="#333"/>')
        parts.append(f'<text x="{x:.1f}" y="{y + dy:.1f}" text-anchor="middle"><title>{name}</title>{name}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _steps_text(decisions: Sequence[dict]) -> str:
    return " &rarr; ".join(f"{html.escape(d['name'])} ({100 * d['prob']:.2f}%)" for d in _real(decisions))


def trees_html(hierarchy, rows: Sequence[tuple[str, Sequence[dict] | None]],
               title: str = "Neural-backed decision tree") -> str:
    """A self-contained page: for each ``(caption, decisions)`` row, the decisions and
    the tree with that path highlighted (one plain tree when ``rows`` is empty)."""
    sections = []
    for caption, decisions in rows or [("", None)]:
        head = f"<h2>{html.escape(caption)}</h2>" if caption else ""
        steps = f"<p>Decisions: {_steps_text(decisions)}</p>" if decisions else ""
        sections.append(f'{head}{steps}<div style="overflow-x: auto">{tree_svg(hierarchy, decisions)}</div>')
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title></head>\n<body style=\"font-family: sans-serif\">\n"
        f"<h1>{html.escape(title)}</h1>\n" + "\n".join(sections) + "\n</body></html>\n"
    )


def tree_html(hierarchy, decisions: Sequence[dict] | None = None, title: str = "Neural-backed decision tree") -> str:
    return trees_html(hierarchy, [("", decisions)], title)
