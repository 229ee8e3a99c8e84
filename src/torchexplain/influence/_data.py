"""Batches: the training DataLoader, test inputs, (inputs..., labels) splitting, progress."""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Iterable

import torch
from torch.utils.data import DataLoader, Dataset


def train_loader(train_dataset, batch_size):
    """A DataLoader over ``train_dataset`` (used as is when it is one already)."""
    if isinstance(train_dataset, DataLoader):
        return train_dataset
    if not isinstance(train_dataset, Dataset):
        raise ValueError(
            f"train_dataset: expected a torch.utils.data.Dataset or DataLoader; got {type(train_dataset).__name__}"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(
            f"batch_size: expected a positive int when train_dataset is a Dataset; got {batch_size!r}"
        )
    return DataLoader(train_dataset, batch_size=int(batch_size), shuffle=False)


def loader_length(loader) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None


def as_batches(inputs, name: str = "inputs"):
    """A DataLoader (or other iterable of batches) as is; one batch (a tuple or list
    ``(inputs..., labels)``) as a list holding it."""
    if inputs is None:
        raise ValueError(
            f"{name}: required; expected a batch (inputs..., labels) or a DataLoader of batches, got None. "
            "For self influence scores use self_influence."
        )
    if isinstance(inputs, (tuple, list)):
        check_batch(inputs, name)
        return [inputs]
    if isinstance(inputs, DataLoader) or (isinstance(inputs, Iterable) and not isinstance(inputs, torch.Tensor)):
        return inputs
    raise ValueError(
        f"{name}: expected a tuple (inputs..., labels) or a DataLoader yielding such tuples; "
        f"got {type(inputs).__name__}"
    )


def check_batch(batch, name: str = "inputs") -> None:
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        got = f"a {type(batch).__name__} of length {len(batch)}" if isinstance(batch, (tuple, list)) else type(
            batch).__name__
        raise ValueError(
            f"{name}: expected each batch to be a tuple (inputs..., labels) with the labels last; got {got}"
        )


def split(batch, name: str = "inputs"):
    """``(model inputs tuple, labels)`` of one batch."""
    check_batch(batch, name)
    return tuple(batch[:-1]), batch[-1]


def rows(inputs: tuple, targets) -> int:
    for t in (*inputs, targets):
        if isinstance(t, torch.Tensor) and t.dim() > 0:
            return t.shape[0]
    raise ValueError("inputs: expected at least one tensor with a batch dimension in each batch")


class _Bar:
    """tqdm when it is installed, else nothing (progress only)."""

    def __init__(self, enabled: bool, desc: str, total: int | None):
        self.bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:  # pragma: no cover - tqdm is a dependency
                warnings.warn("show_progress=True needs tqdm; no progress is shown", stacklevel=3)
            else:
                self.bar = tqdm(desc=desc, total=total, mininterval=0.0)

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()


def progress(enabled: bool, desc: str, total: int | None) -> _Bar:
    return _Bar(enabled, desc, total)
