"""torchexplain.attr.visualization (Captum's module of plots, on torchexplain.viz):
Captum's names, the same pictures as Captum, float images above 1 shown clipped,
time series and text."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from torchexplain.attr import visualization as viz  # noqa: E402
from torchexplain.viz.arrays import to_uint8  # noqa: E402

captum_viz = pytest.importorskip("captum.attr._utils.visualization")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def shifted_digit() -> np.ndarray:
    """A bundled digit, normalised by its preprocessing, then shifted as ``x / 2 + 0.5``
    (a tutorial's 'unnormalise'): float values in about [0.03, 1.56], as (H, W, 3)."""
    from torchexplain import models

    _, preprocess, _ = models.load("digits")
    x = preprocess(models.sample_images()[3])[0] / 2 + 0.5
    return x[:, :, None].expand(-1, -1, 3).numpy()


def test_public_names_match_captum():
    public = {n for n in dir(captum_viz) if not n.startswith("_")
              and getattr(getattr(captum_viz, n), "__module__", "") == captum_viz.__name__}
    assert public <= set(dir(viz)) and "visualize_timeseries_attr" in public


def test_float_image_above_one_is_clipped_not_black():
    image = shifted_digit()
    assert 0.0 < image.min() < 0.05 and 1.5 < image.max() < 1.6  # the tutorial's range
    expected = np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)
    assert np.array_equal(to_uint8(image, "image"), expected)
    attr = np.random.default_rng(0).normal(size=image.shape)
    _, axis = viz.visualize_image_attr(attr, image, method="original_image", use_pyplot=False)
    shown = np.asarray(axis.images[0].get_array())
    assert np.array_equal(shown, expected)
    strokes = image[:, :, 0] > 1.0
    assert strokes.sum() > 20 and (shown[strokes] == 255).all()  # the strokes are white
    assert to_uint8(np.array([[0.0, 128.0, 255.0]]), "whole").tolist() == [[0, 128, 255]]  # 0-255 floats
    assert to_uint8(np.array([[0, 1]]), "ints").tolist() == [[0, 255]]  # integers of maximum 1, as Captum
    assert to_uint8(np.array([[0, 7, 300]]), "ints").tolist() == [[0, 7, 255]]


@pytest.mark.parametrize("method,sign", [("heat_map", "all"), ("blended_heat_map", "positive"),
                                         ("masked_image", "absolute_value"), ("alpha_scaling", "negative")])
def test_same_pixels_as_captum(method, sign):
    rng = np.random.default_rng(1)
    attr, image = rng.normal(size=(9, 8, 3)), rng.integers(0, 256, size=(9, 8, 3)).astype(np.uint8)
    _, ours = viz.visualize_image_attr(attr, image, method, sign, use_pyplot=False, show_colorbar=True)
    _, theirs = captum_viz.visualize_image_attr(attr, image, method, sign, use_pyplot=False, show_colorbar=True)
    assert len(ours.images) == len(theirs.images)
    for a, b in zip(ours.images, theirs.images):
        np.testing.assert_allclose(np.asarray(a.get_array(), float), np.asarray(b.get_array(), float), atol=1.0)


def test_normalisation_helpers_match_captum():
    rng = np.random.default_rng(2)
    two_d, one_d = rng.normal(size=(6, 7)), rng.normal(size=20)
    for sign in ("all", "positive", "negative", "absolute_value"):
        np.testing.assert_allclose(viz._normalize_attr(two_d, sign, 5), captum_viz._normalize_attr(two_d, sign, 5))
        np.testing.assert_allclose(viz._normalize_attr(one_d, sign, 2), captum_viz._normalize_attr(one_d, sign, 2))
    values = np.abs(one_d)
    assert viz._cumulative_sum_threshold(values, 90) == captum_viz._cumulative_sum_threshold(values, 90)


@pytest.mark.parametrize("method", ["overlay_individual", "overlay_combined", "colored_graph"])
def test_timeseries_colours_follow_captums_normalisation(method):
    rng = np.random.default_rng(3)
    attr, data = rng.normal(size=(30, 2)), np.cumsum(rng.normal(size=(30, 2)), 0)
    figure, axes = viz.visualize_timeseries_attr(attr, data, method=method, sign="all", use_pyplot=False,
                                                 channel_labels=["a", "b"], show_colorbar=True)
    panels = [axes] if method == "overlay_combined" else list(axes)
    values = attr.T.sum(0, keepdims=True) if method == "overlay_combined" else attr.T
    norm = captum_viz._normalize_attr(values, "all", 2)
    for c, axis in enumerate(panels):
        if method == "colored_graph":
            shown = axis.collections[0].get_array()
            np.testing.assert_allclose(shown, norm[c][:-1])
        else:
            np.testing.assert_allclose(np.asarray(axis.images[0].get_array())[0], norm[c])
            channels = range(2) if method == "overlay_combined" else [c]
            for line, channel in zip(axis.get_lines(), channels, strict=True):
                np.testing.assert_allclose(line.get_ydata(), data[:, channel])
    tensor_fig, _ = viz.visualize_timeseries_attr(torch.tensor(attr), torch.tensor(data), use_pyplot=False)
    assert len(tensor_fig.axes) == 2
    with pytest.raises(ValueError, match="method must be one of"):
        viz.visualize_timeseries_attr(attr, data, method="bars", use_pyplot=False)


def test_text_helpers():
    cell = viz.format_word_importances(["<s>", "good", "bad"], torch.tensor([0.0, 0.8, -0.5]))
    assert cell.startswith("<td>") and cell.count("<mark") == 3 and "#s" in cell and "rgba(220, 38, 38, 0.500)" in cell
    with pytest.raises(ValueError, match="2 values for 3 words"):
        viz.format_word_importances(["a", "b", "c"], [0.1, 0.2])
    words = torch.tensor([0.5, -0.25])
    record = viz.VisualizationDataRecord(words, 0.9, "pos", "pos", "pos", 0.25, ["nice", "day"], 0.0)
    page = viz.visualize_text([record])
    markup = getattr(page, "data", page)
    assert "nice" in markup and "0.90" in markup and "rgba(22, 163, 74, 0.500)" in markup  # not re-normalised
    assert viz.format_classname("cat") == '<td><text style="padding-right:2em"><b>cat</b></text></td>'
