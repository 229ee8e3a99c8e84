"""Pictures of explanations: image and time-series attributions, CAM overlays, word
attributions.

Importing this package never imports ``matplotlib.pyplot`` or picks a backend;
pyplot is loaded only by calls made with ``use_pyplot=True``.
"""

from .image import normalize_attr, visualize_image_attr, visualize_image_attr_multiple
from .overlay import overlay_heatmap, save_png
from .text import VisualizationDataRecord, visualize_text
from .timeseries import visualize_timeseries_attr

__all__ = [
    "VisualizationDataRecord",
    "normalize_attr",
    "overlay_heatmap",
    "save_png",
    "visualize_image_attr",
    "visualize_image_attr_multiple",
    "visualize_text",
    "visualize_timeseries_attr",
]
