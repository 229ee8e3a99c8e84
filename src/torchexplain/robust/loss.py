"""The one gradient step of the attacks: the gradient of the attack's loss at the
current inputs, one forward and one backward pass over the whole batch.

The loss is Captum's: ``loss_func(model output, target)`` when a loss function is
given (the target is passed to it as it is), otherwise ``-log`` of the targeted
output of each example (the target in any of Captum's forms, read by
:class:`~torchexplain.core.targets.Target`). The gradient is that of the loss summed
over the batch (a loss function may return one loss per example, or one for the
batch). The model is borrowed for the whole attack (:func:`attack_guard`): its
parameters stop requiring grad, so autograd keeps nothing for weight gradients, and
its flags, buffers and parameter ``.grad`` are restored on exit.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import Tensor

from .. import config
from ..core.forward import ForwardAdapter, select_output
from ..core.gradients import RowRunner, row_gradients
from ..core.hooks import frozen_parameters, model_guard
from ..core.inputs import validate_inputs


@contextlib.contextmanager
def attack_guard(model):
    """``model`` borrowed for an attack: parameters frozen inside, everything restored after."""
    with model_guard(model), frozen_parameters(model):
        yield


def check_forward(forward_func, loss_func=None) -> None:
    if not callable(forward_func):
        raise TypeError(f"forward_func must be callable (an nn.Module or function); got {type(forward_func).__name__}")
    if loss_func is not None and not callable(loss_func):
        raise TypeError(
            f"loss_func must be None or a callable (model output, target) -> loss; got {type(loss_func).__name__}"
        )


class LossGradient:
    """``self(inputs)``: d(loss summed over the batch) / d(inputs), a tuple with one
    gradient per input tensor, for inputs of the shapes it was built for."""

    def __init__(self, forward_func: Callable, loss_func: Callable | None, inputs: tuple[Tensor, ...], target,
                 additional_forward_args=None, output_selector=None):
        n = validate_inputs(inputs)
        self.loss_func = loss_func
        self.target = target
        # a loss function reads the target itself, in whatever form it takes
        self.adapter = ForwardAdapter(forward_func, n, None if loss_func is not None else target,
                                      additional_forward_args, output_selector=output_selector)
        self.runner = RowRunner()
        # The inputs keep their layout unless torchexplain.config.channels_last is True:
        # channels-last inputs make every convolution convert its weights, forward and
        # backward, at every step; on resnet18 (CPU) that made a PGD step 1.6-1.8x
        # slower at 64x64, 1.1-1.3x at 128x128 and gained nothing measurable at 224x224.
        self.runner.layout_ok = config.channels_last is True

    def fix_predicted(self, inputs: tuple[Tensor, ...]) -> None:
        """A ``"predicted"`` target becomes each example's arg-max class on ``inputs``
        (the clean inputs), so that every step attacks the same class."""
        target = self.adapter.target
        if self.loss_func is None and target.predicted:
            with torch.no_grad():
                out = self.adapter.outputs(inputs, torch.arange(self.adapter.n))
            self.adapter = self.adapter.with_target(target.resolved(out))

    def _loss(self, chunk: tuple[Tensor, ...], rows: Tensor, examples: Tensor) -> Tensor:
        if self.loss_func is None:
            return -torch.log(self.adapter.scalars(chunk, examples))
        out = self.adapter.call(chunk, examples)
        if self.adapter.output_selector is not None:
            out = select_output(out, self.adapter.output_selector)
        loss = self.loss_func(out, self.target)
        if not isinstance(loss, Tensor):
            raise TypeError(f"loss_func must return a tensor (a loss per example, or one); got {type(loss).__name__}")
        return loss

    def __call__(self, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        found: list = []

        def consume(rows, examples, grads, scalars):
            found.append(grads)

        row_gradients(self.adapter, self.adapter.n, lambda rows, examples: inputs, consume,
                      internal_batch_size=None, score=self._loss, runner=self.runner)
        return found[0]


def sign_step(x: Tensor, grad: Tensor, size: float, targeted: bool, mask: Tensor | None,
              zero_thresh: float) -> Tensor:
    """``x + size * sign(grad) * mask`` (minus for a targeted attack) where
    ``|grad| > zero_thresh``; ``x`` elsewhere."""
    step = grad.sign() * (-size if targeted else size)
    if mask is not None:
        step = step * mask
    return torch.where(grad.abs() > zero_thresh, x + step, x)


def clamp_to(x: Tensor, low: float, high: float) -> Tensor:
    """``x`` clamped to ``[low, high]`` (nothing to do for an infinite range)."""
    if low == float("-inf") and high == float("inf"):
        return x
    return torch.clamp(x, min=low, max=high)


def like_input(out: Tensor, x: Tensor) -> Tensor:
    """``out`` in the memory layout of the input ``x`` (the steps may run channels-last)."""
    if x.is_contiguous() and not out.is_contiguous():
        return out.contiguous()
    return out
