"""The summary page of an explain-dataset run: ``OUT/summary.html`` from its shards.

>>> write_summary("audit-out")                                   # counts, maps, examples, failures
>>> write_summary("audit-out", metrics=["deletion", "insertion"])  # and faithfulness on a sample

Per explained class, the mean attribution map of every method (the mean of the rows'
``M/thumb`` thumbnails, on the diverging palette centred at zero, one scale per
method); the least and most confident examples (their own thumbnails, over the image
when its file is readable); the failures of ``errors.parquet``; counts and times from
the manifest and shards; optionally metrics of :func:`torchexplain.evaluate` measured
on a small stratified sample of the images. The page is built from
:mod:`torchexplain.report` sections, self-contained (no network) and of a size that
does not grow with the number of rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..dataset import schema
from . import tiles
from .dataset_eval import evaluate_sample, readable_path
from .dataset_stats import DatasetStats, Example, read_stats, resample
from .evaluation import EvaluationSection
from .grid import GRID_CSS, MIN_COLUMN, TILE_SIDE, _pretty, _tick
from .notes import description
from .page import HTMLSection, Page, Section, esc

#: failures listed on the page (all are counted)
MAX_ERRORS = 100

SUMMARY_CSS = """
table.kv th{text-align:left;width:13em}
.grid .rowhead .sub{color:var(--muted);font-size:11.5px}
.grid .rowhead .id{max-width:22em;overflow:hidden;text-overflow:ellipsis}
.grid.solid .tile>i{opacity:1}
"""


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "n/a"


class MapGrid(Section):
    """A grid of small maps: ``rows`` (dicts with the row head's ``head`` HTML, its
    ``data`` attributes and, optionally, a ``picture`` data URI laid under its maps)
    by methods; ``maps[method]``: (rows, h, w) values on the diverging palette, one
    scale per method (``outlier_perc`` of the largest |values| saturate);
    ``cells[method]``: per row, data attributes of its cell."""

    style = GRID_CSS + SUMMARY_CSS
    #: the HTML of the grid's top-left cell
    corner = ""
    #: maps drawn opaque (no picture under them)
    solid = False

    def __init__(self, title: str, anchor: str, lead: str, rows: list[dict], maps: dict, cells: dict | None = None,
                 outlier_perc: float = 2.0):
        self.title, self.anchor, self.lead, self.rows = title, anchor, lead, rows
        self.maps, self.cells, self.outlier_perc = maps, cells or {}, outlier_perc
        self.scales = {m: tiles.column_scale(v, outlier_perc) for m, v in maps.items()}

    @property
    def shape(self) -> tuple[int, int]:
        first = next(iter(self.maps.values()), None)
        return tuple(first.shape[1:]) if first is not None else (1, 1)

    def head(self) -> str:
        g, n = self.uid, len(self.rows)
        rules = [f".{g} .tile>i{{background-size:100% {100 * n}%}}"]
        rules += [f".{g}r{r}>i{{background-position:0 {100 * r / max(n - 1, 1):.4f}%}}" for r in range(n)]
        rules += [f".{g}c{c}>i.signed{{background-image:url({tiles.signed_sprite(v, self.scales[m])})}}"
                  for c, (m, v) in enumerate(self.maps.items())]
        rules += [f".{g}r{r}::before{{background-image:url({row['picture']})}}"
                  for r, row in enumerate(self.rows) if row.get("picture")]
        return f"<style>{''.join(rules)}</style>"

    def _header(self, method: str, width: int) -> str:
        s = self.scales[method]
        return (f'<th class="method" data-method="{esc(method)}" title="{esc(description(method) or method)}" '
                f'style="min-width:{width}px"><div class="mname">{esc(_pretty(method))}</div>'
                f'<div class="cbar signed" style="width:{width}px;background:{tiles.css_gradient(tiles.DIVERGING)}" '
                f'data-vmin="{-s:.6g}" data-vmax="{s:.6g}"></div><div class="ticks signed" style="width:{width}px">'
                f'<span class="lo">{_tick(-s)}</span><span class="mid">0</span><span class="hi">{_tick(s)}</span>'
                "</div></th>")

    def _row(self, r: int, row: dict) -> str:
        g = self.uid
        picture = f'<div class="tile in {g}r{r}"></div>' if row.get("picture") else ""
        attrs = "".join(f' data-{k}="{esc(v)}"' for k, v in row.get("data", {}).items())
        cells = []
        for c, m in enumerate(self.maps):
            data = self.cells.get(m, [{}] * len(self.rows))[r]
            cell_attrs = "".join(f' data-{k}="{esc(v)}"' for k, v in data.items())
            cells.append(f'<td data-method="{esc(m)}"{cell_attrs}><div class="tile {g}r{r} {g}c{c}">'
                         '<i class="signed"></i></div></td>')
        return (f'<tr data-row="{r}"{attrs}><th class="rowhead" scope="row"><div class="rh">{picture}'
                f'<div>{row["head"]}</div></div></th>{"".join(cells)}</tr>')

    def body(self) -> str:
        if not self.rows or not self.maps:
            return f'<p class="lead">{self.lead}</p><p class="note">Nothing to show.</p>'
        height, width = self.shape
        k = max(1, TILE_SIDE // max(height, width))
        size = (width * k, height * k)
        headers = "".join(self._header(m, max(size[0], MIN_COLUMN)) for m in self.maps)
        body = "".join(self._row(r, row) for r, row in enumerate(self.rows))
        solid = " solid" if self.solid else ""
        return (f'<p class="lead">{self.lead}</p><style>.{self.uid} .tile{{width:{size[0]}px;height:{size[1]}px}}'
                f'</style><div class="grid-scroll"><table class="grid {self.uid} pixelated{solid}" '
                f'data-rows="{len(self.rows)}" data-methods="{len(self.maps)}"><thead><tr><th class="corner">'
                f"{self.corner}</th>{headers}</tr></thead><tbody>{body}</tbody></table></div>")


def class_means_section(stats: DatasetStats, outlier_perc: float = 2.0) -> MapGrid:
    """Per explained class (rows) and method (columns): the mean thumbnail map."""
    classes = sorted(stats.classes)
    means = {m: stats.class_means(m) for m in stats.methods}
    h, w = stats.thumb_shape
    maps = {m: np.stack([means[m].get(c, np.full((h, w), np.nan)) for c in classes]) if classes else
            np.zeros((0, h, w)) for m in stats.methods}
    rows, cells = [], {m: [] for m in stats.methods}
    for c in classes:
        s = stats.classes[c]
        mean_p = s.probability / max(s.rows, 1)
        agree = f" &middot; label agrees {_percent(s.agree, s.labelled)}" if s.labelled else ""
        tip = f"least confident: {s.lowest[1]} ({s.lowest[0]:.3f}); most: {s.highest[1]} ({s.highest[0]:.3f})"
        rows.append({"head": f'<div class="pred" title="{esc(tip)}"><b>{esc(stats.class_name(c))}</b></div>'
                             f'<div class="sub">{s.rows} rows &middot; p {mean_p:.3f}'
                             f"{agree}</div>",
                     "data": {"class": c, "count": s.rows, "mean-probability": f"{mean_p:.6g}"}})
        for m in stats.methods:
            total, n = s.totals.get(m, [0.0, 0])
            cells[m].append({"mean-total": f"{total / n:.6g}" if n else "nan"})
    lead = ("One row per explained class (the rows' target; with <code>topk</code> each example appears under each "
            "of its classes): the mean of the rows' attribution thumbnails (channels summed, averaged down to "
            f"{h}&times;{w}), <span style=\"color:#b2182b\">red</span> for evidence for the class, "
            '<span style="color:#2166ac">blue</span> against, white none. One colour scale per method, centred at '
            f"zero; the largest {outlier_perc:g}% of |values| saturate. Hover a class for its least and most "
            "confident example.")
    grid = MapGrid("Mean attribution per class", "classes", lead, rows, maps, cells, outlier_perc)
    grid.corner, grid.solid = "class<br>rows &middot; mean p", True
    return grid


def _picture(example: Example, source, shape: tuple[int, int]) -> str | None:
    """The example's image at the tile's size, when its file is readable."""
    path = readable_path(example.path, source)
    if path is None:
        return None
    try:
        from PIL import Image

        with Image.open(path) as image:
            k = max(1, TILE_SIDE // max(shape))
            small = image.convert("RGB").resize((shape[1] * k, shape[0] * k), Image.BILINEAR)
        return tiles.photo_uri(np.asarray(small))
    except (OSError, ValueError, SyntaxError):
        return None


def examples_section(stats: DatasetStats, which: str, outlier_perc: float = 2.0) -> MapGrid:
    """The least (``which="lowest"``) or most confident examples, each with its maps."""
    chosen = stats.lowest if which == "lowest" else stats.highest
    shape = stats.thumb_shape
    source = stats.manifest.get("source")
    maps = {m: np.stack([resample(e.thumbs[m], shape) if m in e.thumbs else np.full(shape, np.nan) for e in chosen])
            if chosen else np.zeros((0, *shape)) for m in stats.methods}
    rows = []
    for e in chosen:
        facts = [f"label {esc(stats.class_name(e.label))}"] if e.label is not None else []
        facts += [f"explains {esc(stats.class_name(e.target))}"] if e.target != e.predicted else []
        rows.append({"head": f'<div class="pred"><b>{esc(stats.class_name(e.predicted))}</b> &middot; '
                             f'{100 * e.probability:.1f}%</div><div class="sub id" title="{esc(e.path or "")}">'
                             f'{esc(e.id)}</div><div class="sub">{" &middot; ".join(facts)}</div>',
                     "picture": _picture(e, source, shape),
                     "data": {"id": e.id, "probability": f"{e.probability:.6g}"}})
    kind = "lowest" if which == "lowest" else "highest"
    lead = (f"The {len(chosen)} examples with the {kind} probability of their predicted class, each method's "
            "thumbnail over the image (in grey, when its file is readable), one colour scale per method.")
    title = "Least confident examples" if which == "lowest" else "Most confident examples"
    grid = MapGrid(title, f"{kind}-probability", lead, rows, maps, None, outlier_perc)
    grid.corner = "prediction &middot; p<br>id"
    return grid


def _run_rows(stats: DatasetStats) -> list[tuple[str, str]]:
    m = stats.manifest
    failed = stats.errors.num_rows if stats.errors is not None else 0
    weights = esc(m.get("weights") or "none (the spec's own)")
    if m.get("weights_sha256"):
        weights += f" (SHA-256 {m['weights_sha256'][:12]}&hellip;)"
    methods = "<br>".join(f"<b>{esc(k)}</b> {esc(json.dumps(v)) if v else ''}"
                          for k, v in (m.get("methods") or {}).items())
    rows = [("source", esc(m.get("source", "?"))), ("model", esc(m.get("model", "?"))), ("weights", weights),
            ("methods", methods or "?"), ("target", esc(m.get("target", "?"))),
            ("stored", f"{esc(m.get('store', '?'))} (top {esc(m.get('top_k', '?'))} positions, "
                       f"thumbnails at most {esc(m.get('thumb', '?'))}&times;{esc(m.get('thumb', '?'))})"),
            ("examples explained", f'<span data-examples="{stats.examples}">{stats.examples:,}</span> '
                                   f'(<span data-rows="{stats.rows}">{stats.rows:,}</span> rows in '
                                   f"{len(stats.shards)} shard{'s' if len(stats.shards) != 1 else ''})"),
            ("failed", f'<span data-failed="{failed}">{failed:,}</span>' + (' (<a href="#failures">below</a>)'
                                                                           if failed else ""))]
    if stats.partial:
        rows.append(("partial shards", f"{stats.partial} <code>*.tmp</code> file(s) of an unfinished write, ignored"))
    if stats.labelled:
        rows.append(("top-1 accuracy", f'<span data-accuracy="{stats.correct / stats.labelled:.6g}">'
                                       f"{_percent(stats.correct, stats.labelled)}</span> of {stats.labelled:,} "
                                       "labelled examples"))
    return rows + _time_rows(stats)


def _time_rows(stats: DatasetStats) -> list[tuple[str, str]]:
    rows = []
    n = max(stats.examples, 1)
    total = sum(stats.seconds.values())
    if stats.seconds:
        per = ", ".join(f"{esc(m)} {1000 * s / n:.3g} ms" for m, s in stats.seconds.items())
        rate = f"{n / total:.3g} images/s" if total > 0 else "n/a"
        rows.append(("method time", f'<span data-method-seconds="{total:.6g}">{1000 * total / n:.3g} ms</span> per '
                                    f"example ({rate} of method time; {per})"))
    if stats.shard_rates:
        rate = float(np.median(stats.shard_rates))
        rows.append(("throughput", f'<span data-throughput="{rate:.6g}">{rate:.3g} rows/s</span> (median over '
                                   "shards of their rows over the time since the shard before; reading, decoding, "
                                   "the model and writing included)"))
    deltas = [(m, s / c) for m, (s, c) in stats.deltas.items() if c]
    if deltas:
        rows.append(("mean |delta|", ", ".join(f"{esc(m)} {d:.3g}" for m, d in deltas)))
    versions = f"torch {stats.manifest.get('torch', '?')}, torchexplain {stats.manifest.get('torchexplain', '?')}"
    return rows + [("versions", esc(versions))]


def run_section(stats: DatasetStats) -> HTMLSection:
    lines = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in _run_rows(stats))
    return HTMLSection("Run", f'<table class="data kv">{lines}</table>', anchor="run")


def failures_section(stats: DatasetStats) -> HTMLSection:
    errors = stats.errors
    if errors is None or errors.num_rows == 0:
        return HTMLSection("Failures", '<p class="note" data-failures="0">No failures.</p>', anchor="failures")
    import pyarrow.compute as pc

    counts = {d["values"]: d["counts"] for d in pc.value_counts(errors.column("stage")).to_pylist()}
    by_stage = ", ".join(f"{esc(k)}: {v}" for k, v in sorted(counts.items(), key=lambda kv: str(kv[0])))
    shown = errors.slice(0, MAX_ERRORS).to_pylist()
    lines = "".join(f'<tr data-id="{esc(e.get("id"))}"><td>{esc(e.get("id"))}</td><td>{esc(e.get("path") or "")}</td>'
                    f'<td>{esc(e.get("stage"))}</td><td>{esc(e.get("message"))}</td></tr>' for e in shown)
    more = (f'<p class="note">and {errors.num_rows - MAX_ERRORS:,} more (all in <code>{schema.ERRORS}</code>)</p>'
            if errors.num_rows > MAX_ERRORS else "")
    return HTMLSection("Failures", f'<p class="lead" data-failures="{errors.num_rows}">{errors.num_rows:,} '
                                   f"example(s) could not be explained ({by_stage}); the run went on without them.</p>"
                                   '<table class="data"><tr><th>id</th><th>path</th><th>stage</th><th>message</th></tr>'
                                   f"{lines}</table>{more}", anchor="failures")


def evaluation_section(stats: DatasetStats, metrics, sample: int, seed: int) -> Section:
    done = evaluate_sample(stats, metrics, sample, seed)
    if done.table is None:
        return HTMLSection("Which explanation to trust?", f'<p class="note" data-evaluated="0">Metrics '
                                                          f"({esc(', '.join(metrics))}) not computed: "
                                                          f"{esc(done.reason)}.</p>", anchor="evaluation")
    n = len(done.ids)
    notes = "".join(f" {esc(note)}" for note in done.notes)
    lead = (f'<span data-evaluated="{n}">Measured on a stratified sample of {n} image{"s" if n != 1 else ""}</span>, '
            f"not on the whole run: <code>torchexplain.evaluate</code> re-run on {n} of the "
            f"{done.rows_with_path:,} rows whose image file is readable (spread evenly over the explained classes, "
            f"seed {seed}), with the run's model <code>{esc(stats.manifest.get('model'))}</code>, its preprocessing "
            "and its methods with their arguments, each image explained for the class the run explained. Read the "
            f"ranking with its standard errors.{notes}")
    return EvaluationSection(done.table, lead)


def summary_page(stats: DatasetStats, metrics=None, sample: int = 16, seed: int = 0,
                 outlier_perc: float = 2.0) -> Page:
    """The page of :func:`write_summary` (not written)."""
    m = stats.manifest
    page = Page(f"torchexplain dataset summary: {m.get('model', stats.out.name)}",
                f"{stats.examples:,} examples of {m.get('source', '?')} explained by {len(stats.methods)} "
                f"method(s); {stats.errors.num_rows if stats.errors is not None else 0:,} failed.")
    page.add(run_section(stats))
    if stats.rows:
        page.add(class_means_section(stats, outlier_perc), examples_section(stats, "lowest", outlier_perc),
                 examples_section(stats, "highest", outlier_perc))
    page.add(failures_section(stats))
    if metrics:
        page.add(evaluation_section(stats, metrics, sample, seed))
    return page


def metric_list(metrics) -> list[str]:
    from ..metrics import METRICS

    names = [t.strip() for t in metrics.split(",")] if isinstance(metrics, str) else list(metrics)
    names = [n for n in names if n]
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"metrics: unknown metric(s) {', '.join(map(str, unknown))}; known: {', '.join(METRICS)}")
    return names


def write_summary(out_dir, metrics=None, *, sample: int = 16, seed: int = 0, examples: int = 8,
                  outlier_perc: float = 2.0) -> Path:
    """Write ``out_dir/summary.html`` (replacing it whole) and return its path.

    ``metrics``: metric names (e.g. ``["deletion", "insertion"]``) to measure with
    :func:`torchexplain.evaluate` on a stratified sample of ``sample`` images whose
    files are readable (``seed`` picks them); ``examples``: how many least and most
    confident examples to show. FileNotFoundError when ``out_dir`` does not exist,
    ValueError when it holds no shards (and no failures) to summarise."""
    names = metric_list(metrics) if metrics else []
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 1:
        raise ValueError(f"sample must be a positive int; got {sample!r}")
    if isinstance(examples, bool) or not isinstance(examples, int) or examples < 0:
        raise ValueError(f"examples must be a non-negative int; got {examples!r}")
    stats = read_stats(out_dir, examples)
    html = summary_page(stats, names, sample, seed, outlier_perc).html()
    return schema.write_atomic(Path(out_dir) / schema.SUMMARY, html.encode("utf-8"))
