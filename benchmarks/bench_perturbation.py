#!/usr/bin/env python
"""Perturbation attribution methods: torchexplain against Captum, side by side.

Both libraries explain the same random-init torchvision resnet18 on CPU, for one
1x3x224x224 input and one fixed target class, each called as shipped: ours
with its defaults (perturbations batched), Captum with its defaults
(``perturbations_per_eval=1``: one forward per perturbed input). Runs are
interleaved in one process, the order of the two libraries alternating every
repeat, and each method reports the median seconds of both, their ratio, and the
ratio of each to the floor: the fastest batched forward (inference mode) over as
many rows as the method evaluates. Absolute times on a shared machine drift; read
the ratios.

    python benchmarks/bench_perturbation.py            # 3 repeats
    python benchmarks/bench_perturbation.py --quick    # 1 repeat, fewer samples

The last line is ``worst ratio vs captum: X``, the largest ours/Captum ratio over
the methods where both libraries ran.
"""

from __future__ import annotations

import argparse
import copy
import gc
import math
import platform
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
import torchvision

# Run as a script, this file's folder is on sys.path: reuse the gradient benchmark's
# machine and formatting helpers rather than copying them.
from bench_gradient import busy_warning, cpu_count, cpu_name, fmt, load_average, short_error, timed

SEED = 0
IMAGE = (3, 224, 224)
TARGET = 281  # a fixed ImageNet class; the model is random, any class will do
N_SEGMENTS = 50
OCCLUSION_WINDOW = (3, 45, 45)
OCCLUSION_STRIDES = (3, 9, 9)
FLOOR_CHUNK = 16


# --------------------------------------------------------------------------- workloads


@dataclass
class Case:
    inputs: torch.Tensor
    feature_mask: torch.Tensor
    svs_samples: int
    ks_samples: int


def make_case(svs_samples: int, ks_samples: int) -> Case:
    # A natural image (scikit-image's astronaut, shipped with the package), so that
    # SLIC finds real superpixels: on noise it returns a single segment.
    from skimage import data

    from torchexplain import masks

    image = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float().div(255).unsqueeze(0)
    image = torch.nn.functional.interpolate(image, size=IMAGE[1:], mode="bilinear", antialias=True).clamp(0, 1)
    feature_mask = masks.superpixels(image, n_segments=N_SEGMENTS)  # (1, 1, 224, 224), ids 0 .. k-1
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    inputs = ((image - mean) / std).contiguous()  # ImageNet-normalised; the mask is on the image itself
    return Case(inputs, feature_mask, svs_samples, ks_samples)


@dataclass
class Method:
    """``make(lib, model)``: the attribution object; ``call(obj, case)``: one attribution;
    ``note(case)``: its settings; ``heavy``: Captum's default call runs hundreds of
    forwards, so Captum gets no warm-up run of it (see ``bench``)."""

    name: str
    make: Callable
    call: Callable
    note: Callable[[Case], str]
    heavy: bool = True


def _simple(name: str) -> Callable:
    return lambda lib, model: getattr(lib, name)(model)


def _occlusion(obj, case):
    return obj.attribute(case.inputs, sliding_window_shapes=OCCLUSION_WINDOW, strides=OCCLUSION_STRIDES,
                         baselines=0, target=TARGET)


def _ablation(obj, case):
    return obj.attribute(case.inputs, target=TARGET, feature_mask=case.feature_mask)


def _svs(obj, case):
    return obj.attribute(case.inputs, target=TARGET, feature_mask=case.feature_mask, n_samples=case.svs_samples)


def _kernel_shap(obj, case):
    return obj.attribute(case.inputs, target=TARGET, feature_mask=case.feature_mask, n_samples=case.ks_samples)


METHODS = [
    Method("Occlusion", _simple("Occlusion"), _occlusion,
           lambda c: f"window {OCCLUSION_WINDOW}, strides {OCCLUSION_STRIDES}, baselines=0"),
    Method("FeatureAblation", _simple("FeatureAblation"), _ablation,
           lambda c: f"{int(c.feature_mask.max()) + 1} superpixels", heavy=False),
    Method("ShapleyValueSampling", _simple("ShapleyValueSampling"), _svs,
           lambda c: f"{int(c.feature_mask.max()) + 1} superpixels, n_samples={c.svs_samples}"),
    Method("KernelShap", _simple("KernelShap"), _kernel_shap,
           lambda c: f"{int(c.feature_mask.max()) + 1} superpixels, n_samples={c.ks_samples}"),
]


# --------------------------------------------------------------------------- rows and floor


class RowCounter:
    """Counts the rows (examples) that go through a model's forward, with a forward
    pre-hook; ``count`` is the rows since the last ``reset``."""

    def __init__(self, model: torch.nn.Module):
        self.count = 0
        model.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        if args and isinstance(args[0], torch.Tensor):
            self.count += args[0].shape[0]

    def reset(self) -> None:
        self.count = 0


