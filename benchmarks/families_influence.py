"""The influence family's job for benchmarks/bench_families.py: TracInCP self-influence.

``jobs(quick)`` gives ("tracin_self_influence", ours, captum, floor) and
("tracin_self_influence_sw", ours, captum with ``sample_wise_grads_per_batch=True``,
floor): ``TracInCP(...).self_influence()`` over 1,000 training examples of the
bundled digits data (``torchexplain.models.digits_data("train")``, which needs
scikit-learn; without it, random ``1x32x32`` tensors and random labels of the same
shapes; ``quick``: 200 examples) and the bundled ``DigitsNet`` (eval mode), with 3
checkpoints in a temporary directory: the model's state dict with each floating
tensor perturbed by 1% Gaussian noise (seeded), ``learning_rate`` 0.01, 0.005, 0.001
stored in the file and read back by one ``checkpoints_load_func`` both sides use
(Captum's default would pass the ``learning_rate`` entry to ``load_state_dict``).
``batch_size=64``, all parameters. The loss is ``CrossEntropyLoss(reduction="sum")``,
except for Captum's default per-example loop (``sample_wise_grads_per_batch=False``),
which requires ``reduction="none"`` (same scores). Captum's sample-wise trick only
handles Conv2d and Linear layers: it silently leaves out the batch-norm parameters,
so it computes a smaller sum than both other sides.

The floor is the gradient work alone: per checkpoint, per batch of 64, one
``vmap(grad)`` of the per-example loss over all parameters and the squared norms
(3 passes over the examples), with the checkpoints loaded beforehand.

Run alone (``python benchmarks/families_influence.py [--quick] [--repeats N]
[--threads N]``) it times the sides interleaved (one warm-up each; the first
``vmap`` in a process costs about 3 s of one-time set-up) and prints medians and
ratios.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.utils.data import DataLoader, TensorDataset

LRS = (0.01, 0.005, 0.001)
BATCH = 64
_KEEP: list = []  # temporary directories that must outlive jobs()


def _examples(n: int):
    try:
        from torchexplain.models import digits_data

        x, y = digits_data("train")
    except ImportError:
        gen = torch.Generator().manual_seed(0)
        x, y = torch.randn(n, 1, 32, 32, generator=gen), torch.randint(0, 10, (n,), generator=gen)
    return x[:n].contiguous(), y[:n].contiguous()


def _checkpoints(model: nn.Module) -> Path:
    tmp = tempfile.TemporaryDirectory(prefix="tracin-bench-")
    _KEEP.append(tmp)
    gen = torch.Generator().manual_seed(1)
    for i, lr in enumerate(LRS):
        state = {}
        for k, v in model.state_dict().items():
            noisy = v + 0.01 * v.std().nan_to_num(0.0) * torch.randn(v.shape, generator=gen) if (
                v.is_floating_point() and v.numel() > 1) else v
            state[k] = noisy.clone()
        state["learning_rate"] = lr
        torch.save(state, Path(tmp.name) / f"checkpoint-{i}.pt")
    return Path(tmp.name)


def load_checkpoint(model: nn.Module, path) -> float:
    state = torch.load(path, weights_only=True)
    lr = state.pop("learning_rate")
    model.load_state_dict(state)
    return lr


def _floor_job(model: nn.Module, folder: Path, data: TensorDataset) -> Callable[[], torch.Tensor]:
    model = copy.deepcopy(model)
    states = []
    for path in sorted(folder.iterdir()):
        state = torch.load(path, weights_only=True)
        states.append((state.pop("learning_rate"), state))
    names = [n for n, _ in model.named_parameters()]
    loss = nn.CrossEntropyLoss(reduction="sum")

    def run():
        total = torch.zeros(len(data))
        for lr, state in states:
            params = {n: state[n] for n in names}
            buffers = {n: state[n] for n, _ in model.named_buffers()}

            def one(p, x, y, buffers=buffers):
                return loss(functional_call(model, (p, buffers), (x.unsqueeze(0),)), y.unsqueeze(0))

            start = 0
            for x, y in DataLoader(data, batch_size=BATCH):
                g = vmap(grad(one), in_dims=(None, 0, 0))(params, x, y)
                total[start:start + len(x)] += lr * sum(v.reshape(len(x), -1).pow(2).sum(1) for v in g.values())
                start += len(x)
        return total

    return run


def _setup(quick: bool):
    from torchexplain.models import load

    torch.manual_seed(0)
    model, _, _ = load("digits")
    x, y = _examples(200 if quick else 1000)
    return model, TensorDataset(x, y), _checkpoints(model)


def jobs(quick: bool) -> list[tuple[str, Callable[[], None], Callable[[], None], Callable[[], None]]]:
    import captum.influence as ci

    import torchexplain.influence as ti

    model, data, folder = _setup(quick)
    ours_model, captum_model, sw_model = (copy.deepcopy(model) for _ in range(3))
    ours = ti.TracInCP(ours_model, data, str(folder), load_checkpoint, loss_fn=nn.CrossEntropyLoss(reduction="sum"),
                       batch_size=BATCH)
    loop = ci.TracInCP(captum_model, data, str(folder), load_checkpoint,
                       loss_fn=nn.CrossEntropyLoss(reduction="none"), batch_size=BATCH)
    trick = ci.TracInCP(sw_model, data, str(folder), load_checkpoint, loss_fn=nn.CrossEntropyLoss(reduction="sum"),
                        batch_size=BATCH, sample_wise_grads_per_batch=True)
    floor = _floor_job(model, folder, data)
    return [
        ("tracin_self_influence", ours.self_influence, loop.self_influence, floor),
        ("tracin_self_influence_sw", ours.self_influence, trick.self_influence, floor),
    ]


def _timed(fn) -> float:
    import time

    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's); 1 is steadier on a busy machine")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    for name, ours, captum, floor in jobs(args.quick):
        sides = {"ours": ours, "captum": captum, "floor": floor}
        for fn in sides.values():
            fn()
        times: dict[str, list[float]] = {s: [] for s in sides}
        order = list(sides)
        for r in range(args.repeats):
            for side in order if r % 2 == 0 else order[::-1]:
                times[side].append(_timed(sides[side]))
        med = {s: statistics.median(t) for s, t in times.items()}
        print(f"{name}: ours {med['ours']:.3f} s, captum {med['captum']:.3f} s, floor {med['floor']:.3f} s, "
              f"ours/captum {med['ours'] / med['captum']:.3f}, ours/floor {med['ours'] / med['floor']:.2f}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
