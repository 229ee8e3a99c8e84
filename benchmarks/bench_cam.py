#!/usr/bin/env python
"""Class activation maps: torchexplain.cam against pytorch-grad-cam, side by side.

Both libraries explain the same random-init torchvision resnet18 (eval, CPU) at
``layer4`` for one 1x3x224x224 input and one fixed target class, each with its
defaults (pytorch-grad-cam's ScoreCAM ``batch_size`` 16, AblationCAM 32; ours
sizes its chunks from the memory budget). Runs are interleaved in one process, the
order of the two libraries alternating every repeat; each method reports the
median seconds of both, their ratio, and each one's ratio to the floor:

* GradCAM, GradCAMPlusPlus: one forward with autograd and one backward of the
  target score to layer4's output (the least a gradient CAM must do);
* ScoreCAM, AblationCAM: the fastest inference-mode forwards over the 512 masked
  images (one per layer4 channel): blocks of at most 16, 32 or 64 rows, contiguous
  or channels-last, whichever sums to less.

    python benchmarks/bench_cam.py            # 3 repeats of the perturbation CAMs, 20 of the others
    python benchmarks/bench_cam.py --quick    # 1 and 5

Absolute times on a shared machine drift; read the ratios. The last line is
``worst ratio vs pytorch-grad-cam: X``, the largest ours/peer ratio.
"""

from __future__ import annotations

import argparse
import copy
import gc
import math
import os
import platform
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Callable

os.environ.setdefault("TQDM_DISABLE", "1")  # pytorch-grad-cam draws a progress bar per batch

import torch
import torchvision

# Run as a script, this file's folder is on sys.path: reuse the other benchmarks'
# machine, formatting and forward-floor helpers.
from bench_gradient import busy_warning, cpu_count, cpu_name, fmt, load_average, short_error, timed
from bench_perturbation import ForwardFloor

SEED = 0
IMAGE = (3, 224, 224)
TARGET = 281
LAYER = "layer4"
CHANNELS = 512  # layer4's channels: ScoreCAM and AblationCAM evaluate one masked input each
FLOOR_CHUNKS = (16, 32, 64)
GOALS = {"GradCAM": 0.5, "GradCAMPlusPlus": 0.5, "ScoreCAM": 0.35, "AblationCAM": 0.35}
HEAVY = ("ScoreCAM", "AblationCAM")


# --------------------------------------------------------------------------- sides


class Side:
    """One library's CAM object on its own copy of the model."""

    def __init__(self, label: str, method: str, model: torch.nn.Module, inputs: torch.Tensor):
        self.label, self.method, self.inputs = label, method, inputs
        self.error: str | None = None
        self.model = copy.deepcopy(model)
        try:
            self.call = self._make()
        except Exception as exc:  # noqa: BLE001 - a benchmark reports and goes on
            self.error = short_error(exc)

    def _make(self) -> Callable[[], object]:
        layer = dict(self.model.named_modules())[LAYER]
        if self.label == "ours":
            import torchexplain.cam as ours

            cam = getattr(ours, self.method)(self.model, LAYER)
            return lambda: cam.attribute(self.inputs, target=TARGET)
        import pytorch_grad_cam as peer
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cam = getattr(peer, self.method)(model=self.model, target_layers=[layer])
        self.release = cam.activations_and_grads.release
        return lambda: cam(input_tensor=self.inputs, targets=[ClassifierOutputTarget(TARGET)])

    def run(self) -> float | None:
        if self.error is not None:
            return None
        try:
            return timed(self.call)
        except Exception as exc:  # noqa: BLE001
            self.error = short_error(exc)
            return None


@dataclass
class Row:
    method: str
    repeats: int
    ours: float | None = None
    peer: float | None = None
    floor: float | None = None

    @property
    def ratio(self) -> float | None:
        return None if self.ours is None or self.peer is None else self.ours / self.peer


def bench(method: str, model, inputs, repeats: int) -> tuple[Row, list[str]]:
    """A warm-up run of ours (and of the peer's light methods: its heavy ones are
    512 forwards, the first of which warms it up), then ``repeats`` interleaved runs."""
    sides = [Side("ours", method, model, inputs), Side("peer", method, model, inputs)]
    for side in sides:
        if side.label == "ours" or method not in HEAVY:
            side.run()
    times: dict[str, list[float]] = {"ours": [], "peer": []}
    for i in range(repeats):
        for side in sides if i % 2 == 0 else sides[::-1]:
            seconds = side.run()
            if seconds is not None:
                times[side.label].append(seconds)
    row = Row(method, repeats)
    for side in sides:
        if times[side.label] and side.error is None:
            setattr(row, side.label, statistics.median(times[side.label]))
        if hasattr(side, "release"):
            side.release()
    return row, [f"{method}: {s.label} failed ({s.error})" for s in sides if s.error]


# --------------------------------------------------------------------------- floors


