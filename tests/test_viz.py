"""torchexplain.viz: pixel values of what is drawn, checked against Captum and by hand."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import types  # noqa: E402
import warnings  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

from torchexplain.viz import (  # noqa: E402
    VisualizationDataRecord,
    normalize_attr,
    overlay_heatmap,
    save_png,
    visualize_image_attr,
    visualize_image_attr_multiple,
    visualize_text,
)

captum_viz = pytest.importorskip("captum.attr._utils.visualization")

SIGNS = ["all", "positive", "negative", "absolute_value"]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def draw(attr, image=None, **kwargs):
    """visualize_image_attr without pyplot; returns (figure, axis)."""
    return visualize_image_attr(attr, image, use_pyplot=False, **kwargs)


def layers(axis):
    return [np.asarray(im.get_array()) for im in axis.images]


def rgba_of(figure):
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())


def random_attr(seed, shape=(12, 10, 3), dtype=np.float32):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


def random_image(seed, shape=(12, 10, 3)):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


# ----------------------------------------------------------------------------- normalize_attr


def test_outlier_threshold_on_1_to_100_is_99():
    values = np.arange(1, 101, dtype=np.float64).reshape(10, 10)
    norm = normalize_attr(values, "positive", 2)
    # cumsum(1..98) = 4851 < 0.98 * 5050 = 4949 <= cumsum(1..99) = 4950: threshold 99.
    assert norm.max() == 1.0
    assert np.array_equal(norm >= 1.0, values >= 99)
    np.testing.assert_allclose(norm, np.minimum(values / 99.0, 1.0), rtol=0, atol=1e-12)


def test_outlier_perc_zero_scales_by_the_maximum():
    values = random_attr(3, (9, 7), np.float64)
    np.testing.assert_allclose(
        normalize_attr(values, "absolute_value", 0), np.abs(values) / np.abs(values).max(), atol=1e-12
    )


@pytest.mark.parametrize("sign", SIGNS)
@pytest.mark.parametrize("outlier_perc", [0.5, 2, 10, 37.5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normalize_attr_matches_captum(sign, outlier_perc, dtype):
    for seed in range(3):
        attr = random_attr(seed, (16, 14, 3), dtype)
        ours = normalize_attr(attr, sign, outlier_perc)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = captum_viz._normalize_attr(attr.sum(axis=2), sign, outlier_perc)
        assert ours.shape == (16, 14)
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
        low = -1.0 if sign == "all" else 0.0
        assert ours.min() >= low and np.abs(ours).max() == 1.0


@pytest.mark.parametrize("sign", SIGNS)
@pytest.mark.parametrize("outlier_perc", [1, 2, 20])
@pytest.mark.slow
def test_heat_map_image_data_matches_captum(sign, outlier_perc):
    attr = random_attr(outlier_perc, (10, 12, 3))
    image = random_image(outlier_perc, (10, 12, 3))
    for method in ["heat_map", "blended_heat_map"]:
        _, ours = draw(attr, image, method=method, sign=sign, outlier_perc=outlier_perc)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, theirs = captum_viz.visualize_image_attr(
                attr, image, method=method, sign=sign, outlier_perc=outlier_perc, use_pyplot=False
            )
        np.testing.assert_allclose(layers(ours)[-1], layers(theirs)[-1], rtol=0, atol=1e-6)
        ours_im, theirs_im = ours.images[-1], theirs.images[-1]
        assert ours_im.get_clim() == theirs_im.get_clim()
        assert ours_im.get_cmap()(0.3) == pytest.approx(theirs_im.get_cmap()(0.3))
        assert ours_im.get_alpha() == theirs_im.get_alpha()


def test_default_colormaps_per_sign():
    attr = random_attr(0, (6, 6))
    expected = {"positive": "Greens", "negative": "Reds", "absolute_value": "Blues"}
    for sign, name in expected.items():
        _, axis = draw(attr, sign=sign)
        assert axis.images[0].get_cmap()(0.7) == pytest.approx(matplotlib.colormaps[name](0.7))
    _, axis = draw(attr, sign="all")
    cmap = axis.images[0].get_cmap()
    assert axis.images[0].get_clim() == (-1.0, 1.0)
    np.testing.assert_allclose(cmap(0.0)[:3], (1, 0, 0), atol=1e-6)  # red
    np.testing.assert_allclose(cmap(0.5)[:3], (1, 1, 1), atol=1e-2)  # white
    np.testing.assert_allclose(cmap(1.0)[:3], matplotlib.colors.to_rgb("green"), atol=1e-6)
    _, axis = draw(attr, sign="positive", cmap="magma")
    assert axis.images[0].get_cmap().name == "magma"


# ----------------------------------------------------------------------------- rendered pixels


def render_full_axis(attr, sign):
    figure = Figure(figsize=(2, 2), dpi=50)
    FigureCanvasAgg(figure)
    axis = figure.add_axes([0, 0, 1, 1])
    axis.set_axis_off()
    visualize_image_attr(attr, sign=sign, plt_fig_axis=(figure, axis), use_pyplot=False)
    return rgba_of(figure)[10:-10, 10:-10, :3]


def test_positive_attribution_with_negative_sign_renders_blank():
    attr = np.abs(random_attr(1, (8, 8))) + 0.1
    norm = normalize_attr(attr, "negative", 2)
    assert np.array_equal(norm, np.zeros_like(norm))
    blank = render_full_axis(attr, "negative")
    zero_colour = np.round(np.asarray(matplotlib.colormaps["Reds"](0.0)[:3]) * 255)
    assert np.abs(blank.reshape(-1, 3) - zero_colour).max() <= 1
    shown = render_full_axis(attr, "positive")  # the same data, the right sign: not blank
    assert shown.reshape(-1, 3).std(axis=0).max() > 10


def test_rendered_heat_map_pixels_follow_the_colormap():
    attr = np.zeros((2, 2), dtype=np.float64)
    attr[0, 0] = 1.0  # all of the mass: threshold 1, this pixel maps to 1, the rest to 0
    rgba = render_full_axis(attr, "positive")
    greens = matplotlib.colormaps["Greens"]
    top_left, bottom_right = rgba[5, 5], rgba[-5, -5]
    np.testing.assert_allclose(top_left, np.round(np.asarray(greens(1.0)[:3]) * 255), atol=1)
    np.testing.assert_allclose(bottom_right, np.round(np.asarray(greens(0.0)[:3]) * 255), atol=1)


# ----------------------------------------------------------------------------- input forms


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["heat_map", "blended_heat_map", "original_image", "masked_image", "alpha_scaling"])
def test_tensor_chw_and_nchw_match_numpy_hwc(device, method):
    attr = random_attr(5, (9, 11, 3))
    image = random_image(5, (9, 11, 3))
    sign = "positive"
    _, reference = draw(attr, image, method=method, sign=sign)
    attr_chw = torch.from_numpy(attr).permute(2, 0, 1).to(device).requires_grad_()
    image_chw = torch.from_numpy(image).permute(2, 0, 1).to(device)
    for a, im in [(attr_chw, image_chw), (attr_chw[None], image_chw[None])]:
        _, axis = draw(a, im, method=method, sign=sign)
        got, want = layers(axis), layers(reference)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert np.array_equal(g, w)


def test_grayscale_image_forms_agree_and_show_gray():
    attr = random_attr(6, (8, 9))
    gray = random_image(6, (8, 9, 1))
    forms = [gray[:, :, 0], gray, torch.from_numpy(gray[:, :, 0])[None], torch.from_numpy(gray[:, :, 0])]
    shown = []
    for form in forms:
        _, axis = draw(attr, form, method="original_image")
        shown.append(layers(axis)[0])
    for data in shown:
        assert data.shape == (8, 9, 3)
        assert np.array_equal(data, np.repeat(gray, 3, axis=2))


def test_uint8_and_unit_float_images_display_the_same():
    image = random_image(7, (6, 5, 3))
    attr = random_attr(7, (6, 5, 3))
    _, as_uint8 = draw(attr, image, method="original_image")
    _, as_float = draw(attr, image.astype(np.float32) / 255.0, method="original_image")
    _, as_255_float = draw(attr, image.astype(np.float64), method="original_image")
    assert np.array_equal(layers(as_uint8)[0], image)
    assert np.array_equal(layers(as_float)[0], image)
    assert np.array_equal(layers(as_255_float)[0], image)


def test_mean_std_denormalise_the_image():
    image = random_image(8, (3, 10, 12)).astype(np.float32) / 255.0  # CHW in [0, 1]
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    normalised = (torch.from_numpy(image) - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    attr = torch.randn(1, 3, 10, 12)
    _, axis = draw(attr, normalised[None], method="original_image", mean=mean, std=std)
    expected = np.rint(image.transpose(1, 2, 0) * 255).astype(np.uint8)
    assert np.array_equal(layers(axis)[0], expected)
    # Without mean/std the normalised image is not shown as the original.
    with pytest.warns(UserWarning, match="mean="):
        _, wrong = draw(attr, normalised[None], method="original_image")
    assert not np.array_equal(layers(wrong)[0], expected)


def test_masked_image_and_alpha_scaling_values():
    attr = random_attr(9, (7, 7, 3))
    image = random_image(9, (7, 7, 3))
    norm = normalize_attr(attr, "absolute_value", 2)
    _, masked = draw(attr, image, method="masked_image")
    expected = np.clip(np.rint(image * norm[:, :, None]), 0, 255).astype(np.uint8)
    assert np.array_equal(layers(masked)[0], expected)
    _, scaled = draw(attr, image, method="alpha_scaling")
    rgba = layers(scaled)[0]
    assert np.array_equal(rgba[:, :, :3], image)
    assert np.array_equal(rgba[:, :, 3], np.rint(norm * 255).astype(np.uint8))


def test_blended_heat_map_draws_gray_image_under_the_heat_map():
    attr = random_attr(10, (5, 6, 3))
    image = random_image(10, (5, 6, 3))
    _, axis = draw(attr, image, method="blended_heat_map", alpha_overlay=0.3)
    gray, heat = axis.images
    np.testing.assert_allclose(np.asarray(gray.get_array()), image.mean(axis=2))
    assert heat.get_alpha() == 0.3
    np.testing.assert_allclose(np.asarray(heat.get_array()), normalize_attr(attr, "absolute_value", 2))


# ----------------------------------------------------------------------------- figures


def test_use_pyplot_false_creates_no_pyplot_figure():
    before = plt.get_fignums()
    figure, axis = draw(random_attr(0, (5, 5)), random_image(0, (5, 5, 3)), method="blended_heat_map")
    figure2, axes = visualize_image_attr_multiple(
        random_attr(0, (5, 5)), random_image(0, (5, 5, 3)), ["heat_map", "original_image"],
        ["all", "all"], use_pyplot=False,
    )
    assert plt.get_fignums() == before
    assert isinstance(figure, Figure) and isinstance(figure.canvas, FigureCanvasAgg)
    assert axis in figure.axes and all(a in figure2.axes for a in axes)
    assert rgba_of(figure).shape[2] == 4


def test_use_pyplot_true_goes_through_pyplot():
    before = set(plt.get_fignums())
    figure, _ = visualize_image_attr(random_attr(0, (5, 5)))
    assert set(plt.get_fignums()) - before == {figure.number}


@pytest.mark.slow
def test_importing_viz_leaves_pyplot_alone():
    code = "import sys, torchexplain.viz; print('matplotlib.pyplot' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_colorbar_and_title():
    figure, axis = draw(random_attr(1, (6, 6)), show_colorbar=True, title="IG")
    assert axis.get_title() == "IG"
    assert len(figure.axes) == 2
    colorbar_axis = figure.axes[1]
    assert colorbar_axis.get_visible() and colorbar_axis.axison
    assert axis.images[0].colorbar is not None
    # No heat map: an empty colorbar slot keeps panels aligned.
    figure, axis = draw(random_attr(1, (6, 6)), random_image(1, (6, 6, 3)), method="original_image", show_colorbar=True)
    assert len(figure.axes) == 2 and not figure.axes[1].axison
    figure, axis = draw(random_attr(1, (6, 6)))
    assert len(figure.axes) == 1 and axis.get_title() == ""


def test_given_figure_and_axis_are_used():
    figure = Figure()
    FigureCanvasAgg(figure)
    axis = figure.add_subplot(1, 2, 2)
    got_figure, got_axis = draw(random_attr(2, (4, 4)), plt_fig_axis=(figure, axis))
    assert got_figure is figure and got_axis is axis and len(axis.images) == 1


@pytest.mark.slow
def test_multiple_panels_match_single_calls():
    attr = torch.randn(3, 8, 8)
    image = torch.rand(3, 8, 8)
    methods = ["original_image", "heat_map", "blended_heat_map", "masked_image"]
    signs = ["all", "all", "positive", "absolute_value"]
    figure, axes = visualize_image_attr_multiple(
        attr, image, methods, signs, titles=list("abcd"), use_pyplot=False, outlier_perc=5, show_colorbar=True
    )
    assert isinstance(axes, list) and len(axes) == 4
    assert [a.get_title() for a in axes] == list("abcd")
    for axis, method, sign in zip(axes, methods, signs):
        _, single = draw(attr, image, method=method, sign=sign, outlier_perc=5)
        for g, w in zip(layers(axis), layers(single)):
            assert np.array_equal(g, w)
    _, one = visualize_image_attr_multiple(attr, image, ["heat_map"], ["all"], use_pyplot=False)
    assert isinstance(one, matplotlib.axes.Axes)


def test_multiple_denormalises_with_mean_std():
    image = random_image(11, (6, 6, 3)).astype(np.float64) / 255
    normalised = (image - 0.5) / 0.25
    _, axes = visualize_image_attr_multiple(
        random_attr(11, (6, 6, 3)), normalised, ["original_image", "heat_map"], ["all", "all"],
        use_pyplot=False, mean=[0.5] * 3, std=[0.25] * 3,
    )
    assert np.array_equal(layers(axes[0])[0], np.rint(image * 255).astype(np.uint8))


# ----------------------------------------------------------------------------- overlay and PNG


def test_overlay_alpha_zero_is_the_image_and_alpha_one_the_colormap():
    image = random_image(12, (8, 10, 3))
    heatmap = np.random.default_rng(12).random((8, 10)) * 7 - 2
    assert np.array_equal(overlay_heatmap(image, heatmap, alpha=0.0), image)
    scaled = (heatmap - heatmap.min()) / (heatmap.max() - heatmap.min())
    colours = np.rint(matplotlib.colormaps["jet"](scaled)[:, :, :3] * 255).astype(np.uint8)
    full = overlay_heatmap(image, heatmap, alpha=1.0)
    assert full.dtype == np.uint8 and full.shape == (8, 10, 3)
    assert np.array_equal(full, colours)
    half = overlay_heatmap(image, heatmap, alpha=0.5, colormap="viridis")
    viridis = matplotlib.colormaps["viridis"](scaled)[:, :, :3] * 255
    np.testing.assert_allclose(half, np.rint(0.5 * image + 0.5 * viridis), atol=1)


def test_overlay_resizes_bilinearly_and_accepts_tensors():
    image = torch.rand(3, 4, 4)
    heatmap = torch.tensor([[[[0.0, 1.0], [0.5, 0.25]]]])
    out = overlay_heatmap(image, heatmap, alpha=1.0, colormap="gray", normalize=False)
    gray = out[:, :, 0].astype(np.float64) / 255
    # Bilinear, half-pixel centres: corners keep the source values; (0, 1) is 1/4 of the way.
    np.testing.assert_allclose([gray[0, 0], gray[0, 3], gray[3, 0], gray[3, 3]], [0, 1, 0.5, 0.25], atol=1 / 255)
    np.testing.assert_allclose(gray[0, 1], 0.25, atol=1 / 255)
    assert np.array_equal(out[:, :, 0], out[:, :, 2])
    as_numpy = overlay_heatmap(image.permute(1, 2, 0).numpy(), heatmap[0, 0].numpy(), alpha=0.4)
    assert np.array_equal(overlay_heatmap(image, heatmap, alpha=0.4), as_numpy)


def test_overlay_constant_heatmap_and_denormalisation():
    image = random_image(13, (5, 5, 3))
    out = overlay_heatmap(image, np.full((5, 5), 3.0), alpha=1.0, colormap="gray")
    assert np.array_equal(out, np.zeros_like(out))
    normalised = (image / 255.0 - 0.4) / 0.2
    back = overlay_heatmap(normalised, np.ones((5, 5)), alpha=0.0, mean=[0.4], std=[0.2])
    assert np.array_equal(back, image)


@pytest.mark.parametrize("shape", [(6, 7, 3), (6, 7, 4), (6, 7)])
def test_save_png_round_trips(tmp_path, shape):
    array = random_image(14, shape)
    path = save_png(array, tmp_path / "a.png")
    assert np.array_equal(np.asarray(Image.open(path)), array)


def test_save_png_floats_and_tensors(tmp_path):
    image = random_image(15, (4, 5, 3))
    save_png(torch.from_numpy(image).permute(2, 0, 1).float() / 255, tmp_path / "b.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b.png")), image)


# ----------------------------------------------------------------------------- text


def record(words, attributions, **overrides):
    fields = dict(
        word_attributions=attributions, pred_prob=0.875, pred_class="pos", true_class="pos",
        attr_class="pos", attr_score=1.234, raw_input_ids=words, convergence_score=0.01,
    )
    fields.update(overrides)
    return VisualizationDataRecord(**fields)


MARK = re.compile(r'<mark[^>]*background-color: rgba\((\d+), (\d+), (\d+), ([\d.]+)\)[^>]*>(.*?)</mark>')


def test_text_rows_colours_and_labels():
    records = [
        record(["good", "bad", "meh"], torch.tensor([2.0, -1.0, 0.0])),
        record(["fine"], np.array([0.5]), pred_class="neg", pred_prob=0.25, true_class="pos", attr_score=-0.5),
    ]
    markup = visualize_text(records)
    body = markup.split("<tbody>")[1].split("</tbody>")[0]
    assert body.count("<tr>") == 2 and markup.count("<tr>") == 3
    for header in ["True Label", "Predicted Label", "Attribution Label", "Attribution Score", "Word Importance"]:
        assert f"<th>{header}</th>" in markup
    marks = MARK.findall(body)
    assert [m[4] for m in marks] == ["good", "bad", "meh", "fine"]
    (r1, g1, b1, a1), (r2, g2, b2, a2) = [tuple(map(float, m[:4])) for m in marks[:2]]
    assert g1 > r1 and g1 > b1 and a1 == 1.0  # positive: green, the largest -> full
    assert r2 > g2 and r2 > b2 and a2 == 0.5  # negative: red, half of the largest
    assert float(marks[2][3]) == 0.0 and float(marks[3][3]) == 1.0
    assert "pos (0.88)" in body and "neg (0.25)" in body and "1.23" in body and "-0.50" in body
    assert "Legend" in markup


def test_text_without_normalisation_keeps_raw_values_clipped():
    marks = MARK.findall(visualize_text(record(["a", "b"], [0.3, -4.0]), normalize=False, legend=False))
    assert [float(m[3]) for m in marks] == [0.3, 1.0]
    assert int(marks[1][0]) > int(marks[1][1])


def test_text_escapes_html():
    markup = visualize_text(record(["<script>alert(1)</script>", "a&b"], [1.0, -1.0], true_class="<i>x</i>"))
    assert "<script>" not in markup and "<i>" not in markup
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in markup and "a&amp;b" in markup
    assert "&lt;i&gt;x&lt;/i&gt;" in markup


def test_text_displays_only_in_a_notebook_kernel(monkeypatch):
    shown = []
    ipython = types.ModuleType("IPython")
    display = types.ModuleType("IPython.display")
    display.HTML = lambda data: ("HTML", data)
    display.display = shown.append
    ipython.display = display
    shell = types.SimpleNamespace(kernel=None)
    ipython.get_ipython = lambda: shell
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", display)
    markup = visualize_text(record(["x"], [1.0]))
    assert shown == []  # a terminal IPython shell: nothing displayed
    shell.kernel = object()
    markup = visualize_text(record(["x"], [1.0]))
    assert shown == [("HTML", markup)] and isinstance(markup, str)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(method="heatmap"), "method"),
        (dict(sign="both"), "sign"),
        (dict(outlier_perc=100), "outlier_perc"),
        (dict(outlier_perc=-1), "outlier_perc"),
        (dict(method="blended_heat_map", original_image=None), "original_image"),
        (dict(method="masked_image", sign="all"), "sign"),
        (dict(original_image=np.zeros((5, 6, 3), np.uint8)), "original_image"),
        (dict(alpha_overlay=2.0), "alpha_overlay"),
        (dict(original_image=np.zeros((6, 6, 3)), mean=[0.1, 0.2]), "mean"),
    ],
)
def test_visualize_image_attr_errors_name_the_argument(kwargs, name):
    kwargs.setdefault("original_image", np.zeros((6, 6, 3), np.uint8))
    attr = random_attr(0, (6, 6, 3))
    with pytest.raises(ValueError, match=name):
        visualize_image_attr(attr, use_pyplot=False, **kwargs)


def test_other_errors_name_the_argument():
    with pytest.raises(ValueError, match="attr"):
        visualize_image_attr(torch.zeros(2, 3, 4, 4), use_pyplot=False)
    with pytest.raises(ValueError, match="attr"):
        visualize_image_attr(np.full((4, 4), np.nan), use_pyplot=False)
    with pytest.raises(ValueError, match="outlier_perc"):
        normalize_attr(np.ones((3, 3)), "all", 150)
    with pytest.raises(ValueError, match="signs"):
        visualize_image_attr_multiple(np.ones((3, 3)), None, ["heat_map"], [], use_pyplot=False)
    with pytest.raises(ValueError, match="titles"):
        visualize_image_attr_multiple(np.ones((3, 3)), None, ["heat_map"], ["all"], ["a", "b"], use_pyplot=False)
    with pytest.raises(ValueError, match="methods"):
        visualize_image_attr_multiple(np.ones((3, 3)), None, ["heatmap"], ["all"], use_pyplot=False)
    with pytest.raises(ValueError, match="heatmap"):
        overlay_heatmap(np.zeros((4, 4, 3)), np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="heatmap"):
        overlay_heatmap(np.zeros((4, 4, 3)), np.full((4, 4), 2.0), normalize=False)
    with pytest.raises(ValueError, match="alpha"):
        overlay_heatmap(np.zeros((4, 4, 3)), np.zeros((4, 4)), alpha=-0.1)
    with pytest.raises(ValueError, match="colormap"):
        overlay_heatmap(np.zeros((4, 4, 3)), np.zeros((4, 4)), colormap="no-such-map")
    with pytest.raises(ValueError, match="raw_input_ids"):
        visualize_text(record(["a", "b", "c"], [1.0, 2.0]))
    with pytest.raises(ValueError, match="word_attributions"):
        visualize_text(record(["a"], np.ones((1, 1))))
