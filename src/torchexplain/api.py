"""``torchexplain.explain``: one call from a model and inputs to an :class:`Explanation`."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor

from .explanation import Explanation
from .methods import run_methods


def explain(
    model,
    inputs: Tensor,
    method: str | Sequence[str] = "integrated_gradients",
    target="top1",
    *,
    class_names: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    show_progress: bool = False,
    **method_kwargs,
) -> Explanation:
    r"""Explain ``model``'s predictions on ``inputs`` (a batch) with one or more methods.

    ``method`` is a name or list of names (see :func:`torchexplain.methods.available`;
    aliases such as "ig" work). ``target`` is "top1", "topk:K", a class index or name,
    or one per example. ``method_kwargs`` go to each method's ``attribute`` that
    accepts them (e.g. ``n_steps`` to integrated gradients). ``mean``/``std`` describe
    the inputs' normalisation, used only to display them. ``show_progress`` shows a
    progress bar over the methods.

    Formula:
        The chosen methods' formulas: for each method \(m\),
        \(\phi^{(m)} = \operatorname{attr}_m(F_t, x)\), the attribution its class
        computes (e.g. :class:`~torchexplain.attr.IntegratedGradients`,
        :class:`~torchexplain.attr.Saliency`; see its Formula) of the model's output
        \(F_t\) for the target class \(t\) of each explained row (``"top1"``:
        \(t = \arg\max_c F_c(x)\); ``"topk:K"``: one row per each of the \(K\) best
        classes). Methods with a convergence delta also record it
        (:meth:`Explanation.completeness`).

    Cost:
        One forward pass over ``inputs`` (to read the outputs and choose the targets),
        then the sum of the chosen methods' costs (see each one's Cost) on the
        explained rows (\(N\), or \(N K\) for ``"topk:K"``); a method that has a
        convergence delta runs with ``return_convergence_delta=True`` (for integrated
        gradients, one forward pass more per row).

    Examples:
        >>> import torch
        >>> from torchexplain import explain, models
        >>> model, preprocess, class_names = models.load("digits")
        >>> x = torch.stack([preprocess(path) for path in models.sample_images()[:2]])  # digits 0 and 1
        >>> explanation = explain(model, x, ["saliency", "integrated_gradients"], class_names=class_names)
        >>> explanation.methods, explanation.attributions["saliency"].shape
        (['saliency', 'integrated_gradients'], torch.Size([2, 1, 32, 32]))
        >>> [row["prediction"] for row in explanation.rows()]
        ['0', '1']
        >>> explanation.relative_delta("integrated_gradients") < 0.05  # completeness, up to the delta
        True
    """
    run = run_methods(model, inputs, method, target, method_kwargs, class_names=class_names,
                      show_progress=show_progress)
    result = Explanation(
        inputs=run.inputs, example_index=run.example_index, target=run.target, outputs=run.outputs,
        class_names=list(class_names) if class_names is not None else None, mean=mean, std=std,
    )
    for name, done in run.results.items():
        result.add(name, done.attributions.detach(), done.delta, done.seconds, done.arguments)
    return result
