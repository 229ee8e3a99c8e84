"""The Ray engine: Ray Data runs the same :class:`~torchexplain.dataset.work.Worker` in
a pool of actors (``map_batches`` with a callable class, ``ActorPoolStrategy``,
``num_gpus`` per actor), and this process writes what they return into the output
directory (so shards, resume and errors are those of the local engine).

The model reaches the actors as its spec (a name, a TorchScript file or a factory,
with a state-dict file): each actor loads it; nothing of this process is pickled but
the job's plain data. ``ray.init`` starts a local cluster when no ``address`` is given
(usage statistics off, no dashboard)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os

from .local import decode_item, pending_items, planned, process, systematic
from .work import ExampleError, Worker


def _need_ray():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RuntimeError("engine 'ray' needs Ray Data: pip install 'torchexplain[ray]'") from None
    return ray


def _start(ray, address) -> bool:
    """Connect to the cluster at ``address``, or start a local one with every CPU of
    this machine; True when this call started it (and so stops it)."""
    import logging

    if ray.is_initialized():
        return False
    ray.init(address=address or None, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
             configure_logging=True)
    return True


class RayExplainer:
    """The callable class of ``map_batches``: one :class:`Worker` per actor. A batch
    of records (id, path, label and, in memory, data) becomes one output record with
    the rows (Parquet bytes) and the failures (JSON)."""

    def __init__(self, job):
        import torch

        threads = int(float(os.environ.get("OMP_NUM_THREADS", "0") or 0))
        if threads > 0:
            torch.set_num_threads(threads)
        self.worker = Worker(job)

    def __call__(self, batch: dict) -> dict:
        from . import schema
        from .work import rows_table

        decoded = [(item, decode_item(self.worker, item) if error is None else error)
                   for item, error in _items(batch, self.worker.job.class_names)]
        rows, failed = process(self.worker, decoded)
        job = self.worker.job
        table = rows_table(rows, job.methods, job.store)
        errors = [[i.id, i.path, stage, message] for i, stage, message in failed]
        return {"rows": [schema.table_bytes(table)], "errors": [json.dumps(errors)], "count": [len(decoded)]}


def _items(batch: dict, class_names) -> list:
    """(Item, None) for each record of a batch, or (Item, ExampleError) when its label
    is not a class. A missing label is None, NaN (a numeric column's gap) or, in the
    records this engine writes, -1."""
    from .sources import Item, SourceError, _label

    paths, labels, data = batch.get("path"), batch.get("label"), batch.get("data", batch.get("image"))
    items = []
    for i, ident in enumerate(batch["id"]):
        ident = str(ident)
        path = None if paths is None or paths[i] is None else str(paths[i])
        value = None if labels is None else labels[i]
        value = value.item() if hasattr(value, "item") else value
        if isinstance(value, float) and value != value or isinstance(value, int) and value < 0:
            value = None
        try:
            label, error = _label(value, class_names, f"row {ident}"), None
        except SourceError as err:
            label, error = None, ExampleError("read", str(err))
        items.append((Item(ident, path, label, None if data is None else data[i]), error))
    return items


def _records(items) -> list[dict]:
    """Pending items as plain records for ``ray.data.from_items``."""
    import numpy as np

    records = []
    for item in items:
        record = {"id": item.id, "path": item.path, "label": -1 if item.label is None else item.label}
        if item.data is not None:
            x = item.data
            record["data"] = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
        records.append(record)
    return records


def _dataset(ray, source, output, limit, counts, batch_size: int):
    """(ray.data.Dataset of pending records, how many)."""
    from .sources import RaySource

    if isinstance(source, RaySource):
        ds = source.ds if limit is None else source.ds.limit(limit)
        if "id" not in source.columns:
            ds = ds.add_column("id", lambda df: df["path"].astype(str))
        done = frozenset(output.done)
        if done:
            ds = ds.filter(lambda row: str(row["id"]) not in done)
        total = None
        return ds, total
    items, total = planned(source, output, limit, counts)
    if total is None:
        items = list(items)
        total = len(items)
    records = _records(items)
    if not records:
        return None, 0
    # a block per batch, so that every actor gets work (a block goes to one actor)
    blocks = -(-len(records) // batch_size)
    return ray.data.from_items(records, override_num_blocks=blocks), total


@contextlib.contextmanager
def quiet_data():
    """Ray Data without its own progress bars, logged progress and statistics (ours is
    the one bar), for the block; the caller's settings come back after it."""
    import logging

    import ray.data

    context = ray.data.DataContext.get_current()
    names = ("enable_progress_bars", "print_on_execution_start", "enable_auto_log_stats")
    saved = {name: getattr(context, name) for name in names}
    log = logging.getLogger("ray.data")
    level = log.level
    try:
        for name in names:
            setattr(context, name, False)
        log.setLevel(logging.ERROR)
        yield
    finally:
        for name, value in saved.items():
            setattr(context, name, value)
        log.setLevel(level)


def actor_cpus(cluster_cpus: float, node_cpus: float, actors: int, reads: bool) -> float:
    """CPUs each of ``actors`` reserves: an equal share of the cluster's (whole CPUs,
    at most a node's), so that one actor on a laptop uses every core (Ray gives it as
    many torch threads) and N actors split them. When the dataset reads its files in
    Ray tasks upstream of the actors, one CPU is left for those reads: actors holding
    every CPU would wait forever for blocks that no task could be scheduled to read."""
    share = max(0.0, cluster_cpus - (1 if reads else 0)) / actors
    return float(min(int(share), node_cpus)) if share >= 1 else share


def run_ray(job, source, output, *, batch_size: int, workers, gpus_per_worker, address, limit, progress,
            cpus_per_worker=None) -> dict:
    """Explain the pending examples of ``source`` on a Ray cluster; returns the counts."""
    from .sources import RaySource

    ray = _need_ray()
    started = _start(ray, address)
    try:
        with quiet_data():
            counts = {"done": 0, "skipped": 0, "failed": 0}
            ds, total = _dataset(ray, source, output, limit, counts, batch_size)
            if ds is None:
                return counts
            if gpus_per_worker and job.device == "cpu":
                job = dataclasses.replace(job, device="cuda")
            cpus = ray.cluster_resources().get("CPU", 1)
            node_cpus = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=cpus)
            size = workers or max(1, int(ray.available_resources().get("CPU", 1)))
            results = ds.map_batches(
                RayExplainer, fn_constructor_kwargs={"job": job}, batch_size=batch_size, batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=size), num_gpus=gpus_per_worker or None,
                num_cpus=cpus_per_worker or actor_cpus(cpus, node_cpus, size, isinstance(source, RaySource)),
            )
            _collect(results, output, counts, progress(total))
        return counts
    finally:
        if started:
            ray.shutdown()


def _collect(results, output, counts: dict, bar) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .sources import Item

    with bar:
        for record in results.iter_rows():
            rows = pq.read_table(pa.BufferReader(record["rows"])).to_pylist()
            failed = [(Item(i, p), stage, message) for i, p, stage, message in json.loads(record["errors"])]
            systematic(rows, failed, counts)
            output.add(rows, failed)
            counts["done"] += int(record["count"]) - len(failed)
            counts["failed"] += len(failed)
            bar.update(int(record["count"]))


__all__ = ["run_ray", "RayExplainer", "pending_items"]
