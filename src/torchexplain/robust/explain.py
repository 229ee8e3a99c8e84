"""Attacks read as attributions: the adversarial perturbation ``perturbed - inputs``
of an untargeted attack on the explained class, in the inputs' shape, for
:func:`torchexplain.explain`'s one-call use.

The model returns ``(N, classes)`` scores (logits), so the loss is cross-entropy
(not Captum's ``-log`` of the output, which assumes probabilities). Defaults scale
with the data: the common 8/255 budget (2/255 per PGD step, 10 steps) is for pixels
in [0, 1], so it is multiplied by the batch's value range (max - min), which keeps
the budget the same in pixel terms for normalised images too.

Both are registered (as "fgsm" and "pgd") with ``listed=False``: :func:`explain`
finds them by name, but they are not attributions, so they stay out of
``available()``, ``method="all"``, the demo and the app.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.hooks import model_guard
from ..core.inputs import as_tuple
from ..core.registry import register
from .fgsm import FGSM
from .pgd import PGD

#: the budget for pixels in [0, 1], scaled by the inputs' value range
EPSILON, STEP, STEPS = 8 / 255, 2 / 255, 10


def value_range(inputs) -> float:
    """``max - min`` over every input value (1 for constant inputs)."""
    xs, _ = as_tuple(inputs)
    span = max(float(x.max() - x.min()) for x in xs)
    return span if span > 0 else 1.0


def _classes(model, inputs, target, additional_forward_args) -> Tensor:
    """The explained class of each example: ``target`` as a tensor of class indices
    (an int for all), or each example's arg-max score for ``None``."""
    xs, _ = as_tuple(inputs)
    n = xs[0].shape[0]
    if target is None:
        extra = additional_forward_args if isinstance(additional_forward_args, tuple) else (
            () if additional_forward_args is None else (additional_forward_args,))
        with model_guard(model), torch.no_grad():
            return model(*xs, *extra).argmax(1)
    classes = torch.as_tensor(target, device=xs[0].device).long().reshape(-1)
    return classes.expand(n).clone() if classes.numel() == 1 else classes


def cross_entropy(out: Tensor, target: Tensor) -> Tensor:
    """Per-example cross-entropy of logits ``out`` for class indices ``target``."""
    return F.cross_entropy(out, target.to(out.device), reduction="none")


def _difference(perturbed, inputs):
    if isinstance(perturbed, tuple):
        return tuple(p - x for p, x in zip(perturbed, inputs))
    return perturbed - inputs


def fgsm_defaults(x: Tensor) -> dict:
    return {"epsilon": EPSILON * value_range(x)}


def pgd_defaults(x: Tensor) -> dict:
    span = value_range(x)
    return {"radius": EPSILON * span, "step_size": STEP * span, "step_num": STEPS}


@register("fgsm", aliases=("fast_gradient_sign",), defaults=fgsm_defaults, listed=False,
          description="FGSM perturbation away from the class (8/255 of the value range)")
class FGSMAttribution:
    """``attribute(inputs, target)``: FGSM's perturbation of each input away from its class."""

    def __init__(self, forward_func):
        self.forward_func = forward_func

    def attribute(self, inputs, target=None, epsilon: float | None = None, additional_forward_args=None,
                  mask=None, lower_bound: float = float("-inf"), upper_bound: float = float("inf")):
        epsilon = EPSILON * value_range(inputs) if epsilon is None else epsilon
        attack = FGSM(self.forward_func, cross_entropy, lower_bound, upper_bound)
        classes = _classes(self.forward_func, inputs, target, additional_forward_args)
        return _difference(attack.perturb(inputs, epsilon, classes, additional_forward_args, mask=mask), inputs)


@register("pgd", aliases=("projected_gradient_descent",), defaults=pgd_defaults, listed=False,
          description="PGD perturbation away from the class (Linf, 8/255 of the value range, 10 steps)")
class PGDAttribution:
    """``attribute(inputs, target)``: PGD's (Linf, 10 steps) perturbation of each input away from its class."""

    def __init__(self, forward_func):
        self.forward_func = forward_func

    def attribute(self, inputs, target=None, radius: float | None = None, step_size: float | None = None,
                  step_num: int = STEPS, norm: str = "Linf", additional_forward_args=None, mask=None,
                  lower_bound: float = float("-inf"), upper_bound: float = float("inf")):
        span = value_range(inputs)
        radius = EPSILON * span if radius is None else radius
        step_size = STEP * span if step_size is None else step_size
        attack = PGD(self.forward_func, cross_entropy, lower_bound, upper_bound)
        classes = _classes(self.forward_func, inputs, target, additional_forward_args)
        perturbed = attack.perturb(inputs, radius, step_size, step_num, classes, additional_forward_args,
                                   norm=norm, mask=mask)
        return _difference(perturbed, inputs)
