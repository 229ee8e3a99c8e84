"""``torchexplain.explain``: one call from a model and inputs to an :class:`Explanation`."""

from __future__ import annotations

import inspect
import time
from typing import Sequence

import torch
from torch import Tensor

from .core.hooks import model_guard
from .core.targets import class_targets
from .explanation import Explanation
from .methods import resolve

def _accepted(method_obj, kwargs: dict) -> dict:
    params = inspect.signature(method_obj.attribute).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(kwargs)
    return {k: v for k, v in kwargs.items() if k in params}


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
    if not isinstance(inputs, Tensor) or inputs.dim() < 2:
        raise ValueError("inputs must be a batched tensor (N, ...); add a batch dimension with x.unsqueeze(0)")
    names = [method] if isinstance(method, str) else list(method)
    if not names:
        raise ValueError("method must name at least one method")
    specs = [resolve(name) for name in names]
    with model_guard(model), torch.no_grad():
        outputs = model(inputs)
    if not isinstance(outputs, Tensor) or outputs.dim() != 2:
        raise ValueError("explain() needs a classifier returning (N, classes) scores; use torchexplain.attr for other models")
    examples, classes = class_targets(target, outputs, class_names)
    rows = inputs[examples.to(inputs.device)]
    objects = [spec.build(model) for spec in specs]
    used = set()
    for obj in objects:
        used |= set(_accepted(obj, method_kwargs))
    unused = set(method_kwargs) - used
    if unused:
        raise TypeError(f"no chosen method takes the argument(s) {', '.join(sorted(unused))}")
    result = Explanation(
        inputs=rows, example_index=examples, target=classes, outputs=outputs.detach(),
        class_names=list(class_names) if class_names is not None else None, mean=mean, std=std,
    )
    steps = zip(specs, objects)
    if show_progress:
        from tqdm.auto import tqdm

        steps = tqdm(list(steps), desc="explaining", unit="method", leave=False)
    for spec, obj in steps:
        kwargs = {**spec.defaults(rows), **_accepted(obj, method_kwargs)}
        if spec.delta:
            kwargs["return_convergence_delta"] = True
        start = time.perf_counter()
        out = obj.attribute(rows, target=classes.to(rows.device), **kwargs)
        seconds = time.perf_counter() - start
        attribution, delta = out if spec.delta else (out, None)
        shown = {k: v for k, v in kwargs.items() if k != "return_convergence_delta"}
        result.add(spec.name, attribution.detach(), delta, seconds, shown)
    return result
