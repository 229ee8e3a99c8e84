"""The method registry behind ``torchexplain.explain``: names, aliases, order, delta
flags, descriptions and one-call defaults, frozen as they were when the table was
written by hand (the table below was checked against that code before the
registrations moved next to their classes); and the one build-and-call step that
``explain``, ``evaluate`` and ``randomization_check`` share.

Oracles: the frozen table; defaults derived by hand from the input's shape and range.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch import nn

import torchexplain
from torchexplain import attr, cam, methods

SRC = Path(torchexplain.__file__).parent

# (name, aliases, delta, class built, description), in the registry's (the demo's column) order
TABLE = [
    ("saliency", ("gradient", "vanilla_gradient"), False, "Saliency", "|gradient|"),
    ("input_x_gradient", ("ixg", "gradient_x_input"), False, "InputXGradient", "input x gradient"),
    ("integrated_gradients", ("ig",), True, "IntegratedGradients", "integrated gradients from a zero baseline"),
    ("gradient_shap", ("gradshap", "expected_gradients"), True, "GradientShap",
     "GradientSHAP over a zero and a mean-image baseline"),
    ("smoothgrad", ("smooth_grad", "noise_tunnel"), False, "NoiseTunnel",
     "SmoothGrad: saliency averaged over noisy copies"),
    ("guided_backprop", ("guided", "gbp"), False, "GuidedBackprop", "guided backpropagation"),
    ("deconvolution", ("deconv",), False, "Deconvolution", "deconvolution"),
    ("deeplift", ("deep_lift",), True, "DeepLift", "DeepLIFT (rescale)"),
    ("deeplift_shap", ("deepliftshap", "deep_shap"), True, "DeepLiftShap",
     "DeepLIFT averaged over a zero and a mean-image baseline"),
    ("lrp", ("layerwise_relevance",), True, "LRP", "LRP, epsilon rule"),
    ("occlusion", (), False, "Occlusion", "occlusion by a sliding zero window"),
    ("feature_ablation", ("ablation",), False, "FeatureAblation", "zeroing each cell of an 8x8 grid"),
    ("feature_permutation", ("permutation",), False, "FeaturePermutation",
     "permuting each grid cell across the batch (needs 2+ inputs)"),
    ("shapley_value_sampling", ("shapley_sampling", "svs"), False, "ShapleyValueSampling",
     "Shapley values of 8x8 grid cells from 4 sampled orders"),
    ("shapley_values", ("shapley",), False, "ShapleyValues", "exact Shapley values of 3x3 grid cells"),
    ("kernel_shap", ("kernelshap",), False, "KernelShap", "KernelSHAP over 8x8 grid cells, 200 samples"),
    ("lime", (), False, "Lime", "LIME over 8x8 grid cells, 200 samples"),
    ("rise", (), False, "RISE", "RISE, 500 random masks"),
    ("grad_cam", ("gradcam",), False, "GradCAM",
     "Grad-CAM at the last convolutional block (located automatically), upsampled"),
    ("grad_cam_plus_plus", ("gradcam++", "gradcampp"), False, "GradCAMPlusPlus",
     "Grad-CAM++ at the last convolutional block, upsampled"),
]


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).eval()


def test_names_order_aliases_delta_and_descriptions_are_todays():
    assert methods.available() == [row[0] for row in TABLE]
    assert torchexplain.available_methods() == [row[0] for row in TABLE]
    keys = []
    for name, aliases, delta, _, description in TABLE:
        spec = methods.resolve(name)
        assert (spec.name, spec.aliases, spec.delta, spec.description) == (name, aliases, delta, description)
        keys += [name, *aliases]
        for alias in aliases:
            assert methods.resolve(alias) is spec
    assert [k for k, s in methods.METHODS.items() if s.listed] == keys


def test_attacks_are_found_by_name_but_not_listed():
    """fgsm and pgd (torchexplain.robust) answer to their names, stay out of
    available() and "all", and the unknown-name error still lists them."""
    for name in ("fgsm", "pgd"):
        assert methods.resolve(name).name == name and not methods.resolve(name).listed
        assert name not in methods.available()
    with pytest.raises(ValueError, match="known methods: .*pgd"):
        methods.resolve("nosuch")


def test_resolve_ignores_case_dashes_and_spaces_and_names_unknown_methods():
    assert methods.resolve(" Integrated-Gradients ").name == "integrated_gradients"
    assert methods.resolve("Input X Gradient").name == "input_x_gradient"
    with pytest.raises(ValueError, match=r"unknown method 'nosuch'; known methods: saliency, input_x_gradient"):
        methods.resolve("nosuch")
    with pytest.raises(TypeError, match="method must be a name or a list of names; got int"):
        methods.resolve(3)


def test_each_name_builds_its_class():
    net = _net()
    for name, _, _, cls, _ in TABLE:
        obj = methods.resolve(name).build(net)
        assert type(obj).__name__ == cls, name
        assert type(obj) is getattr(attr, cls, None) or type(obj) is getattr(cam, cls, None)
    inner = methods.resolve("smoothgrad").build(net).attribution_method
    assert type(inner) is attr.Saliency and inner.forward_func is net


def _mask(height, width, cell, per_row):
    """Hand-written grid: cell (r // cell, c // cell), numbered row by row."""
    rows = torch.arange(height)[:, None] // cell
    cols = torch.arange(width)[None, :] // cell
    return (rows * per_row + cols).reshape(1, 1, height, width)


SEED0 = object()  # a fresh torch.Generator seeded with 0 (the demo's draws are the same on every run)


def _same(got: dict, expected: dict):
    assert list(got) == list(expected)
    for key, value in expected.items():
        if value is SEED0:
            fresh = torch.Generator().manual_seed(0)
            assert isinstance(got[key], torch.Generator) and torch.equal(got[key].get_state(), fresh.get_state()), key
        elif isinstance(value, torch.Tensor):
            assert torch.equal(got[key], value), key
        elif isinstance(value, float):
            assert got[key] == pytest.approx(value, rel=1e-6), key
        else:
            assert got[key] == value, key


def test_one_call_defaults_of_images():
    x = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).reshape(2, 3, 16, 16)
    baselines = torch.stack([torch.zeros(3, 16, 16), (x[0] + x[1]) / 2])
    grid8 = _mask(16, 16, 2, 8)  # 8 cells of 2 pixels per side
    grid3 = _mask(16, 16, 6, 3)  # ceil(16 / 3) = 6 pixels per cell
    expected = {
        "gradient_shap": {"baselines": baselines, "n_samples": 20, "generator": SEED0},
        "smoothgrad": {"nt_type": "smoothgrad", "nt_samples": 16, "stdevs": 0.15 * (2 * 3 * 256 - 1), "generator": SEED0},
        "deeplift_shap": {"baselines": baselines},
        "occlusion": {"sliding_window_shapes": (3, 2, 2), "strides": (3, 1, 1)},
        "feature_ablation": {"feature_mask": grid8},
        "feature_permutation": {"feature_mask": grid8},
        "shapley_value_sampling": {"feature_mask": grid8, "n_samples": 4, "seed": 0},
        "shapley_values": {"feature_mask": grid3},
        "kernel_shap": {"feature_mask": grid8, "n_samples": 200, "seed": 0},
        "lime": {"feature_mask": grid8, "n_samples": 200, "seed": 0},
        "rise": {"n_masks": 500, "seed": 0},
    }
    for name, *_ in TABLE:
        _same(methods.resolve(name).defaults(x), expected.get(name, {}))


