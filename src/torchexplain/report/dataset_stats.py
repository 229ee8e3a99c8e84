"""An explain-dataset output directory read as aggregates, for its summary page:
counts, per-class mean attribution thumbnails, the least and most confident examples,
failures and times.

Only whole shards are read (``shards/part-*.parquet``, never ``*.tmp``), one at a time
and only the columns needed (never the full ``M/map``), so memory follows the number
of classes and methods, not of rows; every sum is taken with NumPy over a shard's
columns at once (no Python loop over rows).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..dataset import schema

#: the columns read from every shard besides the methods' ones
_BASE = ("id", "path", "label", "predicted", "probability", "target", "rank", "target_probability", "thumb_shape")
#: per-method fields read (never "map" or "top")
_FIELDS = ("total", "delta", "seconds", "thumb")


@dataclass
class Example:
    """One explained example (its rank-0 row): what the summary shows of it."""

    id: str
    path: str | None
    label: int | None
    predicted: int
    probability: float
    target: int
    thumbs: dict[str, np.ndarray]  # method -> (h, w) thumbnail map


@dataclass
class ClassStats:
    """Sums over the rows that explain one class (the rows' ``target``)."""

    rows: int = 0
    probability: float = 0.0  # sum of target_probability
    labelled: int = 0
    agree: int = 0  # rows whose label is the explained class
    totals: dict = field(default_factory=dict)  # method -> [sum of finite M/total, count]
    lowest: tuple = (np.inf, "")  # (target_probability, id)
    highest: tuple = (-np.inf, "")


@dataclass
class DatasetStats:
    out: Path
    manifest: dict
    methods: list[str]
    shards: list[Path]
    partial: int = 0  # *.tmp files left in shards/
    rows: int = 0
    examples: int = 0
    labelled: int = 0  # rank-0 rows with a label
    correct: int = 0  # ... whose label is the predicted class
    classes: dict = field(default_factory=dict)  # class index -> ClassStats
    thumb_sums: dict = field(default_factory=dict)  # (method, class, (h, w)) -> [sum map, count]
    seconds: dict = field(default_factory=dict)  # method -> seconds summed over rows
    deltas: dict = field(default_factory=dict)  # method -> [sum |delta|, count]
    lowest: list = field(default_factory=list)  # Examples, least confident first
    highest: list = field(default_factory=list)  # Examples, most confident first
    shape_counts: dict = field(default_factory=dict)  # thumb (h, w) -> rows
    shard_rates: list = field(default_factory=list)  # rows / seconds since the previous shard
    errors: object = None  # the errors table (pyarrow)
    candidates: list = field(default_factory=list)  # per shard (ids, paths, targets) of rows with a path

    def class_name(self, index: int) -> str:
        names = self.manifest.get("class_names") or []
        return str(names[index]) if 0 <= index < len(names) else str(index)

    @property
    def thumb_shape(self) -> tuple[int, int]:
        """The most common thumbnail shape: every map is shown at it."""
        if not self.shape_counts:
            return (1, 1)
        return max(self.shape_counts, key=lambda s: (self.shape_counts[s], s))

    def class_means(self, method: str) -> dict[int, np.ndarray]:
        """Per class, the mean of ``method``'s thumbnails at :attr:`thumb_shape`
        (thumbnails of another shape resampled to it, weighted by their rows)."""
        target = self.thumb_shape
        sums: dict[int, list] = {}
        for (m, c, _), (total, count) in self.thumb_sums.items():
            if m != method:
                continue
            mean = resample(total / count, target) * count
            acc = sums.setdefault(c, [np.zeros(target), 0])
            acc[0] += mean
            acc[1] += count
        return {c: s / n for c, (s, n) in sorted(sums.items())}


def resample(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(h, w) values at ``shape`` (bilinear, antialiased when shrinking)."""
    if values.shape == tuple(shape):
        return values
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64))[None, None]
    return F.interpolate(tensor, size=tuple(shape), mode="bilinear", align_corners=False, antialias=True)[0, 0].numpy()


def _numpy(column, fill=None) -> np.ndarray:
    if fill is not None:
        import pyarrow.compute as pc

        column = pc.fill_null(column, fill)
    return column.to_numpy(zero_copy_only=False)


def _lists(column) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A list column as (flat values, start of each row's list, its length: 0 when null)."""
    import pyarrow.compute as pc

    lengths = _numpy(pc.list_value_length(column), 0).astype(np.int64)
    flat = _numpy(pc.list_flatten(column)).astype(np.float64)
    return flat, np.cumsum(lengths) - lengths, lengths


def _group_sums(values: np.ndarray, keys: np.ndarray):
    """(unique keys, sum of values' rows per key, rows per key)."""
    order = np.argsort(keys, kind="stable")
    keys, values = keys[order], values[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return keys[starts], np.add.reduceat(values, starts, axis=0), np.diff(np.r_[starts, len(keys)])


class _Reader:
    """Adds one shard at a time to a :class:`DatasetStats`."""

    def __init__(self, stats: DatasetStats, examples: int):
        self.stats, self.k = stats, examples
        self.ids = []

    def add(self, path: Path) -> None:
        import pyarrow.parquet as pq

        present = set(pq.read_schema(path).names)
        methods = [m for m in self.stats.methods if schema.method_column(m, "thumb") in present]
        wanted = [c for c in _BASE if c in present]
        wanted += [schema.method_column(m, f) for m in methods for f in _FIELDS
                   if schema.method_column(m, f) in present]
        table = pq.read_table(path, columns=wanted)
        if table.num_rows == 0:
            return
        self.stats.rows += table.num_rows
        self.ids.append(table.column("id"))
        target = _numpy(table.column("target")).astype(np.int64)
        shapes = self._shapes(table)
        self._classes(table, target)
        for m in methods:
            self._method(table, m, target, shapes)
        self._extremes(table, methods, shapes)
        has_path = _numpy(table.column("path").is_valid())
        self.stats.candidates.append((table.column("id").filter(has_path), table.column("path").filter(has_path),
                                      target[has_path]))

    def _shapes(self, table) -> np.ndarray:
        """(rows, 2) thumbnail shapes; (0, 0) where missing."""
        flat, starts, lengths = _lists(table.column("thumb_shape"))
        shapes = np.zeros((table.num_rows, 2), dtype=np.int64)
        ok = lengths == 2
        shapes[ok] = np.stack([flat[starts[ok]], flat[starts[ok] + 1]], 1).astype(np.int64)
        for shape, count in zip(*np.unique(shapes[ok], axis=0, return_counts=True)):
            key = (int(shape[0]), int(shape[1]))
            self.stats.shape_counts[key] = self.stats.shape_counts.get(key, 0) + int(count)
        return shapes

    def _classes(self, table, target: np.ndarray) -> None:
        s = self.stats
        p = _numpy(table.column("target_probability"), np.nan).astype(np.float64)
        label = _numpy(table.column("label"), -1).astype(np.int64)
        rank = _numpy(table.column("rank"), 0)
        predicted = _numpy(table.column("predicted")).astype(np.int64)
        first = rank == 0
        s.labelled += int((first & (label >= 0)).sum())
        s.correct += int((first & (label >= 0) & (label == predicted)).sum())
        ids = np.asarray(table.column("id").to_pylist(), dtype=object)
        order = np.lexsort((np.nan_to_num(p, nan=np.inf), target))
        starts = np.flatnonzero(np.r_[True, target[order][1:] != target[order][:-1]])
        ends = np.r_[starts[1:], len(order)] - 1
        for a, b in zip(starts, ends):
            rows = order[a:b + 1]
            c = s.classes.setdefault(int(target[rows[0]]), ClassStats())
            c.rows += len(rows)
            c.probability += float(np.nansum(p[rows]))
            c.labelled += int((label[rows] >= 0).sum())
            c.agree += int((label[rows] == target[rows]).sum())
            finite = rows[np.isfinite(p[rows])]
            if len(finite):
                low, high = (float(p[finite[0]]), ids[finite[0]]), (float(p[finite[-1]]), ids[finite[-1]])
                c.lowest, c.highest = min(c.lowest, low), max(c.highest, high)

    def _method(self, table, method: str, target: np.ndarray, shapes: np.ndarray) -> None:
        s, col = self.stats, (lambda f: table.column(schema.method_column(method, f)))
        total = _numpy(col("total"), np.nan).astype(np.float64)
        for c, summed, _ in zip(*_group_sums(np.stack([np.nan_to_num(total), np.isfinite(total)], 1), target)):
            acc = s.classes[int(c)].totals.setdefault(method, [0.0, 0])
            acc[0] += float(summed[0])
            acc[1] += int(summed[1])
        s.seconds[method] = s.seconds.get(method, 0.0) + float(np.nansum(_numpy(col("seconds"), np.nan)))
        delta = np.abs(_numpy(col("delta"), np.nan).astype(np.float64))
        acc = s.deltas.setdefault(method, [0.0, 0])
        acc[0] += float(np.nansum(delta))
        acc[1] += int(np.isfinite(delta).sum())
        flat, starts, lengths = _lists(col("thumb"))
        for shape in map(tuple, np.unique(shapes[shapes[:, 0] > 0], axis=0).tolist()):
            size = shape[0] * shape[1]
            rows = np.flatnonzero((shapes[:, 0] == shape[0]) & (shapes[:, 1] == shape[1]) & (lengths == size))
            if not len(rows):
                continue
            values = flat[starts[rows][:, None] + np.arange(size)]
            for c, summed, count in zip(*_group_sums(values, target[rows])):
                acc = s.thumb_sums.setdefault((method, int(c), shape), [np.zeros(shape), 0])
                acc[0] += summed.reshape(shape)
                acc[1] += int(count)

    def _extremes(self, table, methods: list[str], shapes: np.ndarray) -> None:
        """Keep the ``k`` least and most confident examples (rank-0 rows; ties by id)."""
        if self.k == 0:
            return
        p = _numpy(table.column("probability"), np.nan).astype(np.float64)
        rows = np.flatnonzero((_numpy(table.column("rank"), 0) == 0) & np.isfinite(p))
        if not len(rows):
            return
        order = rows[np.argsort(p[rows], kind="stable")]
        picked = np.unique(np.r_[order[: self.k], order[-self.k:]])
        new = [self._example(table, int(r), methods, shapes[r]) for r in picked]
        s = self.stats
        s.lowest = sorted(s.lowest + new, key=lambda e: (e.probability, e.id))[: self.k]
        s.highest = sorted(s.highest + new, key=lambda e: (-e.probability, e.id))[: self.k]

    @staticmethod
    def _example(table, r: int, methods: list[str], shape) -> Example:
        row = table.slice(r, 1).to_pylist()[0]
        thumbs = {}
        for m in methods:
            values = row.get(schema.method_column(m, "thumb"))
            if values is not None and shape[0] * shape[1] == len(values) > 0:
                thumbs[m] = np.asarray(values, dtype=np.float64).reshape(int(shape[0]), int(shape[1]))
        return Example(row["id"], row.get("path"), row.get("label"), int(row["predicted"]),
                       float(row["probability"]), int(row["target"]), thumbs)

    def finish(self) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        if self.ids:
            self.stats.examples = int(pc.count_distinct(pa.chunked_array(self.ids)).as_py())


def _shard_rates(shards: list[Path]) -> list[float]:
    """Rows per second of each shard after the first: its rows over the time since
    the previous shard was written (file modification times)."""
    import pyarrow.parquet as pq

    times = [p.stat().st_mtime for p in shards]
    rates = []
    for prev, now, path in zip(times, times[1:], shards[1:]):
        if now > prev:
            rates.append(pq.ParquetFile(path).metadata.num_rows / (now - prev))
    return rates


def read_stats(out, examples: int = 8) -> DatasetStats:
    """The aggregates of output directory ``out``: FileNotFoundError when it does not
    exist, ValueError when it holds neither shards nor errors to summarise."""
    out = Path(out)
    if not out.exists():
        raise FileNotFoundError(f"output directory not found: {out}")
    if not out.is_dir():
        raise ValueError(f"not a directory: {out}")
    manifest = schema.read_manifest(out)
    shards = schema.shard_paths(out)
    has_errors = (out / schema.ERRORS).is_file()
    if manifest is None and not shards:
        raise ValueError(f"{out} is not an explain-dataset output: it has no {schema.MANIFEST} and no shards")
    if not shards and not has_errors:
        raise ValueError(f"{out} has no shards ({schema.SHARDS}/{schema.SHARD_GLOB}): nothing to summarise yet")
    manifest = manifest or {}
    folder = out / schema.SHARDS
    partial = len(list(folder.glob("*" + schema.TMP_SUFFIX))) if folder.is_dir() else 0
    stats = DatasetStats(out, manifest, list(manifest.get("methods") or {}), shards, partial)
    if not stats.methods and shards:
        import pyarrow.parquet as pq

        names = pq.read_schema(shards[0]).names
        stats.methods = list(dict.fromkeys(n.split("/")[0] for n in names if n.endswith("/thumb")))
    reader = _Reader(stats, examples)
    for path in shards:
        reader.add(path)
    reader.finish()
    stats.shard_rates = _shard_rates(shards)
    stats.errors = schema.read_errors(out) if has_errors else None
    return stats
