"""The result of :func:`torchexplain.explain`, as data: inputs, attributions per method,
targets, model outputs, convergence deltas and timings.

An :class:`Explanation` draws nothing and imports no plotting library. ``to_dict()``
gives its JSON-ready summary; ``save(directory)`` writes it with every tensor, and
``Explanation.load(directory)`` reads it back with the attributions bit-exact.
Pictures live in :mod:`torchexplain.viz` and pages in :mod:`torchexplain.report`;
``plot()`` and ``to_html()`` are shortcuts to them, imported on first use.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

#: the version of the layout ``save`` writes (``explanation.json`` holds it)
FORMAT = 1


def _output_minus_sum(method: str) -> bool:
    """Whether ``method``'s convergence delta is ``F(x) - sum(attributions)`` (Captum's
    LRP, registered with ``extra={"delta": "output minus sum"}``); every other
    method's is ``sum(attributions) - (F(x) - F(baseline))``."""
    from .core.registry import METHODS

    spec = METHODS.get(method)
    return spec is not None and spec.extra.get("delta") == "output minus sum"


def _jsonable(value):
    if isinstance(value, Tensor):
        return {"tensor_shape": list(value.shape)} if value.numel() > 16 else value.tolist()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def _normalisation(value):
    """``mean``/``std`` as JSON: None, one number, or one per channel."""
    if value is None or isinstance(value, (int, float)):
        return value
    if isinstance(value, Tensor):
        return value.tolist()
    return [float(v) for v in value]


