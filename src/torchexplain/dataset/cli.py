"""``torchexplain explain-dataset SOURCE --model SPEC --method NAMES --out DIR``: the
subcommand's options and handler (``torchexplain.cli`` adds them to its parser)."""

from __future__ import annotations

import argparse


def add_parser(sub, model_flags, common) -> argparse.ArgumentParser:
    """Add ``explain-dataset`` to the subcommands ``sub``; ``model_flags(p)`` adds the
    model options that ``explain`` has, ``common(p)`` --quiet and --overwrite."""
    p = sub.add_parser(
        "explain-dataset",
        help="explain every image of a folder or manifest; Parquet results that resume after a crash",
        description="Explain every image of SOURCE (a folder, searched recursively, or a CSV / Parquet file with a "
        "'path' column and optional 'label' and 'id' columns) and write Parquet shards, manifest.json, errors.parquet "
        "and summary.html to --out. Re-running the same command resumes where it stopped.",
    )
    p.add_argument("source", metavar="SOURCE", help="a folder of images, or a .csv / .parquet manifest")
    model_flags(p)
    p.add_argument("--method", default="integrated_gradients", help="comma-separated method names, or 'all'")
    p.add_argument("--target", default="top1", help="top1 | topk:K | class index | class name")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--engine", default="local", choices=["local", "ray"], help="local (default) or ray")
    p.add_argument("--address", metavar="ADDR", help="a Ray cluster's address (default: start a local one)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="ray: actors (default: the cluster's CPUs); local: image-decoding threads")
    p.add_argument("--gpus-per-worker", type=float, default=0, metavar="G", help="ray: GPUs per actor")
    p.add_argument("--cpus-per-worker", type=float, metavar="C",
                   help="ray: CPUs (and torch threads) per actor (default: an equal share of the cluster's)")
    p.add_argument("--batch-size", type=int, default=32, metavar="B", help="examples per batch (default 32)")
    p.add_argument("--limit", type=int, metavar="N", help="only the source's first N examples")
    p.add_argument("--store", default="summary", choices=["summary", "full"],
                   help="summary (default): totals, top positions, thumbnails; full: also the maps (float16)")
    p.add_argument("--top-k", type=int, default=10, metavar="K", help="top positions kept per map (default 10)")
    p.add_argument("--thumb", type=int, default=16, metavar="S", help="side of the stored thumbnails (default 16)")
    p.add_argument("--seed", type=int, default=0, help="base of the per-example seeds of sampling methods")
    p.add_argument("--metrics", metavar="NAMES",
                   help="also measure these metrics (e.g. deletion,insertion) on a sample of the images (summary)")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="skip the examples already written to --out (default: on)")
    common(p)
    return p


def _positive(args, *names) -> None:
    from ..cli import UsageError

    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive number; got {value}")
    if args.gpus_per_worker < 0:
        raise UsageError(f"--gpus-per-worker must be 0 or more; got {args.gpus_per_worker}")
    if args.cpus_per_worker is not None and args.cpus_per_worker <= 0:
        raise UsageError(f"--cpus-per-worker must be more than 0; got {args.cpus_per_worker}")


def run(args, *, methods, target, labels, metrics, note, progress: bool):
    """The handler: check the options, run :func:`explain_dataset`, print the final line."""
    import torch

    from ..cli import UsageError
    from .run import explain_dataset

    _positive(args, "workers", "batch_size", "limit", "top_k", "thumb", "size")
    if (args.mean is None) != (args.std is None):
        raise UsageError("--mean and --std go together")
    if args.address and args.engine != "ray":
        raise UsageError("--address goes with --engine ray")
    if args.device == "cuda" and not torch.cuda.is_available() and not args.gpus_per_worker:
        raise RuntimeError("--device cuda was asked for but CUDA is not available")
    result = explain_dataset(
        args.model, args.source, methods=methods, target=target, out=args.out, engine=args.engine,
        weights=args.weights, device=args.device, size=args.size, mean=args.mean, std=args.std,
        class_names=labels, batch_size=args.batch_size, workers=args.workers, gpus_per_worker=args.gpus_per_worker,
        cpus_per_worker=args.cpus_per_worker, address=args.address, limit=args.limit, store=args.store,
        top_k=args.top_k, thumb=args.thumb, seed=args.seed, resume=args.resume, overwrite=args.overwrite,
        metrics=metrics, progress=progress, notify=note,
    )
    if not args.quiet:
        print(result.line())
    return result
