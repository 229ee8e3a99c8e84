"""Gradient-free CAMs that score perturbed copies of each example: ScoreCAM and
AblationCAM.

Every (channel, example) pair is one row (row ``r``: channel ``r // N`` of example
``r % N``), evaluated by :func:`torchexplain.core.perturb.forward_rows`: chunks sized
from the memory budget, under ``torch.inference_mode``. ``batch_size`` in
``attribute`` is the number of perturbed copies of each example per forward.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.forward import ForwardAdapter, select_output
from ..core.inputs import argument_rows
from ..core.perturb import forward_rows
from .base import BaseCAM, min_max, weighted, with_predicted_target

logger = logging.getLogger("torchexplain.cam")


def channel_scores(adapter: ForwardAdapter, channels: int, build, batch_size, desc: str) -> Tensor:
    """The explained scalar of every (example, channel) row, as an (N, K) tensor."""
    n = adapter.n
    store: dict = {}

    def consume(rows, examples, scalars):
        if "scores" not in store:
            store["scores"] = scalars.new_empty(n * channels)
        store["scores"][rows.to(scalars.device)] = scalars

    forward_rows(adapter, n * channels, build, consume, perturbations_per_eval=batch_size, desc=desc)
    return store["scores"].view(channels, n).t()


class ScoreCAM(BaseCAM):
    r"""Score-CAM (Wang et al. 2020, Algorithm 1): channels weighted by the scores of the inputs they mask.

    Each channel, bilinearly resized to
    the input and min-max scaled to [0, 1], masks the input; the target scores of the
    masked inputs, soft-maxed over the channels, weight the channels. (A baseline
    score subtracted from every channel cancels in the softmax.)

    The masks are resized with ``align_corners=False``, like the authors' code, our
    final upsampling and OpenCV's resize; pytorch-grad-cam resizes its masks with
    ``align_corners=True`` (and its final map with OpenCV), so its weights differ
    slightly wherever the layer is coarser than the input.

    Formula:
        $$L = \operatorname{relu}\Big(\sum_k \frac{e^{s_k}}{\sum_l e^{s_l}} A_k\Big), \qquad
        s_k = S\big(x \odot \operatorname{minmax}(\operatorname{up}(A_k))\big)$$

        with \(A_k\) the target layer's channels, \(\operatorname{up}\) the bilinear resize
        to the input, \(\operatorname{minmax}\) the scaling to [0, 1] and \(S\) the target
        score (the predicted class by default); then resized to the input. The weights
        sum to 1, so the raw map is a convex combination of the channels.

    Cost:
        \(1 + K\) forward passes per example and no backward pass, \(K\) the layer's
        channels: the batch once, then one masked copy per channel, ``batch_size``
        copies per forward call.

    Examples:
        >>> import torch
        >>> from torchexplain.cam import ScoreCAM
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, stride=2, padding=1), torch.nn.ReLU(),
        ...                             torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> x = torch.randn(2, 1, 8, 8)
        >>> raw = ScoreCAM(model, target_layer="1").attribute(x, target=2, relu=False, upsample=False)
        >>> raw.shape
        torch.Size([2, 1, 4, 4])
        >>> activations = model[:2](x)
        >>> bool(((raw[:, 0] >= activations.amin(1) - 1e-6) & (raw[:, 0] <= activations.amax(1) + 1e-6)).all())
        True
    """

    def _layer_cam(self, x, adapter, batch_size):
        values, output = self._forward(x, adapter)
        activations = self._grid(values)
        n, channels = activations.shape[:2]
        adapter = with_predicted_target(adapter, output)
        size = tuple(x.shape[-2:])

        def build(rows, examples):
            at = activations.device
            maps = activations[examples.to(at), (rows // n).to(at)].unsqueeze(1)
            masks = min_max(F.interpolate(maps, size=size, mode="bilinear", align_corners=False))
            return (x.index_select(0, examples.to(x.device)) * masks.to(x.device, x.dtype),)

        scores = channel_scores(adapter, channels, build, batch_size, "ScoreCAM masks")
        return weighted(activations, torch.softmax(scores, dim=1))


class AblationCAM(BaseCAM):
    r"""Ablation-CAM (Desai and Ramaswamy 2020): channel ``k`` is set to zero at the
    layer and the drop of the target score weighs it, ``w_k = (y - y_k) / y`` (the
    drop itself where ``y = 0``).

    The rest of the model is run from the layer on: the layers before it run once
    per example and chunk, and the ablated rows go through the layers after it
    (checked first: the un-ablated values must reproduce the model's scores; a model
    whose later layers need the earlier ones row by row falls back to full forward
    passes with the layer's output replaced). With ``reshape_transform`` a channel is
    ablated in the layer's own layout: the transform is applied to an index tensor to
    find its values, so it must only select and rearrange (a ViT's patch tokens).

    pytorch-grad-cam agrees on layers whose minimum is 0 (after a ReLU); elsewhere it
    writes ``min - 1e7`` instead of 0, which is not the paper's ablation.

    Formula:
        $$L = \operatorname{relu}\Big(\sum_k \frac{y - y_k}{y} A_k\Big)$$

        with \(y\) the target score, \(y_k\) the score with channel \(A_k\) of the target
        layer set to 0 and the denominator 1 where \(y = 0\); then resized to the input.

    Cost:
        One forward pass of the batch, then \(K\) ablated copies per example (\(K\) the
        layer's channels) run from the layer on, the layers before it once per example
        and chunk, ``batch_size`` copies per chunk; a check with two rows per example
        first. No backward pass. A model whose later layers need the earlier ones row by
        row gets \(K\) full forward passes per example instead.

    Examples:
        >>> import torch
        >>> from torchexplain.cam import AblationCAM
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, stride=2, padding=1), torch.nn.ReLU(),
        ...                             torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> x = torch.randn(2, 1, 8, 8)
        >>> raw = AblationCAM(model, target_layer="1").attribute(x, target=2, relu=False, upsample=False)
        >>> raw.shape
        torch.Size([2, 1, 4, 4])
        >>> activations, y = model[:2](x), model(x)[:, 2]
        >>> weights = model[4].weight[2] * activations.mean((2, 3)) / y[:, None]  # the linear head's drops
        >>> bool(torch.allclose(raw[:, 0], (weights[:, :, None, None] * activations).sum(1), atol=1e-5))
        True
    """

    def _layer_cam(self, x, adapter, batch_size):
        values, output = self._forward(x, adapter)
        activations = self._grid(values)
        n, channels = activations.shape[:2]
        adapter = with_predicted_target(adapter, output)
        base = adapter.target.select(output, torch.arange(n))
        native = values[0]
        positions = channel_positions(native, self.reshape_transform, channels)

        def ablated(rows: Tensor, layer_values: Tensor) -> Tensor:
            flat = layer_values.reshape(len(rows), -1).clone()
            flat.scatter_(1, positions[(rows // n).to(positions.device)], 0.0)
            return flat.view(layer_values.shape)

        tail = _Tail(self, x, adapter)
        if tail.reproduces(native, base):
            def build(rows, examples):
                tail.examples = examples
                return (ablated(rows, native.index_select(0, examples.to(native.device))),)

            scores = channel_scores(tail.adapter, channels, build, batch_size, "AblationCAM channels")
        else:
            scores = self._full_scores(x, adapter, ablated, channels, batch_size)
        drop = base.unsqueeze(1) - scores
        return weighted(activations, drop / torch.where(base == 0, 1, base).unsqueeze(1))

    def _full_scores(self, x, adapter, ablated, channels, batch_size) -> Tensor:
        """Ablated scores from whole forward passes, the layer's output replaced."""
        tap, model, state = self._tap(), self.model, {}

        def forward(inputs, *args, **kwargs):
            with tap.recording(replace=lambda found: (ablated(state["rows"], found[0]),)):
                return model(inputs, *args, **kwargs)

        full = adapter.with_forward(forward)

        def build(rows, examples):
            state["rows"] = rows
            return (x.index_select(0, examples.to(x.device)),)

        return channel_scores(full, channels, build, batch_size, "AblationCAM channels")


def channel_positions(native: Tensor, transform, channels: int) -> Tensor:
    """(K, P): the positions, in one example's flattened layer values, that make
    channel k of the feature map."""
    ids = torch.arange(native[0].numel(), device=native.device).reshape((1,) + tuple(native.shape[1:]))
    if transform is None:
        return ids[0].reshape(channels, -1)
    try:
        grid = transform(ids)
    except Exception as error:
        raise ValueError(
            "AblationCAM ablates channels in the layer's own layout, so reshape_transform must only select and "
            "rearrange values (slicing, reshape, permute) and work on an integer index tensor; it raised "
            f"{type(error).__name__}: {error}"
        ) from error
    if not isinstance(grid, Tensor) or grid.dtype != torch.long or grid.dim() != 4 or grid.shape[:2] != (1, channels):
        raise ValueError(
            "AblationCAM needs a reshape_transform that only selects and rearranges values: applied to an index "
            "tensor it must return integer indices of shape (1, channels, h, w)"
        )
    return grid[0].reshape(channels, -1)


class _Tail:
    """The model from the target layer on, for rows of substituted layer values: the
    layers before it run on one row per example, and that row broadcasts against
    the substituted ones wherever later layers reuse earlier values."""

    def __init__(self, cam: BaseCAM, x: Tensor, adapter: ForwardAdapter):
        self.tap, self.model, self.x, self.user = cam._tap(), cam.model, x, adapter
        self.examples: Tensor | None = None
        self.adapter = adapter.with_forward(self, args=(), kwargs={}, output_selector=None)

    def __call__(self, values: Tensor) -> Tensor:
        out = None
        for example in torch.unique(self.examples).tolist():
            rows = (self.examples == example).nonzero()[:, 0]
            piece = self._run(example, values.index_select(0, rows.to(values.device)))
            if not isinstance(piece, Tensor) or piece.dim() == 0 or piece.shape[0] != len(rows):
                raise ValueError("the layers after target_layer do not keep the substituted rows apart")
            if out is None:
                out = piece.new_empty((len(self.examples),) + piece.shape[1:])
            out[rows.to(out.device)] = piece
        return out

    def _run(self, example: int, rows: Tensor) -> Tensor:
        index, n = torch.tensor([example]), self.user.n
        args = tuple(argument_rows(a, index, n) for a in self.user.args)
        kwargs = {k: argument_rows(v, index, n) for k, v in self.user.kwargs.items()}
        with self.tap.recording(replace=lambda found: (rows,)):
            output = self.model(self.x.index_select(0, index.to(self.x.device)), *args, **kwargs)
        return select_output(output, self.user.output_selector)

    def reproduces(self, native: Tensor, base: Tensor) -> bool:
        """Whether the un-ablated values through the tail give the model's scores,
        with two rows per example (one would hide layers that need the rows apart)."""
        self.examples = torch.arange(native.shape[0]).repeat_interleave(2)
        base = base.repeat_interleave(2)
        try:
            with torch.no_grad():
                again = self.adapter.scalars((native.repeat_interleave(2, 0),), self.examples)
        except (RuntimeError, ValueError, IndexError) as error:
            logger.debug("AblationCAM: running whole forward passes (%s: %s)", type(error).__name__, error)
            return False
        tolerance = 1e-5 * (1.0 + float(base.abs().max()))
        same = again.shape == base.shape and torch.allclose(again, base, rtol=1e-4, atol=tolerance)
        if not same:
            logger.debug("AblationCAM: running whole forward passes (the tail does not reproduce the scores)")
        return same
