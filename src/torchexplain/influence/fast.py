"""TracInCPFast: TracIn over the final fully-connected layer's weight, in closed form.

For a linear layer ``out = W x (+ b)`` and one example, ``dL/dW = outer(dL/d out, x)``,
so the inner product of two examples' weight gradients factorises:
``<dL/dW (a), dL/dW (b)> = (dL_a/d out . dL_b/d out) * (x_a . x_b)``. One forward per
batch (and one backward from the loss to the layer's output) gives both factors for
every example: no per-example backward through the network. As in Captum, only the
weight counts (not the bias).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from torch.func import functional_call

from . import _data
from ._checkpoints import load_flexible_state_dict
from ._state import borrowed
from .base import KMostInfluentialResults, TracInCPBase, check_k, top_k


def resolve_layer(model: nn.Module, layer) -> nn.Module:
    """``final_fc_layer`` as a module of ``model`` (given by name or as the module)."""
    if isinstance(layer, str):
        found = dict(model.named_modules()).get(layer)
        if found is None or layer == "":
            raise ValueError(
                f'Invalid final_fc_layer str: "{layer}" provided! final_fc_layer: expected the name of a layer '
                f"of model (one of {[n for n, _ in model.named_modules() if n][:12]}) or the module itself"
            )
        return found
    if isinstance(layer, nn.Module) and any(m is layer for m in model.modules()):
        return layer
    raise ValueError(f"final_fc_layer: expected a layer of model (a module or its name); got {layer!r}")


class _Capture:
    """A forward hook that keeps the layer's input and swaps its output for a leaf
    tensor, so the loss can be differentiated with respect to the output alone."""

    def __init__(self):
        self.calls = 0
        self.x = None
        self.out = None

    def __call__(self, module, args, output):
        self.calls += 1
        if not isinstance(output, torch.Tensor) or not args or not isinstance(args[0], torch.Tensor):
            raise ValueError("final_fc_layer: expected a layer taking and returning one tensor")
        self.x = args[0].detach()
        self.out = output.detach().requires_grad_(True)
        return self.out


def loss_factors(model: nn.Module, layer: nn.Module, inputs: tuple, targets, loss_fn, reduction: str):
    """``(J, X)``: per example, the gradient of its loss with respect to the layer's
    output ``[n, out]`` and the layer's input ``[n, in]``."""
    capture = _Capture()
    handle = layer.register_forward_hook(capture)
    try:
        params = {k: v.detach() for k, v in model.named_parameters()}
        with torch.enable_grad():
            out = functional_call(model, (params, dict(model.named_buffers())), inputs)
            if capture.calls != 1:
                raise ValueError(f"final_fc_layer: expected it to run once per forward; it ran {capture.calls} times")
            total = loss_fn(out, targets).sum()
            leaf = capture.out
            jac = torch.autograd.grad(total, leaf, allow_unused=True)[0] if total.requires_grad else None
    finally:
        handle.remove()
    jac = torch.zeros_like(leaf) if jac is None else jac
    x = capture.x
    if jac.dim() != 2 or x.dim() != 2:
        raise ValueError(
            "final_fc_layer: expected a fully-connected layer with 2-D input and output (batch, features); "
            f"got input {tuple(x.shape)} and output {tuple(jac.shape)}"
        )
    if reduction == "mean":  # the batch mean's gradient, scaled to the per-example loss's
        jac = jac * jac.shape[0]
    return jac.detach(), x


