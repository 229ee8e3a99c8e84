#!/usr/bin/env python
"""TCAV: torchexplain.concept against captum.concept, for benchmarks/bench_families.py.

The job ("tcav"): a random-init torchvision resnet18 (``torch.manual_seed(0)``, eval,
CPU), layer ``layer3``; two concepts of 50 random 3x224x224 images each (a striped
pattern plus noise, and plain noise around another mean; ``quick``: 10 images at
64x64) served by one ``DataLoader(batch_size=64)`` each; CAV training included (a
fresh, empty ``save_path`` per run and ``force_train=True``); ``interpret`` on 16
random inputs with ``target=0``. Each library uses its default classifier
(torchexplain: the exact linear SVM in torch; Captum: scikit-learn's SGDClassifier)
and its own copy of the model.

``jobs(quick)`` gives ``(name, ours, captum)`` zero-argument callables, set up
beforehand; ``measure_memory(which, quick)`` runs one job in a fresh interpreter
(``which`` is "ours", "captum" or "baseline": the imports, the model and the data
alone) and returns its peak resident set (VmHWM) in MB. Run by hand::

    python benchmarks/families_concept.py [--quick] [--repeats 3] [--memory]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
LAYER = "layer3"
N_INPUTS = 16


def _setup(quick: bool):
    import torch
    import torchvision

    size, count = (64, 10) if quick else (224, 50)
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    g = torch.Generator().manual_seed(1)
    stripes = torch.sin(torch.arange(size, dtype=torch.float32) * 0.8).expand(count, 3, size, size)
    striped = stripes + 0.3 * torch.randn(count, 3, size, size, generator=g)
    noise = 0.5 + 0.8 * torch.randn(count, 3, size, size, generator=g)
    inputs = torch.randn(N_INPUTS, 3, size, size, generator=g)
    return model, striped, noise, inputs


def _runner(lib: str, model, striped, noise, inputs) -> Callable[[], None]:
    from torch.utils.data import DataLoader

    if lib == "ours":
        from torchexplain.concept import TCAV, Concept
    else:
        from captum.concept import TCAV, Concept
    concepts = [Concept(0, "striped", DataLoader(striped, batch_size=64)),
                Concept(1, "noise", DataLoader(noise, batch_size=64))]

    def run() -> None:
        folder = tempfile.mkdtemp(prefix=f"tcav-{lib}-")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tcav = TCAV(model, [LAYER], save_path=folder)
                tcav.compute_cavs([concepts], force_train=True)
                tcav.interpret(inputs, [concepts], target=0)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    return run


def jobs(quick: bool) -> list[tuple[str, Callable[[], None], Callable[[], None], Callable[[], None]]]:
    model, striped, noise, inputs = _setup(quick)
    ours = _runner("ours", copy.deepcopy(model), striped, noise, inputs)
    captum = _runner("captum", copy.deepcopy(model), striped, noise, inputs)
    return [("tcav", ours, captum, floor_job(quick))]


def floor_job(quick: bool) -> Callable[[], None]:
    """The passes TCAV cannot avoid: the concept images through the model up to
    ``layer3`` (inference mode, chunks of 8, channels-last) and the 16 inputs forward
    with the gradient of the target back to ``layer3``, parameters frozen."""
    import torch

    model, striped, noise, inputs = _setup(quick)
    for p in model.parameters():
        p.requires_grad_(False)
    trunk = torch.nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool, model.layer1, model.layer2,
                                model.layer3)
    head = torch.nn.Sequential(model.layer4, model.avgpool, torch.nn.Flatten(), model.fc)
    images = torch.cat([striped, noise])

    def run() -> None:
        with torch.inference_mode():
            for a in range(0, images.shape[0], 8):
                trunk(images[a:a + 8].contiguous(memory_format=torch.channels_last))
        with torch.no_grad():
            mid = trunk(inputs.contiguous(memory_format=torch.channels_last))
        mid.requires_grad_(True)
        torch.autograd.grad(head(mid)[:, 0].sum(), mid)

    return run


def memory_jobs(quick: bool) -> list[tuple[str, Callable[[], None], Callable[[], None]]]:
    return jobs(quick)


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1e3
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def measure_memory(which: str, quick: bool) -> float:
    """Peak RSS (MB) of a fresh interpreter running the job once with ``which``."""
    if which not in ("ours", "captum", "baseline"):
        raise ValueError(f"which must be 'ours', 'captum' or 'baseline'; got {which!r}")
    command = [sys.executable, str(Path(__file__).resolve()), "--memory-child", which, "--threads", "1"]
    command += ["--quick"] if quick else []
    proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          cwd=str(HERE.parent), env={**os.environ, "PYTHONWARNINGS": "ignore"})
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"memory child {which} failed (exit {proc.returncode}): {lines[-1] if lines else ''}")
    return float(json.loads(lines[-1])["peak_mb"])


def _memory_child(which: str, quick: bool) -> None:
    model, striped, noise, inputs = _setup(quick)
    if which != "baseline":
        _runner(which, model, striped, noise, inputs)()
    print(json.dumps({"peak_mb": peak_rss_mb()}), flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory", action="store_true", help="also measure peak memory in child processes")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared machine more threads stall at every barrier)")
    parser.add_argument("--memory-child", choices=("ours", "captum", "baseline"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.memory_child:
        _memory_child(args.memory_child, args.quick)
        return 0
    sys.path.insert(0, str(HERE))
    from bench_gradient import fmt, load_average, timed

    print(f"load average at start: {fmt(load_average(), '.2f')}")
    for name, ours, captum in jobs(args.quick):
        floor = floor_job(args.quick)
        ours(), captum(), floor()  # warm-up
        times: dict[str, list[float]] = {"ours": [], "captum": [], "floor": []}
        for r in range(args.repeats):
            order = [("ours", ours), ("captum", captum), ("floor", floor)]
            for label, fn in order if r % 2 == 0 else order[::-1]:
                times[label].append(timed(fn))
        o, c, f = (statistics.median(times[k]) for k in ("ours", "captum", "floor"))
        print(f"{name}: ours {o:.3f} s, captum {c:.3f} s, floor {f:.3f} s; ours/captum {o / c:.3f}, "
              f"floor/captum {f / c:.3f}, ours/floor {o / f:.3f}")
        print("  runs: " + "; ".join(f"{k} {[round(t, 2) for t in v]}" for k, v in times.items()))
    if args.memory:
        peaks = {w: measure_memory(w, args.quick) for w in ("baseline", "ours", "captum")}
        base = peaks["baseline"]
        print("peak RSS MB: " + ", ".join(f"{w} {v:.0f}" for w, v in peaks.items())
              + f"; ours/captum {peaks['ours'] / peaks['captum']:.3f}; above baseline "
              f"{(peaks['ours'] - base) / max(1e-9, peaks['captum'] - base):.3f}")
    print(f"load average at end: {fmt(load_average(), '.2f')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
