"""The output directory of a dataset run: checking it against the manifest (resume,
refuse another configuration, ``overwrite``), the ids already written, and writing
shards and the error table atomically (``*.tmp`` then ``os.replace``)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from . import schema

#: manifest fields named when a configuration differs
_COMPARED = ("model", "weights", "weights_sha256", "methods", "target", "store", "top_k", "thumb", "source",
             "class_names", "preprocess", "seed")


class OutputError(RuntimeError):
    """An output directory that cannot be used as asked; the message is one line."""


def writable_dir(out) -> Path:
    """``out`` as a writable directory, created when missing; an :class:`OutputError`
    (one line) when it cannot be."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"output {out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create output directory {out}: {err.strerror}") from None
    if not os.access(out, os.W_OK):
        raise OutputError(f"output directory {out} is not writable")
    return out


def _differences(old: dict, new: dict) -> list[str]:
    return [k for k in _COMPARED if old.get(k) != new.get(k)] or ["format"]


class Output:
    """The output directory ``out`` for a run of ``manifest``'s configuration.

    A directory holding a run of the same configuration is resumed (``resume``: the
    ids already written are skipped) or, with ``resume=False``, refused; another
    configuration, or files of something else, are refused unless ``overwrite``, which
    deletes the previous run's files (only those of the layout) first."""

    def __init__(self, out, manifest: dict, methods: list[str], *, resume: bool = True, overwrite: bool = False,
                 shard_rows: int = 512, shard_seconds: float = 60.0):
        self.out = Path(out)
        self.methods, self.store = methods, manifest["store"]
        self.shard_rows, self.shard_seconds = shard_rows, shard_seconds
        self._prepare(manifest, resume, overwrite)
        self.done = schema.written_ids(self.out) if resume else set()
        old = schema.read_errors(self.out).to_pylist()
        self.old_errors = {e["id"]: e for e in old}
        self.new_errors: dict[str, dict] = {}
        self.succeeded: set[str] = set()
        indices = [schema.shard_index(p) for p in schema.shard_paths(self.out)]
        self.next_index = max(indices, default=-1) + 1
        self.pending: list[dict] = []
        self.last_flush = time.monotonic()
        self.rows_written = 0

    def _prepare(self, manifest: dict, resume: bool, overwrite: bool) -> None:
        out = writable_dir(self.out)
        if overwrite:
            self._clear()
        else:
            self._check(manifest, resume)
        shards = out / schema.SHARDS
        shards.mkdir(exist_ok=True)
        for stale in [*shards.glob("*" + schema.TMP_SUFFIX), *out.glob("*" + schema.TMP_SUFFIX)]:
            stale.unlink()  # a shard or table cut short by a crash: never read, never kept
        schema.write_manifest(out, manifest)

    def _check(self, manifest: dict, resume: bool) -> None:
        out = self.out
        old = schema.read_manifest(out)
        if old is None:
            if any(out.iterdir()):
                raise OutputError(f"output directory {out} is not empty and holds no explain-dataset run; "
                                  "pass overwrite=True (--overwrite) or choose another out= (--out)")
            return
        if old.get("config_hash") != manifest["config_hash"]:
            raise OutputError(f"{out} holds a run with another configuration ({', '.join(_differences(old, manifest))}"
                              " differ); pass overwrite=True (--overwrite) to replace it, "
                              "or choose another out= (--out)")
        if not resume and schema.shard_paths(out):
            raise OutputError(f"{out} already holds rows of this run; resume it (the default) "
                              "or pass overwrite=True (--overwrite)")

    def _clear(self) -> None:
        out = self.out
        shutil.rmtree(out / schema.SHARDS, ignore_errors=True)
        for name in (schema.MANIFEST, schema.ERRORS, schema.SUMMARY):
            (out / name).unlink(missing_ok=True)

    # -- writing -------------------------------------------------------------------------
    def add(self, rows: list[dict], failures) -> None:
        """Take a batch's rows and its failures ((item, stage, message)); a shard is
        written when enough rows (or time) have gathered."""
        self.pending += rows
        self.succeeded.update(r["id"] for r in rows)
        for item, stage, message in failures:
            self.new_errors[item.id] = {"id": item.id, "path": item.path, "stage": stage, "message": message}
        due = time.monotonic() - self.last_flush >= self.shard_seconds
        if len(self.pending) >= self.shard_rows or (due and self.pending):
            self.flush()

    def flush(self) -> None:
        """Write the gathered rows as the next shard, and the error table."""
        from .work import rows_table

        if self.pending:
            table = rows_table(self.pending, self.methods, self.store)
            name = schema.shard_name(self.next_index)
            schema.write_atomic(self.out / schema.SHARDS / name, schema.table_bytes(table))
            self.next_index += 1
            self.rows_written += len(self.pending)
            self.pending = []
        self.write_errors()
        self.last_flush = time.monotonic()

    def write_errors(self) -> None:
        """errors.parquet: earlier runs' errors (but for ids that have rows now) and this run's."""
        import pyarrow as pa

        merged = {k: v for k, v in self.old_errors.items() if k not in self.succeeded}
        merged.update(self.new_errors)
        path = self.out / schema.ERRORS
        if not merged and not path.exists():
            return
        table = pa.Table.from_pylist(list(merged.values()), schema=schema.errors_schema())
        schema.write_atomic(path, schema.table_bytes(table))

    def close(self) -> None:
        self.flush()
