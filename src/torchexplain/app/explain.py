"""The app's work, as plain functions of a model and images (no HTTP here): the top-k
classes, the methods' form fields, and an explanation job that runs the methods one by
one (progress and cancellation between them) and returns maps ready to draw."""

from __future__ import annotations

import inspect
import math

import torch
from torch import Tensor

from .state import AppError, ServedModel

#: the arguments shown as form fields, when a method takes them
FIELDS = ("n_steps", "n_samples", "nt_samples", "stdevs", "n_masks", "sliding_window_shapes", "strides",
          "baselines", "nt_type")


def _jsonable(value):
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    if isinstance(value, (tuple, list)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return list(value)
    return None


def probe_input(model: ServedModel) -> Tensor:
    """An input of the model's shape to compute one-call defaults on: a seeded noise image."""
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    pixels = (torch.rand(model.size, model.size, 3, generator=generator) * 255).to(torch.uint8).numpy()
    return model.transform()(Image.fromarray(pixels)).unsqueeze(0)


def method_fields(model: ServedModel) -> list[dict]:
    """Every registered method with its main arguments and their defaults for this model."""
    from ..methods import available, resolve

    x = probe_input(model)
    listed = []
    for name in available():
        spec = resolve(name)
        method = spec.build(model.module)
        signature = inspect.signature(method.attribute).parameters
        fields = {k: _jsonable(p.default) for k, p in signature.items()
                  if k in FIELDS and p.default is not inspect.Parameter.empty}
        if "baselines" in signature and signature["baselines"].default is None:
            fields["baselines"] = 0.0  # what None means: a zero reference, shown as the number it is
        fields.update({k: _jsonable(v) for k, v in spec.defaults(x).items() if k in FIELDS})
        fields = {k: v for k, v in fields.items() if v is not None}
        listed.append({"name": name, "description": spec.description, "delta": spec.delta, "fields": fields})
    return listed


def inputs(model: ServedModel, image) -> Tensor:
    return model.transform()(image).unsqueeze(0)


def top_classes(model: ServedModel, x: Tensor, k: int = 5) -> list[dict]:
    from ..core.hooks import model_guard

    with model.lock, model_guard(model.module), torch.no_grad():
        scores = model.module(x)
    if not isinstance(scores, Tensor) or scores.dim() != 2:
        raise AppError(f"model {model.name} does not return (N, classes) scores", 422)
    probs = torch.softmax(scores[0].double(), 0)
    values, indices = probs.topk(min(k, probs.numel()))
    return [{"index": int(i), "name": _class_name(model, int(i)), "probability": float(v)}
            for v, i in zip(values, indices)]


def _class_name(model: ServedModel, index: int) -> str:
    names = model.class_names or []
    return str(names[index]) if 0 <= index < len(names) else str(index)


def parse_target(model: ServedModel, target):
    """"top1", a class index or a class name, checked against the model's classes."""
    if target in (None, "", "top1"):
        return "top1"
    if isinstance(target, bool):
        raise AppError(f"target must be top1, a class index or a class name; got {target!r}")
    if isinstance(target, str) and target.strip().lstrip("-").isdigit():
        target = int(target)
    n = len(model.class_names) if model.class_names else None
    if isinstance(target, int):
        if target < 0 or (n is not None and target >= n):
            raise AppError(f"target {target} is not a class index of {model.name} (0 to {(n or 1) - 1})")
        return target
    if isinstance(target, str) and model.class_names and target in model.class_names:
        return model.class_names.index(target)
    raise AppError(f"target {target!r} is neither top1, a class index nor a class name of {model.name}")


def _arguments(name: str, values: dict) -> dict:
    if not isinstance(values, dict):
        raise AppError(f"the arguments of {name} must be an object")
    unknown = [k for k in values if k not in FIELDS]
    if unknown:
        raise AppError(f"{name} has no argument {unknown[0]!r} here (the form offers {', '.join(FIELDS)})")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def check_arguments(methods: list[str], arguments) -> dict:
    """``{method: {argument: value}}`` from the browser, keyed by canonical names (aliases
    such as "ig" taken), every argument one of the form's; refused otherwise."""
    if not isinstance(arguments, dict):
        raise AppError("arguments must be an object of {method: {argument: value}}")
    checked = {}
    for key, values in arguments.items():
        name = check_methods([key])[0]
        if name not in methods:
            raise AppError(f"arguments name {key}, which is not one of the chosen methods")
        checked[name] = _arguments(name, values)
    return checked


def check_methods(names) -> list[str]:
    from ..methods import resolve

    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise AppError("methods must be a non-empty list of method names")
    try:
        return [resolve(n).name for n in names]
    except ValueError as err:
        raise AppError(str(err).splitlines()[0]) from None


def explain_job(job, model: ServedModel, x: Tensor, methods: list[str], target, arguments: dict) -> dict:
    """Run each method (one step each) and return what the page draws: per method its
    seconds, delta, the shape and largest |value| of its channel-summed (H, W) map; the
    maps themselves (``maps``: the attribution; ``summed``: float32 bytes of the
    channel sum) are served apart, as binary."""
    from .. import explain

    result = {"methods": [], "maps": {}, "summed": {}}
    for name in methods:
        job.advance(name)
        with model.lock:
            done = explain(model.module, x, name, target, class_names=model.class_names, **arguments.get(name, {}))
        a = done.attributions[name][0].detach().float().cpu()
        summed = a.sum(0) if a.dim() == 3 else a.reshape(a.shape[-2:])
        delta = done.deltas.get(name)
        result["target"] = {"index": int(done.target[0]), "name": _class_name(model, int(done.target[0]))}
        result["maps"][name] = a
        result["summed"][name] = summed.contiguous().numpy().astype("<f4").tobytes()
        result["methods"].append({
            "name": name, "seconds": done.timings[name],
            "delta": None if delta is None else float(delta.reshape(-1)[0]),
            "shape": list(summed.shape), "vmax": float(summed.abs().max()),
        })
        job.finish_step()
    return result


def check_metrics(names) -> list[str]:
    from ..metrics import METRICS

    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise AppError("metrics must be a non-empty list of metric names")
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise AppError(f"unknown metric {unknown[0]!r}; known: {', '.join(METRICS)}")
    return names


def evaluate_job(job, model: ServedModel, x: Tensor, methods: list[str], metrics: list[str], target,
                 arguments: dict, steps: int = 50) -> dict:
    """Explain with each method (one step each), then score them all (the last step):
    the ranked table as :meth:`EvaluationTable.to_dict` gives it, and for deletion and
    insertion each method's curve (the target's probability at each of ``steps`` + 1
    points), drawn by the page."""
    from .. import explain
    from ..metrics import deletion, evaluate, insertion

    combined = None
    for name in methods:
        job.advance(name)
        with model.lock:
            done = explain(model.module, x, name, target, class_names=model.class_names, **arguments.get(name, {}))
        if combined is None:
            combined = done
        else:
            combined.add(name, done.attributions[name], done.deltas.get(name), done.timings[name], {})
        job.finish_step()
    job.advance("metrics")
    with model.lock:
        table = evaluate(model.module, x, methods, metrics, combined.target, steps=steps, explanation=combined)
        curves = {}
        for metric, curve in (("deletion", deletion), ("insertion", insertion)):
            if metric not in metrics:
                continue
            extra = {"baseline": "blur"} if metric == "insertion" else {}
            curves[metric] = {m: curve(model.module, combined.inputs, _input_shaped(combined.attributions[m], x),
                                       combined.target, steps=steps, return_curves=True, **extra)[1][0].tolist()
                              for m in methods}
    job.finish_step()
    return {"table": table.to_dict(), "curves": curves,
            "target": {"index": int(combined.target[0]), "name": _class_name(model, int(combined.target[0]))}}


def _input_shaped(a: Tensor, x: Tensor) -> Tensor:
    """A CAM's one-channel map broadcast over the input's channels (as evaluate does)."""
    return a.expand_as(x) if a.shape != x.shape and a.shape[1] == 1 else a


def layer_tree(model: ServedModel) -> list[dict]:
    """The model's modules by dotted name, in definition order, with their depth."""
    return [{"name": name, "type": type(module).__name__, "depth": name.count("."),
             "conv": isinstance(module, torch.nn.Conv2d)}
            for name, module in model.module.named_modules() if name]


def layer_view(model: ServedModel, x: Tensor, layer: str, target, max_maps: int = 32) -> dict:
    """A layer for one image: its first feature maps (each with its own scale), its
    filters (a Conv2d), and Grad-CAM at that layer for ``target``."""
    from .. import inspect as model_inspect
    from ..cam import GradCAM

    names = {name for name, _ in model.module.named_modules() if name}
    if not isinstance(layer, str) or layer not in names:
        raise AppError(f"unknown layer {layer!r} of {model.name}", 404)
    view = {"layer": layer}
    with model.lock:
        try:
            _, maps = model_inspect.feature_maps(model.module, layer, x, max_maps=max_maps, return_arrays=True)
            view["feature_maps"] = {"shape": list(maps.shape[1:]), "values": [m.ravel().tolist() for m in maps]}
        except ValueError as err:
            view["feature_maps"] = {"error": str(err)}
        if isinstance(dict(model.module.named_modules())[layer], torch.nn.Conv2d):
            _, kernels = model_inspect.filters(model.module, layer, max_filters=max_maps, return_arrays=True)
            view["filters"] = {"shape": list(kernels.shape[1:]), "values": [k.ravel().tolist() for k in kernels]}
        try:
            cam = GradCAM(model.module, layer).attribute(x, target=_target_index(model, x, target))[0]
            summed = cam.sum(0) if cam.dim() == 3 else cam
            view["grad_cam"] = {"shape": list(summed.shape), "values": summed.reshape(-1).tolist(),
                                "vmax": float(summed.abs().max())}
        except (ValueError, RuntimeError, TypeError) as err:
            view["grad_cam"] = {"error": str(err).splitlines()[0]}
    return view


def _target_index(model: ServedModel, x: Tensor, target) -> int:
    if target != "top1":
        return int(target)
    from ..core.hooks import model_guard

    with model_guard(model.module), torch.no_grad():
        return int(model.module(x).argmax(1)[0])


def tree_view(model: ServedModel, x: Tensor, hierarchies: dict) -> dict:
    """The NBDT of the model (induced from its last linear layer, once) for one image:
    the decision line and the outline with the image's path open, siblings collapsed."""
    from ..nbdt import SoftNBDT, TreeDecisions, decision_line, induce_hierarchy
    from ..report.tree import TreeSection

    names = model.class_names or [str(i) for i in range(top_classes(model, x, 1)[0]["index"] + 1)]
    with model.lock:
        if model.name not in hierarchies:
            try:
                hierarchies[model.name] = induce_hierarchy(model.module, names)
            except (ValueError, TypeError) as err:
                raise AppError(f"no decision tree for {model.name}: {str(err).splitlines()[0]}", 422) from None
        hierarchy = hierarchies[model.name]
        with torch.no_grad():
            probs, decisions = SoftNBDT(model.module, hierarchy).forward_with_decisions(x)
    section = TreeSection(TreeDecisions(hierarchy, [("", decisions[0])]), open_trees=True)
    return {"line": decision_line(hierarchy.class_names, int(probs[0].argmax()), decisions[0]),
            "predicted": hierarchy.class_names[int(probs[0].argmax())], "html": section.body(),
            "nodes": hierarchy.n_nodes, "classes": hierarchy.n_classes}
