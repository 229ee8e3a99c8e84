"""Concept activation vectors and their files.

A :class:`CAV` holds what a classifier learned for one experimental set at one
layer: ``stats = {"weights": (C, F) tensor, "classes": [concept ids], "accs": ...}``.
It is saved where Captum saves it, ``<save_path>/<model_id>/<ids>-<layer>.pkl``,
as a ``torch.save`` file that loads with ``torch.load(weights_only=True)``
(tensors, numbers, strings, lists and dicts only), written under a temporary name
and renamed when whole. The file also records the hash of the model it was
trained for; :meth:`CAV.load` given ``model_hash`` treats a CAV of another model
as absent.
"""

from __future__ import annotations

import numbers
import os
import pickle
import uuid
import warnings

import torch
from torch import Tensor

from .concept import Concept, concepts_to_str


def atomic_save(obj, path: str) -> None:
    """``torch.save(obj, path)`` through a temporary file renamed when whole."""
    tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def plain(value):
    """``value`` in the types ``torch.load(weights_only=True)`` reads back: tensors
    (detached, on CPU), Python numbers, strings, lists, tuples and dicts; NumPy
    values become lists or numbers."""
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if value is None or isinstance(value, (bool, str, numbers.Number)) and not hasattr(value, "dtype"):
        return value
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if hasattr(value, "tolist"):  # a NumPy array or scalar (or anything array-like)
        return value.tolist()
    return value


class CAV:
    """One experimental set's classifier result at one layer (Captum's ``CAV``)."""

    def __init__(self, concepts: list[Concept], layer: str, stats: dict | None = None, save_path: str = "./cav/",
                 model_id: str = "default_model_id", model_hash: str | None = None) -> None:
        self.concepts = concepts
        self.layer = layer
        self.stats = stats
        self.save_path = save_path
        self.model_id = model_id
        self.model_hash = model_hash

    @staticmethod
    def assemble_save_path(path: str, model_id: str, concepts: list[Concept], layer: str) -> str:
        """``<path>/<model_id>/<ids>-<layer>.pkl``, Captum's file of a CAV."""
        return os.path.join(path, model_id, concepts_to_str(concepts) + "-" + layer + ".pkl")

    @staticmethod
    def create_cav_dir_if_missing(save_path: str, model_id: str) -> None:
        os.makedirs(os.path.join(save_path, model_id), exist_ok=True)

    def save(self) -> None:
        """Write this CAV to :meth:`assemble_save_path` (atomically)."""
        CAV.create_cav_dir_if_missing(self.save_path, self.model_id)
        record = {
            "concept_ids": [c.id for c in self.concepts],
            "concept_names": [c.name for c in self.concepts],
            "layer": self.layer,
            "stats": plain(self.stats),
            "model_hash": self.model_hash,
        }
        atomic_save(record, CAV.assemble_save_path(self.save_path, self.model_id, self.concepts, self.layer))

    @staticmethod
    def load(cavs_path: str, model_id: str, concepts: list[Concept], layer: str,
             model_hash: str | None = None) -> CAV | None:
        """The saved CAV of ``concepts`` at ``layer``, or None when there is none,
        when it cannot be read with ``weights_only=True``, or (given ``model_hash``)
        when it was trained for another model."""
        path = CAV.assemble_save_path(cavs_path, model_id, concepts, layer)
        if not os.path.exists(path):
            return None
        try:
            record = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
            warnings.warn(f"CAV file {path} cannot be read safely ({err}); it is trained again", stacklevel=2)
            return None
        if not isinstance(record, dict) or "stats" not in record:
            return None
        if model_hash is not None and record.get("model_hash") != model_hash:
            return None
        loaded = [Concept(i, n, None) for i, n in zip(record["concept_ids"], record["concept_names"])]
        return CAV(loaded, record["layer"], record["stats"], cavs_path, model_id, record.get("model_hash"))

    def __repr__(self) -> str:
        return f"CAV({concepts_to_str(self.concepts)!r}, layer={self.layer!r})"