class ForwardFloor:
    """Fastest batched forward (inference mode) of the model over a number of rows:
    rows split into even blocks of at most ``chunk`` rows, fed contiguous or
    channels-last, whichever sums to less; each (block size, layout) is timed as the
    best of ``tries`` runs, once, and cached."""

    def __init__(self, model: torch.nn.Module, chunk: int, tries: int):
        self.model = model
        self.chunk = max(1, chunk)
        self.tries = max(1, tries)
        self._best: dict[tuple[int, bool], float] = {}

    @staticmethod
    def blocks(rows: int, chunk: int) -> list[int]:
        if rows <= 0:
            return []
        n_blocks = math.ceil(rows / chunk)
        size = math.ceil(rows / n_blocks)
        return [min(size, rows - a) for a in range(0, rows, size)]

    def _block_seconds(self, size: int, channels_last: bool) -> float:
        key = (size, channels_last)
        if key not in self._best:
            gen = torch.Generator().manual_seed(SEED + 1000 + size)
            x = torch.randn((size,) + IMAGE, generator=gen)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            best = math.inf
            with torch.inference_mode():
                for _ in range(self.tries):
                    gc.collect()
                    start = time.perf_counter()
                    out = self.model(x)
                    best = min(best, time.perf_counter() - start)
                    del out
            self._best[key] = best
        return self._best[key]

    def seconds(self, rows: int) -> float:
        return min(sum(self._block_seconds(size, layout) for size in self.blocks(rows, self.chunk))
                   for layout in (False, True))


# --------------------------------------------------------------------------- timing


@dataclass
class Row:
    method: str
    rows_ours: int | None = None
    rows_captum: int | None = None
    ours: float | None = None
    captum: float | None = None
    floor: float | None = None
    repeats: int = 0

    @property
    def ratio(self) -> float | None:
        if self.ours is None or self.captum is None:
            return None
        return self.ours / self.captum


class Side:
    """One library's attribution object for one method, on its own copy of the model,
    with a row counter on that copy."""

    def __init__(self, label: str, lib, method: Method, base_model: torch.nn.Module):
        self.label = label
        self.method = method
        self.error: str | None = None
        self.obj = None
        self.rows: int | None = None
        model = copy.deepcopy(base_model)
        self.counter = RowCounter(model)
        try:
            self.obj = method.make(lib, model)
        except Exception as exc:  # noqa: BLE001 - a benchmark reports and goes on
            self.error = short_error(exc)

    def run(self, case: Case) -> float | None:
        """Seconds for one attribution; None (and ``error`` set) when it raised."""
        if self.error is not None:
            return None
        self.counter.reset()
        try:
            seconds = timed(lambda: self.method.call(self.obj, case))
        except Exception as exc:  # noqa: BLE001
            self.error = short_error(exc)
            return None
        self.rows = self.counter.count
        return seconds


def bench(method: Method, case: Case, sides: dict[str, Side], repeats: int, captum_warmup: bool) -> Row:
    """One warm-up run of ours; one of Captum only for a light method (or with
    ``captum_warmup``): a heavy Captum call is hundreds of identical single-row
    forwards, so the first of them warms it up well enough. Then ``repeats`` runs of
    each, interleaved, the order alternating."""
    row = Row(method.name, repeats=repeats)
    for side in sides.values():
        if side.label == "ours" or captum_warmup or not method.heavy:
            side.run(case)
    active = [s for s in sides.values() if s.error is None]
    times: dict[str, list[float]] = {s.label: [] for s in active}
    for i in range(repeats):
        for side in active if i % 2 == 0 else active[::-1]:
            t = side.run(case)
            if t is not None:
                times[side.label].append(t)
    for label, values in times.items():
        if values and sides[label].error is None:
            setattr(row, label, statistics.median(values))
    row.rows_ours = sides["ours"].rows if "ours" in sides else None
    row.rows_captum = sides["captum"].rows if "captum" in sides else None
    return row


# --------------------------------------------------------------------------- report


