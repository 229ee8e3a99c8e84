"""The attribution grid: one row per explained input (its picture, prediction and
probability), one column per method, each map laid over its input.

The signed view colours every map on a diverging palette centred at zero, one scale
per column (drawn as a colour bar over the column); the absolute view shows
|attribution| on a sequential palette with the same scale. Switching views is plain
CSS (two radio buttons), so the grid needs no script.
"""

from __future__ import annotations

from . import tiles
from .notes import CENTRED, description
from .page import Section, esc

#: tiles are drawn at least this many pixels on their longer side (small inputs are scaled up)
TILE_SIDE = 64
#: columns (and their colour bars) are at least this wide, for the scale's labels
MIN_COLUMN = 80

GRID_CSS = """
.grid-view{position:relative}
.grid-view>input{position:absolute;opacity:0;pointer-events:none}
.grid-view>label{display:inline-block;padding:3px 12px;border:1px solid var(--line);cursor:pointer;
 font-size:13px;background:#fff;margin:0 -1px 8px 0}
.grid-view>label:first-of-type{border-radius:4px 0 0 4px}
.grid-view>label:last-of-type{border-radius:0 4px 4px 0}
.grid-view>input:checked+label{background:var(--ink);color:#fff;border-color:var(--ink)}
.grid-view>input:focus-visible+label{outline:2px solid #0969da}
.grid-view>input.v-signed:checked~.grid-scroll .abs{display:none}
.grid-view>input.v-abs:checked~.grid-scroll .signed{display:none}
.grid-scroll{overflow:auto;max-height:88vh;border:1px solid var(--line);border-radius:4px}
table.grid{border-collapse:separate;border-spacing:0}
table.grid th,table.grid td{padding:4px 5px;vertical-align:top}
table.grid thead th{position:sticky;top:0;z-index:2;background:#fff;border-bottom:1px solid var(--line);
 font-weight:600;font-size:12px;text-align:center;vertical-align:bottom}
table.grid tbody th{position:sticky;left:0;z-index:1;background:#fff;border-right:1px solid var(--line);
 font-weight:normal;text-align:left;font-size:12px;white-space:nowrap}
table.grid thead th.corner{left:0;z-index:3;text-align:left;vertical-align:bottom;color:var(--muted);font-weight:normal}
.mname{min-height:2.5em;display:flex;align-items:flex-end;justify-content:center;line-height:1.15;font-size:11.5px}
.mname sup{color:var(--accent);font-size:11px;margin-left:1px}
.cbar{height:9px;margin:4px auto 0;border:1px solid #bbb;border-radius:1px}
.ticks{position:relative;height:14px;margin:0 auto;font-weight:normal;color:var(--muted);font-size:10.5px;
 font-variant-numeric:tabular-nums}
.ticks span{position:absolute;top:0;white-space:nowrap}
.ticks .lo{left:0}.ticks .mid{left:50%;transform:translateX(-50%)}.ticks .hi{right:0}
.tile{position:relative;margin:0 auto}
.tile::before{content:"";position:absolute;inset:0;background-size:100% 100%;filter:grayscale(1)}
.tile.in::before{filter:none}
.tile>i{position:absolute;inset:0;display:block;opacity:.65;background-repeat:no-repeat}
.grid.pixelated .tile::before,.grid.pixelated .tile>i{image-rendering:pixelated}
.rowhead>div.rh{display:flex;gap:8px;align-items:center}
.rowhead .tile{margin:0}
.cap{color:var(--muted)}
.pred b{font-weight:600;font-size:13px}
"""


def _tick(value: float) -> str:
    text = f"{abs(value):.2g}"
    return ("\u2212" if value < 0 else "") + text


def _pretty(method: str) -> str:
    return method.replace("_", " ")


