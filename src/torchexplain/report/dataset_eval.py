"""Faithfulness metrics for a dataset summary: :func:`torchexplain.evaluate` re-run on
a small stratified sample of the run's images (those whose files are still readable),
with the manifest's model spec, preprocessing and methods (each with its arguments).

A dataset run stores summaries, not the model's behaviour under perturbation, so the
metrics cannot come from the shards; the page says which sample they were measured on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..dataset import schema
from .dataset_stats import DatasetStats

#: steps of the deletion and insertion curves, steps + 1 points (as ``torchexplain evaluate`` uses)
STEPS = 50


@dataclass
class SampleEvaluation:
    """The outcome: ``table`` (an EvaluationTable, or None with ``reason``), the images
    it was measured on, and how many rows had a readable file."""

    table: object = None
    reason: str = ""
    ids: list = field(default_factory=list)
    rows_with_path: int = 0
    notes: list = field(default_factory=list)


def readable_path(path: str | None, source: str | None) -> Path | None:
    """``path`` as a readable file (relative paths also tried under ``source``), or None."""
    if not path:
        return None
    candidates = [Path(path)]
    if not Path(path).is_absolute() and source:
        candidates.append(Path(source) / path)
    for p in candidates:
        if p.is_file() and os.access(p, os.R_OK):
            return p
    return None


def stratified_sample(stats: DatasetStats, size: int, seed: int = 0) -> list[tuple[str, Path, int]]:
    """Up to ``size`` (id, readable path, explained class) rows, spread evenly over the
    explained classes (in a seeded random order, and at random within each class);
    files are checked only as they are picked."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list] = {}
    for ids, paths, targets in stats.candidates:
        ids, paths = ids.to_pylist(), paths.to_pylist()
        for i, t in enumerate(targets.tolist()):
            by_class.setdefault(int(t), []).append((ids[i], paths[i]))
    queues = {c: [rows[j] for j in rng.permutation(len(rows))] for c, rows in by_class.items()}
    order = [int(c) for c in rng.permutation(sorted(queues))]
    source = stats.manifest.get("source")
    chosen, seen = [], set()
    while len(chosen) < size and order:
        for c in list(order):
            while queues[c]:
                row_id, path = queues[c].pop()
                found = readable_path(path, source)
                if found is not None and (row_id, c) not in seen:
                    seen.add((row_id, c))
                    chosen.append((row_id, found, c))
                    break
            if not queues[c]:
                order.remove(c)
            if len(chosen) == size:
                break
    return chosen


def _tuples(value):
    """JSON lists back to the tuples Captum's arguments take."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def _model(manifest: dict, notes: list):
    """The run's model (from its spec and weights) and its preprocessing, or a reason."""
    from ..loading import LoadError, load_model

    spec, weights = manifest.get("model"), manifest.get("weights")
    if not isinstance(spec, str) or spec.startswith("module:"):
        return None, None, "the run was given a model object, not a spec that can be loaded again"
    if weights and manifest.get("weights_sha256"):
        if not Path(weights).is_file():
            return None, None, f"the run's weights file {weights} is gone"
        if schema.file_sha256(weights) != manifest["weights_sha256"]:
            return None, None, f"the weights file {weights} changed since the run (its SHA-256 differs)"
    try:
        model, _, (size, mean, std, mode) = load_model(spec, weights, "cpu", notify=notes.append)
    except (LoadError, OSError) as err:
        return None, None, f"cannot load the model {spec}: {err}"
    pre = manifest.get("preprocess") or {}
    return model, (pre.get("size") or size, pre.get("mean", mean), pre.get("std", std), pre.get("mode") or mode), ""


def _inputs(chosen, preprocess):
    import torch

    from ..loading import LoadError, image_transform, load_image

    transform = image_transform(*preprocess)
    rows, kept = [], []
    for row_id, path, target in chosen:
        try:
            rows.append(transform(load_image(path)))
            kept.append((row_id, target))
        except LoadError:
            continue
    if not rows:
        return None, []
    return torch.stack(rows), kept


def evaluate_sample(stats: DatasetStats, metrics, size: int = 16, seed: int = 0, steps: int = STEPS
                    ) -> SampleEvaluation:
    """``metrics`` of every method of the run on a stratified sample of ``size``
    readable images, each explained for the class the run explained."""
    import torch

    from ..metrics import EvaluationTable, evaluate

    result = SampleEvaluation(rows_with_path=sum(len(ids) for ids, _, _ in stats.candidates))
    methods = dict(stats.manifest.get("methods") or {})
    if not methods:
        result.reason = "the manifest lists no methods"
        return result
    chosen = stratified_sample(stats, size, seed)
    if not chosen:
        result.reason = "no explained example has a readable image file (in-memory source, or files moved)"
        return result
    model, preprocess, reason = _model(stats.manifest, result.notes)
    if model is None:
        result.reason = reason
        return result
    x, kept = _inputs(chosen, preprocess)
    if x is None:
        result.reason = "none of the sampled files could be read as an image"
        return result
    result.ids = [row_id for row_id, _ in kept]
    target = torch.tensor([t for _, t in kept], dtype=torch.long)
    tables = [evaluate(model, x, methods=[name], metrics=list(metrics), target=target, steps=steps, seed=seed,
                       **_tuples(dict(arguments or {}))) for name, arguments in methods.items()]
    names = [m for t in tables for m in t.methods]
    results = {key: value for t in tables for key, value in t.results.items()}
    notes = list(dict.fromkeys(n for t in tables for n in t.notes))
    result.table = EvaluationTable(names, list(metrics), results, {m: t.seconds[m] for t in tables for m in t.methods},
                                   notes=notes)
    return result