def print_table(rows: list[Row]) -> None:
    header = ("method", "rows ours", "rows captum", "reps", "ours s", "captum s", "ours/captum", "floor s",
              "ours/floor", "captum/floor")
    lines = []
    for r in rows:
        lines.append((
            r.method, fmt(r.rows_ours, "d"), fmt(r.rows_captum, "d"), str(r.repeats),
            fmt(r.ours, ".3f"), fmt(r.captum, ".3f"), fmt(r.ratio, ".2f"), fmt(r.floor, ".3f"),
            fmt(None if r.ours is None or not r.floor else r.ours / r.floor, ".2f"),
            fmt(None if r.captum is None or not r.floor else r.captum / r.floor, ".2f"),
        ))
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]

    def render(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    print(render(header))
    print(render(["-" * w for w in widths]))
    for line in lines:
        print(render(line))


# --------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per library (default 3)")
    p.add_argument("--quick", action="store_true",
                   help="1 repeat, ShapleyValueSampling n_samples=2 and KernelShap n_samples=100")
    p.add_argument("--svs-samples", type=int, default=5, help="ShapleyValueSampling n_samples (default 5)")
    p.add_argument("--ks-samples", type=int, default=300, help="KernelShap n_samples (default 300)")
    p.add_argument("--methods", default="", help="comma-separated method names to run (default: all)")
    p.add_argument("--captum-warmup", action="store_true",
                   help="give Captum a warm-up run of the heavy methods too (slow: minutes)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the CPUs this process may use)")
    p.add_argument("--show-warnings", action="store_true", help="do not silence library warnings")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats = 1
        args.svs_samples = 2
        args.ks_samples = 100
    if min(args.repeats, args.svs_samples, args.ks_samples) < 1:
        p.error("--repeats, --svs-samples and --ks-samples must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.show_warnings:
        warnings.filterwarnings("ignore")
    threads = args.threads or cpu_count()
    torch.set_num_threads(threads)

    import captum
    import captum.attr as captum_attr

    import torchexplain
    import torchexplain.attr as ours_attr

    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, captum {captum.__version__}, "
          f"torchexplain {torchexplain.__version__}, python {platform.python_version()}")
    print(f"threads {torch.get_num_threads()}, CPU: {cpu_name()} ({cpu_count()} usable)")
    print(f"model resnet18 (random init, eval, CPU), input 1x{'x'.join(map(str, IMAGE))}, target {TARGET}, "
          f"repeats {args.repeats}, floor chunk {FLOOR_CHUNK}")
    warning = busy_warning(load_average(), 0, cpu_count())
    print(f"load average at start: {fmt(load_average(), '.2f')}" + (f"\n{warning}" if warning else ""))
    print()

    wanted = {m.strip().lower() for m in args.methods.split(",") if m.strip()}
    methods = [m for m in METHODS if not wanted or m.name.lower() in wanted]
    unknown = wanted - {m.name.lower() for m in METHODS}
    if unknown:
        print(f"unknown methods ignored: {', '.join(sorted(unknown))}")

    torch.manual_seed(SEED)
    base_model = torchvision.models.resnet18(weights=None).eval()
    floor = ForwardFloor(copy.deepcopy(base_model), FLOOR_CHUNK, tries=max(3, args.repeats))
    case = make_case(args.svs_samples, args.ks_samples)

    notes: list[str] = []
    results: list[Row] = []
    started = time.perf_counter()
    for method in methods:
        if not hasattr(ours_attr, method.name):
            msg = f"{method.name}: skipped, torchexplain.attr has no {method.name} yet"
            print(msg, flush=True)
            notes.append(msg)
            continue
        sides = {label: Side(label, lib, method, base_model)
                 for label, lib in (("ours", ours_attr), ("captum", captum_attr))}
        row = bench(method, case, sides, args.repeats, args.captum_warmup)
        if row.rows_ours is not None:
            row.floor = floor.seconds(row.rows_ours)
        results.append(row)
        for label, side in sides.items():
            if side.error is not None:
                notes.append(f"{method.name}: {label} failed ({side.error})")
        print(f"[{time.perf_counter() - started:6.1f}s] {method.name} ({fmt(row.rows_ours, 'd')} rows ours, "
              f"{fmt(row.rows_captum, 'd')} captum): ours {fmt(row.ours, '.3f')} s, captum {fmt(row.captum, '.3f')} s, "
              f"floor {fmt(row.floor, '.3f')} s", flush=True)

    print()
    print_table(results)
    print()
    print("settings: " + "; ".join(f"{m.name}: {m.note(case)}" for m in methods))
    print("rows = model rows (examples) one attribute call runs forward, counted by a forward pre-hook; "
          f"floor = the fastest inference-mode forward over 'rows ours' rows (blocks of at most {FLOOR_CHUNK} rows, "
          f"contiguous or channels-last, best of {floor.tries}); medians in seconds; both libraries with their "
          "default perturbations_per_eval")
    for msg in notes:
        print("note: " + msg)
    end_load = load_average()
    print(f"total {time.perf_counter() - started:.1f} s; load average at end: {fmt(end_load, '.2f')}")
    warning = busy_warning(end_load, torch.get_num_threads(), cpu_count())
    if warning:
        print(warning)
    ratios = [r.ratio for r in results if r.ratio is not None]
    worst = max(ratios) if ratios else float("nan")
    print(f"worst ratio vs captum: {worst:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
