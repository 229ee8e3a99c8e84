"""shap's image plot: each image, then one panel per explained output with the
values (summed over channels) in a symmetric red-blue map over a faint grey copy of
the image, all panels on one colour scale set at the 99.9th percentile of |values|.

Values and images may be NumPy arrays in shap's (N, H, W, C) layout or torch tensors
in (N, C, H, W); the (N, C, H, W, K) arrays that the explainers return for image
models are taken as they are.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure

from ..viz.arrays import denormalize, to_numpy, to_uint8
from ..viz.image import new_figure
from .explanation import Explanation

#: negative values blue, positive red, zero transparent
RED_BLUE = LinearSegmentedColormap.from_list(
    "torchexplain_red_blue",
    [(0.0, 0.47, 0.86, 1.0), (0.0, 0.47, 0.86, 0.0), (0.9, 0.05, 0.33, 0.0), (0.9, 0.05, 0.33, 1.0)],
    N=256,
)
#: luminance weights of R, G and B (ITU-R BT.601)
GREY_WEIGHTS = (0.2989, 0.5870, 0.1140)
PERCENTILE = 99.9


def _images(value: Any, name: str) -> np.ndarray:
    """A batch of images as (N, H, W) or (N, H, W, C): NumPy as given, tensors
    moved from (N, C, H, W)."""
    channel_first = not isinstance(value, np.ndarray)
    array = to_numpy(value, name)
    if array.ndim == 2:
        array = array[None]
    elif array.ndim == 3 and not channel_first and array.shape[-1] in (1, 3, 4):
        array = array[None]  # one (H, W, C) image
    if channel_first and array.ndim == 4:
        array = np.moveaxis(array, 1, -1)
    if array.ndim not in (3, 4):
        raise ValueError(
            f"{name} must be (N, H, W, C) / (N, H, W) arrays or (N, C, H, W) tensors; got shape {array.shape}"
        )
    return array


def _outputs(shap_values) -> list[np.ndarray]:
    """One (N, H, W[, C]) array per explained output."""
    if isinstance(shap_values, (list, tuple)):
        return [_images(v, f"shap_values[{i}]") for i, v in enumerate(shap_values)]
    array = to_numpy(shap_values, "shap_values")
    if array.ndim == 5:  # the explainers' (N, C, H, W, K)
        return [np.moveaxis(array[..., k], 1, -1) for k in range(array.shape[-1])]
    return [_images(shap_values, "shap_values")]


def _maps(values: np.ndarray) -> np.ndarray:
    """(N, H, W): values summed over channels."""
    return values.sum(-1) if values.ndim == 4 else values


def _grey(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image
    if image.shape[-1] >= 3:
        return np.tensordot(image[..., :3].astype(np.float64), GREY_WEIGHTS, axes=([-1], [0]))
    return image.mean(-1)


def _labels(labels, n: int, k: int):
    if labels is None:
        return None
    table = np.asarray(labels, dtype=object)
    if table.size not in (k, n * k):
        raise ValueError(f"labels must hold {k} names (one per output) or {n}x{k}; got {table.size}")
    return table.reshape(-1, k)


def image_plot(
    shap_values,
    pixel_values=None,
    labels=None,
    true_labels: Sequence[str] | None = None,
    width: float = 20,
    aspect: float = 0.2,
    hspace: float = 0.2,
    labelpad: float | None = None,
    cmap=None,
    vmax: float | None = None,
    show: bool = True,
    mean=None,
    std=None,
) -> Figure | None:
    """Draw SHAP values of images as shap's ``image_plot`` does.

    As in shap, the figure is drawn through pyplot and, with ``show=True`` (the
    default), shown with ``plt.show()``; nothing is returned then. With
    ``show=False`` the figure is left open for the caller (``plt.savefig`` works, as
    with shap) and returned.

    ``shap_values``: the explainers' result (an (N, C, H, W, K) array), an
    Explanation from ``explainer(X)`` (its ``data`` are the default images and its
    ``output_names`` the default labels), a list with one (N, H, W, C) array or
    (N, C, H, W) tensor per output, or one such array/tensor.
    ``pixel_values``: the images, (N, H, W, C) NumPy or (N, C, H, W) tensor; ``mean``
    and ``std`` undo a normalisation for display. The values may be on a coarser grid
    than the image (a layer's input): the image is stretched under them.
    ``labels``: one name per output, or (N, K) names (e.g. of ranked outputs);
    ``true_labels`` title the images. ``vmax`` fixes the colour scale; by default
    it is the 99.9th percentile of |values| over every panel.
    """
    if isinstance(shap_values, Explanation):
        pixel_values = shap_values.data if pixel_values is None else pixel_values
        labels = shap_values.output_names if labels is None else labels
        shap_values = shap_values.values
    outputs = _outputs(shap_values)
    n, k = outputs[0].shape[0], len(outputs)
    if any(o.shape != outputs[0].shape for o in outputs):
        raise ValueError(f"every output's values must have the same shape; got {[o.shape for o in outputs]}")
    if pixel_values is None:
        raise ValueError("pixel_values (the images) must be given")
    images = _images(pixel_values, "pixel_values")
    if images.shape[0] != n:
        raise ValueError(f"pixel_values holds {images.shape[0]} images for values of {n} examples")
    names = _labels(labels, n, k)
    maps = [_maps(o) for o in outputs]
    scale = float(np.nanpercentile(np.abs(np.stack(maps)), PERCENTILE)) if vmax is None else float(vmax)
    size = np.array([3.0 * (k + 1), 2.5 * (n + 1)])
    if size[0] > width:
        size *= width / size[0]
    figure = new_figure(True, tuple(size))
    axes = figure.subplots(n, k + 1, squeeze=False)
    pad = {} if labelpad is None else {"pad": labelpad}
    heat = None
    for row in range(n):
        image = images[row]
        shown = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
        if shown.ndim == 3:
            shown = to_uint8(denormalize(shown, mean, std), "pixel_values")
        axes[row, 0].imshow(shown, cmap="gray")
        axes[row, 0].axis("off")
        if true_labels is not None:
            axes[row, 0].set_title(str(true_labels[row]), **pad)
        grey = _grey(denormalize(image, mean, std) if image.ndim == 3 else image)
        for j, values in enumerate(maps):
            axis = axes[row, j + 1]
            h, w = values[row].shape
            axis.imshow(grey, cmap="gray", alpha=0.15, extent=(-1, w, h, -1))
            heat = axis.imshow(values[row], cmap=cmap or RED_BLUE, vmin=-scale, vmax=scale)
            axis.axis("off")
            if names is not None and (names.shape[0] > 1 or row == 0):
                axis.set_title(str(names[min(row, names.shape[0] - 1), j]), **pad)
    figure.subplots_adjust(hspace=hspace)
    bar = figure.colorbar(
        heat, ax=np.ravel(axes).tolist(), label="SHAP value", orientation="horizontal", aspect=size[0] / aspect
    )
    bar.outline.set_visible(False)
    if show:
        import matplotlib.pyplot as plt

        plt.show()
        return None
    return figure
