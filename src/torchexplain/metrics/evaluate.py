"""``torchexplain.evaluate``: which explanation can I trust, for my model and inputs?

Every method runs once through :func:`torchexplain.methods.run_methods` (as in
:func:`torchexplain.explain`, which times it); every
metric scores every method's attributions; the table ranks the methods per metric.
A metric is one function of a :class:`Case` returning one value per example.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from .curves import deletion, insertion
from .fidelity import infidelity, sensitivity_max
from .properties import delta_and_gap, sparseness
from .randomization import randomization_check
from .result import MetricResult
from .table import EvaluationTable


@dataclass
class Case:
    """What a metric sees for one method: the explained rows, their attributions and
    target classes, and how to re-run the method (for metrics that need to)."""

    model: object
    inputs: Tensor
    attributions: Tensor
    target: Tensor
    method: str
    rerun: Callable[[object, Tensor, Tensor], Tensor]  # (model, inputs, target) -> attributions
    steps: int
    seed: int


@dataclass
class MetricSpec:
    name: str
    score: Callable[[Case], Tensor]
    higher_is_better: bool
    description: str
    #: the metric multiplies or sums attributions feature by feature, so they must have
    #: the input's shape; a one-channel map (a CAM's) is broadcast over the channels
    input_shaped: bool = False


def _gaussian_perturbation(seed: int, std: float = 0.1):
    generator = torch.Generator().manual_seed(seed)

    def perturb(x: Tensor):
        noise = (torch.randn(x.shape, generator=generator, dtype=x.dtype) * std).to(x.device)
        return noise, x - noise

    return perturb


def _relative_completeness(c: Case) -> Tensor:
    delta, gap = delta_and_gap(c.attributions, c.model, c.inputs, 0.0, c.target)
    return (delta.abs() / gap.abs().clamp_min(1e-12)).float()


METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec("deletion", lambda c: deletion(c.model, c.inputs, c.attributions, c.target, steps=c.steps), False,
                   "AUC of the target's probability as the top features are removed (lower is better)"),
        MetricSpec("insertion", lambda c: insertion(c.model, c.inputs, c.attributions, c.target, steps=c.steps,
                                                    baseline="blur" if c.inputs.dim() == 4 else 0.0), True,
                   "AUC of the target's probability as the top features are revealed on a blurred copy"),
        MetricSpec("infidelity", lambda c: infidelity(c.model, _gaussian_perturbation(c.seed), c.inputs, c.attributions,
                                                      target=c.target, n_perturb_samples=10), False,
                   "squared error between attributions . noise and the output change (Gaussian noise, std 0.1)",
                   input_shaped=True),
        MetricSpec("sensitivity", lambda c: _sensitivity(c), False,
                   "largest relative change of the map under uniform noise of radius 0.02 (5 samples)"),
        MetricSpec("sparseness", lambda c: sparseness(c.attributions), True,
                   "Gini index of |attributions| (higher is sparser)"),
        MetricSpec("completeness", _relative_completeness, False,
                   "|sum(attributions) - (F(x) - F(0))| / |F(x) - F(0)|", input_shaped=True),
        MetricSpec("randomization", lambda c: _randomization(c), False,
                   "mean Spearman correlation with the map as layers are randomised, top down (lower is better)"),
    )
}
DEFAULT_METRICS = ("deletion", "insertion", "infidelity", "sparseness")
DEFAULT_METHODS = ("saliency", "input_x_gradient", "integrated_gradients", "guided_backprop", "deeplift")


def _sensitivity(c: Case) -> Tensor:
    def explain(x, target=None):
        x = x[0] if isinstance(x, tuple) else x
        return c.rerun(c.model, x, target)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(c.seed)
        return sensitivity_max(explain, c.inputs, n_perturb_samples=5, target=c.target)


def _randomization(c: Case) -> Tensor:
    result = randomization_check(lambda m, x, t: c.rerun(m, x, t), c.model, c.inputs, c.target, seed=c.seed)
    return result.correlations.mean(0).float()


def broadcast_notes(attributions: dict[str, Tensor], inputs: Tensor, metrics: Sequence[str]) -> list[str]:
    """Check, before any metric runs, that every method's attributions suit every
    metric; returns one note per method whose one-channel map (a CAM's) will be
    broadcast over the input's channels for the metrics that need input-shaped
    attributions. An unusable shape is a ValueError naming the method and the metric."""
    notes = []
    for name, a in attributions.items():
        shaped = [m for m in metrics if METRICS[m].input_shaped]
        if a.shape == inputs.shape or not shaped:
            continue
        if _one_channel_of(a, inputs):
            notes.append(f"{name}: its one-channel map is broadcast over the input's {inputs.shape[1]} channels for "
                         f"{', '.join(shaped)}")
            continue
        raise ValueError(
            f"method {name!r} gives attributions of shape {tuple(a.shape)}, but metric {shaped[0]!r} needs the "
            f"input's shape {tuple(inputs.shape)} (or one channel, broadcast over the channels); drop "
            f"{shaped[0]!r} from the metrics or {name!r} from the methods"
        )
    return notes


def _one_channel_of(a: Tensor, inputs: Tensor) -> bool:
    return a.dim() == inputs.dim() >= 3 and a.shape[0] == inputs.shape[0] and a.shape[1] == 1 \
        and a.shape[2:] == inputs.shape[2:]


def _for_metric(spec: MetricSpec, attributions: Tensor, inputs: Tensor) -> Tensor:
    if spec.input_shaped and attributions.shape != inputs.shape:
        return attributions.expand_as(inputs)
    return attributions


def evaluate(model, inputs: Tensor, methods: Sequence[str] = DEFAULT_METHODS, metrics: Sequence[str] = DEFAULT_METRICS,
             target="top1", *, steps: int = 50, seed: int = 0, class_names=None, show_progress: bool = False,
             explanation=None, **method_kwargs) -> EvaluationTable:
    r"""Run every method on ``inputs`` and score it with every metric (names from
    ``torchexplain.metrics.METRICS``); returns the ranked table. ``steps``: the
    steps of the deletion and insertion curves (``steps + 1`` points each); ``seed`` fixes every random
    perturbation. ``method_kwargs`` go to the methods (as in :func:`explain`).
    ``explanation``: an :class:`~torchexplain.Explanation` of these inputs that already
    holds the methods' attributions (and times), to score them without re-running.

    Metrics that need attributions of the input's shape (infidelity, completeness)
    get a CAM's one-channel map broadcast over the channels, as Captum's users do
    (``table.notes`` says so); every (method, metric) pair is checked after the
    methods ran and before any metric does, and an unusable shape is a ValueError
    naming both. Unknown metric names are refused before any method runs.

    Formula:
        For each method \(m\) and metric \(M\), over the \(N\) explained rows \(x_n\)
        (one per example for ``target="top1"``) with target classes \(t_n\):

        $$\bar{M}_m = \frac{1}{N} \sum_{n=1}^{N} M\big(F, x_n, t_n, \phi^{(m)}(x_n)\big), \qquad
        \operatorname{se}_m = \frac{\operatorname{std}_n M(\cdot)}{\sqrt{N}}$$

        with \(M\) the metric's own formula (:func:`deletion`, :func:`insertion`,
        :func:`infidelity`, :func:`sensitivity_max`, :func:`sparseness`,
        :func:`completeness` as \(|\delta| / |F(x) - F(0)|\), :func:`randomization_check`
        as the mean correlation over the layers). Methods are ranked per metric by
        \(\bar{M}_m\), rank 1 the best (highest or lowest, as the metric says).

    Cost:
        One forward pass over ``inputs`` to read the predictions and each method's own
        cost once on the explained rows (both skipped with ``explanation``), then per
        method the metrics' costs per row: deletion and insertion ``steps + 1`` forward
        passes each, infidelity 11 (10 perturbations), completeness 2 (\(F(x)\) and
        \(F(0)\)), sparseness none, sensitivity 6
        runs of the method (5 perturbations), randomization one forward pass and one run
        of the method per parameterised layer plus one. No metric runs a backward pass
        itself; sensitivity and randomization re-run the method, with its backward
        passes.

    Examples:
        >>> import torch
        >>> from torchexplain.metrics import evaluate
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> table = evaluate(model, torch.randn(2, 4), methods=["saliency", "integrated_gradients"],
        ...                  metrics=["deletion", "sparseness"], steps=4)
        >>> table.methods, table.metrics
        (['saliency', 'integrated_gradients'], ['deletion', 'sparseness'])
        >>> sorted(row["deletion_rank"] for row in table.rows)
        [1, 2]
        >>> table.results[("saliency", "deletion")].values.shape  # one value per explained row
        torch.Size([2])
    """
    from ..methods import MethodCall, resolve, run_methods

    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(METRICS)}")
    if not metrics:
        raise ValueError("metrics must name at least one metric")
    if explanation is not None and all(resolve(m).name in explanation.attributions for m in methods):
        names = [resolve(m).name for m in methods]
        rows, target_rows = explanation.inputs, explanation.target
        attributions, seconds = explanation.attributions, explanation.timings
    else:
        run = run_methods(model, inputs, list(methods), target, method_kwargs, class_names=class_names,
                          show_progress=show_progress)
        names, rows, target_rows = list(run.results), run.inputs, run.target
        attributions = {n: done.attributions.detach() for n, done in run.results.items()}
        seconds = {n: done.seconds for n, done in run.results.items()}
    classes = target_rows.to(rows.device)
    notes = broadcast_notes({n: attributions[n] for n in names}, rows, metrics)
    scores = {}
    for name in names:
        spec = resolve(name)

        def rerun(m, x, t, spec=spec):
            out = MethodCall.build(spec, m, method_kwargs)(x, t).attributions
            return (out[0] if isinstance(out, tuple) else out).detach()

        for metric in metrics:
            spec_m = METRICS[metric]
            case = Case(model, rows, _for_metric(spec_m, attributions[name], rows), classes, name, rerun, steps, seed)
            scores[(name, metric)] = MetricResult(metric, spec_m.score(case), spec_m.higher_is_better)
    return EvaluationTable(names, list(metrics), scores, {n: seconds[n] for n in names}, notes=notes)