def test_one_call_defaults_of_small_images_and_of_other_inputs():
    small = torch.zeros(2, 1, 10, 7)
    assert methods.resolve("occlusion").defaults(small) == {"sliding_window_shapes": (1, 1, 1), "strides": (1, 1, 1)}
    _same(methods.resolve("feature_ablation").defaults(small), {"feature_mask": _mask(10, 7, 1, 7)})
    _same(methods.resolve("shapley_values").defaults(small), {"feature_mask": _mask(10, 7, 3, 3)})
    table = torch.tensor([[0.0, 1.0, -2.0], [3.0, 0.5, 0.0]])
    sequence = torch.zeros(2, 4, 6)
    assert methods.resolve("occlusion").defaults(table) == {"sliding_window_shapes": (1,)}
    assert methods.resolve("occlusion").defaults(sequence) == {"sliding_window_shapes": (1, 1)}
    for data in (table, sequence):
        assert methods.resolve("feature_ablation").defaults(data) == {}
        assert methods.resolve("lime").defaults(data) == {"n_samples": 200, "seed": 0}
    _same(methods.resolve("smoothgrad").defaults(table),
          {"nt_type": "smoothgrad", "nt_samples": 16, "stdevs": 0.75, "generator": SEED0})
    _same(methods.resolve("gradient_shap").defaults(table),
          {"baselines": torch.tensor([[0.0, 0.0, 0.0], [1.5, 0.75, -1.0]]), "n_samples": 20, "generator": SEED0})
    assert methods.resolve("smoothgrad").defaults(torch.ones(2, 3))["stdevs"] == pytest.approx(0.15e-12)


# --------------------------------------------------------------------------- registration


@pytest.fixture
def scratch_table():
    """The registry's table, restored after the test."""
    from torchexplain.core import registry

    saved, index = dict(registry.METHODS), dict(registry._INDEX)
    yield registry
    registry.METHODS.clear()
    registry.METHODS.update(saved)
    registry._INDEX.clear()
    registry._INDEX.update(index)


def test_the_decorator_registers_the_class_it_sits_on(scratch_table):
    registry = scratch_table

    @registry.register("scaled_saliency", aliases=("ss",), order=15, defaults={"abs": False},
                       description="a test method")
    class Scaled(attr.Saliency):
        pass

    assert methods.available()[:3] == ["saliency", "scaled_saliency", "input_x_gradient"]
    spec = methods.resolve("SS")
    assert spec.build is Scaled and spec.defaults(torch.zeros(1, 2)) == {"abs": False}
    spec.defaults(torch.zeros(1, 2))["abs"] = True  # a copy each time
    assert spec.defaults(torch.zeros(1, 2)) == {"abs": False}
    registry.register("unordered")(attr.Saliency)
    assert methods.available()[-1] == "unordered"
    with pytest.raises(ValueError, match=r"ig already name\(s\) method 'integrated_gradients'"):
        registry.register("other", aliases=("ig",))(attr.Saliency)
    with pytest.raises(ValueError, match="lower case"):
        registry.register("Other")(attr.Saliency)


