"""Finding the layer a CAM explains when the caller does not name one.

One probe forward (no gradients, the first example only) records the output of
every module in the order the modules finish. The rules:

* **target layer**: the last module to finish whose output is a 4-D tensor
  ``(N, C, H, W)`` with more than one spatial position. Containers finish after
  their children, so of the modules that return the same tensor the outermost wins:
  resnet18 gives ``layer4`` (not ``layer4.1.relu``), vgg11 and mobilenet_v3_small
  give ``features`` (vgg11's is the output of its final max-pool, the tensor
  pytorch-grad-cam users take as ``features[-1]``), densenet121 gives ``features``
  (the output of ``norm5``: densenet's forward applies ``F.relu`` after it, a
  function no module hook sees; gradient CAMs differentiate through that ReLU, so
  they are unaffected, while activation-only CAMs see the pre-ReLU values).
  Adaptive pools (``nn.AdaptiveAvgPool2d``/``nn.AdaptiveMaxPool2d``) are passed
  over: their output size is fixed, not the input's (vgg's ``avgpool`` stretches a
  2x2 map to 7x7 at 64x64 inputs), so they locate nothing their input does not. The
  model itself is never a candidate.
* **linear layer** (for :class:`~torchexplain.cam.CAM`): the first ``nn.Linear`` that
  runs after the target layer; its ``in_features`` must equal the layer's channels
  and its output must be the explained output, i.e. ``output = W . pool(A) + b``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..core.forward import ForwardAdapter
from ..core.hooks import module_hooks

logger = logging.getLogger("torchexplain.cam")

_FIXED_SIZE_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


@dataclass
class Run:
    """One module's finished forward call in the probe."""

    name: str
    module: nn.Module
    output: object
    call: int  # how many earlier calls this module had in the probe


def probe(model: nn.Module, adapter: ForwardAdapter, inputs: Tensor) -> tuple[list[Run], Tensor]:
    """Every module's output, in the order the modules finish, for the first example;
    and the selected model output."""
    runs: list[Run] = []
    counts: dict[int, int] = {}

    def recorder(name: str):
        def hook(module, args, output):
            calls = counts.get(id(module), 0)
            counts[id(module)] = calls + 1
            runs.append(Run(name, module, output, calls))

        return hook

    hooks = [(m, "forward", recorder(name)) for name, m in model.named_modules() if name]
    with torch.no_grad(), module_hooks(hooks):
        output = adapter.outputs((inputs[:1],), torch.zeros(1, dtype=torch.long))
    return runs, output


def _spatial_map(output) -> bool:
    return isinstance(output, Tensor) and output.dim() == 4 and output.shape[-2] * output.shape[-1] > 1


def locate_layer(runs: list[Run], method: str) -> Run:
    """The run of the automatically chosen target layer (see the module docstring)."""
    for run in reversed(runs):
        if _spatial_map(run.output) and not isinstance(run.module, _FIXED_SIZE_POOLS):
            logger.info(
                "%s: target_layer=None, using %r (%s, output shape %s)",
                method, run.name, type(run.module).__name__, tuple(run.output.shape),
            )
            return run
    raise ValueError(
        "target_layer=None, but no module of the model outputs a 4-D (N, C, H, W) tensor with more "
        "than one spatial position; pass target_layer=<module or dotted name> (and reshape_transform "
        "for token layers)"
    )


def layer_run(runs: list[Run], layer: nn.Module, call: int | None) -> Run:
    """The probe run of ``layer`` (its run number ``call``, or its only run)."""
    mine = [r for r in runs if r.module is layer]
    if not mine:
        raise ValueError("target_layer did not run in the model's forward pass")
    return mine[call if call is not None and call < len(mine) else -1]


def locate_linear(runs: list[Run], after: Run, channels: int, output: Tensor, method: str) -> tuple[str, nn.Linear]:
    """The ``nn.Linear`` whose weights turn the layer's pooled channels into the
    explained output (see the module docstring)."""
    start = next(i for i, r in enumerate(runs) if r is after)
    linear = next((r for r in runs[start + 1:] if isinstance(r.module, nn.Linear)), None)
    if linear is None:
        raise ValueError(
            f"{method} needs an nn.Linear layer after target_layer {after.name!r} (global pooling then a "
            "linear classifier); none runs after it. Pass fc_layer=<module or name>, or use GradCAM"
        )
    if linear.module.in_features != channels:
        raise ValueError(
            f"{method} needs fc_layer to map target_layer's {channels} channels to the classes; the first "
            f"nn.Linear after {after.name!r} is {linear.name!r} with in_features={linear.module.in_features}. "
            "The model has no global-pooling + linear head on that layer: use GradCAM, or pass fc_layer"
        )
    out = linear.output
    if not (out is output or (isinstance(out, Tensor) and out.shape == output.shape and torch.equal(out, output))):
        raise ValueError(
            f"{method} needs fc_layer's output to be the explained model output; {linear.name!r} is followed "
            "by more computation (a non-linear head?). Use GradCAM, or pass fc_layer explicitly"
        )
    logger.info("%s: fc_layer=None, using %r (%s)", method, linear.name, linear.module)
    return linear.name, linear.module
