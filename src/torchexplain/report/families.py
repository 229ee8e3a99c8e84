"""Report sections for Captum's other families: TCAV scores (one bar chart per layer,
significance marked) and training-data influence (each test image with its top
proponents and opponents among the training images).

Both read plain data (numbers and ``(H, W, 3)`` uint8 pictures), not the method
objects, so a front end builds them from :class:`TCAVScore` rows or from the indices
and scores ``TracInCP.influence(..., k=K)`` returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from . import tiles
from .page import Section, esc

TCAV_CSS = """
.tcav{display:flex;flex-wrap:wrap;gap:26px}
.tcav figure{margin:0}
.tcav figcaption{font-weight:600;margin-bottom:4px}
.tcav .bars{display:flex;align-items:flex-end;gap:10px;height:150px;padding:0 6px;position:relative;
 border-bottom:1px solid var(--ink);background:linear-gradient(to top,transparent calc(50% - .5px),
 var(--line) calc(50% - .5px),var(--line) calc(50% + .5px),transparent calc(50% + .5px))}
.tcav .bar{width:60px;background:var(--accent);opacity:.75;position:relative}
.tcav .bar.ns{background:#8c959f}
.tcav .bar span{position:absolute;top:-1.35em;left:-10px;right:-10px;text-align:center;font-size:12px;
 white-space:nowrap}
.tcav .rnd{position:absolute;left:0;right:0;border-top:2px dashed var(--ink)}
.tcav .names{display:flex;gap:10px;padding:2px 6px 0;font-size:12px}
.tcav .names div{width:60px;text-align:center;overflow-wrap:anywhere}
"""

INFLUENCE_CSS = """
table.influence td{vertical-align:top;padding:6px 10px 6px 0}
table.influence figure{display:inline-block;margin:0 6px 4px 0;text-align:center;font-size:11.5px}
table.influence img{display:block;width:64px;height:64px;image-rendering:pixelated;border:1px solid var(--line)}
table.influence figure.pro img{border-color:#b2182b}
table.influence figure.opp img{border-color:#2166ac}
"""


@dataclass(frozen=True)
class TCAVScore:
    """One concept at one layer: ``score`` the TCAV score (the mean sign count over
    the runs against random concepts), ``spread`` its standard deviation over them,
    ``p_value`` the two-sided t-test against random concepts (None without them) and
    ``significant`` whether it passes the test's threshold."""

    layer: str
    concept: str
    score: float
    spread: float = 0.0
    p_value: float | None = None
    significant: bool | None = None


class TCAVSection(Section):
    """TCAV scores as one bar chart per layer: the bar is the score (0 to 1, the grey
    line at 0.5 is chance), the dashed line the random concepts' mean when known; a
    grey bar did not pass the significance test."""

    title = "Concept sensitivity (TCAV)"
    anchor = "tcav"
    style = TCAV_CSS

    def __init__(self, scores: Sequence[TCAVScore], random_means: dict[str, float] | None = None, lead: str = ""):
        self.scores, self.random_means, self.lead = list(scores), dict(random_means or {}), lead

    def _bar(self, s: TCAVScore) -> str:
        mark = "" if s.significant is None else (" *" if s.significant else " n.s.")
        tip = f"{s.concept} at {s.layer}: TCAV {s.score:.3f} ± {s.spread:.3f}"
        if s.p_value is not None:
            tip += f", p = {s.p_value:.3g}"
        grey = " ns" if s.significant is False else ""
        return (f'<div class="bar{grey}" style="height:{150 * min(max(s.score, 0.0), 1.0):.1f}px" title="{esc(tip)}" '
                f'data-concept="{esc(s.concept)}" data-score="{s.score:.6g}"><span>{s.score:.2f}{mark}</span></div>')

    def _chart(self, layer: str, rows: list[TCAVScore]) -> str:
        random = self.random_means.get(layer)
        bars = "".join(self._bar(s) for s in rows)
        if random is not None:
            bars += f'<i class="rnd" style="bottom:{150 * min(max(random, 0.0), 1.0):.1f}px"></i>'
        names = "".join(f"<div>{esc(s.concept)}</div>" for s in rows)
        note = f'<div class="note">dashed: random concepts, {random:.2f}</div>' if random is not None else ""
        return (f'<figure data-layer="{esc(layer)}"><figcaption>{esc(layer)}</figcaption>'
                f'<div class="bars">{bars}</div><div class="names">{names}</div>{note}</figure>')

    def body(self) -> str:
        layers = list(dict.fromkeys(s.layer for s in self.scores))
        charts = "".join(self._chart(layer, [s for s in self.scores if s.layer == layer]) for layer in layers)
        lead = self.lead or (
            "The share of the inputs whose prediction rises when the layer's activation moves along the concept's "
            "direction (its CAV). 0.5 (the grey line) is what a random direction gives; * marks a concept whose "
            "scores differ from random concepts' in a two-sided t-test, n.s. one that does not.")
        return f'<p class="lead">{lead}</p><div class="tcav">{charts}</div>'


def _figure(picture: np.ndarray, caption: str, kind: str) -> str:
    return (f'<figure class="{kind}"><img alt="{esc(caption)}" src="{tiles.photo_uri(picture)}">'
            f"{esc(caption)}</figure>")


class InfluenceSection(Section):
    """Per test image: the training images with the highest influence (proponents,
    red frame: their gradient steps lowered the test image's loss) and the lowest
    (opponents, blue frame: theirs raised it), with their scores."""

    title = "Training-data influence (TracIn)"
    anchor = "influence"
    style = INFLUENCE_CSS

    def __init__(self, tests: Sequence[tuple[np.ndarray, str]], proponents, opponents, lead: str = ""):
        """``tests``: (picture, caption) per test image; ``proponents`` and
        ``opponents``: per test image, a list of (picture, caption, score)."""
        if not (len(tests) == len(proponents) == len(opponents)):
            raise ValueError(f"tests, proponents and opponents must have one entry per test image; got "
                             f"{len(tests)}, {len(proponents)}, {len(opponents)}")
        self.tests, self.proponents, self.opponents, self.lead = list(tests), proponents, opponents, lead

    def body(self) -> str:
        rows = []
        for (picture, caption), pro, opp in zip(self.tests, self.proponents, self.opponents):
            cells = [_figure(picture, caption, "test")]
            cells.append("".join(_figure(p, f"{c} {s:+.3g}", "pro") for p, c, s in pro))
            cells.append("".join(_figure(p, f"{c} {s:+.3g}", "opp") for p, c, s in opp))
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        lead = self.lead or (
            "TracIn's influence of a training image on a test image: the sum over checkpoints of the learning rate "
            "times the dot product of their loss gradients. Proponents (positive) pushed the model towards this "
            "prediction during training, opponents (negative) away from it.")
        return (f'<p class="lead">{lead}</p><table class="influence"><tr><th>test image</th><th>proponents</th>'
                f"<th>opponents</th></tr>{''.join(rows)}</table>")
