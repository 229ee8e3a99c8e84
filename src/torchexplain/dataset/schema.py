"""The layout of an ``explain-dataset`` output directory: the one place that names its
files, columns and manifest fields, for the engines that write it and for the summary
(``torchexplain report DIR``) that reads it.

``OUT/manifest.json``
    ``format``, ``model`` (spec), ``weights`` (path or null), ``weights_sha256``,
    ``methods`` ({canonical name: {argument: value}}), ``target`` ("top1", "topk:K",
    an int or a class name), ``store`` ("summary" | "full"), ``top_k``, ``thumb``,
    ``source``, ``class_names`` (or null), ``preprocess`` ({size, mean, std, mode}),
    ``seed`` (the base of the per-example seeds), ``torch``, ``torchexplain`` and
    ``config_hash``: the SHA-256 of every field but the versions and the hash itself
    (:func:`config_hash`), which decides whether a run may resume into the directory.
``OUT/shards/part-NNNNN.parquet``
    one Parquet file per written group of rows, one row per (example, target class):
    the columns of :data:`BASE_COLUMNS` and, for every method ``M``, ``M/total``,
    ``M/top``, ``M/delta``, ``M/seconds``, ``M/thumb`` and (``store="full"``)
    ``M/map`` (:func:`method_column`). Written as ``*.parquet.tmp`` and renamed when
    whole: readers ignore ``*.tmp`` (:func:`shard_paths`).
``OUT/errors.parquet``
    the examples that could not be explained: ``id``, ``path``, ``stage`` ("read",
    "decode" or "explain") and ``message``.
``OUT/summary.html``
    the summary page (:mod:`torchexplain.report.dataset`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

FORMAT = 1
MANIFEST = "manifest.json"
SHARDS = "shards"
ERRORS = "errors.parquet"
SUMMARY = "summary.html"
SHARD_GLOB = "part-*.parquet"
TMP_SUFFIX = ".tmp"

#: columns every shard has, in order
BASE_COLUMNS = ("id", "path", "label", "predicted", "probability", "target", "rank", "target_probability",
                "shape", "thumb_shape")
#: per-method columns ("M/total", ...); "map" only with store="full"
METHOD_FIELDS = ("total", "top", "delta", "seconds", "thumb", "map")
ERROR_COLUMNS = ("id", "path", "stage", "message")
STAGES = ("read", "decode", "explain")
STORES = ("summary", "full")
#: manifest fields left out of the configuration hash
VERSION_FIELDS = ("torch", "torchexplain", "config_hash")
#: the manifest fields, in order (config_hash last)
MANIFEST_FIELDS = ("format", "model", "weights", "weights_sha256", "methods", "target", "store", "top_k", "thumb",
                   "source", "class_names", "preprocess", "seed", "torch", "torchexplain", "config_hash")
#: dtype of the stored maps (``M/map``): float16, little-endian, C*H*W values in C, H, W order
MAP_DTYPE = "<f2"


def method_column(method: str, field: str) -> str:
    """The column of ``field`` (one of :data:`METHOD_FIELDS`) for ``method``."""
    if field not in METHOD_FIELDS:
        raise ValueError(f"field must be one of {list(METHOD_FIELDS)}; got {field!r}")
    return f"{method}/{field}"


def shard_columns(methods, store: str = "summary") -> list[str]:
    """Every column of a shard, in order, for these canonical method names."""
    fields = METHOD_FIELDS if store == "full" else METHOD_FIELDS[:-1]
    return [*BASE_COLUMNS, *(method_column(m, f) for m in methods for f in fields)]


def arrow_schema(methods, store: str = "summary"):
    """The pyarrow schema of a shard."""
    import pyarrow as pa

    base = {
        "id": pa.string(), "path": pa.string(), "label": pa.int64(), "predicted": pa.int64(),
        "probability": pa.float64(), "target": pa.int64(), "rank": pa.int16(), "target_probability": pa.float64(),
        "shape": pa.list_(pa.int32()), "thumb_shape": pa.list_(pa.int32()),
    }
    per_method = {"total": pa.float64(), "top": pa.list_(pa.int32()), "delta": pa.float64(),
                  "seconds": pa.float64(), "thumb": pa.list_(pa.float32()), "map": pa.binary()}
    fields = [pa.field(name, base[name]) for name in BASE_COLUMNS]
    for m in methods:
        fields += [pa.field(method_column(m, f), per_method[f]) for f in METHOD_FIELDS if f != "map" or store == "full"]
    return pa.schema(fields)


def errors_schema():
    import pyarrow as pa

    return pa.schema([pa.field(name, pa.string()) for name in ERROR_COLUMNS])


def decode_map(data: bytes, shape) -> "np.ndarray":  # noqa: F821
    """A stored ``M/map`` value as a float32 array of ``shape`` (the row's ``shape``)."""
    import numpy as np

    return np.frombuffer(data, dtype=MAP_DTYPE).astype(np.float32).reshape(tuple(shape))


def encode_map(array) -> bytes:
    """A C*H*W float array as the bytes of ``M/map``."""
    import numpy as np

    return np.ascontiguousarray(array, dtype=MAP_DTYPE).tobytes()


# -- manifest ---------------------------------------------------------------------------
def config_hash(manifest: dict) -> str:
    """SHA-256 (hex) of the manifest's configuration: every field but the versions."""
    config = {k: v for k, v in manifest.items() if k not in VERSION_FIELDS}
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def file_sha256(path) -> str:
    """The SHA-256 (hex) of a file's bytes, as ``weights_sha256`` records a weights file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(out) -> dict | None:
    """The manifest of output directory ``out``, or None when it has none."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {path}: {err}") from None


def write_atomic(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through ``path.tmp`` and a rename, so that the file
    is either whole or absent."""
    path = Path(path)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def write_manifest(out, manifest: dict) -> Path:
    return write_atomic(Path(out) / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())


# -- shards and errors ------------------------------------------------------------------
def shard_paths(out) -> list[Path]:
    """The whole shards of ``out``, in order (temporary ``*.tmp`` files are not shards)."""
    folder = Path(out) / SHARDS
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(SHARD_GLOB) if p.is_file())


def shard_index(path) -> int:
    """NNNNN of ``part-NNNNN.parquet``."""
    return int(Path(path).name.split(".")[0].split("-")[1])


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def read_rows(out, columns=None):
    """Every row written to ``out`` (a pyarrow Table; ``columns``: only these).
    An output without shards gives an empty table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(p, columns=columns) for p in shard_paths(out)]
    if not tables:
        manifest = read_manifest(out)
        schema = arrow_schema(list((manifest or {}).get("methods", {})), (manifest or {}).get("store", "summary"))
        return schema.empty_table() if columns is None else schema.empty_table().select(columns)
    return pa.concat_tables(tables, promote_options="default")


def written_ids(out) -> set[str]:
    """The ids of every example with rows in ``out``."""
    return set(read_rows(out, columns=["id"]).column("id").to_pylist())


def read_errors(out):
    """``errors.parquet`` of ``out`` (an empty table when there is none)."""
    import pyarrow.parquet as pq

    path = Path(out) / ERRORS
    if not path.is_file():
        return errors_schema().empty_table()
    return pq.read_table(path)


def table_bytes(table) -> bytes:
    """A pyarrow Table as the bytes of a Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()
