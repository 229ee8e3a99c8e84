"""The table :func:`torchexplain.evaluate` returns: methods ranked per metric, as data.

``to_dict()`` / ``EvaluationTable.from_dict`` round-trip it through JSON (every
per-example value included); ``to_markdown()`` and ``to_csv()`` are its text forms;
the HTML table is drawn by :mod:`torchexplain.report`.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field

import torch

from .result import MetricResult


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def format_stderr(value: float) -> str:
    """A standard error for a table: "n/a" when there is none (one example)."""
    return f"{value:.2g}" if math.isfinite(value) else "n/a"


@dataclass
class EvaluationTable:
    """One row per method: its time, and per metric the mean, standard error (NaN over
    one example) and rank (1 = best; metrics that do not rank, ``higher_is_better``
    None, get none). ``notes`` say how attributions were adapted to a metric (a CAM's
    map broadcast over the channels); ``descriptions`` say what each metric measures."""

    methods: list[str]
    metrics: list[str]
    results: dict[tuple[str, str], MetricResult]
    seconds: dict[str, float]
    rows: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    descriptions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        missing = [(m, k) for m in self.methods for k in self.metrics if (m, k) not in self.results]
        if missing:
            raise ValueError(f"results has no value for (method, metric) {missing[0]}")
        if not self.descriptions:
            from .evaluate import METRICS

            self.descriptions = {m: METRICS[m].description for m in self.metrics if m in METRICS}
        ranks = {m: self._ranks(m) for m in self.metrics}
        self.rows = []
        for method in self.methods:
            row = {"method": method, "seconds": self.seconds[method]}
            for metric in self.metrics:
                r = self.results[(method, metric)]
                row[metric], row[f"{metric}_stderr"], row[f"{metric}_rank"] = r.mean, r.stderr, ranks[metric][method]
            self.rows.append(row)

    def higher_is_better(self, metric: str) -> bool | None:
        return self.results[(self.methods[0], metric)].higher_is_better if self.methods else None

    def _ranks(self, metric: str) -> dict[str, int | None]:
        better = self.higher_is_better(metric)
        if better is None:
            return dict.fromkeys(self.methods)
        order = sorted(self.methods, key=lambda m: self.results[(m, metric)].mean, reverse=better)
        return {m: i + 1 for i, m in enumerate(order)}

    def best(self, metric: str) -> str:
        return next(row["method"] for row in self.rows if row[f"{metric}_rank"] == 1)

    def n_examples(self) -> int:
        return max((r.values.numel() for r in self.results.values()), default=0)

    def arrow(self, metric: str) -> str:
        return {True: "↑", False: "↓", None: ""}[self.higher_is_better(metric)]

    def cell(self, method: str, metric: str) -> str:
        """``mean ± stderr (#rank)``, or ``mean ± n/a`` over one example."""
        row = self.rows[self.methods.index(method)]
        rank = row[f"{metric}_rank"]
        text = f"{row[metric]:.4g} ± {format_stderr(row[f'{metric}_stderr'])}"
        return text + (f" (#{rank})" if rank is not None else "")

    def _cells(self) -> tuple[list[str], list[list[str]]]:
        header = ["method", "seconds"] + [f"{m} {self.arrow(m)}".rstrip() for m in self.metrics]
        body = [[row["method"], f"{row['seconds']:.3f}"] + [self.cell(row["method"], m) for m in self.metrics]
                for row in self.rows]
        return header, body

    def to_markdown(self) -> str:
        header, body = self._cells()
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body])

    def to_csv(self) -> str:
        """One line per method: ``method, seconds`` then ``<metric>, <metric>_stderr,
        <metric>_rank`` per metric (an empty standard error over one example)."""
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(self.rows[0]))
        writer.writeheader()
        writer.writerows({k: ("" if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
                         for row in self.rows)
        return out.getvalue()

    def to_html(self) -> str:
        """The table as an HTML fragment: :func:`torchexplain.report.evaluation_html`."""
        from ..report.evaluation import evaluation_html

        return evaluation_html(self)

    def to_dict(self) -> dict:
        """JSON-ready: the rows (NaN standard errors as None), per (method, metric) every
        example's value, and the metrics' directions, descriptions and notes."""
        return {
            "methods": list(self.methods),
            "metrics": list(self.metrics),
            "rows": [{k: (_finite(v) if isinstance(v, float) else v) for k, v in row.items()} for row in self.rows],
            "values": {m: {k: self.results[(m, k)].values.double().tolist() for k in self.metrics}
                       for m in self.methods},
            "higher_is_better": {k: self.higher_is_better(k) for k in self.metrics},
            "seconds": dict(self.seconds),
            "descriptions": dict(self.descriptions),
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "EvaluationTable":
        """The table :meth:`to_dict` described (values as float64)."""
        results = {(m, k): MetricResult(k, torch.tensor(data["values"][m][k], dtype=torch.float64),
                                        data["higher_is_better"][k])
                   for m in data["methods"] for k in data["metrics"]}
        return cls(list(data["methods"]), list(data["metrics"]), results, dict(data["seconds"]),
                   notes=list(data.get("notes", [])), descriptions=dict(data.get("descriptions", {})))

    def __repr__(self) -> str:
        return self.to_markdown()