class TracInCPFast(TracInCPBase):
    r"""TracIn over the last layer in closed form (Pruthi et al. 2020), over the weight
    of ``final_fc_layer`` (a name or a module of ``model``):
    ``influence(a, b) = sum_c lr_c * (J_a . J_b) (x_a . x_b)`` with ``J`` the gradient
    of the loss with respect to the layer's output and ``x`` its input.

    ``loss_fn`` is required; its ``reduction`` may be ``"sum"``, ``"mean"`` (the
    gradient is scaled by the batch size, as Captum does, to be the per-example
    loss's) or ``"none"`` (summed). ``vectorize`` is accepted for compatibility (one
    backward per batch is already vectorised).

    Formula:
        $$\operatorname{TracIn}(a, b) = \sum_{c=1}^{C} \eta_c\, (J_a \cdot J_b)(x_a \cdot x_b)
        = \sum_{c=1}^{C} \eta_c \big\langle \nabla_W \ell(a; \theta_c), \nabla_W \ell(b; \theta_c) \big\rangle$$

        since \(\nabla_W \ell = J x^\top\) for the layer \(y = W x (+ b)\); \(J\) and \(x\)
        are taken at checkpoint \(c\) with learning rate \(\eta_c\). Only the weight
        \(W\) counts, not the bias. ``self_influence``:
        \(\sum_c \eta_c \lVert J \rVert^2 \lVert x \rVert^2\).

    Cost:
        Per checkpoint, one forward pass per batch of test and of training examples,
        and one backward pass from the loss to the layer's output only (no backward
        through the network); then two \(N_{\text{test}} \times N_{\text{train}}\)
        matrix products of the factors.

    Examples:
        >>> import os, tempfile
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> from torchexplain.influence import TracInCPFast
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
        >>> train = TensorDataset(torch.randn(6, 4), torch.randint(0, 3, (6,)))
        >>> test = (torch.randn(2, 4), torch.randint(0, 3, (2,)))
        >>> loss = torch.nn.CrossEntropyLoss(reduction="sum")
        >>> with tempfile.TemporaryDirectory() as checkpoints:
        ...     torch.save(model.state_dict(), os.path.join(checkpoints, "ckpt-1.pt"))
        ...     fast = TracInCPFast(model, "2", train, checkpoints, loss_fn=loss, batch_size=3)
        ...     scores = fast.influence(test)
        ...     on_itself = fast.influence(train.tensors)
        ...     self_scores = fast.self_influence()
        >>> scores.shape
        torch.Size([2, 6])
        >>> bool(torch.allclose(self_scores, torch.diagonal(on_itself), atol=1e-5))
        True
    """

    def __init__(
        self,
        model: nn.Module,
        final_fc_layer,
        train_dataset,
        checkpoints,
        checkpoints_load_func: Callable[[nn.Module, Any], float] = load_flexible_state_dict,
        loss_fn: Callable | None = None,
        batch_size: int | None = 1,
        test_loss_fn: Callable | None = None,
        vectorize: bool = False,
    ) -> None:
        super().__init__(model, train_dataset, checkpoints, checkpoints_load_func, loss_fn, batch_size,
                         test_loss_fn)
        self.vectorize = bool(vectorize)
        self.final_fc_layer = final_fc_layer
        if loss_fn is None:
            raise ValueError(f"loss_fn: {self.get_name()} needs a loss function (output, labels) -> loss; got None")

    @property
    def final_fc_layer(self) -> nn.Module:
        return self._final_fc_layer

    @final_fc_layer.setter
    def final_fc_layer(self, layer) -> None:
        self._final_fc_layer = resolve_layer(self.model, layer)

    def _factors(self, batch, loss_fn, reduction, name: str):
        inputs, targets = _data.split(batch, name)
        return loss_factors(self.model, self.final_fc_layer, inputs, targets, loss_fn, reduction)

    def _test_side(self, tests, aggregate: bool = False):
        parts = [self._factors(b, self.test_loss_fn, self.test_reduction_type, "inputs") for b in tests]
        if not parts:
            raise ValueError("inputs: expected at least one batch; got none")
        return torch.cat([j for j, _ in parts]), torch.cat([x for _, x in parts])

    def _pair_scores(self, test_side, batch) -> torch.Tensor:
        jt, xt = test_side
        jb, xb = self._factors(batch, self.loss_fn, self.reduction_type, "train_dataset")
        return (jt @ jb.T) * (xt @ xb.T)

    def _self_scores(self, batch) -> torch.Tensor:
        j, x = self._factors(batch, self.loss_fn, self.reduction_type, "inputs")
        return (j * j).sum(1) * (x * x).sum(1)

    def influence(self, inputs, k: int | None = None, proponents: bool = True,
                  show_progress: bool = False) -> torch.Tensor | KMostInfluentialResults:
        """``k=None``: ``[n_test, n_train]`` scores; ``k`` given: ``(indices,
        influence_scores)`` of the top-k proponents (or opponents) per test example."""
        k = check_k(k)
        tests = _data.as_batches(inputs)
        name = self.get_name()
        desc = (f"Using {name} to compute influence for training batches" if k is None else
                f"Using {name} to perform computation for getting {'proponents' if proponents else 'opponents'}. "
                "Processing training batches")
        with borrowed(self.model):
            scores = self._influence_pass(tests, False, show_progress, desc)
        return scores if k is None else top_k(scores, k, proponents)

    def self_influence(self, inputs=None, show_progress: bool = False,
                       outer_loop_by_checkpoints: bool = False) -> torch.Tensor:
        """``sum_c lr_c * ||J||^2 ||x||^2`` per example (default: the training data)."""
        batches = self.train_dataloader if inputs is None else _data.as_batches(inputs)
        with borrowed(self.model):
            return self._self_influence_pass(batches, show_progress, bool(outer_loop_by_checkpoints))
