"""A report page: a title and sections, composed into one self-contained HTML file.

Every picture is inline (``data:`` URIs), every style and script is in the page, and
a Content-Security-Policy forbids the browser to load anything else: the page opens
offline, from a file, as fast as it parses.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

#: the browser may load nothing but the page's own inline styles, scripts and data: images
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

BASE_CSS = """
:root{--ink:#1f2328;--muted:#59636e;--line:#d8dee4;--soft:#f6f8fa;--accent:#b2182b}
*{box-sizing:border-box}
body{margin:0;color:var(--ink);
 font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
header.page{padding:18px 28px 10px;border-bottom:1px solid var(--line);background:var(--soft)}
header.page h1{margin:0 0 4px;font-size:22px;font-weight:600}
header.page p{margin:0 0 6px;color:var(--muted)}
nav.toc a{margin-right:14px;color:var(--muted);text-decoration:none;font-size:13px}
nav.toc a:hover{color:var(--ink);text-decoration:underline}
main{padding:6px 28px 40px}
section{margin:22px 0 8px}
section>h2{font-size:17px;font-weight:600;margin:0 0 8px;padding-bottom:4px;border-bottom:1px solid var(--line)}
p.lead{margin:0 0 10px;color:var(--muted);max-width:80em}
table.data{border-collapse:collapse;font-variant-numeric:tabular-nums}
table.data th,table.data td{border-bottom:1px solid var(--line);padding:4px 10px;text-align:left;vertical-align:top}
table.data th{font-weight:600;background:var(--soft);white-space:nowrap}
table.data td.num{text-align:right;white-space:nowrap}
.note{color:var(--muted);font-size:12.5px}
.side-by-side{display:flex;flex-wrap:wrap;gap:28px;align-items:flex-start}
.side-by-side>section{margin-top:22px;flex:1 1 460px;min-width:0;overflow-x:auto}
code{font-size:12.5px;background:var(--soft);padding:0 3px;border-radius:3px}
footer{padding:10px 28px;color:var(--muted);font-size:12px;border-top:1px solid var(--line)}
"""


def esc(text) -> str:
    return html.escape(str(text))


class Section:
    """A part of a page: ``title`` (its heading and table-of-contents entry; none
    when empty), ``body()`` (an HTML fragment), and the ``style`` (CSS) and ``script``
    (JavaScript) it needs, each included once per page however many sections share it."""

    title: str = ""
    anchor: str = ""
    style: str = ""
    script: str = ""
    #: a name unique on the page (the page numbers its sections), for ids and CSS classes
    uid: str = "s0"

    def body(self) -> str:
        raise NotImplementedError

    def head(self) -> str:
        """HTML for the page's head that this section needs (``<style>`` built from data)."""
        return ""


class HTMLSection(Section):
    """A section holding a given HTML fragment."""

    def __init__(self, title: str, body: str, anchor: str = "", style: str = ""):
        self.title, self._body, self.anchor, self.style = title, body, anchor, style

    def body(self) -> str:
        return self._body


class SideBySide(Section):
    """Sections shown next to each other on a wide screen (one under the other on a
    narrow one)."""

    def __init__(self, *sections: Section | None):
        self.sections = [s for s in sections if s is not None]


def _anchor(section: Section, taken: set[str]) -> str:
    base = section.anchor or re.sub(r"[^a-z0-9]+", "-", section.title.lower()).strip("-") or "section"
    anchor, k = base, 2
    while anchor in taken:
        anchor, k = f"{base}-{k}", k + 1
    taken.add(anchor)
    return anchor


class Page:
    """``Page(title).add(section, ...)`` then ``.html()`` or ``.write(path)``."""

    def __init__(self, title: str, subtitle: str = "", sections=()):
        self.title, self.subtitle = title, subtitle
        self.sections: list[Section] = list(sections)

    def add(self, *sections: Section | None) -> "Page":
        self.sections += [s for s in sections if s is not None]
        return self

    def _section(self, section: Section, taken: set[str], toc: list[str]) -> str:
        if isinstance(section, SideBySide):
            inner = "".join(self._section(s, taken, toc) for s in section.sections)
            return f'<div class="side-by-side">{inner}</div>'
        anchor = _anchor(section, taken)
        heading = f"<h2>{esc(section.title)}</h2>" if section.title else ""
        if section.title:
            toc.append(f'<a href="#{anchor}">{esc(section.title)}</a>')
        return f'<section id="{anchor}">{heading}{section.body()}</section>'

    def html(self) -> str:
        from .. import __version__

        taken: set[str] = set()
        toc: list[str] = []
        leaves = [c for s in self.sections for c in (s.sections if isinstance(s, SideBySide) else [s])]
        for number, leaf in enumerate(leaves, 1):
            leaf.uid = f"s{number}"
        body = "\n".join(self._section(s, taken, toc) for s in self.sections)
        styles = list(dict.fromkeys([BASE_CSS] + [s.style for s in leaves if s.style]))
        scripts = list(dict.fromkeys(s.script for s in leaves if s.script))
        heads = "".join(s.head() for s in leaves)
        nav = f'<nav class="toc">{"".join(toc)}</nav>' if len(toc) > 1 else ""
        subtitle = f"<p>{esc(self.subtitle)}</p>" if self.subtitle else ""
        script = f"<script>{''.join(scripts)}</script>" if scripts else ""
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(self.title)}</title><style>{''.join(styles)}</style>{heads}</head>\n"
            f'<body><header class="page"><h1>{esc(self.title)}</h1>{subtitle}{nav}</header>\n'
            f"<main>\n{body}\n</main>\n"
            f"<footer>torchexplain {esc(__version__)}: a self-contained page; it loads nothing from the network."
            f"</footer>{script}</body></html>\n"
        )

    def write(self, path) -> Path:
        path = Path(path)
        path.write_text(self.html(), encoding="utf-8")
        return path
