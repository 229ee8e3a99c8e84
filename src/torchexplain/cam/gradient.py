"""Gradient CAMs: each one is a function of the layer's activations ``A`` and the
gradients ``G = dS/dA`` of the explained score ``S``, both ``(N, K, h, w)``.

One forward and one backward per chunk of examples, through the one chunked
evaluator; the backward stops at the layer (``torch.autograd.grad`` with respect to
its values), so nothing before it is differentiated and parameter ``.grad`` is
never touched.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.forward import ForwardAdapter
from ..core.gradients import layer_gradients
from ..core.inputs import take
from ..core.registry import register
from .base import BaseCAM, weighted

_SPATIAL = (2, 3)


def _safe_divide(numerator: Tensor, denominator: Tensor) -> Tensor:
    """numerator / denominator, 0 where the denominator is 0."""
    ok = denominator != 0
    return torch.where(ok, numerator / torch.where(ok, denominator, 1), torch.zeros_like(numerator))


class GradientCAM(BaseCAM):
    """A CAM computed from (activations, gradients): subclasses define
    :meth:`combine`, ``(A, G) -> (N, h, w)``."""

    def combine(self, activations: Tensor, gradients: Tensor) -> Tensor:
        raise NotImplementedError

    def _layer_cam(self, x: Tensor, adapter: ForwardAdapter, batch_size) -> Tensor:
        cams: list[tuple[Tensor, Tensor]] = []

        def consume(rows, examples, grads, values, scalars):
            cams.append((rows, self.combine(self._grid(values), self._grid(grads))))

        layer_gradients(adapter, [self._tap()], x.shape[0], lambda rows, examples: (take(x, examples),), consume,
                        chunk=batch_size)
        first = cams[0][1]
        out = first.new_empty((x.shape[0],) + first.shape[1:])
        for rows, cam in cams:
            out[rows.to(out.device)] = cam
        return out


@register("grad_cam", aliases=("gradcam",), order=190,
          description="Grad-CAM at the last convolutional block (located automatically), upsampled")
class GradCAM(GradientCAM):
    r"""Grad-CAM (Selvaraju et al. 2017): channels weighted by their spatially
    averaged gradients, ``sum_k mean_ij(G_kij) A_k``.

    Formula:
        $$L = \operatorname{relu}\Big(\sum_k \alpha_k A_k\Big), \qquad
        \alpha_k = \frac{1}{hw} \sum_{i,j} \frac{\partial S}{\partial A_{kij}}$$

        with \(A\) the target layer's output \((K, h, w)\) and \(S\) the explained score;
        then bilinearly resized to the input (``upsample``); ``relu=False`` leaves out
        the ReLU. For a global-average-pooling and linear head on the layer, the raw
        map sums to \(y_c - b_c\) over the layer's positions.

    Cost:
        One forward and one backward pass per example, the backward stopped at the
        target layer, ``batch_size`` examples per chunk; on the first call without
        ``target_layer``, one more forward of the first example locates the layer.

    Examples:
        >>> import torch
        >>> from torchexplain.cam import GradCAM
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, stride=2, padding=1), torch.nn.ReLU(),
        ...                             torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> x = torch.randn(2, 1, 8, 8)
        >>> maps = GradCAM(model, target_layer="1").attribute(x, target=2)
        >>> maps.shape
        torch.Size([2, 1, 8, 8])
        >>> raw = GradCAM(model, target_layer="1").attribute(x, target=2, relu=False, upsample=False)
        >>> bool(torch.allclose(raw.sum((1, 2, 3)), model(x)[:, 2] - model[4].bias[2], atol=1e-5))
        True
    """

    def combine(self, activations, gradients):
        return weighted(activations, gradients.mean(_SPATIAL))


@register("grad_cam_plus_plus", aliases=("gradcam++", "gradcampp"), order=200,
          description="Grad-CAM++ at the last convolutional block, upsampled")
class GradCAMPlusPlus(GradientCAM):
    r"""Grad-CAM++ (Chattopadhyay et al. 2018): Grad-CAM with positive gradients weighted per position.

    The closed form of the paper's
    Eq. 19 for an exponential of the score, as pytorch-grad-cam computes it::

        alpha_kij = g^2 / (2 g^2 + sum_ab A_kab * g^3)     (g = G_kij; 0 where this is 0/0)
        w_k       = sum_ij alpha_kij * relu(G_kij)
        cam       = sum_k w_k A_k

    ``G`` is the gradient of the score itself: the paper's ``exp(S)`` factor is the
    same for every position of an example, so it only rescales the raw map (and
    would overflow for large logits). The denominator is applied (torchcam omits it).

    ``eps`` is added to the denominator of ``alpha`` (and ``alpha`` is 0 where
    ``g = 0``). The default, 0, is the formula exactly; pytorch-grad-cam adds
    ``eps=1e-6``, which shifts alphas where the denominator is small (after min-max
    scaling, up to about 0.05 on a resnet18 at 224x224): pass ``eps=1e-6`` to
    reproduce its maps.

    Formula:
        $$L = \operatorname{relu}\Big(\sum_k w_k A_k\Big), \qquad
        w_k = \sum_{i,j} \alpha_{kij} \operatorname{relu}(G_{kij}), \qquad
        \alpha_{kij} = \frac{G_{kij}^2}{2 G_{kij}^2 + \sum_{a,b} A_{kab}\, G_{kij}^3 + \epsilon}$$

        with \(G = \partial S / \partial A\) and \(\alpha_{kij} = 0\) where \(G_{kij} = 0\); then
        resized to the input as in :class:`GradCAM`.

    Cost:
        One forward and one backward pass per example, the backward stopped at the
        target layer, ``batch_size`` examples per chunk; on the first call without
        ``target_layer``, one more forward of the first example locates the layer.

    Examples:
        >>> import torch
        >>> from torchexplain.cam import GradCAMPlusPlus
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, stride=2, padding=1), torch.nn.ReLU(),
        ...                             torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> x = torch.randn(2, 1, 8, 8)
        >>> maps = GradCAMPlusPlus(model, target_layer="1").attribute(x, target=2)
        >>> maps.shape
        torch.Size([2, 1, 8, 8])
        >>> bool(maps.min() >= 0)
        True
    """

    def __init__(self, model, target_layer=None, reshape_transform=None, *, eps: float = 0.0, **kwargs):
        super().__init__(model, target_layer, reshape_transform, **kwargs)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
            raise ValueError(f"eps must be a non-negative number; got {eps!r}")
        self.eps = float(eps)

    def combine(self, activations, gradients):
        g2 = gradients * gradients
        totals = activations.sum(_SPATIAL, keepdim=True)
        alpha = _safe_divide(g2, 2 * g2 + totals * g2 * gradients + self.eps)
        if self.eps:
            alpha = torch.where(gradients != 0, alpha, torch.zeros_like(alpha))
        return weighted(activations, (alpha * torch.relu(gradients)).sum(_SPATIAL))


class XGradCAM(GradientCAM):
    r"""XGrad-CAM (Fu et al. 2020): ``w_k = sum_ij G_kij A_kij / sum_ab A_kab``
    (0 for a channel whose activations sum to 0).

    Formula:
        $$L = \operatorname{relu}\Big(\sum_k w_k A_k\Big), \qquad
        w_k = \frac{\sum_{i,j} G_{kij} A_{kij}}{\sum_{a,b} A_{kab}}$$

        with \(G = \partial S / \partial A\); then resized to the input as in
        :class:`GradCAM`. Where the gradient is constant over each channel (a global
        average pooling and linear head) it equals Grad-CAM.

    Cost:
        One forward and one backward pass per example, the backward stopped at the
        target layer, ``batch_size`` examples per chunk; on the first call without
        ``target_layer``, one more forward of the first example locates the layer.

    Examples:
        >>> import torch
        >>> from torchexplain.cam import GradCAM, XGradCAM
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, stride=2, padding=1), torch.nn.ReLU(),
        ...                             torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> x = torch.randn(2, 1, 8, 8)
        >>> maps = XGradCAM(model, target_layer="1").attribute(x, target=2)
        >>> maps.shape
        torch.Size([2, 1, 8, 8])
        >>> bool(torch.allclose(maps, GradCAM(model, target_layer="1").attribute(x, target=2), atol=1e-6))
        True
    """

    def combine(self, activations, gradients):
        share = _safe_divide(activations, activations.sum(_SPATIAL, keepdim=True))
        return weighted(activations, (gradients * share).sum(_SPATIAL))


class LayerCAM(GradientCAM):
    r"""LayerCAM (Jiang et al. 2021): positive gradients weight each position,
    ``sum_k relu(G_k) * A_k``.

    Formula:
        $$L = \operatorname{relu}\Big(\sum_k \operatorname{relu}(G_k) \odot A_k\Big)$$

        with \(G = \partial S / \partial A\); then resized to the input as in
        :class:`GradCAM`.

    Cost:
        One forward and one backward pass per example, the backward stopped at the
        target layer, ``batch_size`` examples per chunk; on the first call without
        ``target_layer``, one more forward of the first example locates the layer.

    Examples:
        >>> import torch
        >>> from torchexplain.cam import LayerCAM
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, stride=2, padding=1), torch.nn.ReLU(),
        ...                             torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> x = torch.randn(2, 1, 8, 8)
        >>> maps = LayerCAM(model, target_layer="1").attribute(x, target=2, upsample=False)
        >>> maps.shape
        torch.Size([2, 1, 4, 4])
        >>> bool(maps.min() >= 0)
        True
    """

    def combine(self, activations, gradients):
        return (torch.relu(gradients) * activations).sum(1)


class HiResCAM(GradientCAM):
    r"""HiResCAM (Draelos and Carin 2020): ``sum_k G_k * A_k`` (element-wise, no
    spatial averaging), faithful to the score for models ending in one linear layer.

    Formula:
        $$L = \operatorname{relu}\Big(\sum_k G_k \odot A_k\Big), \qquad G = \frac{\partial S}{\partial A}$$

        then resized to the input as in :class:`GradCAM`. When the score is linear in
        \(A\) plus a constant \(b\) (a pooling and linear head), the raw map sums to
        \(S - b\) over the layer's positions.

    Cost:
        One forward and one backward pass per example, the backward stopped at the
        target layer, ``batch_size`` examples per chunk; on the first call without
        ``target_layer``, one more forward of the first example locates the layer.

    Examples:
        >>> import torch
        >>> from torchexplain.cam import HiResCAM
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, stride=2, padding=1), torch.nn.ReLU(),
        ...                             torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> x = torch.randn(2, 1, 8, 8)
        >>> raw = HiResCAM(model, target_layer="1").attribute(x, target=2, relu=False, upsample=False)
        >>> raw.shape
        torch.Size([2, 1, 4, 4])
        >>> bool(torch.allclose(raw.sum((1, 2, 3)), model(x)[:, 2] - model[4].bias[2], atol=1e-5))
        True
    """

    def combine(self, activations, gradients):
        return (gradients * activations).sum(1)
