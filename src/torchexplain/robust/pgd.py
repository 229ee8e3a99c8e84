"""Projected gradient descent (Madry et al. 2018, https://arxiv.org/abs/1706.06083)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..attr.seeding import make_generator
from ..core.inputs import as_tuple, format_output, validate_inputs
from .checks import bounds, masks, non_negative, norm_name, step_count
from .fgsm import FGSM
from .loss import LossGradient, attack_guard, check_forward, clamp_to, like_input, sign_step
from .perturbation import Perturbation

#: torch.renorm's guard against dividing by a zero norm, kept for the same values
_RENORM_EPS = 1e-7


def _per_example(values: Tensor, like: Tensor) -> Tensor:
    return values.reshape((-1,) + (1,) * (like.dim() - 1))


def project(center: Tensor, x: Tensor, radius: float, norm: str) -> Tensor:
    """``x`` moved back into the ``norm`` ball of ``radius`` around ``center``, each
    example on its own (for L2, as ``torch.renorm``: scaled by ``radius / (||d|| + 1e-7)``
    where ``||d|| > radius``)."""
    diff = x - center
    if norm == "Linf":
        return center + diff.clamp(-radius, radius)
    lengths = diff.abs() if diff.dim() == 1 else torch.linalg.vector_norm(diff, dim=tuple(range(1, diff.dim())))
    scale = torch.where(lengths > radius, radius / (lengths + _RENORM_EPS), torch.ones_like(lengths))
    return center + diff * _per_example(scale, diff)


def random_point(center: Tensor, radius: float, norm: str, mask: Tensor | None,
                 generator: torch.Generator | None) -> Tensor:
    """A point drawn uniformly from the ``norm`` ball of ``radius`` around each example
    of ``center`` (only where ``mask`` is 1). Without a generator the draws are
    Captum's, from torch's global RNG on the input's device; with one, they are made
    on the generator's device and moved."""

    def draw(fn, shape):
        if generator is None:
            return fn(shape, dtype=center.dtype, device=center.device)
        return fn(shape, generator=generator, dtype=center.dtype, device=generator.device).to(center.device)

    if norm == "Linf":
        offset = draw(torch.rand, center.shape) * radius * 2 - radius
    else:
        n = center.shape[0]
        direction = F.normalize(draw(torch.randn, center.shape).reshape(n, -1)).reshape(center.shape)
        d = center[0].numel()
        # the radii are float32 CPU draws without a generator, as Captum's
        lengths = torch.rand(n, generator=generator, device="cpu" if generator is None else generator.device)
        lengths = lengths.to(device=center.device, dtype=center.dtype)
        offset = _per_example((lengths ** (1.0 / d)) * radius, center) * direction
    return center + (offset if mask is None else offset * mask)


