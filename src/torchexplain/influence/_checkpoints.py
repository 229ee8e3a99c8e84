"""Checkpoints: which files, in which order, and the default way to load one."""

from __future__ import annotations

import glob
import math
import os
import re
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

LR_KEY = "learning_rate"


def natural_key(path: Any):
    """Sort key that orders ``ckpt-2`` before ``ckpt-10`` (digits compared as numbers)."""
    parts = re.split(r"(\d+)", str(path))
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts]


def resolve_checkpoints(checkpoints) -> list:
    """A directory (every file in it), a glob pattern, a list of paths (sorted
    naturally) or any other iterable of checkpoint objects (kept in its order)."""
    if isinstance(checkpoints, (str, os.PathLike)):
        text = os.fspath(checkpoints)
        pattern = os.path.join(text, "*") if os.path.isdir(text) else text
        found = sorted((p for p in glob.glob(pattern) if os.path.isfile(p)), key=natural_key)
    elif isinstance(checkpoints, (list, tuple)) and checkpoints and all(
        isinstance(c, (str, os.PathLike)) for c in checkpoints
    ):
        found = sorted((os.fspath(c) for c in checkpoints), key=natural_key)
    elif isinstance(checkpoints, Iterable):
        found = list(checkpoints)
    else:
        found = []
    if not found or any(c is None for c in found):
        raise ValueError(
            "Invalid checkpoints provided for TracIn class: checkpoints must be a directory holding checkpoint "
            "files, a glob that matches files, or a non-empty list of paths (no None); "
            f"got {checkpoints!r}"
        )
    return found


def _model_device(model: nn.Module):
    for t in model.parameters():
        return t.device
    return torch.device("cpu")


def _match_prefix(state: dict, model: nn.Module) -> dict:
    """Strip or add DataParallel's ``module.`` prefix so the keys fit ``model``."""
    wrapped = isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel))
    saved_wrapped = bool(state) and all(k.startswith("module.") for k in state)
    if saved_wrapped and not wrapped:
        return {k[len("module."):]: v for k, v in state.items()}
    if wrapped and not saved_wrapped:
        return {"module." + k: v for k, v in state.items()}
    return state


def load_flexible_state_dict(model: nn.Module, path) -> float:
    """The default ``checkpoints_load_func``: load the state dict saved at ``path``
    into ``model`` and return the checkpoint's learning rate.

    The file holds a state dict, optionally with a ``"learning_rate"`` entry (returned;
    1.0 when absent, as in Captum). DataParallel ``module.`` prefixes are matched to
    the model either way."""
    state = torch.load(path, map_location=_model_device(model), weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"checkpoints: expected {path!r} to hold a state dict; got {type(state).__name__}")
    state = dict(state)
    lr = state.pop(LR_KEY, 1.0)
    model.load_state_dict(_match_prefix(state, model))
    return float(lr)


def learning_rate(value, checkpoint) -> float:
    """The load function's return value as a float (``None`` counts as 1.0)."""
    if value is None:
        return 1.0
    if isinstance(value, torch.Tensor):
        value = value.item()
    try:
        lr = float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"checkpoints_load_func: expected it to return the checkpoint's learning rate (a float); "
            f"got {value!r} for {checkpoint!r}"
        ) from None
    if not math.isfinite(lr):
        raise ValueError(f"checkpoints_load_func: returned a learning rate of {lr} for {checkpoint!r}")
    return lr
