"""CAMs from one forward pass without gradients: CAM and EigenCAM."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core.forward import ForwardAdapter
from ..core.hooks.layers import layer_name, resolve_layer
from . import locate
from .base import BaseCAM, weighted


class CAM(BaseCAM):
    r"""Class activation mapping (Zhou et al. 2016): the channels weighted by the linear classifier's weights.

    For a model whose explained
    output is a linear layer on the globally pooled target layer:
    ``cam_c = sum_k W[c, k] A_k`` with ``W`` the weight of ``fc_layer`` (the bias is
    left out; with global average pooling the spatial mean of the raw map plus the
    bias is the logit). ``fc_layer`` None: the first ``nn.Linear`` after the target
    layer, checked to produce the explained output. ``target`` must select a class
    (a row of ``W``): an int, or one per example; None takes the predicted class.

    Formula:
        $$L_c = \operatorname{relu}\Big(\sum_k W_{c,k} A_k\Big)$$

        with \(A_k\) the \(k\)-th channel of the target layer's output, \(W\) the weight of
        ``fc_layer`` and \(c\) the target class; then bilinearly resized to the input
        (``upsample``); ``relu=False`` leaves out the ReLU. With global average pooling,
        the raw map's spatial mean plus the bias \(b_c\) is the logit \(y_c\).

    Cost:
        One forward pass of the batch and no backward pass; on the first call without
        ``target_layer`` or ``fc_layer``, one more forward of the first example locates
        them.

    Examples:
        >>> import torch
        >>> from torchexplain.cam import CAM
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, stride=2, padding=1), torch.nn.ReLU(),
        ...                             torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> x = torch.randn(2, 1, 8, 8)
        >>> cam = CAM(model)  # target layer and fc_layer located: model[1] and model[4]
        >>> cam.attribute(x, target=2).shape
        torch.Size([2, 1, 8, 8])
        >>> raw = cam.attribute(x, target=2, relu=False, upsample=False)
        >>> raw.shape
        torch.Size([2, 1, 4, 4])
        >>> bool(torch.allclose(raw.mean((1, 2, 3)) + model[4].bias[2], model(x)[:, 2], atol=1e-5))
        True
    """

    def __init__(self, model, target_layer=None, fc_layer=None, reshape_transform=None, *,
                 layer_call: int | None = None, output_selector=None):
        super().__init__(model, target_layer, reshape_transform, layer_call=layer_call,
                         output_selector=output_selector)
        self.fc_layer = None if fc_layer is None else resolve_layer(model, fc_layer, "fc_layer")
        if self.fc_layer is not None and not isinstance(self.fc_layer, nn.Linear):
            raise TypeError(f"fc_layer must be an nn.Linear layer; got {type(self.fc_layer).__name__}")
        self.fc_layer_name = None if fc_layer is None else layer_name(model, self.fc_layer)

    def _needs_probe(self) -> bool:
        return self.target_layer is None or self.fc_layer is None

    def _probed(self, runs, output):
        run = super()._probed(runs, output)
        if self.fc_layer is None:
            values = (run.output,) if isinstance(run.output, Tensor) else tuple(run.output)
            channels = self._grid(values).shape[1]
            self.fc_layer_name, self.fc_layer = locate.locate_linear(runs, run, channels, output, self.method)
        return run

    def _classes(self, adapter: ForwardAdapter, output: Tensor) -> Tensor:
        """The class (row of the linear layer's weight) each example explains."""
        target, n = adapter.target, adapter.n
        if target.fn is not None:
            raise TypeError("CAM needs target class indices (int, list or tensor); a callable target selects no class")
        if target.predicted:
            return output.reshape(n, -1).argmax(1)
        table = torch.tensor([target.shared] * n) if target.shared is not None else target.table
        if table.shape[1] != 1:
            raise ValueError(f"CAM needs one class index per example; target gives {table.shape[1]} indices")
        classes = table[:, 0]
        size = self.fc_layer.out_features
        if bool(((classes >= size) | (classes < -size)).any()):
            raise ValueError(f"target class out of range for fc_layer {self.fc_layer_name!r} with {size} outputs")
        return classes % size

    def _layer_cam(self, x, adapter, batch_size):
        values, output = self._forward(x, adapter)
        activations = self._grid(values)
        weight = self.fc_layer.weight
        if weight.shape[1] != activations.shape[1]:
            raise ValueError(
                f"fc_layer {self.fc_layer_name!r} has in_features={weight.shape[1]} but target_layer "
                f"{self.target_layer_name!r} has {activations.shape[1]} channels"
            )
        classes = self._classes(adapter, output).to(weight.device)
        return weighted(activations, weight.detach()[classes].to(activations.device))


class EigenCAM(BaseCAM):
    r"""EigenCAM (Muhammad and Yeasin 2020): the projection of the layer's
    activations on their first principal component.

    Positions are the samples and
    channels the features; each channel is centred over positions (as
    pytorch-grad-cam does) before the SVD. The SVD's sign is arbitrary, so it is
    fixed: the principal direction ``v`` has ``sum_k v_k >= 0``, which is the same as
    the map correlating positively with the channel-summed activation map.
    Class-agnostic: ``target`` is checked but does not change the map.

    Formula:
        $$L = \operatorname{relu}(\tilde{A} v_1), \qquad \tilde{A} = A - \mathbf{1} \bar{a}^\top$$

        with \(A \in \mathbb{R}^{hw \times K}\) the layer's activations (one row per
        position, one column per channel), \(\bar{a}\) their mean over the positions and
        \(v_1\) the first right singular vector of \(\tilde{A}\), signed so that
        \(\sum_k v_{1,k} \ge 0\); then resized to the input. The raw map has zero mean.

    Cost:
        One forward pass of the batch and no backward pass (plus one SVD per example);
        on the first call without ``target_layer``, one more forward of the first example.

    Examples:
        >>> import torch
        >>> from torchexplain.cam import EigenCAM
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, stride=2, padding=1), torch.nn.ReLU(),
        ...                             torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> x = torch.randn(2, 1, 8, 8)
        >>> eigen = EigenCAM(model, target_layer="1")
        >>> maps = eigen.attribute(x)
        >>> maps.shape
        torch.Size([2, 1, 8, 8])
        >>> bool(torch.equal(eigen.attribute(x, target=0), eigen.attribute(x, target=2)))  # class-agnostic
        True
        >>> raw = eigen.attribute(x, relu=False, upsample=False)
        >>> bool(raw.mean((2, 3)).abs().max() < 1e-5)
        True
    """

    def _layer_cam(self, x, adapter, batch_size):
        values, output = self._forward(x, adapter)
        if not adapter.target.predicted:
            adapter.target.select(output, torch.arange(x.shape[0]))  # a bad target is an error here too
        activations = self._grid(values)
        n, k, h, w = activations.shape
        samples = activations.reshape(n, k, h * w).transpose(1, 2)
        centred = samples - samples.mean(1, keepdim=True)
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        direction = vh[:, 0, :]
        sign = torch.where(direction.sum(1, keepdim=True) < 0, -1.0, 1.0).to(direction.dtype)
        return (centred @ (direction * sign).unsqueeze(-1)).reshape(n, h, w)

