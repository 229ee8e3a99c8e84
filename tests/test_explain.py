"""The one-call API: target parsing, method routing, and the Explanation as data
(files bit-exact, completeness from the deltas, no matplotlib)."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import torchexplain
from torchexplain.attr import IntegratedGradients, Saliency
from torchexplain.core.targets import class_targets as resolve_targets


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


def test_save_and_load_are_bit_exact(net, x, tmp_path):
    result = torchexplain.explain(net, x, method=["ig", "guided_backprop", "gradient_shap"], class_names=NAMES)
    paths = result.save(tmp_path)
    assert {p.name for p in paths} >= {"explanation.json", "guided_backprop.npy"}
    meta = json.loads((tmp_path / "explanation.json").read_text())
    assert meta["methods"] == ["integrated_gradients", "guided_backprop", "gradient_shap"]
    assert [r["prediction"] for r in meta["rows"]] == [NAMES[i] for i in net(x).argmax(1).tolist()]
    guided = result.attributions["guided_backprop"].numpy()
    np.testing.assert_array_equal(np.load(tmp_path / "guided_backprop.npy"), guided)
    with pytest.raises(FileExistsError, match="explanation.json exists"):
        result.save(tmp_path)
    back = torchexplain.Explanation.load(tmp_path)
    _assert_same(back, result)
    assert back.to_dict() == result.to_dict()
    assert back.to_html() == result.to_html()  # the same data, the same page


def _assert_same(back, result):
    for name in ("inputs", "example_index", "target", "outputs"):
        a, b = getattr(back, name), getattr(result, name)
        assert a.dtype == b.dtype and torch.equal(a, b), name
    assert back.methods == result.methods and back.class_names == result.class_names
    for m in result.methods:
        assert back.attributions[m].dtype == result.attributions[m].dtype
        assert torch.equal(back.attributions[m], result.attributions[m]), m
    assert set(back.deltas) == set(result.deltas)
    assert all(torch.equal(back.deltas[m], d) for m, d in result.deltas.items())
    baselines = result.method_args["gradient_shap"]["baselines"]
    assert torch.equal(back.method_args["gradient_shap"]["baselines"], baselines)
    assert back.method_args["gradient_shap"]["n_samples"] == result.method_args["gradient_shap"]["n_samples"]
    assert back.timings == result.timings


def test_save_without_safetensors_uses_torch_save(net, x, tmp_path, monkeypatch):
    import sys

    result = torchexplain.explain(net, x, method=["ig", "guided_backprop", "gradient_shap"])
    result.attributions["guided_backprop"] = result.attributions["guided_backprop"].to(torch.bfloat16)
    monkeypatch.setitem(sys.modules, "safetensors", None)  # import safetensors -> ImportError
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    result.save(tmp_path)
    assert (tmp_path / "tensors.pt").exists() and not (tmp_path / "tensors.safetensors").exists()
    assert json.loads((tmp_path / "explanation.json").read_text())["tensors"] == "tensors.pt"
    _assert_same(torchexplain.Explanation.load(tmp_path), result)
    assert np.load(tmp_path / "guided_backprop.npy").dtype == np.float32  # NumPy has no bfloat16


def test_load_refuses_what_is_not_an_explanation(tmp_path):
    with pytest.raises(ValueError, match="holds no saved explanation"):
        torchexplain.Explanation.load(tmp_path)


@pytest.mark.slow
def test_explanation_and_report_import_no_matplotlib(tmp_path):
    import subprocess
    import sys

    code = f"""
