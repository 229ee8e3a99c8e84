"""Deletion and insertion curves (Petsiuk et al., RISE, 2018).

Features are taken in decreasing order of attribution. Deletion replaces the top
features of the input by a baseline, insertion reveals them on a blurred copy; at each
of ``steps + 1`` points the target's probability is recorded, and the score is the
normalised area under that curve (trapezoid rule on [0, 1]). For images, a pixel is
one feature: attributions are summed over channels and all channels of a pixel move
together. Every (step, example) row goes through the chunked, inference-mode evaluator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.forward import ForwardAdapter
from ..core.hooks import model_guard
from ..core.perturb import forward_rows
from ..core.targets import Target


def _feature_map(inputs: Tensor, attributions: Tensor) -> Tensor:
    """The attribution of each feature, shaped to broadcast over the input: (N, 1, H, W)
    for images (channels summed), the attribution itself otherwise."""
    a = torch.as_tensor(attributions).to(inputs.device)
    if a.dim() == inputs.dim() - 1 and inputs.dim() == 4:
        a = a.unsqueeze(1)
    if a.shape[0] != inputs.shape[0] or a.dim() != inputs.dim():
        raise ValueError(f"attributions of shape {tuple(a.shape)} do not match inputs of shape {tuple(inputs.shape)}")
    if inputs.dim() == 4 and a.shape[1] != 1:
        a = a.sum(1, keepdim=True)
    try:
        torch.broadcast_shapes(a.shape, inputs.shape)
    except RuntimeError:
        raise ValueError(f"attributions of shape {tuple(a.shape)} do not broadcast to inputs of shape "
                         f"{tuple(inputs.shape)}") from None
    return a


def gaussian_blur(images: Tensor, kernel_size: int = 11, sigma: float = 5.0) -> Tensor:
    """Each channel blurred by a ``kernel_size`` Gaussian of ``sigma`` (zero padding)."""
    half = kernel_size // 2
    grid = torch.arange(kernel_size, dtype=images.dtype, device=images.device) - half
    kernel = torch.exp(-grid**2 / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = images.shape[1]
    out = F.conv2d(images, kernel.view(1, 1, 1, -1).expand(c, 1, 1, kernel_size), padding=(0, half), groups=c)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(c, 1, kernel_size, 1), padding=(half, 0), groups=c)


def area_under_curve(curves: Tensor) -> Tensor:
    """Normalised trapezoid area of (..., points) curves sampled evenly on [0, 1]."""
    steps = curves.shape[-1] - 1
    return (curves.sum(-1) - (curves[..., 0] + curves[..., -1]) / 2) / steps


def _curves(model, inputs, attributions, target, steps, reveal, hide, apply_softmax,
            additional_forward_args, perturbations_per_eval) -> Tensor:
    """(steps + 1, N) target scores; at step ``s`` the top ``round(s * F / steps)``
    features take ``reveal`` values and the others ``hide`` values."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int; got {steps!r}")
    scores_map = _feature_map(inputs, attributions)
    n = inputs.shape[0]
    n_features = scores_map[0].numel()
    order = scores_map.reshape(n, -1).argsort(dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(n_features, device=order.device).expand(n, -1))
    counts = torch.round(torch.arange(steps + 1, dtype=torch.float64) * n_features / steps).long().to(ranks.device)
    forward = (lambda *a, **kw: torch.softmax(model(*a, **kw), dim=1)) if apply_softmax else model
    with torch.no_grad(), model_guard(model):
        plain = ForwardAdapter(model, n, Target.of(target, n, none="predicted"), additional_forward_args)
        if plain.target.predicted:  # each example's predicted class
            plain = plain.with_target(plain.target.resolved(plain.outputs((inputs,), torch.arange(n))))
        adapter = plain.with_forward(forward)
        table = torch.empty((steps + 1) * n, dtype=torch.float64)

        def build(rows, examples):
            shown = ranks[examples.to(ranks.device)] < counts[(rows // n).to(ranks.device)].unsqueeze(1)
            shown = shown.view((len(rows),) + scores_map.shape[1:])
            return (torch.where(shown, reveal(examples), hide(examples)),)

        def consume(rows, examples, scalars):
            table[rows] = scalars.double().cpu()

        forward_rows(adapter, (steps + 1) * n, build, consume, perturbations_per_eval=perturbations_per_eval)
    return table.view(steps + 1, n).to(inputs.device)


def deletion(model, inputs: Tensor, attributions, target=None, steps: int = 100, baseline=0.0,
             apply_softmax: bool = True, additional_forward_args=None, perturbations_per_eval="auto",
             return_curves: bool = False):
    r"""Deletion AUC per example (Petsiuk et al., RISE, 2018; lower is better: removing
    what the explanation calls important should destroy the prediction quickly).
    ``target`` defaults to each example's predicted class; ``baseline`` is the value
    removed features take (a number or a tensor broadcastable to the inputs).
    ``return_curves=True`` returns ``(auc, curves)``, the curves (N, steps + 1).

    Formula:
        $$\operatorname{AUC} = \frac{1}{S} \Big( \sum_{s=0}^{S} p_s - \frac{p_0 + p_S}{2} \Big), \qquad
        p_s = \operatorname{softmax}\big(F(x^{(s)})\big)_t$$

        where \(x^{(s)}\) is \(x\) with its top \(\operatorname{round}(s d / S)\) features
        (by attribution, decreasing; ties by position) set to the baseline, \(d\) the
        number of features (for images a pixel, its channels' attributions summed),
        \(S\) = ``steps`` and \(t\) the target; without ``apply_softmax``, \(p_s\) is the
        raw output. The trapezoid rule on \([0, 1]\).

    Cost:
        ``steps + 1`` forward passes per example (one more over the batch when
        ``target`` is None, for the predicted class), no backward pass, in inference
        mode; each forward takes ``perturbations_per_eval`` steps of every example
        (None: all at once; ``"auto"``: sized from ``torchexplain.config.memory_budget``).

    Examples:
        >>> import torch
        >>> from torchexplain.attr import Saliency
        >>> from torchexplain.metrics import deletion
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> x = torch.randn(2, 4)
        >>> attributions = Saliency(model).attribute(x, target=0)
        >>> auc, curves = deletion(model, x, attributions, target=0, steps=4, return_curves=True)
        >>> auc.shape, curves.shape, bool(((auc >= 0) & (auc <= 1)).all())
        (torch.Size([2]), torch.Size([2, 5]), True)
        >>> bool(torch.allclose(curves[:, 0], torch.softmax(model(x), 1)[:, 0].double()))  # step 0: x itself
        True
    """
    base = torch.as_tensor(baseline, dtype=inputs.dtype, device=inputs.device).expand_as(inputs)
    curves = _curves(model, inputs, attributions, target, steps, lambda ex: base[ex], lambda ex: inputs[ex],
                     apply_softmax, additional_forward_args, perturbations_per_eval)
    auc = area_under_curve(curves.t())
    return (auc, curves.t()) if return_curves else auc


def insertion(model, inputs: Tensor, attributions, target=None, steps: int = 100, baseline="blur",
              apply_softmax: bool = True, additional_forward_args=None, perturbations_per_eval="auto",
              blur_kernel_size: int = 11, blur_sigma: float = 5.0, return_curves: bool = False):
    r"""Insertion AUC per example (Petsiuk et al., RISE, 2018; higher is better): the
    top features are revealed on a ``baseline`` copy, by default the inputs blurred by
    a Gaussian (images only; ``blur_kernel_size``, ``blur_sigma``), else a number or
    a tensor. ``target`` defaults to each example's predicted class;
    ``return_curves=True`` returns ``(auc, curves)``, the curves (N, steps + 1).

    Formula:
        $$\operatorname{AUC} = \frac{1}{S} \Big( \sum_{s=0}^{S} p_s - \frac{p_0 + p_S}{2} \Big), \qquad
        p_s = \operatorname{softmax}\big(F(x^{(s)})\big)_t$$

        where \(x^{(s)}\) is the baseline copy with the top \(\operatorname{round}(s d / S)\)
        features of \(x\) (by attribution, decreasing; ties by position) put back,
        \(d\) the number of features (for images a pixel, its channels' attributions
        summed), \(S\) = ``steps`` and \(t\) the target; without ``apply_softmax``,
        \(p_s\) is the raw output. The trapezoid rule on \([0, 1]\).

    Cost:
        ``steps + 1`` forward passes per example (one more over the batch when
        ``target`` is None, for the predicted class), no backward pass, in inference
        mode; each forward takes ``perturbations_per_eval`` steps of every example
        (None: all at once; ``"auto"``: sized from ``torchexplain.config.memory_budget``).
        The blur is two separable convolutions.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import Saliency
        >>> from torchexplain.metrics import insertion
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(),
        ...                             torch.nn.Linear(2 * 6 * 6, 3))
        >>> x = torch.randn(2, 1, 8, 8)
        >>> auc, curves = insertion(model, x, Saliency(model).attribute(x, target=1), target=1, steps=8,
        ...                         return_curves=True)
        >>> auc.shape, curves.shape
        (torch.Size([2]), torch.Size([2, 9]))
        >>> bool(torch.allclose(curves[:, -1], torch.softmax(model(x), 1)[:, 1].double()))  # last step: x itself
        True
    """
    if isinstance(baseline, str):
        if baseline != "blur":
            raise ValueError(f'baseline must be "blur", a number or a tensor; got {baseline!r}')
        if inputs.dim() != 4:
            raise ValueError('baseline="blur" needs (N, C, H, W) images; pass a number or tensor baseline')
        base = gaussian_blur(inputs, blur_kernel_size, blur_sigma)
    else:
        base = torch.as_tensor(baseline, dtype=inputs.dtype, device=inputs.device).expand_as(inputs)
    curves = _curves(model, inputs, attributions, target, steps, lambda ex: inputs[ex], lambda ex: base[ex],
                     apply_softmax, additional_forward_args, perturbations_per_eval)
    auc = area_under_curve(curves.t())
    return (auc, curves.t()) if return_curves else auc
