"""Runs the app opens (``--runs DIR``): outputs of ``torchexplain explain`` (an
``explanation.json``) and of ``explain-dataset`` (a ``manifest.json`` and shards),
served by an id given at start-up, never by a path from the browser. A run's rows are
its explained examples (prediction, probability, each method's total); a row opens its
maps (the whole map of an explanation, the stored map or thumbnail of a dataset run)."""

from __future__ import annotations

from pathlib import Path

import torch

from .state import AppError

#: rows sent to the page at most (the table filters them there)
MAX_ROWS = 5000


def _summed(a: torch.Tensor) -> dict:
    a = a.detach().float().cpu()
    summed = a.sum(0) if a.dim() == 3 else a.reshape(a.shape[-2:])
    return {"shape": list(summed.shape), "values": summed.reshape(-1).tolist(), "vmax": float(summed.abs().max())}


class ExplanationRun:
    kind = "explain"

    def __init__(self, folder: Path):
        from ..explanation import Explanation

        self.folder, self.result = folder, Explanation.load(folder)
        self.methods = self.result.methods

    def rows(self) -> list[dict]:
        r = self.result
        probs = torch.softmax(r.outputs.double(), 1)
        names = r.class_names or []
        rows = []
        for i in range(len(r.target)):
            example, target = int(r.example_index[i]), int(r.target[i])
            predicted = int(probs[example].argmax())
            rows.append({"row": i, "id": str(example), "predicted": predicted, "target": target,
                         "class": names[target] if target < len(names) else str(target),
                         "probability": float(probs[example, predicted]),
                         **{f"{m}/total": float(r.attributions[m][i].sum()) for m in self.methods}})
        return rows

    def maps(self, row: int) -> dict:
        if not 0 <= row < len(self.result.target):
            raise AppError(f"run has no row {row}", 404)
        return {m: _summed(self.result.attributions[m][row]) for m in self.methods}


class DatasetRun:
    kind = "dataset"

    def __init__(self, folder: Path):
        from ..dataset import schema

        self.folder, self.manifest = folder, schema.read_manifest(folder)
        self.methods = list(self.manifest.get("methods", {}))
        self.table = schema.read_rows(folder).slice(0, MAX_ROWS)

    def rows(self) -> list[dict]:
        names = self.manifest.get("class_names") or []
        keep = ["id", "label", "predicted", "target", "probability", *(f"{m}/total" for m in self.methods)]
        rows = self.table.select(keep).to_pylist()
        for i, row in enumerate(rows):
            row["row"] = i
            row["class"] = names[row["target"]] if row["target"] < len(names) else str(row["target"])
        return rows

    def maps(self, row: int) -> dict:
        from ..dataset import schema

        if not 0 <= row < self.table.num_rows:
            raise AppError(f"run has no row {row}", 404)
        record = self.table.slice(row, 1).to_pylist()[0]
        maps = {}
        for m in self.methods:
            full = record.get(schema.method_column(m, "map"))
            if full is not None:
                maps[m] = _summed(torch.from_numpy(schema.decode_map(full, record["shape"])))
            else:
                h, w = record["thumb_shape"]
                maps[m] = _summed(torch.tensor(record[schema.method_column(m, "thumb")]).reshape(h, w))
        return maps


def open_runs(folders) -> dict:
    """``{run id: run}`` for the given folders (a one-line error for one that is neither)."""
    runs = {}
    for i, folder in enumerate(folders or []):
        folder = Path(folder)
        if (folder / "explanation.json").is_file():
            run = ExplanationRun(folder)
        elif (folder / "manifest.json").is_file():
            run = DatasetRun(folder)
        else:
            raise ValueError(f"--runs {folder}: neither an explain output (explanation.json) nor an "
                             "explain-dataset output (manifest.json)")
        runs[f"run-{i}"] = run
    return runs


def run_of(runs: dict, ident: str):
    if ident not in runs:
        raise AppError(f"unknown run {ident!r}", 404)
    return runs[ident]
