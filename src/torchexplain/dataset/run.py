"""``explain_dataset``: the model, the source and the output directory checked up front,
then one engine (``local`` or ``ray``) streams the examples through
:class:`~torchexplain.dataset.work.Worker` into Parquet shards."""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from torch import nn

from . import schema
from .output import Output
from .sources import Source, SourceError, open_source
from .work import Job, check_methods

ENGINES = ("local", "ray")


@dataclass
class DatasetResult:
    """What a run did: its output directory, the examples explained now (``done``),
    those already written (``skipped``), those that failed now (``failed``), the rows
    written now and the seconds it took. ``rows()`` / ``errors()`` read the whole output."""

    out: Path
    done: int
    skipped: int
    failed: int
    rows_written: int
    seconds: float

    @property
    def throughput(self) -> float:
        return (self.done + self.failed) / self.seconds if self.seconds > 0 else 0.0

    def rows(self, columns=None):
        return schema.read_rows(self.out, columns)

    def errors(self):
        return schema.read_errors(self.out)

    def line(self) -> str:
        return (f"explain-dataset: {self.done} done, {self.skipped} skipped, {self.failed} failed in "
                f"{self.seconds:.1f} s ({self.throughput:.1f} images/s); output: {self.out}")


def _check_options(engine, batch_size, workers, gpus_per_worker, cpus_per_worker, limit, store, top_k,
                   thumb) -> None:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    if store not in schema.STORES:
        raise ValueError(f"store must be one of {', '.join(schema.STORES)}; got {store!r}")
    for name, value in (("batch_size", batch_size), ("top_k", top_k), ("thumb", thumb)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int; got {value!r}")
    for name, value in (("workers", workers), ("limit", limit)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive int or None; got {value!r}")
    if not isinstance(gpus_per_worker, (int, float)) or gpus_per_worker < 0:
        raise ValueError(f"gpus_per_worker must be a number >= 0; got {gpus_per_worker!r}")
    if cpus_per_worker is not None and (isinstance(cpus_per_worker, bool) or
                                        not isinstance(cpus_per_worker, (int, float)) or cpus_per_worker <= 0):
        raise ValueError(f"cpus_per_worker must be a number > 0 or None; got {cpus_per_worker!r}")


def _module_sha256(model: nn.Module) -> str:
    digest = hashlib.sha256(type(model).__qualname__.encode())
    for name, value in model.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _model(model, weights, device: str, engine: str, notify=None):
    """(module, spec, class names, (size, mean, std, mode), weights hash)."""
    from ..loading import load_model

    if isinstance(model, nn.Module) or (callable(model) and not isinstance(model, (str, Path))):
        if engine != "local":
            raise TypeError(
                f"engine={engine!r} sends the model to its workers as a spec, never as a pickled object: pass a spec "
                "string ('digits', 'torchvision:NAME', 'package.module:factory', or a TorchScript file saved with "
                "torch.jit.save) and, for a state dict saved with torch.save(model.state_dict(), FILE), weights=FILE"
            )
        if weights is not None:
            raise ValueError("weights goes with a model spec; load the state dict into your module yourself")
        spec = f"module:{type(model).__module__}.{type(model).__qualname__}"
        sha = _module_sha256(model) if isinstance(model, nn.Module) else None
        return model, spec, None, (None, None, None, "RGB"), sha
    if not isinstance(model, (str, Path)):
        raise TypeError(f"model must be a spec string or an nn.Module; got {type(model).__name__}")
    spec = str(model)
    module, names, pre = load_model(spec, weights, device, notify=notify)
    sha = schema.file_sha256(weights) if weights is not None and Path(weights).is_file() else None
    if sha is None and Path(spec).is_file():
        sha = schema.file_sha256(spec)
    return module, spec, names, pre, sha


def _jsonable(value):
    import torch

    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        return {"tensor": list(value.shape), "sha256": hashlib.sha256(value.detach().cpu().numpy().tobytes())
                .hexdigest()}
    return repr(value)


def _manifest(job: Job, calls, weights_sha, source: Source) -> dict:
    import torch

    from .. import __version__

    manifest = {
        "format": schema.FORMAT, "model": job.model, "weights": job.weights, "weights_sha256": weights_sha,
        "methods": {c.spec.name: _jsonable(c.kwargs) for c in calls}, "target": job.target, "store": job.store,
        "top_k": job.top_k, "thumb": job.thumb, "source": source.description, "class_names": job.class_names,
        "preprocess": _jsonable(job.preprocess), "seed": job.seed,
        "torch": torch.__version__, "torchexplain": __version__,
    }
    manifest["config_hash"] = schema.config_hash(manifest)
    return manifest


def _progress(enabled, total):
    from tqdm.auto import tqdm

    if enabled is None:
        enabled = sys.stderr.isatty()
    return tqdm(total=total, unit="img", desc="explaining", disable=not enabled, dynamic_ncols=True)


def _summary(out: Path, metrics, notify) -> None:
    from ..report.dataset import write_summary

    try:
        write_summary(out, metrics)
    except Exception as err:  # noqa: BLE001  (the rows are written; the page is a bonus)
        notify(f"summary.html not written: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")


def explain_dataset(
    model,
    source,
    methods: str | Sequence[str] = "integrated_gradients",
    target="top1",
    out="torchexplain-dataset",
    engine: str = "local",
    *,
    weights=None,
    device: str = "cpu",
    size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    mode: str | None = None,
    class_names: Sequence[str] | None = None,
    batch_size: int = 32,
    workers: int | None = None,
    gpus_per_worker: float = 0,
    cpus_per_worker: float | None = None,
    address: str | None = None,
    limit: int | None = None,
    store: str = "summary",
    top_k: int = 10,
    thumb: int = 16,
    seed: int = 0,
    resume: bool = True,
    overwrite: bool = False,
    progress: bool | None = None,
    shard_rows: int = 512,
    method_kwargs: dict | None = None,
    metrics: str | Sequence[str] | None = None,
    notify=None,
) -> DatasetResult:
    """Explain every example of ``source`` with ``model`` and write the results to ``out``.

    ``model``: a spec (``"digits"``, ``"torchvision:NAME"``, a TorchScript file or
    ``"package.module:factory"``, with ``weights`` a state-dict file) or, with the local
    engine only, an ``nn.Module``. ``source``: a folder of images, a CSV / Parquet
    manifest (``path``, optional ``label`` and ``id`` columns), a torch Dataset or
    DataLoader (tensors are used as the model's inputs as they are) or a
    ``ray.data.Dataset``. ``methods``/``target`` as :func:`torchexplain.explain` takes
    them (``method_kwargs`` go to the methods that take them). Images are resized to
    ``size`` and normalised with ``mean``/``std`` (default: the model's).

    ``engine="local"`` runs in this process (``workers`` image-decoding threads);
    ``engine="ray"`` runs ``workers`` Ray actors (``gpus_per_worker`` GPUs and
    ``cpus_per_worker`` CPUs each; default: an equal share of the cluster's CPUs, which
    is also each actor's torch threads) on the cluster at ``address``, or on a local
    one started for the run.

    Output (:mod:`torchexplain.dataset.schema`): ``manifest.json``, Parquet shards of
    one row per (example, explained class) and ``errors.parquet`` for the examples that
    could not be read or explained. A directory holding this configuration's run is
    resumed (ids already written are skipped); another configuration is refused
    unless ``overwrite``. At the end, ``summary.html`` (:func:`torchexplain.report.dataset.write_summary`;
    ``metrics`` such as ``"deletion,insertion"`` are measured on a sample of the images).
    Returns a :class:`DatasetResult`.
    """
    from ..methods import method_calls, resolve
    from ..report.dataset import metric_list

    model_notify = notify  # None: a torchvision model without weights is a RandomWeightsWarning
    notify = notify or (lambda message: print(f"torchexplain: note: {message}", file=sys.stderr))
    _check_options(engine, batch_size, workers, gpus_per_worker, cpus_per_worker, limit, store, top_k, thumb)
    names = [methods] if isinstance(methods, str) else list(methods)
    if not names:
        raise ValueError("methods must name at least one method")
    specs = check_methods([resolve(n) for n in names])
    metrics = metric_list(metrics) if metrics else None
    if isinstance(source, (str, Path)) and not Path(source).exists():
        raise SourceError(f"source not found: {source}")  # before a model is loaded
    module, spec, model_names, (d_size, d_mean, d_std, d_mode), sha = _model(model, weights, device, engine,
                                                                              model_notify)
    names_ = list(class_names) if class_names is not None else model_names
    src = open_source(source, names_)
    if (mean is None) != (std is None):
        raise ValueError("mean and std go together")
    preprocess = {"size": size or d_size, "mean": list(mean) if mean is not None else d_mean,
                  "std": list(std) if std is not None else d_std, "mode": mode or d_mode}
    preprocess = {k: list(v) if isinstance(v, tuple) else v for k, v in preprocess.items()}
    job = Job(spec, None if weights is None else str(weights), device, [s.name for s in specs],
              dict(method_kwargs or {}), target, preprocess, names_, top_k, thumb, store, seed)
    calls = method_calls(specs, module, job.method_kwargs)
    output = Output(out, _manifest(job, calls, sha, src), job.methods, resume=resume, overwrite=overwrite,
                    shard_rows=shard_rows)
    start = time.perf_counter()
    if engine == "local":
        from .local import run_local

        counts = run_local(job, module, src, output, batch_size=batch_size, threads=workers, limit=limit,
                           progress=lambda total: _progress(progress, total))
    else:
        from .ray_engine import run_ray

        counts = run_ray(job, src, output, batch_size=batch_size, workers=workers, gpus_per_worker=gpus_per_worker,
                         cpus_per_worker=cpus_per_worker,
                         address=address, limit=limit, progress=lambda total: _progress(progress, total))
    output.close()
    result = DatasetResult(output.out, counts["done"], counts["skipped"], counts["failed"], output.rows_written,
                           time.perf_counter() - start)
    _summary(output.out, metrics, notify)
    return result
