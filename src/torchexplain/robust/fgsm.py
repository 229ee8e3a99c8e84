"""The fast gradient sign method (Goodfellow et al. 2015, https://arxiv.org/abs/1412.6572)."""

from __future__ import annotations

from typing import Callable

import torch

from ..core.inputs import as_tuple, format_output
from .checks import bounds, masks, non_negative
from .loss import LossGradient, attack_guard, check_forward, clamp_to, like_input, sign_step
from .perturbation import Perturbation


class FGSM(Perturbation):
    r"""The fast gradient sign method (Goodfellow et al. 2015): one step along the sign
    of the loss gradient, away from the true label ``y`` (untargeted) or towards the
    class ``t`` (``targeted=True``), where ``|grad_x L| > zero_thresh`` (elsewhere
    ``x' = x``); ``clamp`` is to ``[lower_bound, upper_bound]``, and ``L`` is
    ``loss_func(model output, target)`` or, by default, ``-log`` of each example's
    targeted output (so the model's outputs should be probabilities, as in Captum).

    ``bound`` (clamping) and ``zero_thresh`` (1e-6) are attributes that may be
    replaced, as in Captum. ``output_selector`` (ours) picks the tensor to attack
    from a model that returns a tuple or dict (an index, a key or a callable).

    The gradient takes one forward and one backward pass over the whole batch, with
    the model's parameters frozen; the model comes back unchanged (flags, buffers,
    parameter ``.grad``).

    Formula:
        $$x' = \operatorname{clamp}_{[l, u]}\big(x \pm \epsilon\, m \odot \operatorname{sign}(\nabla_x L(x, y))\big)$$

        with \(+\) untargeted (\(y\): the true labels) and \(-\) targeted (\(y\): the
        classes to reach), \(\epsilon\) = ``epsilon``, \(m\) the ``mask`` (1 where values
        may change; default all ones), \(L\) summed over the batch, and
        \(x'_i = x_i\) where \(|\partial L / \partial x_i| \le\) ``zero_thresh``. For
        \(l = -\infty, u = \infty\): \(\lVert x' - x \rVert_\infty \le \epsilon\).

    Cost:
        One forward and one backward pass over the whole batch per ``perturb`` call
        (one more forward, without gradients, when ``target`` is ``"predicted"``),
        with the model's parameters frozen.

    Examples:
        >>> import torch
        >>> from torchexplain.robust import FGSM
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3),
        ...                             torch.nn.Softmax(dim=1))
        >>> x = torch.randn(3, 4)
        >>> y = model(x).argmax(1)
        >>> adversarial = FGSM(model, lower_bound=-3.0, upper_bound=3.0).perturb(x, epsilon=0.1, target=y)
        >>> adversarial.shape, bool(((adversarial - x).abs() <= 0.1 + 1e-6).all())
        (torch.Size([3, 4]), True)
        >>> def loss(inputs):  # the default loss: -log of the label's probability, summed
        ...     return -model(inputs).gather(1, y[:, None]).log().sum()
        >>> bool(loss(adversarial) > loss(x))
        True
    """

    def __init__(self, forward_func: Callable, loss_func: Callable | None = None,
                 lower_bound: float = float("-inf"), upper_bound: float = float("inf"), *,
                 output_selector=None) -> None:
        check_forward(forward_func, loss_func)
        self.forward_func = forward_func
        self.loss_func = loss_func
        self.output_selector = output_selector
        self.lower_bound, self.upper_bound = bounds(lower_bound, upper_bound)
        self.zero_thresh = 1e-6

    def bound(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` clamped to ``[lower_bound, upper_bound]``."""
        return clamp_to(x, self.lower_bound, self.upper_bound)

    def perturb(self, inputs, epsilon: float, target, additional_forward_args=None, targeted: bool = False,
                mask=None):
        """The perturbed inputs, in the form of ``inputs`` (a tensor or a tuple).

        ``epsilon``: the step size (>= 0). ``target``: the true labels (untargeted)
        or the classes to reach (``targeted=True``): any of Captum's target forms
        with the default loss, or whatever ``loss_func`` takes. ``mask``: a tensor
        per input (broadcast to it) of zeros and ones, 1 where values may change.
        """
        epsilon = non_negative(epsilon, "epsilon")
        xs, is_tuple = as_tuple(inputs)
        ms = masks(mask, xs)
        xs = tuple(x.detach() for x in xs)
        loss = LossGradient(self.forward_func, self.loss_func, xs, target, additional_forward_args,
                            self.output_selector)
        with attack_guard(self.forward_func):
            loss.fix_predicted(xs)
            grads = loss(xs)
        with torch.no_grad():
            out = [self.bound(sign_step(x, g, epsilon, bool(targeted), m, self.zero_thresh))
                   for x, g, m in zip(xs, grads, ms)]
        return format_output(is_tuple, [like_input(o, x) for o, x in zip(out, xs)])
