"""The robustness family's job for benchmarks/bench_families.py: PGD on resnet18.

``jobs(quick)`` gives ("pgd", ours, captum, floor): PGD with 10 steps (Linf radius
8/255, step 2/255, untargeted, no random start) on 16 random ``3x224x224`` images in
[0, 1] (``quick``: 4 images of ``3x64x64``) of a random-init torchvision resnet18
(``torch.manual_seed(0)``, eval mode), the target each image's top-1 class computed
beforehand, the loss ``CrossEntropyLoss(reduction="none")`` (resnet18 returns
logits; Captum's default ``-log`` of the output assumes probabilities), from
``torchexplain.robust.PGD`` and ``captum.robust.PGD`` with the same arguments, each
on its own copy of the model. The floor is the passes PGD cannot avoid, written by
hand: 10 forward and backward passes of the whole batch to the input with
``torch.autograd.grad``, the parameters frozen, and the sign step and projection.

Run alone (``python benchmarks/families_robust.py [--quick] [--repeats N]``) it
times the three interleaved and prints the medians and ratios, plus a channels-last
variant of the floor.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import warnings
from typing import Callable

import torch
import torchvision
from torch import nn

RADIUS, STEP, STEPS = 8 / 255, 2 / 255, 10


def _setup(quick: bool):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    n, size = (4, 64) if quick else (16, 224)
    images = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        target = model(images).argmax(1)
    return model, images, target


def floor_job(model: nn.Module, images: torch.Tensor, target: torch.Tensor,
              channels_last: bool = False) -> Callable[[], torch.Tensor]:
    """The passes alone: per step one forward and one backward to the input."""
    model = copy.deepcopy(model)
    for p in model.parameters():
        p.requires_grad_(False)
    loss = nn.CrossEntropyLoss(reduction="none")
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    base = images.contiguous(memory_format=fmt)

    def run():
        x = base
        for _ in range(STEPS):
            leaf = x.detach().requires_grad_(True)
            grad = torch.autograd.grad(loss(model(leaf), target).sum(), leaf)[0]
            with torch.no_grad():
                x = base + (x + STEP * grad.sign() - base).clamp(-RADIUS, RADIUS)
        return x

    return run


def jobs(quick: bool) -> list[tuple]:
    import captum.robust

    import torchexplain.robust

    model, images, target = _setup(quick)
    loss = nn.CrossEntropyLoss(reduction="none")

    def side(lib) -> Callable[[], torch.Tensor]:
        attack = lib.PGD(copy.deepcopy(model), loss)
        return lambda: attack.perturb(images, RADIUS, STEP, STEPS, target)

    return [("pgd", side(torchexplain.robust), side(captum.robust), floor_job(model, images, target))]


def main(argv=None) -> int:
    from bench_gradient import busy_warning, fmt, load_average, timed

    p = argparse.ArgumentParser(description="PGD on resnet18: torchexplain against Captum and the floor")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    load = load_average()
    print(f"load {fmt(load, '.2f')}, {torch.get_num_threads()} threads")
    warning = busy_warning(load, 0.0, torch.get_num_threads())
    if warning:
        print(warning)
    name, ours, captum, floor = jobs(args.quick)[0]
    model, images, target = _setup(args.quick)
    sides = {"ours": ours, "captum": captum, "floor": floor, "floor_cl": floor_job(model, images, target, True)}
    got, want = ours(), captum()
    floor(), sides["floor_cl"]()  # warm-up
    print(f"ours vs captum: largest difference {float((got - want).abs().max()):.2e}")
    times: dict[str, list[float]] = {s: [] for s in sides}
    order = list(sides)
    for r in range(args.repeats):
        for s in order if r % 2 == 0 else order[::-1]:
            times[s].append(timed(sides[s]))
    med = {s: statistics.median(v) for s, v in times.items()}
    print("  ".join(f"{s} {med[s]:.3f} s" for s in sides))
    print(f"ours/captum {med['ours'] / med['captum']:.3f}  ours/floor {med['ours'] / med['floor']:.3f}  "
          f"captum/floor {med['captum'] / med['floor']:.3f}  floor_cl/floor {med['floor_cl'] / med['floor']:.3f}")
    print(f"load at the end {fmt(load_average(), '.2f')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
