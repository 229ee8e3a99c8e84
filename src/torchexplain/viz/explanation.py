"""Matplotlib pictures of an :class:`~torchexplain.Explanation`: the grid of rows and
maps as a Figure, one Figure per method, and PNG files of them.

The HTML report (:mod:`torchexplain.report`) does not use these: it draws its own
small tiles without matplotlib.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from .image import visualize_image_attr


def figure_png(fig) -> bytes:
    """A matplotlib Figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", dpi=100)
    return buffer.getvalue()


def _is_image(explanation) -> bool:
    return explanation.inputs.dim() in (3, 4)


def plot_explanation(explanation, methods: Sequence[str] | None = None, sign: str = "absolute_value",
                     outlier_perc: float = 2) -> Figure:
    """A Figure: one row per explained row, the input then one map per method
    (Captum's ``heat_map`` with ``sign`` and ``outlier_perc``; bars for non-images)."""
    methods = list(methods) if methods is not None else explanation.methods
    n_rows, n_cols = explanation.inputs.shape[0], 1 + len(methods)
    fig = Figure(figsize=(2.2 * n_cols, 2.2 * n_rows + 0.4))
    axes = np.atleast_2d(fig.subplots(n_rows, n_cols, squeeze=False))
    summaries = explanation.rows()
    image_like = _is_image(explanation)
    shown = {"mean": explanation.mean, "std": explanation.std}
    for r in range(n_rows):
        image = explanation.inputs[r]
        if image_like:
            visualize_image_attr(torch.zeros_like(image), image, method="original_image",
                                 plt_fig_axis=(fig, axes[r, 0]), use_pyplot=False, **shown)
        else:
            axes[r, 0].bar(range(image.numel()), image.flatten().cpu().float().numpy())
        s = summaries[r]
        axes[r, 0].set_title(f"{s['target']} ({s['target_probability']:.1%})", fontsize=9)
        for c, m in enumerate(methods, start=1):
            attr = explanation.attributions[m][r]
            if image_like:
                visualize_image_attr(attr, image, method="heat_map", sign=sign, outlier_perc=outlier_perc,
                                     plt_fig_axis=(fig, axes[r, c]), use_pyplot=False, **shown)
            else:
                axes[r, c].bar(range(attr.numel()), attr.flatten().cpu().float().numpy())
            if r == 0:
                axes[r, c].set_title(m, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def explanation_figures(explanation) -> dict[str, Figure]:
    """One Figure for the inputs ("inputs"), one per method, and the whole grid
    ("all_methods")."""
    figs = {"inputs": plot_explanation(explanation, methods=[])}
    figs.update({m: plot_explanation(explanation, methods=[m]) for m in explanation.methods})
    figs["all_methods"] = plot_explanation(explanation)
    return figs


def save_figures(explanation, directory, overwrite: bool = False) -> list[Path]:
    """Write ``inputs.png``, ``<method>.png`` and ``all_methods.png`` (the figures of
    :func:`explanation_figures`) to ``directory``; existing files are kept unless
    ``overwrite``. Returns the paths."""
    directory = Path(directory)
    names = ["inputs", *explanation.methods, "all_methods"]
    paths = [directory / f"{name}.png" for name in names]
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists; pass overwrite=True to replace it")
    directory.mkdir(parents=True, exist_ok=True)
    for path, fig in zip(paths, explanation_figures(explanation).values()):
        path.write_bytes(figure_png(fig))
    return paths
