#!/usr/bin/env python
"""Deletion and insertion curves: torchexplain against Quantus and a plain loop.

torchvision resnet18 (random init, eval, CPU), one 1x3x224x224 image, a random
attribution map, 224 steps (224 pixels per step, as Petsiuk et al.). Three ways to
get the deletion curve's points, interleaved in one process, medians of
``--repeats`` runs each:

* ours: ``torchexplain.metrics.deletion`` / ``insertion`` (the 225 perturbed images
  through the chunked inference-mode evaluator);
* loop: one forward per step, the perturbed image built in torch (what a user writes);
* Quantus 0.6 ``PixelFlipping(features_in_step=224, perturb_baseline="black")``
  (deletion only; needs ``pip install quantus``, a benchmark-only peer).

The floor is the fastest batched inference-mode forward over the same 225 images.
The last line is ``worst ratio vs loop: X`` (target: at or below 0.7, and ours
within 1.2x of the floor).

    python benchmarks/bench_metrics.py [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import warnings

import torch
import torchvision
from bench_gradient import busy_warning, cpu_count, cpu_name, fmt, load_average
from bench_perturbation import ForwardFloor

SEED = 0
STEPS = 224
TARGET = 281


def loop_curve(model, x, attribution, target, steps, reveal_from=None):
    """The plain way: a forward per step. Deletion sets the top pixels to 0; with
    ``reveal_from`` (insertion) the top pixels of ``x`` are pasted on it."""
    order = attribution.sum(1).flatten().argsort(descending=True)
    n = order.numel()
    scores = []
    with torch.inference_mode():
        for s in range(steps + 1):
            mask = torch.zeros(n, dtype=torch.bool)
            mask[order[: round(s * n / steps)]] = True
            mask = mask.view(1, 1, *x.shape[2:])
            image = torch.where(mask, x, reveal_from) if reveal_from is not None else torch.where(mask, 0.0, x)
            scores.append(torch.softmax(model(image), 1)[0, target].item())
    return scores


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads or cpu_count())

    from torchexplain.metrics import deletion, gaussian_blur, insertion

    try:
        import quantus
    except ImportError:
        quantus = None
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, CPU {cpu_name()}, "
          f"quantus {getattr(quantus, '__version__', 'not installed')}")
    print(f"load average at start: {fmt(load_average(), '.2f')}")
    torch.manual_seed(SEED)
    model = torchvision.models.resnet18(weights=None).eval()
    gen = torch.Generator().manual_seed(SEED)
    x = torch.randn(1, 3, 224, 224, generator=gen)
    attribution = torch.randn(1, 3, 224, 224, generator=gen)
    target = torch.tensor([TARGET])
    blurred = gaussian_blur(x)

    runs = {
        "ours deletion": lambda: deletion(model, x, attribution, target, steps=STEPS),
        "loop deletion": lambda: loop_curve(model, x, attribution, TARGET, STEPS),
        "ours insertion": lambda: insertion(model, x, attribution, target, steps=STEPS),
        "loop insertion": lambda: loop_curve(model, x, attribution, TARGET, STEPS, reveal_from=blurred),
    }
    if quantus is not None:
        metric = quantus.PixelFlipping(features_in_step=224 * 224 // STEPS, perturb_baseline="black",
                                       disable_warnings=True, display_progressbar=False)
        x_np, a_np = x.numpy(), attribution.sum(1, keepdim=True).numpy()
        q_model = copy.deepcopy(model)
        runs["quantus deletion"] = lambda: metric(model=q_model, x_batch=x_np, y_batch=target.numpy(), a_batch=a_np,
                                                  device="cpu", softmax=True)
    check = loop_curve(model, x, attribution, TARGET, STEPS)
    _, curve = deletion(model, x, attribution, target, steps=STEPS, return_curves=True)
    print(f"largest difference between our deletion curve and the loop's: "
          f"{(curve[0].float() - torch.tensor(check)).abs().max().item():.2e}")
    for fn in runs.values():  # warm-up
        fn()
    times = {name: [] for name in runs}
    names = list(runs)
    for i in range(args.repeats):
        for name in names if i % 2 == 0 else names[::-1]:
            times[name].append(timed(runs[name]))
    floor = ForwardFloor(copy.deepcopy(model), 32, tries=max(3, args.repeats)).seconds(STEPS + 1)
    med = {name: statistics.median(v) for name, v in times.items()}
    print()
    print(f"{'run':<18}  {'median s':>8}  {'/loop':>6}  {'/floor':>6}")
    for name, value in med.items():
        kind = name.split()[1]
        print(f"{name:<18}  {value:8.3f}  {value / med['loop ' + kind]:6.2f}  {value / floor:6.2f}")
    print(f"{'floor':<18}  {floor:8.3f}  (fastest batched forward over {STEPS + 1} images)")
    end = load_average()
    print(f"load average at end: {fmt(end, '.2f')}")
    warning = busy_warning(end, torch.get_num_threads(), cpu_count())
    if warning:
        print(warning)
    worst = max(med[f"ours {k}"] / med[f"loop {k}"] for k in ("deletion", "insertion"))
    worst_floor = max(med[f"ours {k}"] / floor for k in ("deletion", "insertion"))
    print(f"worst ratio vs floor: {worst_floor:.2f}")
    print(f"worst ratio vs loop: {worst:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
