#!/usr/bin/env python
"""Incremental occlusion against the full computation and Captum (issue 18).

Models: torchvision ``resnet18`` and ``vgg16`` (random weights, seed 0, eval, CPU),
one image ``1x3x224x224`` (``--size``), target class 0. Occlusion windows
``(3, w, w)`` with strides ``(3, s, s)``: 16/8 and 45/9 (``--windows``). Sides:

* full: ``torchexplain.attr.Occlusion(..., incremental=False)``, every occluded copy
  through the whole network, batched (our path before this issue);
* exact: the default, ``incremental="auto"`` (exact incremental inference);
* approx: ``incremental="approximate"`` with ``projective_field_threshold``
  (``--threshold``, default 0.4);
* approx+drill: approx with ``drill_down=0.25`` (a coarse pass with non-overlapping
  windows, then the strided pass on the 25% most important windows);
* captum: ``captum.attr.Occlusion`` with its default ``perturbations_per_eval=1``.

Every side runs once untimed (its values are compared), then ``--repeats`` timed
rounds (default 2) with the order of the sides reversed every round; medians.
Captum's side is timed in the first round only unless ``--captum-repeats`` says more
(one call of vgg16 16/8 is about three minutes here). The approximate sides report
their heatmap's distance to the exact one after min-max scaling (max and mean of the
absolute difference); a sweep over thresholds (``--sweep``) compares a trained model
(the bundled digits CNN) with a random-weight one. Beside each time ratio is the FLOP fraction: the floating-point
work of the side over the full path's, counted by ``torch.utils.flop_counter`` (the
full path's as one forward's times the number of images; the arithmetic limit of the
speed-up is the fraction's inverse).

    python benchmarks/bench_incremental.py            # about 30 minutes here
    python benchmarks/bench_incremental.py --quick    # 112x112, resnet18 only, 1 round: about 1 minute
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from torchexplain.attr import Occlusion


def minmax(t: torch.Tensor) -> torch.Tensor:
    t = t.double()
    return (t - t.min()) / (t.max() - t.min()).clamp_min(1e-30)


def flops(fn) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def sides(model, x, window: int, stride: int, threshold: float, with_captum: bool):
    shape, strides = (3, window, window), (3, stride, stride)
    ours = Occlusion(model)
    out = {
        "full": lambda: ours.attribute(x, shape, strides=strides, target=0, incremental=False),
        "exact": lambda: ours.attribute(x, shape, strides=strides, target=0),
        "approx": lambda: ours.attribute(x, shape, strides=strides, target=0, incremental="approximate",
                                         projective_field_threshold=threshold),
        "approx+drill": lambda: ours.attribute(x, shape, strides=strides, target=0, incremental="approximate",
                                               projective_field_threshold=threshold, drill_down=0.25),
    }
    if with_captum:
        from captum.attr import Occlusion as CaptumOcclusion

        theirs = CaptumOcclusion(model)
        out["captum"] = lambda: theirs.attribute(x, shape, strides=strides, target=0)
    return out, ours


def threshold_sweep(size: int, thresholds: list[float]) -> None:
    """Approximate mode's error against its threshold: on the bundled digits CNN
    (trained, 1x32x32, window 4 stride 2) and on random-weight resnet18 (window 16
    stride 8), one timed call per side."""
    from torchexplain import models

    digits, preprocess, _ = models.load("digits")
    image = preprocess(models.sample_images()[0]).unsqueeze(0)
    torch.manual_seed(0)
    jobs = [("digits (trained)", digits, image, (1, 4, 4), (1, 2, 2)),
            ("resnet18 (random)", torchvision.models.resnet18().eval(), torch.randn(1, 3, size, size),
             (3, 16, 16), (3, 8, 8))]
    print("\napproximate mode against its threshold (min-max heatmaps against the exact one):")
    for label, model, x, window, stride in jobs:
        occ = Occlusion(model)
        target = int(model(x).argmax())
        timed = {}
        for side, kwargs in [("full", {"incremental": False}), ("exact", {})] + [
            (f"approx {t}", {"incremental": "approximate", "projective_field_threshold": t}) for t in thresholds
        ]:
            occ.attribute(x, window, strides=stride, target=target, **kwargs)  # warm-up
            t0 = time.perf_counter()
            timed[side] = (occ.attribute(x, window, strides=stride, target=target, **kwargs),
                           time.perf_counter() - t0)
        exact, full_t = timed["exact"][0], timed["full"][1]
        print(f"  {label}, target {target}:")
        for side, (value, seconds) in timed.items():
            diff = (minmax(value) - minmax(exact)).abs()
            print(f"    {side:11s} full/side {full_t / seconds:5.2f}  max {diff.max():.3f} mean {diff.mean():.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="resnet18,vgg16")
    parser.add_argument("--windows", default="16/8,45/9")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--captum-repeats", type=int, default=1)
    parser.add_argument("--threshold", type=float, default=0.4)
    parser.add_argument("--no-captum", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sweep", default="0.2,0.4,0.6,0.8", help="approximate thresholds ('' to skip)")
    args = parser.parse_args()
    if args.quick:
        args.models, args.size, args.repeats, args.windows = "resnet18", 112, 1, "16/8"
    torch.manual_seed(0)
    x = torch.randn(1, 3, args.size, args.size)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, input {tuple(x.shape)}, "
          f"threshold {args.threshold}")
    worst_exact = {}
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)().eval()
        for spec in args.windows.split(","):
            window, stride = (int(v) for v in spec.split("/"))
            run, ours = sides(model, x, window, stride, args.threshold, not args.no_captum)
            values, reports = {}, {}
            for side, fn in run.items():
                with torch.no_grad():
                    values[side] = fn()
                reports[side] = ours.incremental_report if side != "captum" else None
            times = {side: [] for side in run}
            order = list(run)
            for r in range(args.repeats):
                for side in order if r % 2 == 0 else order[::-1]:
                    if side == "captum" and r >= args.captum_repeats:
                        continue
                    t = time.perf_counter()
                    run[side]()
                    times[side].append(time.perf_counter() - t)
            n_windows = (math.ceil((args.size - window) / stride) + 1) ** 2
            with torch.no_grad():  # the full path: the unoccluded image and every window, one forward each
                work = {"full": (n_windows + 1) * flops(lambda model=model: model(x))}
            work.update({side: flops(run[side]) for side in run if side not in ("full", "captum")})
            exact = values["exact"]
            full_t = statistics.median(times["full"])
            print(f"\n{name} window {window} stride {stride}:")
            print(f"  {'side':13s} {'median s':>9s} {'runs':>4s} {'full/side':>9s} {'flop frac':>9s} "
                  f"{'1/frac':>7s}  notes")
            for side in run:
                med = statistics.median(times[side])
                frac = work[side] / work["full"] if side in work else float("nan")
                notes = ""
                if side in ("exact", "approx", "approx+drill") or side == "captum":
                    diff = (minmax(values[side]) - minmax(exact)).abs()
                    rel = (values[side] - values["full"]).abs().max() / values["full"].abs().max()
                    notes = (f"vs exact after min-max: max {diff.max():.3f} mean {diff.mean():.3f}; "
                             f"max|d| vs full {rel:.1e} of max|full|")
                if reports.get(side) is not None:
                    rep = reports[side]
                    notes += f"; ops {rep.incremental_ops} inc / {rep.whole_ops} whole, fallback {rep.fallback}"
                print(f"  {side:13s} {med:9.2f} {len(times[side]):4d} {full_t / med:9.2f} {frac:9.3f} "
                      f"{1 / frac if frac == frac else float('nan'):7.2f}  {notes}")
            worst_exact[(name, spec)] = full_t / statistics.median(times["exact"])
    if args.sweep:
        threshold_sweep(args.size, [float(t) for t in args.sweep.split(",")])
    print()
    for (name, spec), ratio in worst_exact.items():
        print(f"exact speed-up over full, {name} {spec}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