import sys, torch
import torchexplain
from torchexplain import Explanation, report
e = Explanation(torch.rand(2, 1, 4, 4), torch.arange(2), torch.tensor([0, 1]), torch.randn(2, 3))
e.add("saliency", torch.rand(2, 1, 4, 4), None, 0.1, {{}})
e.save({str(tmp_path)!r}); back = Explanation.load({str(tmp_path)!r}); back.to_dict()
html = back.to_html()
assert "<table" in html
print(sorted(m for m in sys.modules if m.split(".")[0] == "matplotlib"))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_completeness_recovers_the_output_gap(net, x):
    """``sum(attributions) - delta`` is F(x) - F(baseline) (F(x) for LRP, whose delta is
    F(x) - sum), checked against the model's own outputs."""
    result = torchexplain.explain(net, x, method=["ig", "deeplift_shap", "lrp"], target=2)
    with torch.no_grad():
        fx, f0 = net(x)[:, 2].double(), net(torch.zeros_like(x))[:, 2].double()
        fmean = net(x.mean(0, keepdim=True))[0, 2].double()
    torch.testing.assert_close(result.completeness("integrated_gradients")["gap"], fx - f0, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(result.completeness("deeplift_shap")["gap"], fx - (f0 + fmean) / 2, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(result.completeness("lrp")["gap"], fx, rtol=1e-4, atol=1e-5)
    shap = torchexplain.explain(net, x, method="gradient_shap", target=2, baselines=torch.zeros(2, 3, 8, 8))
    parts = shap.completeness("gradient_shap")  # 20 draws per row, all from the zero baseline
    torch.testing.assert_close(parts["gap"], fx - f0, rtol=1e-4, atol=1e-5)
    assert shap.deltas["gradient_shap"].numel() == 3 * 20
    ig = result.completeness("integrated_gradients")
    expected = float(ig["delta"].abs().mean() / (fx - f0).abs().mean())
    assert result.relative_delta("integrated_gradients") == pytest.approx(expected, rel=1e-4)
    assert result.completeness("saliency") is None and result.relative_delta("saliency") is None


def test_relative_delta_by_hand():
    e = torchexplain.Explanation(torch.zeros(2, 3), torch.arange(2), torch.tensor([0, 0]), torch.zeros(2, 2))
    e.add("integrated_gradients", torch.tensor([[1.0, 1.0, 1.0], [0.0, -1.0, 0.0]]), torch.tensor([1.0, 0.5]), 0.0, {})
    parts = e.completeness("integrated_gradients")  # gaps: 3 - 1 = 2 and -1 - 0.5 = -1.5
    assert parts["gap"].tolist() == [2.0, -1.5] and parts["relative"].tolist() == [0.5, 0.5 / 1.5]
    assert e.relative_delta("integrated_gradients") == pytest.approx(0.75 / 1.75)
    e.add("lrp", torch.tensor([[1.0, 1.0, 1.0], [0.0, -1.0, 0.0]]), torch.tensor([1.0, 0.5]), 0.0, {})
    assert e.completeness("lrp")["gap"].tolist() == [4.0, -0.5]  # F(x) = sum + delta
    e.add("odd", torch.zeros(2, 3), torch.zeros(3), 0.0, {})
    assert e.completeness("odd") is None  # 3 deltas for 2 rows: no per-row reading


@pytest.mark.slow
def test_plot_grid_and_figures(net, x, tmp_path):
    result = torchexplain.explain(net, x, method=["saliency", "deconvolution"])
    fig = result.plot()
    assert len(fig.axes) == 3 * 3
    assert fig.axes[1].get_title() == "saliency"
    from torchexplain.viz import save_figures

    paths = save_figures(result, tmp_path)
    assert [p.name for p in paths] == ["inputs.png", "saliency.png", "deconvolution.png", "all_methods.png"]
    for p in paths:
        assert Image.open(p).size[0] > 50
    with pytest.raises(FileExistsError, match="inputs.png exists"):
        save_figures(result, tmp_path)


def test_to_html_is_the_report(net, x):
    result = torchexplain.explain(net, x, method=["ig", "guided_backprop"], class_names=NAMES)
    page = result.to_html("mine")
    assert page.startswith("<!DOCTYPE html>") and "<title>mine</title>" in page
    assert page.count('<th class="method"') == 2 and page.count('<tr data-row=') == 3
    frame = result._repr_html_()  # in a notebook: the page in a frame, its styles kept inside
    assert frame.startswith('<iframe srcdoc="&lt;!DOCTYPE html&gt;') and "<style>" not in frame


@pytest.mark.gpu
def test_a_cuda_explanation_saves_loads_and_renders(net, x, tmp_path):
    import copy

    model = copy.deepcopy(net).cuda()
    result = torchexplain.explain(model, x.cuda(), method=["ig", "gradient_shap"])
    result.save(tmp_path)
    back = torchexplain.Explanation.load(tmp_path, device="cuda")
    assert back.attributions["integrated_gradients"].device.type == "cuda"
    assert torch.equal(back.attributions["gradient_shap"], result.attributions["gradient_shap"])
    assert result.relative_delta("integrated_gradients") < 0.05
    assert result.to_html().count('<th class="method"') == 2
