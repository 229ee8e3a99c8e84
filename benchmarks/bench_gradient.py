#!/usr/bin/env python
"""Gradient attribution methods: torchexplain against Captum, side by side.

Both libraries explain the same random-init torchvision resnet18 on CPU, for the
same inputs and targets. Runs are interleaved in one process (the order of the two
libraries alternates every repeat) after one warm-up run of each, and each
(method, batch) row reports the median seconds of both, their ratio, and the ratio
of each to the floor: the fastest batched forward + backward over the rows the
method has to evaluate (examples x steps / samples), chunked into blocks that fit
memory. Absolute times on a shared machine drift; read the ratios.

    python benchmarks/bench_gradient.py            # 1x and 8x batches, 5 repeats
    python benchmarks/bench_gradient.py --quick    # 1x batch, 2 repeats

The last line is ``worst ratio vs captum: X``, the largest ours/Captum ratio over
the rows where both libraries ran.
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

import torch
import torchvision

SEED = 0
IMAGE = (3, 224, 224)
N_CLASSES = 1000
IG_STEPS = 50
GS_BASELINE_ROWS = 10
GS_SAMPLES = 5
NT_SAMPLES = 5
DLS_BASELINE_ROWS = 5
LAYER = "layer2"  # the layer of the layer methods


# --------------------------------------------------------------------------- machine


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def busy_warning(load: float | None, own: float, threads: int) -> str:
    """A warning when other processes compete for the CPUs. With every core in use by
    our threads, a competitor stalls them at each parallel region's barrier and times
    can grow tenfold, for both libraries and the floor alike."""
    if load is None or load - own <= 0.5:
        return ""
    return (f"WARNING: 1-min load average {load:.1f} with {threads} CPUs ({own:g} of it ours): other processes "
            "compete for the CPUs, so these timings are unreliable; rerun on a quiet machine")


def short_error(exc: BaseException, width: int = 110) -> str:
    text = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= width else text[: width - 3] + "..."


# --------------------------------------------------------------------------- workloads


@dataclass
class Case:
    """The data every method of one batch size sees."""

    inputs: torch.Tensor
    target: torch.Tensor
    gs_baselines: torch.Tensor
    dls_baselines: torch.Tensor


def make_case(batch: int) -> Case:
    gen = torch.Generator().manual_seed(SEED + batch)
    return Case(
        inputs=torch.randn((batch,) + IMAGE, generator=gen),
        target=torch.randint(N_CLASSES, (batch,), generator=gen),
        gs_baselines=torch.randn((GS_BASELINE_ROWS,) + IMAGE, generator=gen),
        dls_baselines=torch.randn((DLS_BASELINE_ROWS,) + IMAGE, generator=gen),
    )


@dataclass
class Method:
    """One attribution method, built the same way from either library.

    ``needs``: the names that torchexplain.attr must have for our side to run.
    ``make(lib, model)``: the attribution object. ``call(obj, case, captum)``: one
    attribution. ``rows(n)``: the forward + backward rows the method evaluates for
    ``n`` examples, which sizes its floor.
    """

    name: str
    needs: tuple[str, ...]
    make: Callable
    call: Callable
    rows: Callable[[int], int]
    note: str = ""


def _plain(obj, case, captum_ibs):
    return obj.attribute(case.inputs, target=case.target)


def _ig(obj, case, captum_ibs):
    kwargs = {"internal_batch_size": captum_ibs} if captum_ibs is not None else {}
    return obj.attribute(case.inputs, target=case.target, n_steps=IG_STEPS, **kwargs)


def _gs(obj, case, captum_ibs):
    return obj.attribute(case.inputs, baselines=case.gs_baselines, n_samples=GS_SAMPLES, target=case.target)


def _nt(obj, case, captum_ibs):
    return obj.attribute(case.inputs, nt_type="smoothgrad", nt_samples=NT_SAMPLES, target=case.target)


def _dls(obj, case, captum_ibs):
    return obj.attribute(case.inputs, baselines=case.dls_baselines, target=case.target)


def _simple(name: str) -> Callable:
    return lambda lib, model: getattr(lib, name)(model)


def _at_layer(name: str) -> Callable:
    return lambda lib, model: getattr(lib, name)(model, getattr(model, LAYER))


METHODS = [
    Method("Saliency", ("Saliency",), _simple("Saliency"), _plain, lambda n: n),
    Method("InputXGradient", ("InputXGradient",), _simple("InputXGradient"), _plain, lambda n: n),
    Method(
        "IntegratedGradients", ("IntegratedGradients",), _simple("IntegratedGradients"), _ig,
        lambda n: IG_STEPS * n, f"n_steps={IG_STEPS}, gausslegendre",
    ),
    Method(
        "GradientShap", ("GradientShap",), _simple("GradientShap"), _gs,
        lambda n: GS_SAMPLES * n, f"{GS_BASELINE_ROWS} baseline rows, n_samples={GS_SAMPLES}",
    ),
    Method(
        "NoiseTunnel(Saliency)", ("NoiseTunnel", "Saliency"),
        lambda lib, model: lib.NoiseTunnel(lib.Saliency(model)), _nt,
        lambda n: NT_SAMPLES * n, f"smoothgrad, nt_samples={NT_SAMPLES}",
    ),
    Method("GuidedBackprop", ("GuidedBackprop",), _simple("GuidedBackprop"), _plain, lambda n: n),
    Method("Deconvolution", ("Deconvolution",), _simple("Deconvolution"), _plain, lambda n: n),
    Method("DeepLift", ("DeepLift",), _simple("DeepLift"), _plain, lambda n: 2 * n, "inputs + zero baselines"),
    Method(
        "DeepLiftShap", ("DeepLiftShap",), _simple("DeepLiftShap"), _dls,
        lambda n: 2 * DLS_BASELINE_ROWS * n, f"{DLS_BASELINE_ROWS} baseline rows",
    ),
    Method("LRP", ("LRP",), _simple("LRP"), _plain, lambda n: n),
    Method(
        f"LayerIntegratedGradients({LAYER})", ("LayerIntegratedGradients",), _at_layer("LayerIntegratedGradients"),
        _ig, lambda n: IG_STEPS * n, f"n_steps={IG_STEPS}, gausslegendre",
    ),
    Method(
        f"LayerConductance({LAYER})", ("LayerConductance",), _at_layer("LayerConductance"),
        _ig, lambda n: (IG_STEPS + 1) * n, f"n_steps={IG_STEPS}, gausslegendre",
    ),
]


# --------------------------------------------------------------------------- the floor


class Floor:
    """Fastest batched forward + backward (to the inputs) of the model over a number
    of rows: the best, over block sizes of at most ``chunks`` rows (rows split into
    even blocks) and over both memory layouts (contiguous and channels-last), of the
    summed block times. Each (block size, layout) is measured ``tries`` times, once,
    and cached."""

    def __init__(self, model: torch.nn.Module, chunks: tuple[int, ...], tries: int):
        self.model = model
        self.chunks = tuple(max(1, c) for c in chunks)
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
            target = torch.randint(N_CLASSES, (size, 1), generator=gen)
            best = math.inf
            for _ in range(self.tries):
                gc.collect()
                leaf = x.detach().requires_grad_(True)
                start = time.perf_counter()
                scalars = self.model(leaf).gather(1, target)
                torch.autograd.grad(scalars.sum(), leaf)
                best = min(best, time.perf_counter() - start)
                del scalars, leaf
            self._best[key] = best
        return self._best[key]

    def seconds(self, rows: int) -> float:
        return min(
            sum(self._block_seconds(size, layout) for size in self.blocks(rows, chunk))
            for chunk in self.chunks
            for layout in (False, True)
        )


# --------------------------------------------------------------------------- timing


def timed(fn: Callable[[], object]) -> float:
    gc.collect()
    start = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - start
    del result
    return elapsed


@dataclass
class Row:
    method: str
    batch: int
    rows: int
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
    """One library's attribution object for one method, on its own copy of the model
    (a library that writes onto modules, or fails half-way, cannot disturb the other)."""

    def __init__(self, label: str, lib, method: Method, base_model: torch.nn.Module, captum_ibs):
        self.label = label
        self.method = method
        self.captum_ibs = captum_ibs if label == "captum" else None
        self.error: str | None = None
        self.obj = None
        try:
            self.obj = method.make(lib, copy.deepcopy(base_model))
        except Exception as exc:  # noqa: BLE001 - a benchmark reports and goes on
            self.error = short_error(exc)

    def run(self, case: Case) -> float | None:
        """Seconds for one attribution; None (and ``error`` set) when it raised."""
        if self.error is not None:
            return None
        try:
            return timed(lambda: self.method.call(self.obj, case, self.captum_ibs))
        except Exception as exc:  # noqa: BLE001
            self.error = short_error(exc)
            return None


#: a call shorter than this gets more repeats: at ~0.1 s, single calls on a shared
#: machine swing by +-15%, so a median of 5 is not enough to read a 5% difference
SHORT_CALL_S = 0.5
MIN_TIMED_S = 4.0


def bench_case(method: Method, batch: int, case: Case, sides: dict[str, Side], repeats: int) -> Row:
    active = [s for s in sides.values() if s.error is None]
    warm = [side.run(case) for side in active]  # warm-up
    longest = max((t for t in warm if t is not None), default=None)
    if longest is not None and longest < SHORT_CALL_S:
        repeats = max(repeats, math.ceil(MIN_TIMED_S / max(longest, 1e-3)))
    row = Row(method.name, batch, method.rows(batch), repeats=repeats)
    active = [s for s in active if s.error is None]
    times: dict[str, list[float]] = {s.label: [] for s in active}
    for i in range(repeats):
        order = active if i % 2 == 0 else active[::-1]
        for side in order:
            if side.error is None:
                t = side.run(case)
                if t is not None:
                    times[side.label].append(t)
    for label, values in times.items():
        if values and sides[label].error is None:
            setattr(row, label, statistics.median(values))
    return row


# --------------------------------------------------------------------------- report


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[Row]) -> None:
    header = (
        "method", "batch", "rows", "reps", "ours s", "captum s", "ours/captum", "floor s", "ours/floor", "captum/floor"
    )
    lines = []
    for r in rows:
        lines.append(
            (
                r.method,
                str(r.batch),
                str(r.rows),
                str(r.repeats),
                fmt(r.ours, ".3f"),
                fmt(r.captum, ".3f"),
                fmt(r.ratio, ".2f"),
                fmt(r.floor, ".3f"),
                fmt(None if r.ours is None or not r.floor else r.ours / r.floor, ".2f"),
                fmt(None if r.captum is None or not r.floor else r.captum / r.floor, ".2f"),
            )
        )
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
    p.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="timed repeats per library for the smallest batch (larger batches use max(2, repeats // 2))",
    )
    p.add_argument("--quick", action="store_true", help="2 repeats and only the 1x batch")
    p.add_argument("--batches", default="1,8", help="comma-separated batch sizes (default 1,8)")
    p.add_argument("--methods", default="", help="comma-separated method names to run (default: all)")
    p.add_argument(
        "--floor-chunk",
        type=int,
        default=32,
        help="largest block of rows in one forward + backward when measuring the floor; blocks of "
        "at most 8 rows are tried too, and the faster counts (default 32)",
    )
    p.add_argument(
        "--captum-internal-batch-size",
        type=int,
        default=None,
        help="internal_batch_size passed to Captum's IntegratedGradients (default: Captum's own, all rows at once)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the CPUs this process may use)")
    p.add_argument("--show-warnings", action="store_true", help="do not silence library warnings")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats = 2
        args.batches = "1"
    args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    if args.repeats < 1 or not args.batches or min(args.batches) < 1:
        p.error("--repeats and every batch size must be at least 1")
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
    from torchexplain import config

    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, captum {captum.__version__}, "
        f"torchexplain {torchexplain.__version__}, python {platform.python_version()}"
    )
    print(f"threads {torch.get_num_threads()}, CPU: {cpu_name()} ({cpu_count()} usable)")
    print(
        f"model resnet18 (random init, eval, CPU), inputs Bx{'x'.join(map(str, IMAGE))}, batches {args.batches}, "
        f"repeats {args.repeats} (larger batches max(2, {args.repeats}//2)), "
        f"torchexplain memory budget {config.resolve_memory_budget('cpu') / 2**30:.2f} GiB, "
        f"floor chunk {args.floor_chunk}"
    )
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
    floor = Floor(copy.deepcopy(base_model), (8, args.floor_chunk), tries=max(3, args.repeats))
    cases = {b: make_case(b) for b in args.batches}
    smallest = min(args.batches)

    notes: list[str] = []
    results: list[Row] = []
    captum_failed: dict[str, str] = {}
    started = time.perf_counter()
    for method in methods:
        missing = [n for n in method.needs if not hasattr(ours_attr, n)]
        if missing:
            msg = f"{method.name}: skipped, torchexplain.attr has no {', '.join(missing)} yet"
            print(msg, flush=True)
            notes.append(msg)
            continue
        for batch in args.batches:
            repeats = args.repeats if batch == smallest else max(2, args.repeats // 2)
            sides = {"ours": Side("ours", ours_attr, method, base_model, None)}
            if method.name in captum_failed:
                pass  # it failed on an earlier batch; do not pay for it again
            else:
                sides["captum"] = Side("captum", captum_attr, method, base_model, args.captum_internal_batch_size)
            row = bench_case(method, batch, cases[batch], sides, repeats)
            row.floor = floor.seconds(row.rows)
            results.append(row)
            for label, side in sides.items():
                if side.error is not None:
                    if label == "captum":
                        captum_failed[method.name] = side.error
                    msg = f"{method.name} x{batch}: {label} failed ({side.error})"
                    notes.append(msg + ("; compared with the floor alone" if label == "captum" else ""))
            print(
                f"[{time.perf_counter() - started:6.1f}s] {method.name} x{batch} ({row.rows} rows): "
                f"ours {fmt(row.ours, '.3f')} s, captum {fmt(row.captum, '.3f')} s, floor {fmt(row.floor, '.3f')} s"
                + (f"  [captum failed: {captum_failed[method.name]}]" if method.name in captum_failed else ""),
                flush=True,
            )

    print()
    print_table(results)
    print()
    explained = [m for m in methods if m.note]
    if explained:
        print("settings: " + "; ".join(f"{m.name}: {m.note}" for m in explained))
    print(
        "rows = forward+backward rows the method evaluates; floor = the fastest forward+backward over those rows "
        f"(blocks of at most 8 or {args.floor_chunk} rows, contiguous or channels-last, best of {floor.tries}); "
        "medians in seconds"
    )
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
