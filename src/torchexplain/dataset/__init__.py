"""Explain a whole dataset: :func:`explain_dataset` (and ``torchexplain explain-dataset``)
streams images or tensors through the registered methods and writes Parquet shards,
a manifest and an error table (the layout is :mod:`torchexplain.dataset.schema`).

The work is written once, :meth:`~torchexplain.dataset.work.Worker.explain_batch`
(a batch of examples -> rows), and two engines call it: ``local`` (one process, images
decoded in a thread pool while the model runs) and ``ray`` (Ray Data, an actor pool
holding the model; ``pip install 'torchexplain[ray]'``)."""

from __future__ import annotations

from . import schema

__all__ = ["explain_dataset", "DatasetResult", "schema"]


def __getattr__(name):
    if name in ("explain_dataset", "DatasetResult"):
        from . import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
