"""The result of :func:`torchexplain.explain`: inputs, attributions per method, targets,
model outputs, deltas and timings, with pictures, files and HTML."""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor


def _jsonable(value):
    if isinstance(value, Tensor):
        return {"tensor_shape": list(value.shape)} if value.numel() > 16 else value.tolist()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def figure_png(fig) -> bytes:
    """A matplotlib Figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", dpi=100)
    return buffer.getvalue()


@dataclass
class Explanation:
    """Explained rows: ``inputs[i]`` is example ``example_index[i]`` explained for class
    ``target[i]`` (several rows per example with ``target="topk:K"``)."""

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
    _pngs: dict[str, bytes] | None = field(default=None, repr=False, compare=False)

    def add(self, method: str, attribution: Tensor, delta: Tensor | None, seconds: float, args: dict) -> None:
        self.attributions[method] = attribution
        if delta is not None:
            self.deltas[method] = delta.detach()
        self.timings[method] = seconds
        self.method_args[method] = args
        self._pngs = None

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

    def to_dict(self) -> dict:
        """Everything but the tensors, JSON-serialisable."""
        return {
            "methods": self.methods,
            "rows": self.rows(),
            "top5": self.topk(5),
            "method_args": _jsonable(self.method_args),
            "timings_seconds": self.timings,
            "convergence_delta": {m: d.tolist() for m, d in self.deltas.items()},
            "input_shape": list(self.inputs.shape),
            "class_names": self.class_names,
        }

    # ------------------------------------------------------------------ pictures

    def _is_image(self) -> bool:
        return self.inputs.dim() == 4 or self.inputs.dim() == 3

    def plot(self, methods: Sequence[str] | None = None, sign: str = "absolute_value", outlier_perc: float = 2):
        """A Figure: one row per explained row, the input then one map per method."""
        from matplotlib.figure import Figure

        from .viz import visualize_image_attr

        methods = list(methods) if methods is not None else self.methods
        n_rows, n_cols = self.inputs.shape[0], 1 + len(methods)
        fig = Figure(figsize=(2.2 * n_cols, 2.2 * n_rows + 0.4))
        axes = np.atleast_2d(fig.subplots(n_rows, n_cols, squeeze=False))
        summaries = self.rows()
        for r in range(n_rows):
            image = self.inputs[r]
            if self._is_image():
                visualize_image_attr(
                    torch.zeros_like(image), image, method="original_image", plt_fig_axis=(fig, axes[r, 0]), use_pyplot=False,
                    mean=self.mean, std=self.std,
                )
            else:
                axes[r, 0].bar(range(image.numel()), image.flatten().cpu().numpy())
            s = summaries[r]
            axes[r, 0].set_title(f"{s['target']} ({s['target_probability']:.0%})", fontsize=9)
            for c, m in enumerate(methods, start=1):
                attr = self.attributions[m][r]
                if self._is_image():
                    visualize_image_attr(
                        attr, image, method="heat_map", sign=sign, outlier_perc=outlier_perc,
                        plt_fig_axis=(fig, axes[r, c]), use_pyplot=False, mean=self.mean, std=self.std,
                    )
                else:
                    axes[r, c].bar(range(attr.numel()), attr.flatten().cpu().numpy())
                if r == 0:
                    axes[r, c].set_title(m, fontsize=9)
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
        return fig

    def figures(self) -> dict[str, object]:
        """One Figure for the inputs and one per method."""
        figs = {"inputs": self.plot(methods=[])}
        for m in self.methods:
            figs[m] = self.plot(methods=[m])
        return figs

    def images(self) -> dict[str, bytes]:
        """PNG bytes of :meth:`figures` and of the whole grid ("all_methods"), rendered
        once and kept until another method is added."""
        if self._pngs is None:
            self._pngs = {name: figure_png(fig) for name, fig in self.figures().items()}
            self._pngs["all_methods"] = figure_png(self.plot())
        return self._pngs

    def save(self, directory, overwrite: bool = False) -> list[Path]:
        """Write ``<method>.png`` figures, ``<method>.npy`` attributions and
        ``explanation.json``; refuses to overwrite existing files unless asked."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        planned = [directory / "explanation.json", directory / "all_methods.png"]
        planned += [directory / f"{m}.npy" for m in self.methods]
        planned += [directory / f"{name}.png" for name in ["inputs", *self.methods]]
        existing = [p for p in planned if p.exists()]
        if existing and not overwrite:
            raise FileExistsError(f"{existing[0]} exists; pass overwrite=True to replace it")
        (directory / "explanation.json").write_text(json.dumps(self.to_dict(), indent=2))
        for name, png in self.images().items():
            (directory / f"{name}.png").write_bytes(png)
        for m, a in self.attributions.items():
            np.save(directory / f"{m}.npy", a.detach().cpu().numpy())
        return planned

    def to_html(self, title: str = "torchexplain report") -> str:
        """A self-contained HTML page: predictions, timings and one image per method
        (PNG embedded as data URIs; no network)."""
        rows = "".join(
            f"<tr><td>{s['row']}</td><td>{html.escape(s['prediction'])}</td><td>{s['probability']:.1%}</td>"
            f"<td>{html.escape(s['target'])}</td><td>{s['target_probability']:.1%}</td></tr>"
            for s in self.rows()
        )
        timing = "".join(
            f"<tr><td>{html.escape(m)}</td><td>{t:.3f} s</td>"
            f"<td>{'' if m not in self.deltas else f'{float(self.deltas[m].abs().max()):.2e}'}</td></tr>"
            for m, t in self.timings.items()
        )
        images = "".join(
            f'<figure class="method" data-method="{html.escape(name)}"><figcaption>{html.escape(name)}</figcaption>'
            f'<img alt="{html.escape(name)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
            "</figure>"
            for name, png in self.images().items()
            if name != "all_methods"
        )
        return (
            f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px}figure{display:inline-block;margin:8px}</style></head>"
            f"<body><h1>{html.escape(title)}</h1>"
            "<h2>Predictions</h2><table><tr><th>row</th><th>prediction</th><th>p</th><th>explained class</th>"
            f"<th>p</th></tr>{rows}</table>"
            "<h2>Methods</h2><table><tr><th>method</th><th>time</th><th>max |convergence delta|</th></tr>"
            f"{timing}</table><h2>Attributions</h2>{images}</body></html>"
        )

    def _repr_html_(self) -> str:
        return self.to_html()