class PGD(Perturbation):
    r"""Projected gradient descent (Madry et al. 2018): iterated FGSM steps, each
    projected back into the ball around the inputs, starting from ``x`` (or, with
    ``random_start=True``, a uniform random point of the ball).

    ``P`` projects each example into the ``norm`` ball of ``radius`` around ``x``
    (``"Linf"``: clipping; ``"L2"``: rescaling, as ``torch.renorm``); the step is the
    sign step for both norms, as in Captum; ``clamp`` is to
    ``[lower_bound, upper_bound]``; the sign is + untargeted, - targeted. ``L``, the
    target forms, ``zero_thresh`` and ``output_selector`` are FGSM's (``self.fgsm``,
    Captum's attribute).

    Every step is one forward and one backward pass over the whole batch with the
    model's parameters frozen; nothing else runs the model (no extra forward), except
    one forward without gradients to fix a ``"predicted"`` target.

    Formula:
        $$x_0 = x, \qquad x_{k+1} = \operatorname{clamp}_{[l, u]}\Big(P_{B(x, r)}\big(x_k \pm \alpha\, m \odot
        \operatorname{sign}(\nabla_{x} L(x_k, y))\big)\Big), \quad k = 0, \dots, K - 1$$

        with \(\alpha\) = ``step_size``, \(K\) = ``step_num``, \(m\) the ``mask``,
        \(B(x, r)\) the ``norm`` ball of radius \(r\) = ``radius`` around each example
        (``"Linf"``: \(P\) clips \(x_k - x\) to \([-r, r]\); ``"L2"``: \(P\) scales it by
        \(r / (\lVert x_k - x \rVert_2 + 10^{-7})\) where its norm exceeds \(r\)); the
        result is \(x_K\). For \(l = -\infty, u = \infty\) it stays in the ball.

    Cost:
        ``step_num`` forward and backward passes over the whole batch per ``perturb``
        call (one forward more, without gradients, when ``target`` is
        ``"predicted"``), with the model's parameters frozen; the random start and
        the projections are elementwise.

    Examples:
        >>> import torch
        >>> from torchexplain.robust import PGD
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3),
        ...                             torch.nn.Softmax(dim=1))
        >>> x = torch.randn(3, 4)
        >>> y = model(x).argmax(1)
        >>> pgd = PGD(model)
        >>> adversarial = pgd.perturb(x, radius=0.2, step_size=0.05, step_num=5, target=y)
        >>> adversarial.shape, bool(((adversarial - x).abs() <= 0.2 + 1e-6).all())
        (torch.Size([3, 4]), True)
        >>> l2 = pgd.perturb(x, radius=0.5, step_size=0.1, step_num=4, target=y, norm="L2", random_start=True, seed=0)
        >>> bool(((l2 - x).norm(dim=1) <= 0.5 + 1e-5).all())
        True
    """

    def __init__(self, forward_func: Callable, loss_func: Callable | None = None,
                 lower_bound: float = float("-inf"), upper_bound: float = float("inf"), *,
                 output_selector=None) -> None:
        check_forward(forward_func, loss_func)
        self.forward_func = forward_func
        self.fgsm = FGSM(forward_func, loss_func, output_selector=output_selector)
        self.lower_bound, self.upper_bound = bounds(lower_bound, upper_bound)

    @property
    def loss_func(self) -> Callable | None:
        return self.fgsm.loss_func

    def bound(self, x: Tensor) -> Tensor:
        """``x`` clamped to ``[lower_bound, upper_bound]``."""
        return clamp_to(x, self.lower_bound, self.upper_bound)

    def perturb(self, inputs, radius: float, step_size: float, step_num: int, target, additional_forward_args=None,
                targeted: bool = False, random_start: bool = False, norm: str = "Linf", mask=None, *,
                generator: torch.Generator | None = None, seed: int | None = None):
        """The perturbed inputs, in the form of ``inputs`` (a tensor or a tuple).

        ``radius``, ``step_size`` (>= 0), ``step_num`` (>= 1, or 0 with
        ``random_start``: the random point alone), ``norm`` ("Linf" or "L2"),
        ``target``, ``targeted`` and ``mask`` as in :meth:`FGSM.perturb`.
        ``generator`` or ``seed`` (ours): where the random start is drawn from
        (default: torch's global RNG, Captum's draws)."""
        radius = non_negative(radius, "radius")
        step_size = non_negative(step_size, "step_size")
        step_num = step_count(step_num, bool(random_start))
        norm = norm_name(norm)
        generator = make_generator(generator, seed)
        xs, is_tuple = as_tuple(inputs)
        validate_inputs(xs)
        ms = masks(mask, xs)
        xs = tuple(x.detach() for x in xs)
        current = xs
        if random_start:
            with torch.no_grad():
                current = tuple(self.bound(random_point(x, radius, norm, m, generator)) for x, m in zip(xs, ms))
        loss = LossGradient(self.forward_func, self.fgsm.loss_func, xs, target, additional_forward_args,
                            self.fgsm.output_selector)
        zero_thresh, targeted = self.fgsm.zero_thresh, bool(targeted)
        with attack_guard(self.forward_func):
            loss.fix_predicted(xs)
            for _ in range(step_num):
                grads = loss(current)
                with torch.no_grad():
                    current = tuple(
                        self.bound(project(x, sign_step(c, g, step_size, targeted, m, zero_thresh), radius, norm))
                        for x, c, g, m in zip(xs, current, grads, ms)
                    )
        return format_output(is_tuple, [like_input(c, x) for c, x in zip(current, xs)])
