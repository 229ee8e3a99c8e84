"""RISE: Randomized Input Sampling for Explanation (Petsiuk, Das and Saenko, 2018).

The model is evaluated on the input multiplied by smooth random masks; a pixel's
saliency is the mean score of the masked inputs weighted by how much each mask kept
that pixel::

    S(x)[u] = 1 / (n_masks * p) * sum_m f(x * M_m)[target] * M_m[u]

Each mask is a coarse ``s_h x s_w`` binary grid (each cell kept with probability
``p``), upsampled bilinearly to ``((s_h + 1) * c_h, (s_w + 1) * c_w)`` where the cell
size is ``c = ceil(H / s)``, and cropped to ``H x W`` at a random shift in
``[0, c)`` along each axis. With ``p = 1`` nothing is masked and the map equals the
model's score everywhere.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.inputs import format_baselines, format_output
from ..core.perturb import forward_rows
from ..core.registry import register
from .base import Attribution
from .seeding import make_generator, positive_int


def _pair(value, name: str) -> tuple[int, int]:
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2:
        raise ValueError(f"{name} must be a positive int or a pair of them (height, width); got {value!r}")
    return positive_int(items[0], name), positive_int(items[1], name)


def _keep_probability(p) -> float:
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 < float(p) <= 1:
        raise ValueError(f"p (the probability of keeping a grid cell) must be in (0, 1]; got {p!r}")
    return float(p)


def _grid(grid_size, cell_size, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """((s_h, s_w) cells per side, (c_h, c_w) pixels per cell)."""
    if grid_size is not None and cell_size is not None:
        raise ValueError("give either grid_size (cells per side) or cell_size (pixels per cell), not both")
    if cell_size is not None:
        cells = _pair(cell_size, "cell_size")
        grid = (math.ceil(height / cells[0]), math.ceil(width / cells[1]))
    else:
        grid = _pair(8 if grid_size is None else grid_size, "grid_size")
    return grid, (math.ceil(height / grid[0]), math.ceil(width / grid[1]))


class MaskSet:
    """The random masks of one call. The random parts (binary grids and shifts) are
    drawn once, up front, so they do not depend on how the rows are chunked; the
    full-resolution masks are made chunk by chunk from them."""

    def __init__(
        self, n_masks: int, grid: tuple[int, int], cell: tuple[int, int], size: tuple[int, int], p: float, generator
    ):
        self.grids = torch.rand((n_masks, 1) + grid, generator=generator) < p
        self.shift_h = torch.randint(cell[0], (n_masks,), generator=generator)
        self.shift_w = torch.randint(cell[1], (n_masks,), generator=generator)
        self.up = ((grid[0] + 1) * cell[0], (grid[1] + 1) * cell[1])
        self.size = size

    def masks(self, start: int, stop: int, device) -> Tensor:
        """Masks ``start .. stop-1`` as a float32 ``(stop - start, H, W)`` tensor."""
        grids = self.grids[start:stop].to(device=device, dtype=torch.float32)
        up = F.interpolate(grids, size=self.up, mode="bilinear", align_corners=False)[:, 0]
        h, w = self.size
        rows = self.shift_h[start:stop, None].to(device) + torch.arange(h, device=device)
        cols = self.shift_w[start:stop, None].to(device) + torch.arange(w, device=device)
        which = torch.arange(stop - start, device=device)[:, None, None]
        return up[which, rows[:, :, None], cols[:, None, :]].clamp_(0, 1)


def _check_images(inputs: tuple[Tensor, ...]) -> tuple[int, int]:
    for i, x in enumerate(inputs):
        where = f"inputs[{i}]" if len(inputs) > 1 else "inputs"
        if x.dim() < 3:
            raise ValueError(
                f"{where} must be images of shape (N, C, H, W) (or (N, H, W)); got shape {tuple(x.shape)}"
            )
    sizes = {tuple(x.shape[-2:]) for x in inputs}
    if len(sizes) > 1:
        raise ValueError(
            f"every input tensor must share the spatial size (H, W) that the masks cover; got {sorted(sizes)}"
        )
    return sizes.pop()


@register("rise", order=180, defaults={"n_masks": 500, "seed": 0}, description="RISE, 500 random masks")
class RISE(Attribution):
    r"""RISE (Petsiuk et al. 2018, https://arxiv.org/abs/1806.07421): saliency maps from randomly masked inputs.

    Model-agnostic: forward passes only.

    The masked inputs are evaluated in memory-budgeted batches under
    ``torch.inference_mode`` (``perturbations_per_eval="auto"``); an int evaluates that
    many masks (each over every example) per forward pass.

    Formula:
        $$S_u = \frac{1}{K p} \sum_{k=1}^{K} F\big(x' + M_k \odot (x - x')\big)\, M_k(u)$$

        with \(K\) = ``n_masks`` smooth masks \(M_k \in [0, 1]^{H \times W}\) (a random
        binary ``grid_size`` grid, each cell kept with probability \(p\), bilinearly
        upsampled and cropped at a random shift; the same on every channel), \(x'\) the
        ``baselines`` (0 by default: \(x \odot M_k\)) and \(F\) the target output. With
        \(p = 1\) nothing is masked and \(S_u = F(x)\) at every pixel \(u\).

    Cost:
        \(K\) = ``n_masks`` forward passes per example and no backward pass, in batches
        of ``perturbations_per_eval`` masks; the masks are drawn up front and built
        chunk by chunk.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import RISE
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.ReLU(),
        ...                             torch.nn.Flatten(), torch.nn.Linear(128, 2))
        >>> x = torch.randn(2, 1, 8, 8)
        >>> rise = RISE(model)
        >>> saliency = rise.attribute(x, target=0, n_masks=16, grid_size=2, seed=0)
        >>> saliency.shape, saliency.dtype
        (torch.Size([2, 1, 8, 8]), torch.float32)
        >>> unmasked = rise.attribute(x, target=0, n_masks=4, p=1.0, seed=0)  # every mask keeps everything
        >>> bool(torch.allclose(unmasked, model(x)[:, 0].view(2, 1, 1, 1).expand(2, 1, 8, 8), atol=1e-5))
        True
    """

    def attribute(
        self,
        inputs,
        target=None,
        n_masks: int = 4000,
        grid_size=None,
        p: float = 0.5,
        additional_forward_args=None,
        perturbations_per_eval="auto",
        generator: torch.Generator | None = None,
        seed: int | None = None,
        show_progress: bool = False,
        cell_size=None,
        baselines=None,
        forward_kwargs=None,
    ):
        """Saliency of ``target`` for each pixel, in the input's shape (the same map
        on every channel) and the model output's dtype (at least float32). Inputs are
        ``(N, C, H, W)`` images or ``(N, H, W)``; a tuple of inputs sharing ``H, W``
        is masked alike and gets one map each.

        Args:
            n_masks: number of random masks (4000 in the paper for 224 x 224 images).
            grid_size: ``s``, cells per side of the coarse binary grid (an int or a
                pair (s_h, s_w)); 8 by default, as in the paper.
            cell_size: alternatively, the size in pixels of one grid cell (an int or a
                pair); the grid then has ``ceil(H / cell_size)`` cells per side.
            p: probability that a grid cell is kept, in (0, 1].
            baselines: what masked-out pixels become (broadcast to the inputs); None
                is zero, i.e. the paper's ``x * M``; else ``b + M * (x - b)``.
            generator: a CPU ``torch.Generator``; the masks are drawn from it up
                front, so the result is the same for any ``perturbations_per_eval``.
            seed: an int seed, the same as a generator seeded with it. Neither:
                the global RNG.
            show_progress: a tqdm bar over the masked evaluations.
            forward_kwargs (beyond the paper): keyword arguments of the model;
                tensors batched over the examples follow their example.
        """
        inputs, is_tuple, adapter = self._prepare(inputs, target, additional_forward_args, forward_kwargs)
        height, width = _check_images(inputs)
        n_masks = positive_int(n_masks, "n_masks")
        p = _keep_probability(p)
        grid, cell = _grid(grid_size, cell_size, height, width)
        gen = make_generator(generator, seed)
        base = None if baselines is None else format_baselines(baselines, inputs)
        n = adapter.n
        device = inputs[0].device
        masks = MaskSet(n_masks, grid, cell, (height, width), p, gen)
        saliency = torch.zeros((n, height, width), dtype=torch.float64, device=device)
        built: dict = {"dtype": torch.float32}

        def chunk_masks(rows: Tensor) -> Tensor:
            first, last = int(rows[0]) // n, int(rows[-1]) // n + 1
            if built.get("range") != (first, last):
                built["range"], built["masks"] = (first, last), masks.masks(first, last, device)
            return built["masks"].index_select(0, (rows // n - first).to(device))

        def build(rows: Tensor, examples: Tensor):
            m = chunk_masks(rows)
            index = examples.to(device)
            out = []
            for i, x in enumerate(inputs):
                mi = m.to(x.dtype).view((m.shape[0],) + (1,) * (x.dim() - 3) + m.shape[1:])
                xr = x.index_select(0, index)
                out.append(xr * mi if base is None else torch.lerp(base[i].index_select(0, index), xr, mi))
            return out

        def consume(rows: Tensor, examples: Tensor, scalars: Tensor) -> None:
            m = chunk_masks(rows)
            weighted = m.to(torch.float64) * scalars.to(device=device, dtype=torch.float64).view(-1, 1, 1)
            saliency.index_add_(0, examples.to(device), weighted)
            built["dtype"] = scalars.dtype

        with self._guard():
            forward_rows(
                adapter,
                n_masks * n,
                build,
                consume,
                perturbations_per_eval=perturbations_per_eval,
                show_progress=show_progress,
                desc="RISE masks",
            )
        saliency = (saliency / (n_masks * p)).to(torch.promote_types(built["dtype"], torch.float32))
        result = []
        for x in inputs:
            view = saliency.view((n,) + (1,) * (x.dim() - 3) + (height, width))
            result.append(view.expand(x.shape).contiguous())
        return format_output(is_tuple, result)
