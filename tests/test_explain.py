"""The one-call API: target parsing, method routing, Explanation files and HTML."""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import torchexplain
from torchexplain.core.targets import class_targets as resolve_targets
from torchexplain.attr import IntegratedGradients, Saliency


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 5)
    ).eval()


@pytest.fixture(scope="module")
def x():
    return torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))


NAMES = ["cat", "dog", "fox", "owl", "yak"]


def test_targets_top1_topk_int_name_list():
    out = torch.tensor([[0.1, 0.9, 0.3], [2.0, -1.0, 0.5]])
    ex, cls = resolve_targets("top1", out)
    assert ex.tolist() == [0, 1] and cls.tolist() == [1, 0]
    ex, cls = resolve_targets("topk:2", out)
    assert ex.tolist() == [0, 0, 1, 1] and cls.tolist() == [1, 2, 0, 2]
    assert resolve_targets(2, out)[1].tolist() == [2, 2]
    assert resolve_targets(-1, out)[1].tolist() == [2, 2]
    assert resolve_targets("b", out, ["a", "b", "c"])[1].tolist() == [1, 1]
    assert resolve_targets(["c", 0], out, ["a", "b", "c"])[1].tolist() == [2, 0]
    assert resolve_targets(torch.tensor([0, 2]), out)[1].tolist() == [0, 2]


@pytest.mark.parametrize(
    "target, error",
    [(3, r"class index 3 is out of range for 3 classes"), ("zebra", r"unknown class name 'zebra'"),
     ([0], r"target has 1 entries but there are 2 inputs"), ("topk:4", r"k must lie in 1..3")],
)
def test_targets_bad(target, error):
    with pytest.raises(ValueError, match=error):
        resolve_targets(target, torch.zeros(2, 3), ["a", "b", "c"])


def test_explain_matches_the_methods_it_runs(net, x):
    result = torchexplain.explain(net, x, method=["ig", "saliency"], target="top1", n_steps=16)
    predicted = net(x).argmax(1)
    assert result.methods == ["integrated_gradients", "saliency"]
    assert torch.equal(result.target, predicted)
    ig = IntegratedGradients(net).attribute(x, target=predicted, n_steps=16)
    torch.testing.assert_close(result.attributions["integrated_gradients"], ig)
    torch.testing.assert_close(result.attributions["saliency"], Saliency(net).attribute(x, target=predicted))
    assert result.method_args["integrated_gradients"]["n_steps"] == 16
    assert "n_steps" not in result.method_args["saliency"]
    assert set(result.deltas) == {"integrated_gradients"} and result.deltas["integrated_gradients"].shape == (3,)
    assert all(t > 0 for t in result.timings.values())


def test_explain_topk_rows_and_probabilities(net, x):
    result = torchexplain.explain(net, x, method="saliency", target="topk:2", class_names=NAMES)
    assert result.inputs.shape[0] == 6 and result.example_index.tolist() == [0, 0, 1, 1, 2, 2]
    probs = torch.softmax(net(x).detach(), 1)
    rows = result.rows()
    assert rows[1]["target"] == NAMES[int(probs[0].topk(2).indices[1])]
    assert rows[0]["probability"] == pytest.approx(float(probs[0].max()))
    top = result.topk(3)
    assert [label for label, _ in top[2]] == [NAMES[i] for i in probs[2].topk(3).indices.tolist()]


def test_explain_errors(net, x):
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        torchexplain.explain(net, x, method="nope")
    with pytest.raises(TypeError, match="no chosen method takes the argument"):
        torchexplain.explain(net, x, method="saliency", n_steps=3)
    with pytest.raises(ValueError, match="batched tensor"):
        torchexplain.explain(net, x[0, 0, 0], method="saliency")


def test_every_registered_method_runs(net, x):
    result = torchexplain.explain(net, x, method=torchexplain.available_methods(), target=1)
    for name, a in result.attributions.items():
        # class activation maps have one channel; every other method the input's shape
        expected = x.shape if "cam" not in name else (x.shape[0], 1, *x.shape[2:])
        assert a.shape == expected and bool(torch.isfinite(a).all()), name
        assert float(a.abs().sum()) > 0, name


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))


def test_save_and_html(net, x, tmp_path):
    result = torchexplain.explain(net, x, method=["ig", "guided_backprop"], class_names=NAMES)
    result.save(tmp_path)
    meta = json.loads((tmp_path / "explanation.json").read_text())
    assert meta["methods"] == ["integrated_gradients", "guided_backprop"]
    assert [r["prediction"] for r in meta["rows"]] == [NAMES[i] for i in net(x).argmax(1).tolist()]
    np.testing.assert_allclose(np.load(tmp_path / "guided_backprop.npy"), result.attributions["guided_backprop"].numpy())
    for name in ["inputs", "integrated_gradients", "guided_backprop", "all_methods"]:
        assert Image.open(tmp_path / f"{name}.png").size[0] > 50
    with pytest.raises(FileExistsError, match="explanation.json exists"):
        result.save(tmp_path)
    parser = _Images()
    parser.feed(result.to_html())
    assert [img["alt"] for img in parser.images] == ["inputs", "integrated_gradients", "guided_backprop"]
    for img in parser.images:
        assert img["src"].startswith("data:image/png;base64,")
        Image.open(io.BytesIO(base64.b64decode(img["src"].split(",", 1)[1]))).verify()
    assert result._repr_html_().startswith("<!DOCTYPE html>")


def test_plot_grid(net, x):
    result = torchexplain.explain(net, x, method=["saliency", "deconvolution"])
    fig = result.plot()
    assert len(fig.axes) == 3 * 3
    assert fig.axes[1].get_title() == "saliency"
