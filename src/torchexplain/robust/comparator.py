"""Comparing a model's metric on clean and attacked inputs, over batches."""

from __future__ import annotations

import warnings
from typing import Any, Callable, NamedTuple

from ..core.inputs import format_additional_args
from .batched import grouped_outputs
from .checks import count
from .running import STATS, Running, batch_mean, named_format

ORIGINAL_KEY = "Original"


class AttackInfo(NamedTuple):
    """An attack added to an :class:`AttackComparator`."""

    attack_fn: Callable
    name: str
    num_attempts: int
    apply_before_preproc: bool
    attack_kwargs: dict
    additional_args: list


def _callable(value, name: str, optional: bool = False) -> None:
    if (value is None and optional) or callable(value):
        return
    expected = "None or a callable" if optional else "a callable"
    raise TypeError(f"{name} must be {expected}; got {type(value).__name__}")


class AttackComparator:
    r"""A model's ``metric`` on clean inputs ("Original") and on each added attack's
    perturbed inputs, per batch (:meth:`evaluate`) and averaged over batches
    (:meth:`summary`), with Captum's result forms (Captum's ``AttackComparator``).

    ``metric(model_out, **kwargs)`` returns a number, a tensor (first dimension the
    batch) or a (named) tuple of them; ``preproc_fn`` turns the inputs into the
    model's input (attacks run before or after it). ``evaluate(...,
    perturbations_per_eval=k)`` runs ``k`` inputs (clean or attacked) through the model
    in one forward. Metric forwards run without gradients.

    Formula:
        $$M_{\text{Original}} = M\big(F(x)\big), \qquad
        M_a = \frac{1}{R_a} \sum_{r=1}^{R_a} M\big(F(A_a^{(r)}(x))\big)$$

        for each attack \(a\) of \(R_a\) = ``num_attempts`` attempts \(A_a^{(r)}\) (with
        the min and max over \(r\) too when \(R_a > 1\)), \(F\) the model after
        ``preproc_fn``. :meth:`summary` is the running mean over the \(B\) batches
        evaluated of each batch's mean over its examples,
        \(\frac{1}{B} \sum_{b} \operatorname{mean}_n M_{a, b, n}\).

    Cost:
        Per :meth:`evaluate`, \(R_a\) calls of each attack (each with its own passes:
        one forward and one backward pass for :class:`FGSM`, ``step_num`` for
        :class:`PGD`) and \(1 + \sum_a R_a\) model inputs run without gradients, grouped
        ``perturbations_per_eval`` per forward pass, plus the metric's own cost.

    Examples:
        >>> import torch
        >>> from torchexplain.robust import FGSM, AttackComparator
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False), torch.nn.Softmax(dim=1))
        >>> with torch.no_grad():
        ...     _ = model[0].weight.copy_(torch.eye(2))  # the logits are the inputs
        >>> def accuracy(out, target):
        ...     return (out.argmax(1) == target).float()
        >>> comparator = AttackComparator(model, accuracy)
        >>> for eps in (0.25, 0.75):
        ...     comparator.add_attack(FGSM(model), f"FGSM {eps}", attack_kwargs={"epsilon": eps},
        ...                           additional_attack_arg_names=["target"])
        >>> comparator.evaluate(torch.eye(2), target=torch.tensor([0, 1]))
        {'Original': tensor([1., 1.]), 'FGSM 0.25': {'mean': tensor([1., 1.])}, 'FGSM 0.75': {'mean': tensor([0., 0.])}}
        >>> comparator.summary()["FGSM 0.75"]
        {'mean': tensor(0.)}
    """

    def __init__(self, forward_func: Callable, metric: Callable, preproc_fn: Callable | None = None) -> None:
        _callable(forward_func, "forward_func")
        _callable(metric, "metric")
        _callable(preproc_fn, "preproc_fn", optional=True)
        self.forward_func = forward_func
        self.metric = metric
        self.preproc_fn = preproc_fn
        self.attacks: dict[str, AttackInfo] = {}
        self.summary_results: dict[str, Running] = {}
        self.out_format: type | None = None

    def add_attack(self, attack: Callable, name: str | None = None, num_attempts: int = 1,
                   apply_before_preproc: bool = True, attack_kwargs: dict | None = None,
                   additional_attack_arg_names: list | None = None) -> None:
        """Add ``attack`` (a :class:`Perturbation` or any callable ``inputs -> perturbed``)
        under ``name`` (default: its class name), run ``num_attempts`` times per batch
        (mean, min and max kept when > 1) with ``attack_kwargs`` and, from the keyword
        arguments of :meth:`evaluate`, those named in ``additional_attack_arg_names``
        (e.g. ``["target"]``)."""
        _callable(attack, "attack")
        name = type(attack).__name__ if name is None else name
        if name in self.attacks:
            raise ValueError(f"name must be unique among the added attacks; {name!r} is already added")
        if attack_kwargs is not None and not isinstance(attack_kwargs, dict):
            raise TypeError(f"attack_kwargs must be None or a dict; got {type(attack_kwargs).__name__}")
        self.attacks[name] = AttackInfo(
            attack, name, count(num_attempts, "num_attempts"), bool(apply_before_preproc),
            dict(attack_kwargs or {}), list(additional_attack_arg_names or []),
        )

    def _attacked(self, attack: AttackInfo, inputs, preproc_input, kwargs: dict):
        extra = {}
        for key in attack.additional_args:
            if key in kwargs:
                extra[key] = kwargs[key]
            else:
                warnings.warn(f"Additional sample arg {key} not provided for {attack.name}", stacklevel=3)
        if not attack.apply_before_preproc:
            return attack.attack_fn(preproc_input, **extra, **attack.attack_kwargs)
        attacked = attack.attack_fn(inputs, **extra, **attack.attack_kwargs)
        return self.preproc_fn(attacked) if self.preproc_fn is not None else attacked

    def evaluate(self, inputs: Any, additional_forward_args=None, perturbations_per_eval: int = 1, **kwargs):
        """The metric on ``inputs`` and on each attack's perturbed inputs, for this batch:
        ``{"Original": value, name: {"mean": value}}``, with ``"min"`` and ``"max"``
        too for an attack of several attempts. ``kwargs`` go to the metric (and to
        the attacks that name them). Also updates :meth:`summary`."""
        per_eval = count(perturbations_per_eval, "perturbations_per_eval")
        args = format_additional_args(additional_forward_args)
        preproc_input = self.preproc_fn(inputs) if self.preproc_fn is not None else inputs
        batch = {ORIGINAL_KEY: Running(("mean",))}
        pending: list[tuple[str, Any]] = [(ORIGINAL_KEY, preproc_input)]

        def flush():
            outputs = grouped_outputs(self.forward_func, [value for _, value in pending], args)
            for (key, _), out in zip(pending, outputs):
                value = self.metric(out, **kwargs)
                self.out_format = self.out_format or named_format(value)
                batch[key].update(value)
            pending.clear()

        if len(pending) == per_eval:
            flush()
        for attack in self.attacks.values():
            batch[attack.name] = Running(STATS if attack.num_attempts > 1 else ("mean",))
            for _ in range(attack.num_attempts):
                pending.append((attack.name, self._attacked(attack, inputs, preproc_input, kwargs)))
                if len(pending) == per_eval:
                    flush()
        if pending:
            flush()
        return self._record(batch)

    def _summary_of(self, key: str, value) -> None:
        self.summary_results.setdefault(key, Running(("mean",))).update(batch_mean(value))

    def _record(self, batch: dict[str, Running]) -> dict:
        results: dict[str, Any] = {ORIGINAL_KEY: batch[ORIGINAL_KEY].result(self.out_format)["mean"]}
        self._summary_of(ORIGINAL_KEY, results[ORIGINAL_KEY])
        for name in self.attacks:
            found = batch[name].result(self.out_format)
            results[name] = found
            if len(found) == 1:
                self._summary_of(name, found["mean"])
            else:
                for stat, value in found.items():
                    self._summary_of(f"{name} {stat.title()} Attempt", value)
        return results

    def summary(self) -> dict:
        """The running mean over every batch evaluated since construction or
        :meth:`reset`, of each batch's (example-averaged) results: ``{key: {"mean":
        value}}`` with keys "Original", the attack names, and for attacks of several
        attempts "<name> Mean Attempt", "<name> Min Attempt", "<name> Max Attempt"."""
        return {key: running.result(self.out_format) for key, running in self.summary_results.items()}

    def reset(self) -> None:
        """Forget the batches :meth:`summary` averages."""
        self.summary_results = {}
