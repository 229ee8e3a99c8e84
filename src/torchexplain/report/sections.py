"""Report sections about an explanation's rows and methods: the predictions, what each
method computes and its time, and how well the attributions add up (the convergence
delta, relative to the change in output it explains)."""

from __future__ import annotations

from .notes import delta_note, description
from .page import Section, esc

PREDICTIONS_CSS = """
.pbar{display:inline-block;height:.6em;background:var(--accent);opacity:.6;border-radius:2px;margin-right:5px;
 vertical-align:baseline}
.top{white-space:nowrap;margin-right:12px}
"""


def percent(value: float) -> str:
    """A share as a percentage that stays readable from 1e-9 to 10."""
    value = abs(value)
    if value == 0:
        return "0%"
    if value < 1e-4:
        return "< 0.01%"
    return f"{100 * value:.2g}%" if value < 0.1 else f"{100 * value:.0f}%"


class PredictionsSection(Section):
    """One line per explained row: the input's caption, the model's prediction and
    probability, the class explained and the top ``k`` classes."""

    title = "Predictions"
    anchor = "predictions"
    style = PREDICTIONS_CSS

    def __init__(self, explanation, captions=None, k: int = 3):
        self.explanation, self.captions, self.k = explanation, captions, k

    def body(self) -> str:
        e = self.explanation
        top = e.topk(self.k)
        lines = []
        for row in e.rows():
            ex = row["example"]
            caption = self.captions[ex] if self.captions is not None and ex < len(self.captions) else f"input {ex}"
            best = "".join(
                f'<span class="top"><span class="pbar" style="width:{40 * p:.0f}px"></span>{esc(label)} '
                f"{100 * p:.1f}%</span>" for label, p in top[ex]
            )
            lines.append(
                f"<tr><td>{esc(caption)}</td><td><b>{esc(row['prediction'])}</b></td>"
                f'<td class="num">{100 * row["probability"]:.1f}%</td><td>{esc(row["target"])}</td>'
                f'<td class="num">{100 * row["target_probability"]:.1f}%</td><td>{best}</td></tr>'
            )
        return ('<table class="data"><tr><th>input</th><th>prediction</th><th>p</th><th>explained class</th>'
                f"<th>p</th><th>top {self.k}</th></tr>{''.join(lines)}</table>")


class CompletenessSection(Section):
    """Per method with a convergence delta: ``mean |delta| / mean |F(x) - F(baseline)|``
    over the rows (:meth:`~torchexplain.Explanation.relative_delta`) and a line on what
    the delta means for it."""

    title = "Do the attributions add up?"
    anchor = "completeness"

    def __init__(self, explanation, methods=None):
        self.explanation = explanation
        methods = list(methods) if methods is not None else explanation.methods
        self.methods = [m for m in methods if explanation.relative_delta(m) is not None]

    def _line(self, method: str) -> str:
        e = self.explanation
        relative = e.relative_delta(method)
        parts = e.completeness(method)
        raw = float(e.deltas[method].abs().max())
        tip = (f"Captum's delta: max |delta| over its {e.deltas[method].numel()} values = {raw:.3g}; "
               f"mean |F(x) - F(baseline)| = {float(parts['gap'].abs().mean()):.3g}")
        return (f'<tr data-method="{esc(method)}"><td><b>{esc(method)}</b></td>'
                f'<td class="num" title="{esc(tip)}" data-relative="{relative:.6g}">{percent(relative)}</td>'
                f'<td class="note">{esc(delta_note(method))}</td></tr>')

    def body(self) -> str:
        if not self.methods:
            return '<p class="note">None of these methods reports a convergence delta.</p>'
        return (
            '<p class="lead">Attributions of these methods should add up to the change in output they explain, '
            "F(x) &minus; F(baseline) for the explained class. The number is how far they miss: mean |&delta;| / "
            "mean |F(x) &minus; F(baseline)| over the rows (hover it for Captum's raw delta).</p>"
            '<table class="data"><tr><th>method</th><th>|&delta;| / |F(x) &minus; F(b)|</th>'
            f"<th>what it means</th></tr>{''.join(self._line(m) for m in self.methods)}</table>"
        )


class MethodsSection(Section):
    """Per method: what it computes (the registry's description) and its time."""

    title = "Methods"
    anchor = "methods"

    def __init__(self, explanation, methods=None):
        self.explanation = explanation
        self.methods = list(methods) if methods is not None else explanation.methods

    def body(self) -> str:
        e = self.explanation
        lines = "".join(
            f'<tr data-method="{esc(m)}"><td><b>{esc(m)}</b></td><td>{esc(description(m))}</td>'
            f'<td class="num">{e.timings.get(m, float("nan")):.2f} s</td></tr>'
            for m in self.methods
        )
        return ('<table class="data"><tr><th>method</th><th>what it computes</th><th>time</th></tr>'
                f"{lines}</table>")
