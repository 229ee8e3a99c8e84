"""What ``explain_dataset`` reads: a folder of images, a CSV or Parquet manifest of image
paths, a torch ``Dataset`` / ``DataLoader`` or a ``ray.data.Dataset``, each as a stream
of :class:`Item` records with a stable id.

Ids: a folder's images are named by their path relative to the folder (``cat/001.png``);
a manifest's by its ``id`` column, or the row number when it has none; a torch
dataset's by the example's index; a Ray dataset's by its ``id`` or ``path`` column.
Labels: a manifest's ``label`` column (a class index or name), the second element of a
torch dataset's ``(input, label)`` pairs, or, in a folder, the name of an image's
parent folder when it is one of the class names (the ``ImageFolder`` layout).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

#: the file suffixes a folder source takes as images (case ignored)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
MANIFEST_SUFFIXES = (".csv", ".parquet", ".pq")


class SourceError(ValueError):
    """A source that does not exist, is empty or cannot be read; the message is one line."""


@dataclass(frozen=True)
class Item:
    """One example of a source: its id, its file (None in memory), its label (a class
    index or None) and, for in-memory sources, its data (a tensor, array or PIL image)."""

    id: str
    path: str | None = None
    label: int | None = None
    data: object = None


def _label(value, class_names, where: str) -> int | None:
    """A label cell as a class index: an int, a digit string, or a class name."""
    if value is None or value == "":
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, bool):
        raise SourceError(f"{where}: a label must be a class index or name; got {value!r}")
    if isinstance(value, float) and value == value and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if class_names is not None and text in class_names:
        return list(class_names).index(text)
    if text.lstrip("-").isdigit():
        return int(text)
    known = f"; class names: {', '.join(map(str, class_names[:10]))}..." if class_names else ""
    raise SourceError(f"{where}: label {text!r} is neither a class index nor a class name{known}")


class Source:
    """A stream of :class:`Item` records; ``description`` goes into the manifest."""

    description: str = ""
    in_memory: bool = False

    def items(self) -> Iterator[Item]:
        raise NotImplementedError

    def __len__(self) -> int:
        raise TypeError(f"{type(self).__name__} has no length")


class FolderSource(Source):
    """Every image file under ``root`` (recursively), in sorted relative-path order."""

    def __init__(self, root: Path, class_names=None):
        self.root = root = root.resolve()
        self.description = str(root)
        self.files = sorted(
            (p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
            key=lambda p: p.relative_to(root).as_posix(),
        )
        if not self.files:
            raise SourceError(f"source {root} holds no images (looked for {', '.join(IMAGE_SUFFIXES)})")
        self.class_names = list(class_names) if class_names is not None else None

    def __len__(self) -> int:
        return len(self.files)

    def items(self) -> Iterator[Item]:
        for path in self.files:
            rel = path.relative_to(self.root)
            label = None
            if self.class_names is not None and len(rel.parts) > 1 and rel.parts[-2] in self.class_names:
                label = self.class_names.index(rel.parts[-2])
            yield Item(rel.as_posix(), str(path), label)


class ManifestSource(Source):
    """Rows of a CSV or Parquet file with a ``path`` column (relative paths are taken
    from the file's folder) and optional ``label`` and ``id`` columns."""

    def __init__(self, file: Path, class_names=None):
        self.file = file
        self.description = str(file.resolve())
        rows = self._read(file)
        if not rows:
            raise SourceError(f"source {file} has no rows")
        if "path" not in rows[0]:
            raise SourceError(f"source {file} needs a 'path' column; its columns are {', '.join(rows[0])}")
        self.rows = rows
        self.class_names = list(class_names) if class_names is not None else None

    @staticmethod
    def _read(file: Path) -> list[dict]:
        try:
            if file.suffix.lower() == ".csv":
                with open(file, newline="") as f:
                    return list(csv.DictReader(f))
            import pyarrow.parquet as pq

            return pq.read_table(file).to_pylist()
        except ImportError:
            raise SourceError("reading a Parquet manifest needs pyarrow (pip install pyarrow)") from None
        except Exception as err:  # noqa: BLE001  (any unreadable manifest is one message)
            raise SourceError(f"cannot read source {file}: {str(err).splitlines()[0]}") from None

    def __len__(self) -> int:
        return len(self.rows)

    def items(self) -> Iterator[Item]:
        base = self.file.resolve().parent
        for i, row in enumerate(self.rows):
            where = f"{self.file.name} row {i + 1}"
            ident = row.get("id")
            ident = str(i) if ident is None or ident == "" else str(ident)
            path = str(row["path"] or "")
            full = Path(path) if Path(path).is_absolute() else base / path
            yield Item(ident, str(full), _label(row.get("label"), self.class_names, where))


class TorchSource(Source):
    """A torch ``Dataset`` (items ``x`` or ``(x, label, ...)``) or a ``DataLoader``
    (batches of them); ids are the examples' running index."""

    in_memory = True

    def __init__(self, data, class_names=None):
        from torch.utils.data import DataLoader

        self.data = data
        self.loader = isinstance(data, DataLoader)
        self.class_names = class_names
        self.description = f"{type(data).__module__}.{type(data).__qualname__}"
        try:
            size = len(data.dataset if self.loader else data)
        except TypeError:
            size = None
        if size == 0:
            raise SourceError(f"source {self.description} is empty")
        self.size = size

    def __len__(self) -> int:
        if self.size is None:
            raise TypeError("this dataset has no length")
        return self.size

    def _examples(self):
        if not self.loader:
            if self.size is not None and hasattr(self.data, "__getitem__"):
                for i in range(self.size):
                    yield self.data[i]
            else:
                yield from self.data
            return
        for batch in self.data:
            xs, rest = (batch[0], batch[1:]) if isinstance(batch, (list, tuple)) else (batch, ())
            for j in range(len(xs)):
                yield (xs[j], *(r[j] for r in rest)) if rest else xs[j]

    def items(self) -> Iterator[Item]:
        for i, example in enumerate(self._examples()):
            x, label = example, None
            if isinstance(example, (list, tuple)):
                x = example[0]
                label = _label(example[1], self.class_names, f"example {i}") if len(example) > 1 else None
            yield Item(str(i), None, label, x)


class RaySource(Source):
    """A ``ray.data.Dataset`` with an image column (``image``, as ``read_images``
    gives, or ``path`` to be read) and an ``id`` or ``path`` column naming each row."""

    def __init__(self, ds, class_names=None):
        from .ray_engine import quiet_data

        with quiet_data():  # columns() may run the first block
            columns = list(ds.columns() or [])
        if "id" not in columns and "path" not in columns:
            raise SourceError(
                "a ray.data.Dataset source needs an 'id' or a 'path' column to name its rows "
                "(ray.data.read_images(..., include_paths=True) gives 'path')"
            )
        if "image" not in columns and "path" not in columns:
            raise SourceError(f"a ray.data.Dataset source needs an 'image' or a 'path' column; it has {columns}")
        self.ds = ds
        self.columns = columns
        self.class_names = class_names
        self.in_memory = "image" in columns
        self.description = f"ray.data.Dataset({', '.join(columns)})"

    def row_item(self, row: dict) -> Item:
        ident = row.get("id")
        path = row.get("path")
        ident = str(path) if ident is None else str(ident)
        label = _label(row.get("label"), self.class_names, f"row {ident}")
        return Item(ident, None if path is None else str(path), label, row.get("image"))

    def items(self) -> Iterator[Item]:
        for row in self.ds.iter_rows():
            yield self.row_item(row)


def open_source(source, class_names=None) -> Source:
    """The :class:`Source` for ``source``: a folder or manifest path (str or Path), a
    torch Dataset / DataLoader, or a ray.data.Dataset; a missing or empty one is a
    :class:`SourceError`."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise SourceError(f"source not found: {path}")
        if path.is_dir():
            return FolderSource(path, class_names)
        if path.suffix.lower() in MANIFEST_SUFFIXES:
            return ManifestSource(path, class_names)
        raise SourceError(f"source {path} is neither a folder nor a .csv / .parquet manifest")
    if type(source).__module__.startswith("ray.data"):
        return RaySource(source, class_names)
    from torch.utils.data import DataLoader, Dataset

    if isinstance(source, (Dataset, DataLoader)):
        return TorchSource(source, class_names)
    raise TypeError(
        "source must be a folder, a .csv / .parquet manifest, a torch Dataset or DataLoader, or a "
        f"ray.data.Dataset; got {type(source).__name__}"
    )
