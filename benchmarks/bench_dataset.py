#!/usr/bin/env python
"""Explaining a whole dataset: a plain Captum loop, our local engine, Ray with 1 and 2 actors.

Two jobs, each a folder of image files explained with IntegratedGradients and
Occlusion (the same arguments for every runner):

- digits: 500 PNGs of the bundled digits (32x32 grey) and the bundled CNN;
- resnet18: 64 JPEGs at 224x224 (smooth random pictures) and a random-init resnet18.

Runners: (a) the loop users write today around Captum: for each file, open it,
preprocess it, predict, then ``IntegratedGradients.attribute`` and
``Occlusion.attribute`` on that one image with Captum's defaults otherwise
(``internal_batch_size=None``, ``perturbations_per_eval=1``), keeping each map's sum;
(b) ``torchexplain.dataset.explain_dataset(..., engine="local")`` into a fresh
directory (Parquet shards, manifest, summary page included); (c) the same with
``engine="ray"`` and 1 or 2 actors, on a local Ray cluster started before the run
(``ray.init`` is timed apart and not counted) and stopped after it.

Every runner does one warm-up on a few images, then ``--repeats`` timed runs, the
runners interleaved in one process (their order rotates every repeat); each cell is
the median images/s. Peak memory: the local engine on ``--memory`` digits counts
(500 and 5,000) in child processes of their own, each reporting its peak RSS (VmHWM).

    python benchmarks/bench_dataset.py            # about 25 minutes here
    python benchmarks/bench_dataset.py --quick    # fewer images and repeats (about 5)

Ray runners: ``ray1`` is one actor with the engine's default share of the CPUs (all
of them), ``ray1cpu`` one actor with one CPU, ``ray2`` two actors (one CPU each here):
``ray1/local`` is Ray's overhead at equal resources, ``ray2/ray1cpu`` its scaling.

The last line is ``dataset: local/captum digits X resnet18 Y; ray1/local ...;
ray2/ray1cpu ...; ray2/ray1 ...; peak RSS 5000/500 X``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_gradient import busy_warning, cpu_count, cpu_name, fmt, load_average, short_error  # noqa: E402

SEED = 0
#: ray1: one actor with the machine's CPUs (the engine's default share); ray1cpu: one actor with one CPU;
#: ray2: two actors (one CPU each, the default share on 2 CPUs)
#: floor: the passes alone (each image's integration steps forward and backward, its occlusion windows forward)
RUNNERS = ("captum", "local", "ray1", "ray1cpu", "ray2", "floor")
#: the methods' arguments per job (registry names; Captum gets the same values)
DIGITS_ARGS = {"n_steps": 50, "sliding_window_shapes": (1, 4, 4), "strides": (1, 2, 2)}  # the one-call defaults
#: lighter than the defaults (50 steps, 225 windows), so that the Captum loop on 64 images takes minutes, not an hour
RESNET_ARGS = {"n_steps": 16, "sliding_window_shapes": (3, 32, 32), "strides": (3, 32, 32)}
#: the memory children: the digits job with fewer rows per image, so that 5,000 images take about a minute
MEMORY_ARGS = {"n_steps": 8, "sliding_window_shapes": (1, 8, 8), "strides": (1, 8, 8)}
METHODS = ("integrated_gradients", "occlusion")
TARGETS = {"local_vs_captum": 2.0, "ray1_vs_local": 1 / 1.3, "ray2_vs_ray1": 1.6, "memory": 1.10}


# --------------------------------------------------------------------------- data


def write_digits(folder: Path, n: int) -> Path:
    """``n`` digit PNGs (the train and test splits, cycled), one subfolder per label."""
    import numpy as np
    import torch
    from PIL import Image

    from torchexplain.models.digits import digits_images

    parts = [digits_images(s) for s in ("test", "train")]
    images = torch.cat([p[0] for p in parts])
    labels = torch.cat([p[1] for p in parts])
    for i in range(n):
        k = i % len(images)
        pixels = np.clip(np.rint(images[k, 0].numpy() * 255), 0, 255).astype(np.uint8)
        target = folder / str(int(labels[k]))
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(target / f"{i:05d}.png")
    return folder


def write_pictures(folder: Path, n: int, size: int = 224) -> Path:
    """``n`` smooth random RGB JPEGs (upsampled 7x7 colour fields plus a little noise)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(SEED)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        coarse = Image.fromarray(rng.integers(0, 256, (7, 7, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
        pixels = np.clip(np.asarray(coarse, dtype=np.int16) + rng.integers(-12, 13, (size, size, 3)), 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)
    return folder


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg"))


# --------------------------------------------------------------------------- runners


@dataclass
class Job:
    name: str
    spec: str
    folder: Path
    arguments: dict
    n: int
    times: dict = field(default_factory=lambda: {r: [] for r in RUNNERS})
    notes: list = field(default_factory=list)

    def rate(self, runner: str) -> float | None:
        return self.n / statistics.median(self.times[runner]) if self.times[runner] else None


def captum_loop(job: Job, limit: int | None = None) -> int:
    """The plain loop: one file at a time, Captum's defaults but for the shared arguments."""
    import torch
    from captum.attr import IntegratedGradients, Occlusion
    from PIL import Image

    from torchexplain.loading import image_transform, load_model

    model, _, (size, mean, std, mode) = load_model(job.spec, notify=lambda message: None)
    transform = image_transform(size, mean, std, mode)
    ig, occlusion = IntegratedGradients(model), Occlusion(model)
    a = job.arguments
    sums = []
    for path in image_files(job.folder)[:limit]:
        with Image.open(path) as image:
            x = transform(image).unsqueeze(0)
        with torch.no_grad():
            predicted = model(x).argmax(1)
        maps = (ig.attribute(x, target=predicted, n_steps=a["n_steps"]),
                occlusion.attribute(x, target=predicted, sliding_window_shapes=a["sliding_window_shapes"],
                                    strides=a["strides"]))
        sums.append([float(m.sum()) for m in maps])
    return len(sums)


def floor_loop(job: Job, limit: int | None = None) -> int:
    """The passes every runner must make, and nothing else: per image, its prediction, the
    ``n_steps`` scaled inputs forward and backward in one batch, and the occlusion windows
    (and the unoccluded input) forward in one batch; parameters frozen, no attribution
    arithmetic, no files written."""
    import math

    import torch
    from PIL import Image

    from torchexplain.loading import image_transform, load_model

    model, _, (size, mean, std, mode) = load_model(job.spec, notify=lambda message: None)
    for p in model.parameters():
        p.requires_grad_(False)
    transform = image_transform(size, mean, std, mode)
    a = job.arguments
    done = 0
    for path in image_files(job.folder)[:limit]:
        with Image.open(path) as image:
            x = transform(image).unsqueeze(0)
        windows = math.prod((d - w) // s + 1 for d, w, s in zip(x.shape[1:], a["sliding_window_shapes"], a["strides"]))
        with torch.inference_mode():
            predicted = int(model(x).argmax(1))
            model(x.expand(windows + 1, *x.shape[1:]).clone())
        alphas = torch.linspace(0, 1, a["n_steps"]).view(-1, 1, 1, 1)
        scaled = (alphas * x).requires_grad_()
        torch.autograd.grad(model(scaled)[:, predicted].sum(), scaled)
        done += 1
    return done


def engine_run(job: Job, out: Path, engine: str, workers: int | None = None, limit: int | None = None,
               cpus_per_worker: float | None = None) -> int:
    from torchexplain.dataset import explain_dataset

    result = explain_dataset(job.spec, job.folder, methods=list(METHODS), out=out, engine=engine, workers=workers,
                             cpus_per_worker=cpus_per_worker, limit=limit, method_kwargs=dict(job.arguments),
                             progress=False, overwrite=True, notify=lambda message: None)
    if result.failed:
        raise RuntimeError(f"{engine}: {result.failed} image(s) failed")
    return result.done


def start_ray(cpus: int) -> float:
    import logging

    import ray

    start = time.perf_counter()
    ray.init(num_cpus=max(cpus, 1), include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
             configure_logging=True)
    return time.perf_counter() - start


def run_once(job: Job, runner: str, scratch: Path, limit: int | None = None, ray_starts: list | None = None) -> float:
    """Seconds of one run of ``runner`` on ``job`` (the count of images checked)."""
    out = Path(tempfile.mkdtemp(prefix=f"{job.name}-{runner}-", dir=scratch))
    try:
        if runner.startswith("ray"):
            import ray

            workers = int(runner[3])
            cpus = 1 if runner.endswith("cpu") else None
            started = start_ray(cpu_count())
            if ray_starts is not None:
                ray_starts.append(started)
            try:
                begin = time.perf_counter()
                done = engine_run(job, out, "ray", workers, limit, cpus)
                seconds = time.perf_counter() - begin
            finally:
                ray.shutdown()
        else:
            begin = time.perf_counter()
            loops = {"captum": captum_loop, "floor": floor_loop}
            done = loops[runner](job, limit) if runner in loops else engine_run(job, out, "local", None, limit)
            seconds = time.perf_counter() - begin
    finally:
        shutil.rmtree(out, ignore_errors=True)
    expected = min(job.n, limit) if limit else job.n
    if done != expected:
        raise RuntimeError(f"{runner} explained {done} of {expected} images")
    return seconds


def bench_job(job: Job, runners: list[str], repeats: int, scratch: Path, ray_starts: list) -> None:
    for runner in runners:  # warm-up: imports, kernels, the files in the page cache
        try:
            run_once(job, runner, scratch, limit=8)
        except Exception as err:  # noqa: BLE001
            job.notes.append(f"{job.name} {runner}: warm-up failed, skipped: {short_error(err)}")
    live = [r for r in runners if not any(n.startswith(f"{job.name} {r}:") for n in job.notes)]
    for repeat in range(repeats):
        order = live[repeat % len(live):] + live[: repeat % len(live)] if live else []
        for runner in order:
            try:
                seconds = run_once(job, runner, scratch, ray_starts=ray_starts)
            except Exception as err:  # noqa: BLE001
                job.notes.append(f"{job.name} {runner}: failed: {short_error(err)}")
                live.remove(runner)
                continue
            job.times[runner].append(seconds)
            print(f"  {job.name:8s} repeat {repeat + 1}/{repeats} {runner:6s} {seconds:7.1f} s "
                  f"({job.n / seconds:6.2f} images/s)", flush=True)


# --------------------------------------------------------------------------- memory


def memory_child(folder: str, threads: int | None) -> None:
    """The local engine on every image of ``folder`` (the memory job), in this process."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    job = Job("memory", "digits", Path(folder), MEMORY_ARGS, len(image_files(Path(folder))))
    out = Path(tempfile.mkdtemp(prefix="memory-"))
    try:
        start = time.perf_counter()
        done = engine_run(job, out, "local")
        print(json.dumps({"done": done, "seconds": time.perf_counter() - start, "peak_mb": peak_rss_mb()}),
              flush=True)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM: since its exec, unlike the rusage of a
    child, which counts the forked parent's pages too)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1e3
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1e6 if sys.platform == "darwin" else 1e3)


def run_memory_child(folder: Path, threads: int | None) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--memory-child", str(folder)]
    if threads:
        command += ["--threads", str(threads)]
    proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    try:
        if proc.returncode != 0:
            return {"error": f"exit {proc.returncode}: {lines[-1] if lines else ''}"}
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        return {"error": "no summary from the child: " + (lines[-1] if lines else "(no output)")[:160]}


# --------------------------------------------------------------------------- report


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def verdict(value: float | None, target: float) -> str:
    return "n/a" if value is None else ("met" if value >= target else "MISSED")


#: the ratios printed per job: (name, numerator runner, denominator runner)
RATIOS = (("local/captum", "local", "captum"), ("floor/captum", "floor", "captum"), ("local/floor", "local", "floor"),
          ("ray1/local", "ray1", "local"), ("ray2/ray1cpu", "ray2", "ray1cpu"), ("ray2/ray1", "ray2", "ray1"))


def print_table(jobs: list[Job]) -> dict:
    print(f"\n{'job':9s} {'images':>6s} " + " ".join(f"{r + ' img/s':>14s}" for r in RUNNERS)
          + "".join(f" {name:>12s}" for name, _, _ in RATIOS))
    ratios = {}
    for job in jobs:
        rates = {r: job.rate(r) for r in RUNNERS}
        ratios[job.name] = {name: ratio(rates[a], rates[b]) for name, a, b in RATIOS}
        print(f"{job.name:9s} {job.n:6d} " + " ".join(f"{fmt(rates[r], '14.2f')}" for r in RUNNERS)
              + "".join(f" {fmt(ratios[job.name][name], '12.2f')}" for name, _, _ in RATIOS))
        reps = ", ".join(f"{r} {len(job.times[r])}" for r in RUNNERS)
        print(f"{'':9s} repeats: {reps}; median seconds: "
              + ", ".join(f"{r} {fmt(statistics.median(t) if t else None, '.1f')}" for r, t in job.times.items()))
    return ratios


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--digits", type=int, default=500, help="digits images (default 500)")
    p.add_argument("--resnet", type=int, default=64, help="resnet18 images at 224 (default 64)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each runner on the digits (default 3)")
    p.add_argument("--resnet-repeats", type=int, default=1, help="timed runs on resnet18 (default 1: minutes each)")
    p.add_argument("--memory", default="500,5000", help="digits counts of the memory children ('' for none)")
    p.add_argument("--runners", default=",".join(RUNNERS), help="a subset of " + ",".join(RUNNERS))
    p.add_argument("--jobs", default="digits,resnet18", help="digits, resnet18 or both")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: every CPU this process may use)")
    p.add_argument("--quick", action="store_true", help="200 digits, 16 resnet18 images, 1 repeat, memory 200,2000")
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.digits, args.resnet, args.repeats, args.resnet_repeats, args.memory = 200, 16, 1, 1, "200,2000"
    args.runners = [r for r in args.runners.split(",") if r.strip()]
    args.jobs = [j for j in args.jobs.split(",") if j.strip()]
    args.memory = [int(n) for n in args.memory.split(",") if n.strip()]
    if set(args.runners) - set(RUNNERS) or set(args.jobs) - {"digits", "resnet18"}:
        p.error(f"--runners takes {','.join(RUNNERS)}; --jobs takes digits,resnet18")
    if min([args.digits, args.resnet, args.repeats, args.resnet_repeats, *args.memory]) < 1:
        p.error("image counts and repeats must be at least 1")
    return args


def print_targets(ratios: dict, memory: float | None) -> None:
    print("\ntargets:")
    for name, r in ratios.items():
        rl = r["ray1/local"]
        print(f"  {name}: local >= 2x the Captum loop: {verdict(r['local/captum'], TARGETS['local_vs_captum'])} "
              f"({fmt(r['local/captum'], '.2f')}x); ray 1 actor within 1.3x of local: "
              f"{verdict(rl, TARGETS['ray1_vs_local'])} (local/ray1 {fmt(1 / rl if rl else None, '.2f')}x)"
              + (f"; ray 2 actors >= 1.6x ray 1 (one CPU per actor): "
                 f"{verdict(r['ray2/ray1cpu'], TARGETS['ray2_vs_ray1'])} ({fmt(r['ray2/ray1cpu'], '.2f')}x)"
                 if name == "digits" else f"; ray2/ray1cpu {fmt(r['ray2/ray1cpu'], '.2f')}x (no target)")
              + f"; ray2/ray1 {fmt(r['ray2/ray1'], '.2f')}x (no target)")
    flat = None if memory is None else (memory <= TARGETS["memory"])
    print(f"  memory flat in the number of images (largest/smallest peak <= {TARGETS['memory']:.2f}): "
          f"{'n/a' if flat is None else ('met' if flat else 'MISSED')} ({fmt(memory, '.3f')})")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child, args.threads)
        return 0
    warnings.filterwarnings("ignore")
    import torch

    threads = args.threads or cpu_count()
    torch.set_num_threads(threads)
    import captum

    import torchexplain

    try:
        import ray

        ray_version = ray.__version__
    except ImportError:
        ray_version = None
        args.runners = [r for r in args.runners if not r.startswith("ray")]
    print(f"torch {torch.__version__}, captum {captum.__version__}, torchexplain {torchexplain.__version__}, "
          f"ray {ray_version or 'not installed (ray runs skipped)'}, python {platform.python_version()}")
    print(f"threads {torch.get_num_threads()}, CPU: {cpu_name()} ({cpu_count()} usable); methods {', '.join(METHODS)}")
    print(f"digits: {args.digits} PNGs, bundled CNN, {DIGITS_ARGS}; resnet18: {args.resnet} JPEGs 224x224, random "
          f"init, {RESNET_ARGS}; repeats {args.repeats} (resnet18 {args.resnet_repeats}); runners {args.runners}")
    warning = busy_warning(load_average(), 0, cpu_count())
    print(f"load average at start: {fmt(load_average(), '.2f')}" + (f"\n{warning}" if warning else ""), flush=True)
    started = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="bench-dataset-"))
    try:
        jobs = []
        if "digits" in args.jobs:
            jobs.append(Job("digits", "digits", write_digits(scratch / "digits", args.digits), DIGITS_ARGS,
                            args.digits))
        if "resnet18" in args.jobs:
            jobs.append(Job("resnet18", "torchvision:resnet18", write_pictures(scratch / "pictures", args.resnet),
                            RESNET_ARGS, args.resnet))
        ray_starts: list[float] = []
        for job in jobs:
            print(f"\n{job.name}: {job.n} images", flush=True)
            bench_job(job, args.runners, args.repeats if job.name == "digits" else args.resnet_repeats, scratch,
                      ray_starts)
        ratios = print_table(jobs)
        memory = measure_memory(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    notes = [n for job in jobs for n in job.notes]
    if ray_starts:
        notes.append(f"ray.init (a local cluster of {cpu_count()} CPUs) took {statistics.median(ray_starts):.1f} s "
                     "(median), not counted in the Ray runs")
    for note in notes:
        print(f"note: {note}")
    print_targets(ratios, memory)
    warning = busy_warning(load_average(), 0, cpu_count())
    print(f"\ntotal {time.perf_counter() - started:.0f} s; load average at end: {fmt(load_average(), '.2f')}"
          + (f"\n{warning}" if warning else ""))
    parts = [f"{name} " + " ".join(f"{job} {fmt(ratios.get(job, {}).get(name), '.2f')}"
                                   for job in ("digits", "resnet18")) for name, _, _ in RATIOS]
    print(f"dataset: {'; '.join(parts)}; peak RSS {max(args.memory, default=0)}/{min(args.memory, default=0)} "
          f"{fmt(memory, '.3f')}")
    return 0


def measure_memory(args, scratch: Path) -> float | None:
    """Peak RSS of the local engine per digits count; returns largest/smallest."""
    if not args.memory:
        return None
    print(f"\npeak memory of the local engine (child processes; digits, {MEMORY_ARGS}):")
    peaks = {}
    for n in sorted(set(args.memory)):
        folder = write_digits(scratch / f"memory-{n}", n)
        r = run_memory_child(folder, args.threads)
        shutil.rmtree(folder, ignore_errors=True)
        if "error" in r:
            print(f"  {n:6d} images: FAILED: {r['error']}", flush=True)
            continue
        print(f"  {n:6d} images: peak RSS {r['peak_mb']:7.0f} MB, {r['done']} done in {r['seconds']:.1f} s", flush=True)
        peaks[n] = r["peak_mb"]
    if len(peaks) < 2:
        return None
    return peaks[max(peaks)] / peaks[min(peaks)]


if __name__ == "__main__":
    sys.exit(main())