class AttributionGrid(Section):
    """The grid of ``explanation``'s rows and ``methods`` (all by default).
    ``captions``: one label per input example (default "input i"); ``centred``:
    methods shown minus each map's mean (see :data:`~torchexplain.report.notes.CENTRED`);
    ``outlier_perc``: the share of the largest |values| that saturates, per column."""

    title = "Attributions"
    anchor = "attributions"
    style = GRID_CSS

    def __init__(self, explanation, methods=None, captions=None, centred=tuple(CENTRED), outlier_perc: float = 2.0):
        self.explanation = explanation
        self.methods = list(methods) if methods is not None else explanation.methods
        self.captions = captions
        self.centred = set(centred)
        self.outlier_perc = outlier_perc
        self._columns = None
        inputs = explanation.inputs
        self.images = inputs.dim() == 4 and inputs.shape[1] in (1, 3, 4)  # else a strip per row, on white

    # ------------------------------------------------------------------ data

    def columns(self) -> list[dict]:
        """Per method: its scale, tiles (signed and absolute) and, when centred, the
        offset taken away (mean over the maps) and the maps' spread around it."""
        if self._columns is None:
            self._columns = [self._column(m) for m in self.methods]
        return self._columns

    def _column(self, method: str) -> dict:
        maps = tiles.as_maps(self.explanation.attributions[method])
        column = {"method": method, "offset": None}
        if method in self.centred:
            means = maps.mean(axis=(1, 2), keepdims=True)
            column["offset"] = (float(means.min()), float(means.max()))
            column["spread"] = float((maps - means).std(axis=(1, 2)).mean())
            maps = maps - means
        maps = tiles.shrink(maps)
        scale = tiles.column_scale(maps, self.outlier_perc)
        column.update(scale=scale, shape=maps.shape[1:], signed=tiles.signed_sprite(maps, scale),
                      absolute=tiles.absolute_sprite(maps, scale))
        return column

    def _caption(self, row: dict) -> str:
        example = row["example"]
        if self.captions is not None and example < len(self.captions):
            return str(self.captions[example])
        return f"input {example}"

    def _size(self, shape) -> tuple[int, int]:
        height, width = shape
        k = max(1, TILE_SIDE // max(height, width))
        return max(width * k, TILE_SIDE if height == 1 else 0), max(height * k, 18)

    # ------------------------------------------------------------------ html

    def head(self) -> str:
        """The pictures, as CSS: each input once (the row's tiles show it in grey
        under the maps), each column's two sprites, and each row's slice of them."""
        g, n = self.uid, self.explanation.inputs.shape[0]
        rules = [f".{g} .tile>i{{background-size:100% {100 * n}%}}"]
        rules += [f".{g}r{r}>i{{background-position:0 {100 * r / max(n - 1, 1):.4f}%}}" for r in range(n)]
        rules += [f".{g}c{c}>i.signed{{background-image:url({col['signed']})}}"
                  f".{g}c{c}>i.abs{{background-image:url({col['absolute']})}}" for c, col in enumerate(self.columns())]
        pictures = tiles.input_pictures(self.explanation.inputs, self.explanation.mean, self.explanation.std)
        rules += [f".{g}r{r}::before{{background-image:url({uri})}}" for r, uri in enumerate(pictures or [])]
        return f"<style>{''.join(rules)}</style>"

    def _header(self, column: dict, width: int) -> str:
        m, s = column["method"], column["scale"]
        centred = column["offset"] is not None
        badge = '<sup title="centred: shown minus its mean (see below the grid)">*</sup>' if centred else ""
        return (
            f'<th class="method" data-method="{esc(m)}" title="{esc(description(m) or m)}" style="min-width:{width}px">'
            f'<div class="mname">{esc(_pretty(m))}{badge}</div>'
            f'<div class="cbar signed" style="width:{width}px;background:{tiles.css_gradient(tiles.DIVERGING)}" '
            f'data-vmin="{-s:.6g}" data-vmax="{s:.6g}"></div>'
            f'<div class="ticks signed" style="width:{width}px"><span class="lo">{_tick(-s)}</span>'
            f'<span class="mid">0</span><span class="hi">{_tick(s)}</span></div>'
            f'<div class="cbar abs" style="width:{width}px;background:{tiles.css_gradient(tiles.SEQUENTIAL)}" '
            f'data-vmin="0" data-vmax="{s:.6g}"></div>'
            f'<div class="ticks abs" style="width:{width}px"><span class="lo">0</span>'
            f'<span class="hi">{_tick(s)}</span></div></th>'
        )

    def _row(self, r: int, row: dict, columns: list[dict], size: tuple[int, int]) -> str:
        caption = esc(self._caption(row))
        pred = f'<div class="pred"><b>{esc(row["prediction"])}</b> &middot; {100 * row["probability"]:.1f}%</div>'
        if row["target"] != row["prediction"]:
            pred += f'<div class="note">explains {esc(row["target"])} ({100 * row["target_probability"]:.1f}%)</div>'
        picture = f'<div class="tile in {self.uid}r{r}"></div>' if self.images else ""
        head = (f'<th class="rowhead" scope="row"><div class="rh">{picture}'
                f'<div>{pred}<div class="cap">{caption}</div></div></div></th>')
        cells = "".join(f'<td><div class="tile {self.uid}r{r} {self.uid}c{c}"><i class="signed"></i>'
                        f'<i class="abs"></i></div></td>' for c in range(len(columns)))
        return f'<tr data-row="{r}">{head}{cells}</tr>'

    def body(self) -> str:
        columns = self.columns()
        rows = self.explanation.rows()
        shape = columns[0]["shape"] if columns else (1, 1)
        size = self._size(shape)
        pixelated = " pixelated" if max(shape) <= 64 else ""
        headers = "".join(self._header(c, max(size[0], MIN_COLUMN)) for c in columns)
        body = "".join(self._row(r, row, columns, size) for r, row in enumerate(rows))
        over = "Each map is laid over its input (in grey). " if self.images else "One cell per input feature. "
        lead = (
            f'<p class="lead">{over}<b>Signed</b>: '
            '<span style="color:#b2182b">red</span> is evidence for the explained class, '
            '<span style="color:#2166ac">blue</span> against it, white none. Each column has one colour scale, '
            f"centred at zero (its bar); the largest {self.outlier_perc:g}% of |values| saturate. "
            "<b>|attribution|</b> shows magnitudes only, on the same scale. Hover a method for what it computes.</p>"
        )
        toggle = (
            f'<input type="radio" class="v-signed" name="{self.uid}-view" id="{self.uid}-signed" checked>'
            f'<label for="{self.uid}-signed">signed</label>'
            f'<input type="radio" class="v-abs" name="{self.uid}-view" id="{self.uid}-abs">'
            f'<label for="{self.uid}-abs">|attribution|</label>'
        )
        table = (f'<style>.{self.uid} .tile{{width:{size[0]}px;height:{size[1]}px}}</style>'
                 f'<table class="grid {self.uid}{pixelated}" data-rows="{len(rows)}" data-methods="{len(columns)}">'
                 f'<thead><tr><th class="corner">input<br>prediction &middot; p</th>{headers}</tr></thead>'
                 f"<tbody>{body}</tbody></table>")
        view = f'<div class="grid-view">{toggle}<div class="grid-scroll">{table}</div></div>'
        return lead + view + self._notes(columns)

    def _notes(self, columns: list[dict]) -> str:
        items = [
            f"<li><b>{esc(c['method'])}*</b> (centred): shown minus each map's mean. The means lie between "
            f"{c['offset'][0]:.3g} and {c['offset'][1]:.3g}; around its mean, a map varies by only "
            f"{c['spread']:.2g} (standard deviation). "
            f"{esc(CENTRED.get(c['method'], ''))}</li>"
            for c in columns if c["offset"] is not None
        ]
        return f'<ul class="note">{"".join(items)}</ul>' if items else ""
