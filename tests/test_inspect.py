"""Kernel and feature-map figures: the drawn values against hand-computed ones, the
axes count, hooks removed and the model left as found."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from torchexplain.inspect import feature_maps, filters
from torchexplain.models import DigitsNet, load, sample_images

torchvision = pytest.importorskip("torchvision")


@pytest.fixture(scope="module")
def digits():
    model, preprocess, _ = load("digits")
    return model, preprocess(sample_images()[8])


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    return model, torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def minmax(kernels: np.ndarray) -> np.ndarray:
    """Each kernel scaled to [0, 1] on its own, written out by hand."""
    out = np.empty_like(kernels)
    for i, k in enumerate(kernels):
        out[i] = (k - k.min()) / (k.max() - k.min())
    return out


def drawn(fig) -> list[np.ndarray]:
    return [np.asarray(ax.images[0].get_array()) for ax in fig.axes]


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


# ---- filters ----

def test_filters_single_input_channel(digits):
    model, _ = digits
    fig, arrays = filters(model, "features.0", return_arrays=True)
    assert isinstance(fig, Figure) and len(fig.axes) == 16
    expected = minmax(model.features[0].weight.detach()[:, 0].numpy())
    np.testing.assert_allclose(arrays, expected, atol=1e-6)
    for image, want in zip(drawn(fig), expected):
        np.testing.assert_allclose(image, want, atol=1e-6)
    assert arrays.min() == 0 and arrays.max() == 1


@pytest.mark.slow
def test_filters_many_input_channels_mean_or_one(digits):
    model, _ = digits
    conv = model.features[4]
    weight = conv.weight.detach().numpy()
    fig, arrays = filters(model, conv, max_filters=10, return_arrays=True)
    assert len(fig.axes) == 10 and arrays.shape == (10, 3, 3)
    np.testing.assert_allclose(arrays, minmax(weight[:10].mean(1)), atol=1e-6)
    fig, arrays = filters(model, "features.4", channel=5, return_arrays=True)
    assert len(fig.axes) == 32
    np.testing.assert_allclose(arrays, minmax(weight[:, 5]), atol=1e-6)
    np.testing.assert_allclose(drawn(fig)[31], minmax(weight[:, 5])[31], atol=1e-6)


@pytest.mark.slow
def test_filters_rgb_on_resnet(resnet):
    model, _ = resnet
    weight = model.conv1.weight.detach().numpy()  # (64, 3, 7, 7)
    fig, arrays = filters(model, "conv1", max_filters=8, return_arrays=True)
    assert len(fig.axes) == 8 and arrays.shape == (8, 7, 7, 3)
    np.testing.assert_allclose(arrays, minmax(weight[:8].transpose(0, 2, 3, 1)), atol=1e-6)
    np.testing.assert_allclose(drawn(fig)[3], arrays[3], atol=1e-6)
    fig, arrays = filters(model, "layer1.0.conv1", return_arrays=True)
    assert len(fig.axes) == 64 and arrays.shape == (64, 3, 3)
    np.testing.assert_allclose(arrays, minmax(model.layer1[0].conv1.weight.detach().numpy().mean(1)), atol=1e-6)


def test_filters_constant_kernel_and_figure_renders():
    conv = nn.Conv2d(1, 3, 3)
    with torch.no_grad():
        conv.weight[1] = 0.7
    fig, arrays = filters(nn.Sequential(conv), "0", return_arrays=True)
    assert np.all(arrays[1] == 0) and arrays[0].max() == 1
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    assert buffer.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


def test_filters_bad_arguments(digits):
    model, _ = digits
    for layer in ("features.1", "features.2", model.head[2]):
        with pytest.raises(ValueError, match="layer: expected a Conv2d"):
            filters(model, layer)
    with pytest.raises(ValueError, match="layer 'features.99' is not a module of the model"):
        filters(model, "features.99")
    with pytest.raises(ValueError, match=r"layer \(Conv2d\) is not a submodule"):
        filters(model, nn.Conv2d(1, 1, 3))
    with pytest.raises(TypeError, match="layer"):
        filters(model, 3)
    with pytest.raises(ValueError, match="channel.*\\[0, 16\\).*16"):
        filters(model, "features.4", channel=16)
    with pytest.raises(ValueError, match="max_filters"):
        filters(model, "features.0", max_filters=0)
    with pytest.raises(ValueError, match="cmap"):
        filters(model, "features.0", cmap="no-such-map")


@pytest.mark.slow
def test_no_pyplot_figure_unless_asked(digits):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model, x = digits
    before = plt.get_fignums()
    filters(model, "features.0")
    feature_maps(model, "features.2", x)
    assert plt.get_fignums() == before
    fig = filters(model, "features.0", use_pyplot=True)
    try:
        assert fig.number in plt.get_fignums()
    finally:
        plt.close(fig)


# ---- feature maps ----

@pytest.mark.slow
def test_feature_maps_digits_by_hand(digits):
    model, x = digits
    with torch.no_grad():
        expected = model.features[:5](x[None])[0].numpy()  # (32, 16, 16)
    hooks = hook_count(model)
    fig, arrays = feature_maps(model, "features.4", x, return_arrays=True)
    assert hook_count(model) == hooks
    assert isinstance(fig, Figure) and len(fig.axes) == 32 and arrays.shape == (32, 16, 16)
    np.testing.assert_allclose(arrays, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(drawn(fig)[7], expected[7], rtol=1e-5, atol=1e-5)
    fig, arrays = feature_maps(model, model.features[10], x[None], max_maps=5, return_arrays=True)
    assert len(fig.axes) == 5 and arrays.shape == (5, 8, 8)
    with torch.no_grad():
        np.testing.assert_allclose(arrays, model.features(x[None])[0, :5].numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_feature_maps_resnet_by_hand(resnet):
    model, x = resnet
    with torch.no_grad():
        stem = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        expected = model.layer1[0].conv1(stem)[0].numpy()  # (64, 16, 16)
    fig, arrays = feature_maps(model, "layer1.0.conv1", x, return_arrays=True)
    assert len(fig.axes) == 64 and arrays.shape == (64, 16, 16)
    np.testing.assert_allclose(arrays, expected, rtol=1e-4, atol=1e-4)
    fig, arrays = feature_maps(model, "conv1", x[0], max_maps=16, return_arrays=True)
    assert len(fig.axes) == 16
    with torch.no_grad():
        np.testing.assert_allclose(arrays, model.conv1(x)[0, :16].numpy(), rtol=1e-5, atol=1e-5)
    assert hook_count(model) == 0


@pytest.mark.slow
def test_feature_maps_stop_at_layer_and_leave_model_as_found():
    torch.manual_seed(0)
    model = DigitsNet().train()  # batch-norm would update its running statistics
    x = torch.rand(1, 32, 32)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    later = []
    handle = model.head.register_forward_hook(lambda *a: later.append(1))
    try:
        feature_maps(model, "features.6", x)
    finally:
        handle.remove()
    assert later == [], "the forward pass ran past the layer"
    assert all(m.training for m in model.modules()) and hook_count(model) == 0
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert all(p.grad is None for p in model.parameters())


def test_feature_maps_errors_remove_hooks(digits):
    model, x = digits
    with pytest.raises(ValueError, match="layer: expected 'head.2' to output maps"):
        feature_maps(model, "head.2", x)
    with pytest.raises(ValueError, match="input: expected one example.*\\(2, 1, 32, 32\\)"):
        feature_maps(model, "features.0", torch.zeros(2, 1, 32, 32))
    with pytest.raises(TypeError, match="input"):
        feature_maps(model, "features.0", np.zeros((1, 32, 32)))
    with pytest.raises(ValueError, match="max_maps"):
        feature_maps(model, "features.0", x, max_maps=-1)

    class Boom(nn.Module):
        def forward(self, t):
            raise RuntimeError("boom")

    broken = nn.Sequential(nn.Conv2d(1, 2, 3), Boom())
    with pytest.raises(RuntimeError, match="boom"):
        feature_maps(broken, "1", x)
    assert hook_count(model) == 0 and hook_count(broken) == 0

    class Skips(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.unused = nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3)

        def forward(self, t):
            return self.conv(t)

    with pytest.raises(ValueError, match="layer: 'unused' was not called"):
        feature_maps(Skips(), "unused", x)