@dataclass
class Explanation:
    """Explained rows: ``inputs[i]`` is example ``example_index[i]`` explained for class
    ``target[i]`` (several rows per example with ``target="topk:K"``); ``outputs`` holds
    the model's scores per example; ``attributions[m]``, ``deltas[m]`` (methods with a
    convergence delta), ``timings[m]`` (seconds) and ``method_args[m]`` (the keyword
    arguments ``attribute`` got) per method name."""

    inputs: Tensor
    example_index: Tensor
    target: Tensor
    outputs: Tensor
    class_names: list | None = None
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    attributions: dict[str, Tensor] = field(default_factory=dict)
    deltas: dict[str, Tensor] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    method_args: dict[str, dict] = field(default_factory=dict)

    def add(self, method: str, attribution: Tensor, delta: Tensor | None, seconds: float, args: dict) -> None:
        self.attributions[method] = attribution
        if delta is not None:
            self.deltas[method] = delta.detach()
        self.timings[method] = seconds
        self.method_args[method] = args

    # ------------------------------------------------------------------ derived values

    @property
    def methods(self) -> list[str]:
        return list(self.attributions)

    @property
    def attribution(self) -> Tensor:
        """The attributions when one method was run."""
        if len(self.attributions) != 1:
            raise ValueError(f"this explanation holds {len(self.attributions)} methods; use .attributions[name]")
        return next(iter(self.attributions.values()))

    @property
    def probabilities(self) -> Tensor:
        """Softmax of the model outputs, per example."""
        return torch.softmax(self.outputs.float(), dim=-1)

    def label(self, index: int) -> str:
        return str(self.class_names[index]) if self.class_names else str(index)

    def topk(self, k: int = 5) -> list[list[tuple[str, float]]]:
        """The ``k`` most probable classes of each example, as (label, probability)."""
        probs = self.probabilities
        values, indices = probs.topk(min(k, probs.shape[-1]), dim=-1)
        return [[(self.label(int(i)), float(v)) for v, i in zip(vs, ids)] for vs, ids in zip(values, indices)]

    def rows(self) -> list[dict]:
        """One summary per explained row: example, target, prediction, probability."""
        probs = self.probabilities
        out = []
        for r, (e, t) in enumerate(zip(self.example_index.tolist(), self.target.tolist())):
            pred = int(probs[e].argmax())
            out.append({
                "row": r, "example": e, "target": self.label(t), "target_probability": float(probs[e, t]),
                "prediction": self.label(pred), "probability": float(probs[e, pred]),
            })
        return out

    def completeness(self, method: str) -> dict[str, Tensor] | None:
        """How far ``method``'s attributions are from summing to the change they explain,
        per row, from its convergence delta (None when it has none, or when the delta
        does not hold a whole number of values per row).

        Returns ``delta`` (the mean of the row's deltas: methods that sample, such as
        GradientShap and DeepLiftShap, give one per draw, example-major), ``gap``
        (``F(x) - F(baseline)``, with ``F(baseline)`` averaged over the drawn baselines;
        ``F(x)`` for LRP, which has no baseline), recovered as ``sum(attributions) -
        delta`` (``sum + delta`` for LRP) because the attributions are the mean over the
        draws, and ``relative`` = ``|delta| / |gap|``. All float64, on the CPU."""
        if method not in self.deltas or method not in self.attributions:
            return None
        n = self.inputs.shape[0]
        delta = self.deltas[method].detach().cpu().double().reshape(-1)
        if n == 0 or delta.numel() % n:
            return None
        delta = delta.reshape(n, -1).mean(1)
        total = self.attributions[method].detach().cpu().double().reshape(n, -1).sum(1)
        gap = total + delta if _output_minus_sum(method) else total - delta
        return {"delta": delta, "gap": gap, "relative": delta.abs() / gap.abs().clamp_min(1e-300)}

    def relative_delta(self, method: str) -> float | None:
        """One number per method: ``mean |delta| / mean |F(x) - F(baseline)|`` over the
        rows (see :meth:`completeness`; a ratio of means, so one row whose output barely
        changes does not dominate it). None without a delta."""
        parts = self.completeness(method)
        if parts is None:
            return None
        return float(parts["delta"].abs().mean() / parts["gap"].abs().mean().clamp_min(1e-300))

    def to_dict(self) -> dict:
        """Everything but the tensors' values, JSON-serialisable (tensors in
        ``method_args`` appear as ``{"tensor_shape": [...]}`` when large)."""
        completeness = {m: self.completeness(m) for m in self.deltas}
        return {
            "format": FORMAT,
            "methods": self.methods,
            "rows": self.rows(),
            "top5": self.topk(5),
            "method_args": _jsonable(self.method_args),
            "timings_seconds": self.timings,
            "convergence_delta": {m: d.tolist() for m, d in self.deltas.items()},
            "relative_delta": {m: _jsonable(self.relative_delta(m)) for m in self.deltas},
            "reference_gap": {m: c["gap"].tolist() for m, c in completeness.items() if c is not None},
            "input_shape": list(self.inputs.shape),
            "attribution_shapes": {m: list(a.shape) for m, a in self.attributions.items()},
            "class_names": self.class_names,
            "mean": _normalisation(self.mean),
            "std": _normalisation(self.std),
        }

    # ------------------------------------------------------------------ files

    def _tensors(self) -> dict[str, Tensor]:
        tensors = {"inputs": self.inputs, "example_index": self.example_index, "target": self.target,
                   "outputs": self.outputs}
        tensors.update({f"attributions/{m}": a for m, a in self.attributions.items()})
        tensors.update({f"deltas/{m}": d for m, d in self.deltas.items()})
        for m, args in self.method_args.items():
            tensors.update({f"args/{m}/{k}": v for k, v in args.items() if isinstance(v, Tensor)})
        return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}

    def save(self, directory, overwrite: bool = False) -> list[Path]:
        """Write ``explanation.json`` (:meth:`to_dict`), every tensor in one file
        (``tensors.safetensors`` when the safetensors package is installed, else
        ``tensors.pt``) and each method's attributions as ``<method>.npy`` for NumPy
        users (float32 for dtypes NumPy lacks); returns the paths. Existing files are
        kept unless ``overwrite``. Pictures: :func:`torchexplain.viz.save_figures`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensor_file = _tensor_file_name()
        planned = [directory / "explanation.json", directory / tensor_file]
        planned += [directory / f"{m}.npy" for m in self.methods]
        existing = [p for p in planned if p.exists()]
        if existing and not overwrite:
            raise FileExistsError(f"{existing[0]} exists; pass overwrite=True to replace it")
        _write_tensors(self._tensors(), directory / tensor_file)
        for m, a in self.attributions.items():
            values = a.detach().cpu()
            np.save(directory / f"{m}.npy", (values.float() if values.dtype == torch.bfloat16 else values).numpy())
        meta = {**self.to_dict(), "tensors": tensor_file}
        (directory / "explanation.json").write_text(json.dumps(meta, indent=2))
        return planned

    @classmethod
    def load(cls, directory, device: str | torch.device = "cpu") -> "Explanation":
        """The explanation :meth:`save` wrote in ``directory``: tensors bit-exact (same
        values and dtypes) on ``device``; method arguments that were tensors come back
        as tensors, other values as JSON gave them (anything else as its ``repr``)."""
        directory = Path(directory)
        try:
            meta = json.loads((directory / "explanation.json").read_text())
        except OSError as err:
            raise ValueError(f"{directory} holds no saved explanation (explanation.json: {err.strerror})") from None
        if meta.get("format", 0) > FORMAT:
            raise ValueError(f"{directory} was saved by a newer torchexplain (format {meta['format']} > {FORMAT})")
        tensors = {k: v.to(device) for k, v in _read_tensors(directory / meta.get("tensors", "tensors.pt")).items()}
        args = {m: dict(a) for m, a in meta.get("method_args", {}).items()}
        for key, value in tensors.items():
            if key.startswith("args/"):
                _, method, name = key.split("/", 2)
                args.setdefault(method, {})[name] = value
        return cls(
            inputs=tensors["inputs"], example_index=tensors["example_index"], target=tensors["target"],
            outputs=tensors["outputs"], class_names=meta.get("class_names"), mean=meta.get("mean"),
            std=meta.get("std"),
            attributions={m: tensors[f"attributions/{m}"] for m in meta["methods"]},
            deltas={m: tensors[f"deltas/{m}"] for m in meta["methods"] if f"deltas/{m}" in tensors},
            timings=dict(meta.get("timings_seconds", {})),
            method_args={m: args.get(m, {}) for m in meta["methods"]},
        )

    # ------------------------------------------------------------------ shortcuts

    def plot(self, methods: Sequence[str] | None = None, sign: str = "absolute_value", outlier_perc: float = 2):
        """A matplotlib Figure of the rows and maps: :func:`torchexplain.viz.plot_explanation`."""
        from .viz.explanation import plot_explanation

        return plot_explanation(self, methods=methods, sign=sign, outlier_perc=outlier_perc)

    def to_html(self, title: str = "torchexplain report") -> str:
        """A self-contained HTML page: :func:`torchexplain.report.explanation_page`."""
        from .report import explanation_page

        return explanation_page(self, title=title).html()

    def _repr_html_(self) -> str:
        """The report in a notebook, in a frame of its own (its styles stay inside)."""
        import html

        return (f'<iframe srcdoc="{html.escape(self.to_html())}" title="torchexplain report" '
                'style="width:100%;height:640px;border:1px solid #d8dee4"></iframe>')


def _tensor_file_name() -> str:
    try:
        import safetensors.torch  # noqa: F401
    except ImportError:
        return "tensors.pt"
    return "tensors.safetensors"


def _write_tensors(tensors: dict[str, Tensor], path: Path) -> None:
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        # safetensors refuses tensors sharing memory (a row of ``inputs`` kept as a baseline)
        save_file({k: v.clone() for k, v in tensors.items()}, str(path), metadata={"format": str(FORMAT)})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(path, 0o666 & ~umask)  # safetensors writes its file private; make it like the others
    else:
        torch.save(tensors, path)


def _read_tensors(path: Path) -> dict[str, Tensor]:
    if not path.exists():
        raise ValueError(f"{path} is missing: the explanation's tensors were not saved with it")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ValueError(f"{path} needs the safetensors package to be read: pip install safetensors") from None
        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)
