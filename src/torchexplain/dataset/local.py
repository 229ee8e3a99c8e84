"""The local engine: one process streams the source in batches through a
:class:`~torchexplain.dataset.work.Worker`, while a thread pool decodes the next
batches' images (Pillow releases the GIL while it decodes)."""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Iterator

from .work import ExampleError, Worker

#: batches decoded ahead of the one being explained
PREFETCH_BATCHES = 2


def pending_items(source, output, limit, counts: dict) -> Iterator:
    """The source's items (its first ``limit``) that have no rows yet; an id seen twice
    is a failure of the second example; counts ``skipped`` and duplicate failures."""
    seen: set[str] = set()
    for n, item in enumerate(source.items()):
        if limit is not None and n >= limit:
            break
        if item.id in seen:
            output.add([], [(item, "read", f"duplicate id {item.id!r}: another example of the source has it")])
            counts["failed"] += 1
            continue
        seen.add(item.id)
        if item.id in output.done:
            counts["skipped"] += 1
            continue
        yield item


def planned(source, output, limit, counts: dict):
    """(items, total): the pending items, listed up front when the source is a list of
    files (so that the total is exact), else streamed with an estimated total."""
    items = pending_items(source, output, limit, counts)
    if not source.in_memory:
        items = list(items)
        return items, len(items)
    try:
        size = len(source) if limit is None else min(len(source), limit)
    except TypeError:
        return items, None
    return items, max(0, size - len(output.done))


def decode_item(worker: Worker, item):
    """The item's input tensor, or the ExampleError that says why there is none."""
    try:
        return worker.decode(item)
    except ExampleError as err:
        return err
    except Exception as err:  # noqa: BLE001  (a dataset's own loading code may raise anything)
        return ExampleError("decode", f"{type(err).__name__}: {err}")


def decoded_batches(worker: Worker, items: Iterable, batch_size: int, threads: int) -> Iterator[list]:
    """Batches of (item, tensor or ExampleError), decoded ``PREFETCH_BATCHES`` ahead."""
    iterator = iter(items)
    window: deque = deque()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="torchexplain-decode") as pool:

        def fill() -> None:
            while len(window) < batch_size * (PREFETCH_BATCHES + 1):
                item = next(iterator, None)
                if item is None:
                    return
                window.append((item, pool.submit(decode_item, worker, item)))

        fill()
        while window:
            batch = [window.popleft() for _ in range(min(batch_size, len(window)))]
            fill()
            yield [(item, future.result()) for item, future in batch]


def process(worker: Worker, batch: list) -> tuple[list[dict], list]:
    """Rows and failures of one decoded batch (the work both engines share)."""
    good = [(item, x) for item, x in batch if not isinstance(x, ExampleError)]
    failed = [(item, x.stage, str(x)) for item, x in batch if isinstance(x, ExampleError)]
    rows, bad = worker.run(good) if good else ([], [])
    return rows, failed + bad


def systematic(rows: list, failed: list, counts: dict) -> None:
    """Raise when the run's first batch of two or more examples failed in the methods
    with one message for all: that is the configuration (a method argument, a model
    that is not a classifier), not the data."""
    if counts["done"] or rows or len(failed) < 2:
        return
    messages = {message for _, stage, message in failed if stage == "explain"}
    if len(messages) == 1 and all(stage == "explain" for _, stage, _ in failed):
        raise RuntimeError(f"every example of the first batch failed: {messages.pop()}")


def run_local(job, model, source, output, *, batch_size: int, threads: int | None, limit, progress) -> dict:
    """Explain the pending examples of ``source`` in this process; returns the counts."""
    counts = {"done": 0, "skipped": 0, "failed": 0}
    worker = Worker(job, model)
    items, total = planned(source, output, limit, counts)
    threads = threads or min(4, os.cpu_count() or 1)
    with progress(total) as bar:
        for batch in decoded_batches(worker, items, batch_size, threads):
            rows, failed = process(worker, batch)
            systematic(rows, failed, counts)
            output.add(rows, failed)
            counts["failed"] += len(failed)
            counts["done"] += len(batch) - len(failed)
            bar.update(len(batch))
    return counts
