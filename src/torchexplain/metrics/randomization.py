"""The model-randomization sanity check (Adebayo et al., "Sanity Checks for Saliency
Maps", 2018): re-run a method while the model's weights are randomised, layer by
layer from the output down, and measure how much its maps change."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..core.forward import ForwardAdapter
from ..core.hooks import model_guard, module_hooks
from ..core.targets import predicted


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation between the rows of ``a`` and ``b`` (N, ...) (ties
    broken by position)."""
    def ranks(t: Tensor) -> Tensor:
        flat = t.reshape(t.shape[0], -1).double()
        return flat.argsort(dim=1, stable=True).argsort(dim=1, stable=True).double()

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    return (ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1)).clamp_min(1e-12)


@dataclass
class RandomizationResult:
    """``correlations[k]``: per-example Spearman correlation between the original map
    and the map after step ``k`` randomised ``layers[k]`` (and, cascading, every layer
    above it)."""

    layers: list[str]
    correlations: Tensor
    mode: str

    @property
    def mean(self) -> Tensor:
        return self.correlations.mean(1)

    def __repr__(self) -> str:
        steps = ", ".join(f"{name}: {value:.3f}" for name, value in zip(self.layers, self.mean.tolist()))
        return f"RandomizationResult({self.mode}; {steps})"


def _layers_in_forward_order(model: nn.Module, run) -> list[tuple[str, nn.Module]]:
    """Modules that own parameters, in the order the forward pass first runs them."""
    names = {m: name for name, m in model.named_modules()}
    owners = [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]
    order: list[nn.Module] = []
    hooks = [(m, "forward", lambda mod, args, out: order.append(mod) if mod not in order else None) for m in owners]
    with torch.no_grad(), module_hooks(hooks):
        run(model)
    return [(names[m], m) for m in order]


def _randomise(module: nn.Module, generator_seed: int) -> None:
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(generator_seed)
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        else:
            for p in module.parameters(recurse=False):
                p.normal_(0.0, float(p.std()) if p.numel() > 1 else 1.0)


def randomization_check(method, model: nn.Module, inputs: Tensor, target=None, layers="cascading",
                        absolute: bool = True, seed: int = 0, **attribute_kwargs) -> RandomizationResult:
    r"""The model-randomization sanity check (Adebayo et al. 2018): Spearman
    correlation of ``method``'s maps before and after randomising the
    weights of each layer. ``method``: an attribution class built as ``method(model)``
    (e.g. ``Saliency``), a name from :func:`torchexplain.methods.available`, or a
    callable ``(model, inputs, target) -> attributions``. ``layers``: "cascading"
    (from the output down, each step keeping the layers above randomised),
    "independent" (one layer at a time), or a list of module names (cascading in that
    order). A low correlation means the method depends on the weights, as it should.
    Works on a copy: ``model`` is not changed. ``target`` defaults to each example's
    predicted class; ``attribute_kwargs`` go to the method.

    Formula:
        $$\rho_k = \frac{\sum_j (r_j - \bar{r})(r^{(k)}_j - \bar{r}^{(k)})}
        {\lVert r - \bar{r} \rVert\, \lVert r^{(k)} - \bar{r}^{(k)} \rVert}$$

        per example, with \(r\) the ranks of the flattened map \(|\Phi(x; \theta)|\) of
        the trained weights \(\theta\) and \(r^{(k)}\) those of \(|\Phi(x; \theta^{(k)})|\)
        (without ``absolute``, the signed maps), where \(\theta^{(k)}\) re-initialises
        the \(k\)-th layer (``reset_parameters``, else a normal draw with each
        parameter's std; seeded with ``seed + k``, k from 0) and, cascading, every layer before it
        (by default the layers nearer the output); ties are ranked by position.

    Cost:
        \(L + 1\) runs of the method per example (the original map, then one per step;
        \(L\) = the modules that own parameters, or the ``layers`` given), each with
        the method's own forward and backward passes, plus one forward pass to find
        the layers' order and one more when ``target`` is None; \(L + 3\) deep copies
        of the model with "independent", 2 otherwise.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import Saliency
        >>> from torchexplain.metrics import randomization_check
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> result = randomization_check(Saliency, model, torch.randn(2, 4), target=0)
        >>> result.layers, result.mode, result.correlations.shape  # (steps, examples)
        (['2', '0'], 'cascading', torch.Size([2, 2]))
        >>> bool((result.correlations.abs() <= 1 + 1e-9).all())
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    if target is None:
        with torch.no_grad(), model_guard(model):
            outputs = ForwardAdapter(model, inputs.shape[0]).outputs((inputs,), torch.arange(inputs.shape[0]))
        target = predicted(outputs).to(inputs.device)
    explain = _explainer(method, target, attribute_kwargs)
    original = explain(copy.deepcopy(model), inputs)
    original = original.abs() if absolute else original
    work = copy.deepcopy(model)
    found = _layers_in_forward_order(work, lambda m: m(inputs))[::-1]
    if isinstance(layers, (list, tuple)):
        by_name = dict(work.named_modules())
        missing = [name for name in layers if name not in by_name]
        if missing:
            raise ValueError(f"layers {missing} are not modules of the model")
        found, mode = [(name, by_name[name]) for name in layers], "cascading"
    elif layers in ("cascading", "independent"):
        mode = layers
    else:
        raise ValueError(f'layers must be "cascading", "independent" or a list of module names; got {layers!r}')
    pristine = copy.deepcopy(work) if mode == "independent" else None
    names, correlations = [], []
    for step, (name, module) in enumerate(found):
        if mode == "independent":
            work = copy.deepcopy(pristine)
            module = dict(work.named_modules())[name]
        _randomise(module, seed + step)
        maps = explain(work, inputs)
        correlations.append(spearman(original, maps.abs() if absolute else maps))
        names.append(name)
    return RandomizationResult(names, torch.stack(correlations) if correlations else torch.empty(0), mode)


def _explainer(method, target, attribute_kwargs):
    if isinstance(method, str):
        from ..methods import method_calls, resolve

        spec = resolve(method)
        # with its defaults; an argument the method does not take is a TypeError naming it
        return lambda m, x: _first(method_calls([spec], m, attribute_kwargs)[0](x, target).attributions)
    if isinstance(method, type):
        return lambda m, x: _first(method(m).attribute(x, target=target, **attribute_kwargs))
    if callable(method):
        return lambda m, x: _first(method(m, x, target))
    raise TypeError(f"method must be an attribution class, a method name or a callable; got {type(method).__name__}")


def _first(result) -> Tensor:
    return (result[0] if isinstance(result, tuple) else result).detach()
