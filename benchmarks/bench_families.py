#!/usr/bin/env python
"""Captum's other families: torchexplain.concept, .robust and .influence against
captum.concept, .robust and .influence, side by side on the jobs of issue 16.

* tcav: TCAV on a random-init resnet18 at ``layer3``, two concepts of 50 images each,
  CAV training included (benchmarks/families_concept.py);
* tracin_self_influence: TracInCP self-influence over 1,000 digits training examples
  with 3 checkpoints (benchmarks/families_influence.py);
* pgd: PGD with 10 steps on 16 images of a random-init resnet18
  (benchmarks/families_robust.py).

Each job module gives ``jobs(quick)``: (name, ours, captum[, floor]) zero-argument
callables that run the whole job once, set up beforehand. Every job runs once per side
to warm up, then ``--repeats`` times interleaved, the order alternating each repeat;
the table reports medians and ratios (the floor: the passes the job cannot avoid,
written by hand). TCAV's peak memory is each side's VmHWM in a fresh subprocess
(``families_concept.measure_memory``), in total and above a baseline process that
only loads torch, the model and the data.

    python benchmarks/bench_families.py            # 3 repeats
    python benchmarks/bench_families.py --quick    # small inputs, 1 repeat
    python benchmarks/bench_families.py --only pgd

The last line is ``worst ratio vs captum: X``, the largest ours/Captum time ratio.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import warnings

import torch
from bench_gradient import busy_warning, cpu_count, cpu_name, fmt, load_average, timed

FAMILIES = ("concept", "influence", "robust")


def run_job(name: str, sides: dict, repeats: int) -> dict[str, float]:
    for fn in sides.values():  # warm-up, not timed
        fn()
    times: dict[str, list[float]] = {side: [] for side in sides}
    order = list(sides)
    for r in range(repeats):
        for side in order if r % 2 == 0 else order[::-1]:
            times[side].append(timed(sides[side]))
    return {side: statistics.median(values) for side, values in times.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small inputs, 1 repeat")
    p.add_argument("--repeats", type=int, help="timed runs per side (default 3; 1 with --quick)")
    p.add_argument("--only", help="comma-separated job names (tcav, tracin_self_influence, pgd)")
    p.add_argument("--no-memory", action="store_true", help="skip TCAV's peak-memory subprocesses")
    args = p.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    only = set(args.only.split(",")) if args.only else None
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    load = load_average()
    print(f"torch {torch.__version__}, {cpu_name()}, {cpu_count()} CPUs, {torch.get_num_threads()} threads, "
          f"load {fmt(load, '.2f')}, {'quick' if args.quick else 'full'}, {repeats} repeat(s)")
    warning = busy_warning(load, 0.0, torch.get_num_threads())
    if warning:
        print(warning)
    print(f"{'job':<24} {'ours s':>9} {'captum s':>9} {'floor s':>9} {'ours/captum':>12} {'ours/floor':>11}")
    worst = 0.0
    memory = []
    for family in FAMILIES:
        module = importlib.import_module(f"families_{family}")
        for job in module.jobs(args.quick):
            name, ours, captum, *rest = job
            if only and name not in only:
                continue
            sides = {"ours": ours, "captum": captum}
            if rest and rest[0] is not None:
                sides["floor"] = rest[0]
            med = run_job(name, sides, repeats)
            ratio = med["ours"] / med["captum"]
            worst = max(worst, ratio)
            floor = med.get("floor")
            print(f"{name:<24} {med['ours']:9.3f} {med['captum']:9.3f} {fmt(floor, '9.3f')} {ratio:12.2f} "
                  f"{fmt(floor and med['ours'] / floor, '11.2f')}", flush=True)
        if family == "concept" and not args.no_memory and (not only or "tcav" in only):
            peaks = [module.measure_memory(side, args.quick) for side in ("ours", "captum", "baseline")]
            memory.append(("tcav", *peaks))
    for name, ours_mb, captum_mb, base_mb in memory:
        print(f"{name} peak memory (VmHWM, fresh process): ours {ours_mb:.0f} MB, captum {captum_mb:.0f} MB, "
              f"ours/captum {ours_mb / captum_mb:.2f}; above the {base_mb:.0f} MB of torch, the model and the "
              f"data: ours/captum {(ours_mb - base_mb) / max(captum_mb - base_mb, 1.0):.2f}")
    print(f"worst ratio vs captum: {worst:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
