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
    """Explain ``model``'s predictions on ``inputs`` (a batch) with one or more methods.

    ``method`` is a name or list of names (see :func:`torchexplain.methods.available`;
    aliases such as "ig" work). ``target`` is "top1", "topk:K", a class index or name,
    or one per example. ``method_kwargs`` go to each method's ``attribute`` that
    accepts them (e.g. ``n_steps`` to integrated gradients). ``mean``/``std`` describe
    the inputs' normalisation, used only to display them. ``show_progress`` shows a
    progress bar over the methods."""
    run = run_methods(model, inputs, method, target, method_kwargs, class_names=class_names,
                      show_progress=show_progress)
    result = Explanation(
        inputs=run.inputs, example_index=run.example_index, target=run.target, outputs=run.outputs,
        class_names=list(class_names) if class_names is not None else None, mean=mean, std=std,
    )
    for name, done in run.results.items():
        result.add(name, done.attributions.detach(), done.delta, done.seconds, done.arguments)
    return result
