"""The smallest value of an attack's parameter that changes the model's prediction."""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator

import torch
from torch import Tensor

from ..core.inputs import format_additional_args
from .batched import grouped_outputs
from .checks import count, real_number

MODES = ("linear", "binary")


def default_correct_fn(model_out: Tensor, target) -> bool:
    """Whether every example's arg-max class of ``(N, classes)`` scores is its target."""
    if not isinstance(model_out, Tensor) or model_out.dim() != 2:
        got = tuple(model_out.shape) if isinstance(model_out, Tensor) else type(model_out).__name__
        raise ValueError(
            "the default correct_fn needs a model output of (N, classes) scores; "
            f"got {got} (pass correct_fn=<function of the model output> for other models)"
        )
    if target is None:
        raise ValueError("target is required with the default correct_fn (the class each example should keep)")
    target = torch.as_tensor(target, device=model_out.device)
    return bool((model_out.argmax(dim=1) == target).all())


def param_range(low, high, step) -> Iterator:
    """``low, low + step, ...`` below ``high``, by repeated addition (Captum's values)."""
    value = low
    while value < high:
        yield value
        value += step


class MinParamPerturbation:
    r"""The minimal perturbation search (Captum's ``MinParamPerturbation``): the
    smallest ``arg_name`` in ``[arg_min, arg_max)`` (steps of ``arg_step``) for
    which ``attack(inputs, **{arg_name: value})`` makes ``correct_fn`` False.

    ``mode="linear"`` tries the values in increasing order; ``"binary"`` halves the
    range, assuming larger values fool the model at least as often. Each value is
    tried ``num_attempts`` times (for random attacks); ``evaluate(...,
    perturbations_per_eval=k)`` runs up to ``k`` attacked inputs through the model in
    one forward. ``correct_fn(model_out, **kwargs) -> bool`` defaults to "every
    example's arg-max is its target". Forwards run without gradients.
    ``evaluate`` returns ``(perturbed input, value)``, or ``(None, None)``.

    Formula:
        $$p^{*} = \min \big\{\, p_j = p_{\min} + j \Delta < p_{\max} \;:\;
        \operatorname{correct}\big(F(A(x; p_j))\big) = \text{False} \,\big\}$$

        with \(A\) = ``attack``, \(p_{\min}, p_{\max}, \Delta\) = ``arg_min``, ``arg_max``,
        ``arg_step`` and \(F\) the model (after ``preproc_fn``, when given); a value
        counts when any of its ``num_attempts`` attempts fools the model. ``"binary"``
        finds the same \(p^{*}\) when fooling is monotone in \(p\).

    Cost:
        Per value tried, ``num_attempts`` calls of ``attack`` (each with its own
        passes: one forward and one backward pass for :class:`FGSM`, ``step_num`` for
        :class:`PGD`) and one forward pass without gradients per
        ``perturbations_per_eval`` attempts. ``"linear"`` tries up to
        \((p_{\max} - p_{\min}) / \Delta\) values, stopping at the first that fools the
        model; ``"binary"`` about \(\log_2\) of that.

    Examples:
        >>> import torch
        >>> from torchexplain.robust import FGSM, MinParamPerturbation
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False), torch.nn.Softmax(dim=1))
        >>> with torch.no_grad():
        ...     _ = model[0].weight.copy_(torch.eye(2))  # the logits are the inputs
        >>> x, y = torch.tensor([[1.0, 0.0]]), torch.tensor([0])
        >>> search = MinParamPerturbation(model, FGSM(model), "epsilon", arg_min=0.0, arg_max=2.0, arg_step=0.25)
        >>> perturbed, epsilon = search.evaluate(x, target=y, attack_kwargs={"target": y})
        >>> epsilon, perturbed  # logits (1 - eps, eps): the class flips past 0.5
        (0.75, tensor([[0.2500, 0.7500]]))
    """

    def __init__(self, forward_func: Callable, attack: Callable, arg_name: str, arg_min, arg_max, arg_step,
                 mode: str = "linear", num_attempts: int = 1, preproc_fn: Callable | None = None,
                 apply_before_preproc: bool = False, correct_fn: Callable | None = None) -> None:
        for value, name in ((forward_func, "forward_func"), (attack, "attack")):
            if not callable(value):
                raise TypeError(f"{name} must be a callable; got {type(value).__name__}")
        for value, name in ((preproc_fn, "preproc_fn"), (correct_fn, "correct_fn")):
            if value is not None and not callable(value):
                raise TypeError(f"{name} must be None or a callable; got {type(value).__name__}")
        if not isinstance(arg_name, str) or not arg_name:
            raise TypeError(f"arg_name must be the name of the attack's keyword argument (a str); got {arg_name!r}")
        low, high, step = (real_number(v, n) for v, n in ((arg_min, "arg_min"), (arg_max, "arg_max"),
                                                           (arg_step, "arg_step")))
        if not low < high:
            raise ValueError(f"arg_min must be smaller than arg_max (arg_max is excluded); got arg_min={arg_min!r}, "
                             f"arg_max={arg_max!r}")
        if not step > 0:
            raise ValueError(f"arg_step must be a number > 0; got {arg_step!r}")
        if not isinstance(mode, str) or mode.lower() not in MODES:
            raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}; got {mode!r}")
        self.forward_func = forward_func
        self.attack = attack
        self.arg_name = arg_name
        self.arg_min, self.arg_max, self.arg_step = arg_min, arg_max, arg_step
        self.mode = mode.lower()
        self.num_attempts = count(num_attempts, "num_attempts")
        self.preproc_fn = preproc_fn
        self.apply_before_preproc = bool(apply_before_preproc)
        self.correct_fn = correct_fn if correct_fn is not None else default_correct_fn

    def _attack(self, inputs, preproc_input, attack_kwargs: dict, param) -> tuple[Any, Any]:
        """(what the model gets, what evaluate returns) for one attempt at ``param``."""
        kwargs = {**attack_kwargs, self.arg_name: param}
        if not self.apply_before_preproc:
            attacked = self.attack(preproc_input, **kwargs)
            return attacked, attacked
        attacked = self.attack(inputs, **kwargs)
        return (self.preproc_fn(attacked) if self.preproc_fn is not None else attacked), attacked

    def evaluate(self, inputs: Any, additional_forward_args=None, target=None, perturbations_per_eval: int = 1,
                 attack_kwargs: dict | None = None, correct_fn_kwargs: dict | None = None):
        """``(perturbed input, parameter value)`` of the smallest value found that
        fools the model (the attack's output, before ``preproc_fn``), or
        ``(None, None)``. ``target`` and ``correct_fn_kwargs`` go to ``correct_fn``."""
        per_eval = count(perturbations_per_eval, "perturbations_per_eval")
        for value, name in ((attack_kwargs, "attack_kwargs"), (correct_fn_kwargs, "correct_fn_kwargs")):
            if value is not None and not isinstance(value, dict):
                raise TypeError(f"{name} must be None or a dict; got {type(value).__name__}")
        attack_kwargs = dict(attack_kwargs or {})
        if self.arg_name in attack_kwargs:
            raise ValueError(f"attack_kwargs must not set {self.arg_name!r}: it is the searched arg_name")
        args = format_additional_args(additional_forward_args)
        check = {"target": target} if target is not None else {}
        check.update(correct_fn_kwargs or {})
        preproc_input = self.preproc_fn(inputs) if self.preproc_fn is not None else inputs

        def first_fooled(params) -> tuple[Any, Any] | None:
            """The first (attacked input, param) of ``params`` that fools the model,
            evaluated ``per_eval`` attempts per forward, stopping at the first group
            with one."""
            group: list = []
            for param in params:
                group.append((*self._attack(inputs, preproc_input, attack_kwargs, param), param))
                if len(group) == per_eval:
                    found = self._fooled(group, args, check)
                    if found is not None:
                        return found
                    group = []
            return self._fooled(group, args, check) if group else None

        if self.mode == "linear":
            values = param_range(self.arg_min, self.arg_max, self.arg_step)
            tries = (p for p in values for _ in range(self.num_attempts))
            return first_fooled(tries) or (None, None)
        return self._binary(lambda mid: first_fooled([mid] * self.num_attempts))

    def _fooled(self, group: list, args: tuple, check: dict) -> tuple[Any, Any] | None:
        outputs = grouped_outputs(self.forward_func, [fed for fed, _, _ in group], args)
        for (_, attacked, param), out in zip(group, outputs):
            if not self.correct_fn(out, **check):
                return attacked, param
        return None

    def _binary(self, attempt: Callable) -> tuple[Any, Any]:
        """Binary search over the multiples of ``arg_step`` above ``arg_min``, keeping
        the smallest value that fooled the model."""
        low, high, step = self.arg_min, self.arg_max, self.arg_step
        best, best_input = None, None
        while high > low:
            half = ((high - low) // step) // 2
            if half == 0 and low + step < high:
                half = 1
            mid = low + half * step
            found = attempt(mid)
            if found is not None:
                high = mid
                if best is None or mid < best:
                    best, best_input = mid, found[0]
            if math.isclose(low, mid):
                break
            if found is None:
                low = mid
        return best_input, best
