#!/usr/bin/env python
"""Expected gradients at a hidden layer: torchexplain.shap against shap, side by side.

The call of shap's notebook "Explain an Intermediate Layer of VGG16 on ImageNet":
``GradientExplainer((model, model.features[7]), background, local_smoothing=0.5)``
then ``shap_values(X, ranked_outputs=2, nsamples=20)``, on a random-init
torchvision vgg16 (seed 0, eval mode, CPU), a background of 10 random images and 2
explained images of 3x224x224. Both explainers are built once (not timed); each
timed run is one ``shap_values`` call with a fixed ``rseed``. Runs are interleaved
in one process, the order alternating every repeat; the table reports medians.

torchexplain's default (additive) layer formula and shap's formula
(``compat="shap"``) are timed; both against shap and against the floor: the
batched passes the samples need, written by hand for vgg16:

* the model's output for the explained images (to rank their outputs);
* the layer's input (``features[:7]``, no gradients) for the background and for
  the nsamples x images smoothed examples (for the additive formula; for shap's
  formula the whole model runs at every sample point instead, see below);
* the rest of the model (``features[7:]``, pooling, classifier) forward on the
  nsamples x images interpolated layer inputs, and one backward pass per ranked
  output to the layer's input, in chunks of ``batch_size`` (50) rows;

for ``compat="shap"`` the floor runs the whole model on the interpolated images
(the layer's prefix without gradients) and the same backward passes. Each floor is
timed as the best of the repeats, in contiguous and channels-last layout, the
faster taken.

    python benchmarks/bench_shap.py              # 2 repeats (about 10 minutes here)
    python benchmarks/bench_shap.py --quick      # 112x112 images, nsamples=6, 1 repeat

The last line is ``worst ratio vs shap: X``, the largest ours/shap ratio.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import warnings

import torch
import torchvision
from bench_gradient import busy_warning, cpu_count, cpu_name, fmt, load_average, timed

SEED = 0
LAYER = 7
BACKGROUND = 10
IMAGES = 2
RANKED = 2
SMOOTHING = 0.5
BATCH = 50


def make_model() -> torch.nn.Module:
    torch.manual_seed(SEED)
    return torchvision.models.vgg16().eval()


def make_data(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(SEED + 1)
    return torch.randn(BACKGROUND, 3, size, size, generator=g), torch.randn(IMAGES, 3, size, size, generator=g)


# --------------------------------------------------------------------------- the floor


def _suffix(model, h: torch.Tensor) -> torch.Tensor:
    return model.classifier(torch.flatten(model.avgpool(model.features[LAYER:](h)), 1))


def floor_run(model, background, images, nsamples: int, smoothing: float, shap_formula: bool,
              channels_last: bool) -> None:
    """The passes one call needs (module docstring), with parameters frozen. Without
    smoothing the additive formula needs the layer's input of each image only once."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    g = torch.Generator().manual_seed(SEED + 2)
    n = images.shape[0]
    pairs = n * nsamples
    picks = torch.randint(background.shape[0], (pairs,), generator=g)
    alphas = torch.rand(pairs, 1, 1, 1, generator=g)
    noisy = images.repeat(nsamples, 1, 1, 1) + smoothing * torch.randn((pairs,) + images.shape[1:], generator=g)
    prefix = model.features[:LAYER]
    with torch.no_grad():
        ranks = model(images.contiguous(memory_format=layout)).topk(RANKED, 1).indices
        starts = None if shap_formula else prefix(background.contiguous(memory_format=layout))
        once = None if shap_formula or smoothing else prefix(images.contiguous(memory_format=layout))
    for a in range(0, pairs, BATCH):
        b = min(a + BATCH, pairs)
        with torch.no_grad():
            if shap_formula:
                points = background[picks[a:b]] + alphas[a:b] * (noisy[a:b] - background[picks[a:b]])
                h = prefix(points.contiguous(memory_format=layout))
            else:
                rows = torch.arange(a, b)
                ends = once[rows % n] if once is not None else prefix(noisy[a:b].contiguous(memory_format=layout))
                h = starts[picks[a:b]] + alphas[a:b] * (ends - starts[picks[a:b]])
        h.requires_grad_(True)
        out = _suffix(model, h)
        selected = out.gather(1, ranks[torch.arange(a, b) % n])
        for k in range(RANKED):
            torch.autograd.grad(selected[:, k].sum(), h, retain_graph=k + 1 < RANKED)


