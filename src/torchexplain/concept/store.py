"""The on-disk cache of concept activations.

Layout (Captum's, so ``captum._utils.av.AV`` reads it too)::

    <save_path>/av/<model_id>/<concept name>-<id>/<layer>/<key>-<i>.pt   one chunk each
    <save_path>/av/<model_id>/<concept name>-<id>/<layer>/<key>.json     its manifest

Each ``.pt`` file holds one plain tensor ``(rows, features)`` on CPU (the layer's
values flattened per example), read back with ``torch.load(weights_only=True)``.
``key`` is :func:`model_key`: a hash of the model's state_dict tensors, the
``model_id`` and whether the layer's input or output is watched, so a changed model
never reuses another model's activations. Chunks are written under a temporary
name and renamed when whole; the manifest, written last, is what makes the cache
entry exist: an interrupted run leaves no entry that looks complete.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import uuid

import torch
from torch import Tensor, nn

from .cav import atomic_save

AV_DIR = "av"


def model_key(model: nn.Module, model_id: str, to_input: bool = False) -> str:
    """A 16-hex-digit hash of ``model``'s state_dict (names, dtypes, shapes and
    bytes of every tensor), ``model_id`` and ``to_input``."""
    h = hashlib.sha1()
    h.update(f"{model_id}\0{bool(to_input)}\0".encode())
    for name, value in model.state_dict().items():
        h.update(name.encode() + b"\0")
        if not isinstance(value, Tensor):
            h.update(repr(value).encode())
            continue
        h.update(f"{value.dtype}{tuple(value.shape)}".encode())
        flat = value.detach().reshape(-1)
        if flat.numel():
            h.update(flat.cpu().contiguous().view(torch.uint8).numpy().data)
    return h.hexdigest()[:16]


class ActivationStore:
    """Activations of concepts at layers under ``save_path`` for one model ``key``."""

    def __init__(self, save_path: str, model_id: str, key: str):
        self.save_path = save_path
        self.model_id = model_id
        self.key = key

    def folder(self, identifier: str, layer: str) -> str:
        return os.path.join(self.save_path, AV_DIR, self.model_id, identifier, layer)

    def _manifest(self, identifier: str, layer: str) -> str:
        return os.path.join(self.folder(identifier, layer), f"{self.key}.json")

    def files(self, identifier: str, layer: str) -> list[str] | None:
        """The chunk files of a complete entry, in order; None when there is none."""
        try:
            with open(self._manifest(identifier, layer)) as f:
                names = json.load(f)["files"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        paths = [os.path.join(self.folder(identifier, layer), name) for name in names]
        return paths if all(os.path.exists(p) for p in paths) else None

    def exists(self, identifier: str, layer: str) -> bool:
        return self.files(identifier, layer) is not None

    def writer(self, identifier: str, layer: str) -> ChunkWriter:
        return ChunkWriter(self, identifier, layer)


class ChunkWriter:
    """Writes one entry chunk by chunk: :meth:`add` per chunk, :meth:`commit` at the
    end (the manifest); the entry's older files for the same key are removed first."""

    def __init__(self, store: ActivationStore, identifier: str, layer: str):
        self.folder = store.folder(identifier, layer)
        self.key = store.key
        self.manifest = store._manifest(identifier, layer)
        os.makedirs(self.folder, exist_ok=True)
        for old in [self.manifest, *glob.glob(os.path.join(glob.escape(self.folder), f"{self.key}-*.pt"))]:
            if os.path.exists(old):
                os.remove(old)
        self.names: list[str] = []
        self.rows = 0

    def add(self, values: Tensor) -> None:
        """Save a chunk ``(rows, ...)``, flattened per row, as a tensor of its own."""
        flat = values.detach().reshape(values.shape[0], -1).to("cpu", copy=True)
        name = f"{self.key}-{len(self.names)}.pt"
        atomic_save(flat, os.path.join(self.folder, name))
        self.names.append(name)
        self.rows += flat.shape[0]

    def commit(self) -> None:
        tmp = f"{self.manifest}.tmp-{uuid.uuid4().hex[:8]}"
        with open(tmp, "w") as f:
            json.dump({"files": self.names, "rows": self.rows}, f)
        os.replace(tmp, self.manifest)


def load_chunk(path: str, device=None) -> Tensor:
    """One cached chunk, on ``device``."""
    return torch.load(path, map_location=device if device is not None else "cpu", weights_only=True)


class ActivationLoader:
    """What a classifier's ``train_and_eval`` gets: an iterable (iterate it as many
    times as needed) of ``(activations (b, features), labels (b,))`` batches, one
    cached chunk at a time, concept after concept, on ``device``. ``len()`` is the
    number of batches."""

    def __init__(self, sources: list[tuple[list[str], int]], device=None):
        self.sources = sources
        self.device = device

    def __iter__(self):
        for files, label in self.sources:
            for path in files:
                x = load_chunk(path, self.device)
                yield x, torch.full((x.shape[0],), label, dtype=torch.long, device=x.device)

    def __len__(self) -> int:
        return sum(len(files) for files, _ in self.sources)
