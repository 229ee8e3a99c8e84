"""The report section of prompt attributions (LLM attribution): which prompt tokens
made a language model produce a target text, for one or more methods.

The section reads plain data: per method, a
:class:`~torchexplain.viz.llm.TokenAttribution` (tokens and lists of numbers) or
anything it is built from (an ``LLMAttributionResult``, a dict of its fields as
``text.json`` holds them). Each method's table is the one
:func:`~torchexplain.viz.llm.token_attr_html` draws; above them a summary gives each
method's most influential prompt tokens and its time.

>>> page = text_page({"feature-ablation": result}, prompt="Dogs are", target=" loyal")
>>> page.write("report.html")
"""

from __future__ import annotations

from typing import Any, Mapping

from ..viz.llm import LLM_CSS, attribution_tables, named_attributions, visible_token
from .page import Page, Section, esc

__all__ = ["TextAttributionSection", "text_page"]

TEXT_CSS = LLM_CSS + """
.tx-llm .tx-given{margin:0 0 10px}
.tx-llm .tx-given span{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;white-space:pre-wrap;
 background:var(--soft);padding:0 3px;border-radius:3px}
table.data.tx-summary{margin:0 0 16px}
table.data.tx-summary td.tok{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;white-space:pre}
"""

LEAD = (
    "How much each prompt token contributes to the log-probability the model gives the target text. The first row of "
    "each table attributes the whole target; each further row one target token (methods that only explain the whole "
    "target have no such rows). Green tokens make the target more likely, red ones less; every row kind has its own "
    "colour scale, symmetric about zero.")


class TextAttributionSection(Section):
    """One table per method of prompt-token attributions, after a summary of each
    method's top tokens (``top`` of them, by magnitude) and its time.

    Args:
        attributions: ``{method: TokenAttribution or result or dict}`` (or one result).
        prompt: the prompt's text, shown above the tables when given.
        target: the target's text, likewise.
        seconds: ``{method: seconds}`` for the summary's time column.
        lead: the paragraph under the title, HTML (a default explains the tables).
    """

    title = "Prompt attributions"
    anchor = "prompt-attributions"
    style = TEXT_CSS

    def __init__(self, attributions: Any, *, prompt: str | None = None, target: str | None = None,
                 seconds: Mapping[str, float] | None = None, lead: str = "", top: int = 5):
        self.attributions = named_attributions(attributions)
        self.prompt, self.target, self.lead, self.top = prompt, target, lead, top
        self.seconds = dict(seconds or {})

    def _given(self) -> str:
        parts = [f"{what}: <span>{esc(text)}</span>" for what, text in (("prompt", self.prompt),
                                                                         ("target", self.target)) if text is not None]
        return f'<p class="tx-given">{" &nbsp; ".join(parts)}</p>' if parts else ""

    def _summary(self) -> str:
        if all(name is None for name, _ in self.attributions):
            return ""
        timed = any(name in self.seconds for name, _ in self.attributions)
        head = "<tr><th>method</th><th>top prompt tokens (whole target)</th>" + ("<th>seconds</th>" if timed else "")
        rows = []
        for name, a in self.attributions:
            tops = " ".join(f'<span title="{v!r}">{esc(visible_token(t))} {v:+.3g}</span>' for t, v in a.top(self.top))
            cells = f"<td>{esc(name)}</td><td class=\"tok\">{tops}</td>"
            if timed:
                s = self.seconds.get(name)
                cells += f'<td class="num">{"" if s is None else f"{s:.3f}"}</td>'
            rows.append(f"<tr>{cells}</tr>")
        return f'<table class="data tx-summary">{head}</tr>{"".join(rows)}</table>'

    def body(self) -> str:
        return (f'<div class="tx-llm"><p class="lead">{self.lead or LEAD}</p>{self._given()}'
                f"{self._summary()}{attribution_tables(self.attributions)}</div>")


def text_page(attributions: Any, *, title: str = "torchexplain: prompt attributions", subtitle: str = "",
              prompt: str | None = None, target: str | None = None, seconds: Mapping[str, float] | None = None,
              lead: str = "") -> Page:
    """A page with one :class:`TextAttributionSection` (the ``explain-text`` report)."""
    section = TextAttributionSection(attributions, prompt=prompt, target=target, seconds=seconds, lead=lead)
    return Page(title, subtitle).add(section)