def gradient_floor(model: torch.nn.Module, inputs: torch.Tensor, tries: int) -> float:
    """Fastest forward (autograd on) plus backward of the target score to layer4."""
    seen = {}
    handle = model.layer4.register_forward_hook(lambda m, a, out: seen.__setitem__("values", out))
    best = math.inf
    try:
        for _ in range(tries):
            gc.collect()
            start = time.perf_counter()
            score = model(inputs)[:, TARGET].sum()
            torch.autograd.grad(score, seen["values"])
            best = min(best, time.perf_counter() - start)
    finally:
        handle.remove()
    return best


def masked_floor(model: torch.nn.Module, tries: int) -> float:
    return min(ForwardFloor(model, chunk, tries).seconds(CHANNELS) for chunk in FLOOR_CHUNKS)


# --------------------------------------------------------------------------- report


def print_table(rows: list[Row]) -> None:
    table = [("method", "reps", "ours s", "peer s", "ours/peer", "goal", "floor s", "ours/floor", "peer/floor")]
    for r in rows:
        goal = f"<= {GOALS[r.method]:g}" + ("" if r.ratio is None or r.ratio <= GOALS[r.method] else " MISSED")
        table.append((
            r.method, str(r.repeats), fmt(r.ours, ".3f"), fmt(r.peer, ".3f"), fmt(r.ratio, ".3f"), goal,
            fmt(r.floor, ".3f"),
            fmt(None if r.ours is None or not r.floor else r.ours / r.floor, ".2f"),
            fmt(None if r.peer is None or not r.floor else r.peer / r.floor, ".2f"),
        ))
    widths = [max(map(len, column)) for column in zip(*table)]
    for i, cells in enumerate(table):
        print("  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(cells, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of ScoreCAM and AblationCAM (default 3)")
    p.add_argument("--light-repeats", type=int, default=20, help="timed repeats of the gradient CAMs (default 20)")
    p.add_argument("--quick", action="store_true", help="1 and 5 repeats")
    p.add_argument("--methods", default="", help="comma-separated methods (default: all four)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--show-warnings", action="store_true", help="do not silence library warnings")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.light_repeats = 1, 5
    if min(args.repeats, args.light_repeats, args.threads) < 1:
        p.error("--repeats, --light-repeats and --threads must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.show_warnings:
        warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)

    from importlib.metadata import version

    import torchexplain

    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, grad-cam {version('grad-cam')}, "
          f"torchexplain {torchexplain.__version__}, python {platform.python_version()}")
    print(f"threads {torch.get_num_threads()}, CPU: {cpu_name()} ({cpu_count()} usable)")
    print(f"model resnet18 (random init, eval, CPU) at {LAYER}, input 1x{'x'.join(map(str, IMAGE))}, "
          f"target {TARGET}, repeats {args.repeats} (ScoreCAM, AblationCAM) / {args.light_repeats} (others)")
    warning = busy_warning(load_average(), 0, cpu_count())
    print(f"load average at start: {fmt(load_average(), '.2f')}" + (f"\n{warning}" if warning else ""))
    print()

    wanted = {m.strip().lower() for m in args.methods.split(",") if m.strip()}
    methods = [m for m in GOALS if not wanted or m.lower() in wanted]
    torch.manual_seed(SEED)
    model = torchvision.models.resnet18(weights=None).eval()
    inputs = torch.randn((1,) + IMAGE, generator=torch.Generator().manual_seed(SEED))

    rows, notes = [], []
    started = time.perf_counter()
    floors: dict[str, float] = {}
    for method in methods:
        row, failed = bench(method, model, inputs, args.repeats if method in HEAVY else args.light_repeats)
        kind = "masked" if method in HEAVY else "gradient"
        if kind not in floors:
            floor_model = copy.deepcopy(model)
            tries = max(3, args.repeats)
            floors[kind] = (masked_floor(floor_model, tries) if kind == "masked"
                            else gradient_floor(floor_model, inputs, max(5, args.light_repeats)))
        row.floor = floors[kind]
        rows.append(row)
        notes += failed
        print(f"[{time.perf_counter() - started:6.1f}s] {method}: ours {fmt(row.ours, '.3f')} s, "
              f"peer {fmt(row.peer, '.3f')} s, floor {fmt(row.floor, '.3f')} s", flush=True)

    print()
    print_table(rows)
    print()
    print("peer = pytorch-grad-cam with its defaults; medians in seconds; floor: forward + backward to "
          f"{LAYER} for the gradient CAMs, the fastest inference-mode forwards over {CHANNELS} masked images "
          f"(blocks of at most {'/'.join(map(str, FLOOR_CHUNKS))} rows, either layout) for ScoreCAM and AblationCAM")
    for msg in notes:
        print("note: " + msg)
    end_load = load_average()
    print(f"total {time.perf_counter() - started:.1f} s; load average at end: {fmt(end_load, '.2f')}")
    warning = busy_warning(end_load, torch.get_num_threads(), cpu_count())
    if warning:
        print(warning)
    ratios = [r.ratio for r in rows if r.ratio is not None]
    print(f"worst ratio vs pytorch-grad-cam: {max(ratios) if ratios else float('nan'):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