def test_registrations_sit_next_to_their_classes_not_in_one_list():
    text = (SRC / "methods.py").read_text()
    assert "MethodSpec(" not in text and "defaults=" not in text
    for name, _, _, cls, _ in TABLE:
        spec = methods.resolve(name)
        if name != "smoothgrad":
            assert spec.build is getattr(attr, cls, None) or spec.build is getattr(cam, cls, None)


def test_lrp_rule_names_are_listed_once():
    from torchexplain.attr import lrp, lrp_rules

    assert "EpsilonGammaBox" not in (SRC / "attr" / "__init__.py").read_text()
    assert (SRC / "attr" / "lrp.py").read_text().count("EpsilonGammaBox") == 0
    assert set(lrp_rules.__all__) <= set(attr.__all__) and set(lrp.__all__) == {"LRP", *lrp_rules.__all__}
    for name in lrp_rules.__all__:
        assert getattr(attr, name) is getattr(lrp_rules, name) is getattr(lrp, name)
    assert attr.EpsilonRule is attr.Epsilon and attr.PropagationRule is lrp_rules.Rule


# --------------------------------------------------------------------------- build and call


def test_method_call_merges_defaults_with_the_arguments_it_takes():
    net = _net()
    x = torch.randn(3, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([0, 1, 4])
    kwargs = {"n_steps": 5, "n_samples": 3, "stdevs": 0.0}
    ig, gs = methods.method_calls([methods.resolve("ig"), methods.resolve("gradient_shap")], net, kwargs)
    assert ig.kwargs == {"n_steps": 5} and gs.kwargs == {"n_samples": 3, "stdevs": 0.0}
    done = ig(x, target, delta=True)
    expected, delta = attr.IntegratedGradients(net).attribute(x, target=target, n_steps=5,
                                                              return_convergence_delta=True)
    assert torch.equal(done.attributions, expected) and torch.equal(done.delta, delta)
    assert done.arguments == {"n_steps": 5} and done.seconds > 0
    done = gs(x, target)  # the caller's n_samples wins over the default 20; no delta asked
    expected = attr.GradientShap(net).attribute(
        x, baselines=torch.cat([torch.zeros(1, 3, 6, 6), x.mean(0, keepdim=True)]), n_samples=3, stdevs=0.0,
        target=target, generator=torch.Generator().manual_seed(0))
    assert done.delta is None and list(done.arguments) == ["baselines", "n_samples", "generator", "stdevs"]
    torch.testing.assert_close(done.attributions, expected, rtol=0, atol=0)


def test_an_argument_no_method_takes_is_a_type_error_naming_it():
    specs = [methods.resolve("saliency"), methods.resolve("ig")]
    with pytest.raises(TypeError, match=r"no chosen method takes the argument\(s\) bogus, n_sample$"):
        methods.method_calls(specs, _net(), {"n_steps": 4, "n_sample": 3, "bogus": 1})
    calls = methods.method_calls(specs, _net(), {"n_steps": 4, "bogus": 1}, strict=False)
    assert [c.kwargs for c in calls] == [{}, {"n_steps": 4}]
    # NoiseTunnel hands every argument to the method it wraps
    assert methods.method_calls([methods.resolve("smoothgrad")], _net(), {"bogus": 1})[0].kwargs == {"bogus": 1}


def test_randomization_check_by_name_uses_the_defaults_and_refuses_unknown_arguments():
    from torchexplain.metrics import randomization_check

    net = _net()
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([0, 1])
    by_name = randomization_check("feature_ablation", net, x, target, perturbations_per_eval=2)
    by_class = randomization_check(attr.FeatureAblation, net, x, target, feature_mask=_mask(6, 6, 1, 6))
    plain = randomization_check(attr.FeatureAblation, net, x, target)  # each value its own feature
    torch.testing.assert_close(by_name.correlations, by_class.correlations, rtol=0, atol=0)
    assert not torch.allclose(by_name.correlations, plain.correlations)
    with pytest.raises(TypeError, match="no chosen method takes the argument"):
        randomization_check("saliency", net, x, n_steps=4)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            found |= {f"{'.' * node.level}{node.module or ''}:{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def test_metrics_do_not_import_the_api_back():
    for path in sorted((SRC / "metrics").glob("*.py")):
        bad = {i for i in _imports(path) if i.startswith(("..api", "torchexplain.api", ".:api", "..:api"))}
        assert not bad, f"{path.name} imports {bad}"
    assert not any("api" in i for i in _imports(SRC / "core" / "registry.py") | _imports(SRC / "methods.py"))