class Floor:
    def __init__(self, model, background, images, nsamples: int, smoothing: float):
        self.model = copy.deepcopy(model)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.args = (background, images, nsamples, smoothing)
        self.best: dict[tuple[bool, bool], float] = {}

    def run(self, shap_formula: bool) -> None:
        for channels_last in (False, True):
            key = (shap_formula, channels_last)
            t = timed(lambda: floor_run(self.model, *self.args, shap_formula, channels_last))  # noqa: B023 (called here)
            self.best[key] = min(self.best.get(key, t), t)

    def seconds(self, shap_formula: bool) -> float:
        return min(self.best[(shap_formula, cl)] for cl in (False, True))


# --------------------------------------------------------------------------- the sides


def make_sides(model, background, smoothing: float) -> dict:
    import shap

    import torchexplain.shap as te

    def ours(compat):
        m = copy.deepcopy(model)
        return te.GradientExplainer((m, m.features[LAYER]), background, local_smoothing=smoothing, compat=compat)

    m = copy.deepcopy(model)
    return {
        "ours (additive)": ours(None),
        "ours (compat=shap)": ours("shap"),
        "shap": shap.GradientExplainer((m, m.features[LAYER]), background, local_smoothing=smoothing),
    }


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--size", type=int, default=224, help="image side (default 224)")
    p.add_argument("--nsamples", type=int, default=20)
    p.add_argument("--smoothing", type=float, default=SMOOTHING, help="local_smoothing (default 0.5)")
    p.add_argument("--threads", type=int, default=cpu_count(), help="torch threads (default: every CPU)")
    p.add_argument("--quick", action="store_true", help="112x112 images, nsamples=6, 1 repeat")
    p.add_argument("--show-warnings", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.nsamples, args.repeats = 112, 6, 1
    if min(args.repeats, args.nsamples, args.threads, args.size) < 1:
        p.error("--repeats, --nsamples, --threads and --size must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.show_warnings:
        warnings.filterwarnings("ignore")  # shap's and torchvision's deprecation notices
    start_load = load_average()
    print(f"torch {torch.__version__}, {cpu_name()}, {args.threads} threads, Python {platform.python_version()}")
    print(f"1-min load average at start: {fmt(start_load, '.2f')}")
    if warning := busy_warning(start_load, 0, args.threads):
        print(warning)
    model = make_model()
    background, images = make_data(args.size)
    sides = make_sides(model, background, args.smoothing)
    floor = Floor(model, background, images, args.nsamples, args.smoothing)
    call = dict(nsamples=args.nsamples, ranked_outputs=RANKED, rseed=SEED)
    times: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for repeat in range(args.repeats):
        order = names if repeat % 2 == 0 else names[::-1]
        for name in order:
            times[name].append(timed(lambda: sides[name].shap_values(images, **call)))  # noqa: B023 (called here)
            print(f"  repeat {repeat + 1}: {name}: {times[name][-1]:.2f} s", flush=True)
        floor.run(False)
        floor.run(True)
    shap_s = statistics.median(times["shap"])
    print()
    print(f"vgg16 (random init), layer features[{LAYER}], {BACKGROUND} background images, {IMAGES} images "
          f"3x{args.size}x{args.size}, ranked_outputs={RANKED}, nsamples={args.nsamples}, "
          f"local_smoothing={args.smoothing}, {args.repeats} repeat(s)")
    print(f"{'explainer':<20} {'median s':>9} {'vs shap':>8} {'floor s':>8} {'vs floor':>9}")
    worst = 0.0
    for name in names:
        median = statistics.median(times[name])
        f = None if name == "shap" else floor.seconds(name.endswith("(compat=shap)"))
        ratio = median / shap_s
        if name != "shap":
            worst = max(worst, ratio)
        print(f"{name:<20} {median:>9.2f} {ratio:>8.2f} {fmt(f, '.2f'):>8} "
              f"{fmt(None if f is None else median / f, '.2f'):>9}")
    end_load = load_average()
    print(f"\n1-min load average at end: {fmt(end_load, '.2f')}")
    if warning := busy_warning(end_load, args.threads, args.threads):
        print(warning)
    print(f"worst ratio vs shap: {worst:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
