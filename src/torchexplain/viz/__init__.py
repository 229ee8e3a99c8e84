"""Pictures of explanations: image and time-series attributions, CAM overlays, word
attributions, LLM prompt attributions (HTML tables, heat maps, bar charts), and
matplotlib figures of an :class:`~torchexplain.Explanation`.

Importing this package imports nothing heavy: each name is loaded from its module on
first use, so ``torchexplain.viz.arrays`` (NumPy forms, used by the HTML report)
never imports matplotlib, and ``matplotlib.pyplot`` is loaded only by calls made
with ``use_pyplot=True``.
"""

import importlib

_WHERE = {
    "TokenAttribution": "llm",
    "VisualizationDataRecord": "text",
    "explanation_figures": "explanation",
    "figure_png": "explanation",
    "normalize_attr": "image",
    "overlay_heatmap": "overlay",
    "plot_explanation": "explanation",
    "plot_seq_attr": "llm",
    "plot_token_attr": "llm",
    "save_figures": "explanation",
    "save_png": "overlay",
    "token_attr_html": "llm",
    "visualize_image_attr": "image",
    "visualize_image_attr_multiple": "image",
    "visualize_text": "text",
    "visualize_timeseries_attr": "timeseries",
}

_SUBMODULES = ("arrays", "explanation", "image", "llm", "masks", "overlay", "text", "timeseries")

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'torchexplain.viz' has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(_WHERE) | set(_SUBMODULES))
