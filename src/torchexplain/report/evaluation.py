"""The evaluation table in a report: methods ranked by each faithfulness metric."""

from __future__ import annotations

from ..metrics.table import format_stderr
from .page import Section, esc

EVALUATION_CSS = """
table.eval td.best{background:#fbe9e7}
table.eval .rank{color:var(--muted);font-size:11.5px;margin-left:4px}
table.eval .se{color:var(--muted);font-size:11.5px}
"""


def evaluation_html(table) -> str:
    """An :class:`~torchexplain.metrics.EvaluationTable` as an HTML fragment: mean ±
    standard error ("n/a" over one example) and rank per metric, the best shaded,
    then what each metric measures and the table's notes."""
    head = "".join(f"<th>{esc(m)} {table.arrow(m)}</th>" for m in table.metrics)
    lines = []
    for row in table.rows:
        cells = []
        for m in table.metrics:
            rank = row[f"{m}_rank"]
            best = ' class="num best"' if rank == 1 else ' class="num"'
            rank_text = f'<span class="rank">#{rank}</span>' if rank is not None else ""
            cells.append(f'<td{best} data-rank="{rank if rank is not None else ""}">{row[m]:.4g} '
                         f'<span class="se">± {format_stderr(row[f"{m}_stderr"])}</span>{rank_text}</td>')
        lines.append(f'<tr data-method="{esc(row["method"])}"><td><b>{esc(row["method"])}</b></td>'
                     f'<td class="num">{row["seconds"]:.2f} s</td>{"".join(cells)}</tr>')
    n = table.n_examples()
    notes = "".join(f"<li><b>{esc(m)}</b>: {esc(table.descriptions.get(m, ''))}</li>" for m in table.metrics)
    notes += "".join(f"<li>{esc(note)}</li>" for note in table.notes)
    over = f"over {n} example{'s' if n != 1 else ''}" if n else ""
    return (f'<table class="data eval"><tr><th>method</th><th>time</th>{head}</tr>{"".join(lines)}</table>'
            f'<p class="note">mean ± standard error {over} (#rank, 1 = best, shaded; '
            f'↑ higher is better, ↓ lower)</p><ul class="note">{notes}</ul>')


class EvaluationSection(Section):
    """The ranking of :func:`torchexplain.evaluate` (an ``EvaluationTable``), after
    ``lead`` (an HTML sentence)."""

    title = "Which explanation to trust?"
    anchor = "evaluation"
    style = EVALUATION_CSS

    def __init__(self, table, lead: str = ""):
        self.table, self.lead = table, lead

    def body(self) -> str:
        lead = f'<p class="lead">{self.lead}</p>' if self.lead else ""
        return lead + evaluation_html(self.table)
