"""Incremental inference for Occlusion and FeatureAblation (core/incremental.py).

The oracle is the full computation (``incremental=False``): the same method with
every occluded copy through the whole network. In float64 the two agree to rounding
(1e-10), which shows the rules are exact; in float32 they agree to 1e-5 of the model
output's scale, the noise floor of the full path itself (the same rows batched
differently differ by as much).
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from torchexplain import config
from torchexplain.attr import FeatureAblation, Occlusion
from torchexplain.core import perturb
from torchexplain.core.incremental import CACHE_SHARE, Engine


def _models():
    return {
        "resnet18": torchvision.models.resnet18,
        "resnet50": torchvision.models.resnet50,
        "vgg11": torchvision.models.vgg11,
        "mobilenet_v3_small": torchvision.models.mobilenet_v3_small,
        "densenet121": torchvision.models.densenet121,
    }


def _occlusion_pair(model, x, window, stride, **kwargs):
    occ = Occlusion(model)
    full = occ.attribute(x, (3, window, window), strides=(3, stride, stride), target=1, incremental=False, **kwargs)
    inc = occ.attribute(x, (3, window, window), strides=(3, stride, stride), target=1, incremental=True, **kwargs)
    return full, inc, occ.incremental_report


@pytest.mark.parametrize(
    "name, window, stride",
    [("resnet18", 8, 4), ("resnet50", 16, 8), ("vgg11", 45, 16), ("mobilenet_v3_small", 10, 6),
     ("densenet121", 24, 10)],
)
def test_exact_on_torchvision_models_at_64(name, window, stride):
    torch.manual_seed(0)
    model = _models()[name]().eval()
    x = torch.randn(2, 3, 64, 64)
    full, inc, report = _occlusion_pair(model, x, window, stride)
    assert report.incremental_ops > 0 and report.interception == "torch_function"
    scale = model(x).abs().max()
    assert (inc - full).abs().max() <= 1e-5 * scale
    assert full.abs().max() > 1e3 * 1e-5 * scale  # the attributions are far above that tolerance


def test_exact_at_224():
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 224, 224)
    full, inc, report = _occlusion_pair(model, x, 45, 16)
    assert report.incremental_ops > 0 and report.fallback in (None, "flatten")
    assert (inc - full).abs().max() <= 1e-5 * model(x).abs().max()


@pytest.mark.parametrize("name", ["resnet18", "densenet121"])
def test_exact_to_rounding_in_float64(name):
    torch.manual_seed(0)
    model = _models()[name]().double().eval()
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    full, inc, report = _occlusion_pair(model, x, 8, 4)
    assert report.incremental_ops > 0
    torch.testing.assert_close(inc, full, rtol=0, atol=1e-10 * full.abs().max().item())


class EveryRule(nn.Module):
    """One of each supported form: strided, dilated, grouped and "same"-padded
    convolutions, pooling with ceil mode and padding, eval-mode batch norm, functional
    and in-place activations, arithmetic with constants, a residual addition, a
    concatenation, divisible and global adaptive pooling."""

    def __init__(self, dim: int = 2):
        super().__init__()
        conv = nn.Conv2d if dim == 2 else nn.Conv1d
        self.dim = dim
        self.a = conv(3, 8, 3, padding=1)
        self.b = conv(8, 8, 3, stride=2, padding=2, dilation=2, groups=2)
        self.skip = conv(8, 16, 1, stride=2)
        self.c = conv(8, 8, 5, padding="same", bias=False)
        self.bn = (nn.BatchNorm2d if dim == 2 else nn.BatchNorm1d)(8).eval()
        self.bn.running_mean.uniform_(-1, 1)
        self.bn.running_var.uniform_(0.5, 2)
        self.scale = nn.Parameter(torch.rand((8,) + (1,) * dim))
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        pool = F.max_pool2d if self.dim == 2 else F.max_pool1d
        avg = F.avg_pool2d if self.dim == 2 else F.avg_pool1d
        adaptive = F.adaptive_avg_pool2d if self.dim == 2 else F.adaptive_avg_pool1d
        h = F.leaky_relu(self.a(x), 0.1, inplace=True)
        h = pool(h, 3, 2, 1, ceil_mode=True)
        skip = self.skip(h)
        h = self.bn(self.b(h))
        h = F.hardswish(h) * self.scale - 0.5
        h.relu_()
        h = torch.cat([h, F.gelu(self.c(h))], 1)
        h = F.dropout(h + skip, 0.5, training=False)
        h = avg(h, 3, 1, 1)
        h = torch.sigmoid(adaptive(h, h.shape[-1] // 2))
        return self.head(adaptive(h, 1).flatten(1))


@pytest.mark.parametrize("dim, size, window, stride", [(2, 44, 6, 6), (1, 92, 8, 4)])
def test_every_rule_is_exact(dim, size, window, stride):
    torch.manual_seed(0)
    model = EveryRule(dim).double()
    x = torch.randn((2, 3) + (size,) * dim, dtype=torch.float64)
    occ = Occlusion(model)
    shape, strides = (3,) + (window,) * dim, (3,) + (stride,) * dim
    full = occ.attribute(x, shape, strides=strides, target=2, incremental=False)
    inc = occ.attribute(x, shape, strides=strides, target=2, incremental=True)
    report = occ.incremental_report
    assert report.fallback is None and report.incremental_ops >= 15
    torch.testing.assert_close(inc, full, rtol=0, atol=1e-10 * full.abs().max().item())


class GlobalMixing(nn.Module):
    """A convolution, then a spatial mean subtracted (no incremental rule), then more."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 4, 3, padding=1)

    def forward(self, x):
        h = torch.relu(self.a(x))
        h = h - h.mean(dim=(2, 3), keepdim=True)
        return self.b(h).amax(dim=(2, 3))


def test_unsupported_layer_falls_back_to_the_full_values():
    torch.manual_seed(0)
    model = GlobalMixing().double()
    x = torch.randn(2, 3, 20, 20, dtype=torch.float64)
    full, inc, report = _occlusion_pair(model, x, 4, 4)
    assert report.fallback == "mean" and report.incremental_ops > 0  # the conv and the relu ran on patches
    torch.testing.assert_close(inc, full, rtol=0, atol=1e-12)


def test_auto_stops_when_the_first_call_needs_the_rows_whole():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, 4))
    x = torch.randn(1, 3, 64, 64)
    occ = Occlusion(model)
    inc = occ.attribute(x, (3, 16, 16), strides=(3, 16, 16), target=0)
    report = occ.incremental_report
    assert report.incremental_ops == 0 and report.fallback == "flatten"
    torch.testing.assert_close(inc, occ.attribute(x, (3, 16, 16), strides=(3, 16, 16), target=0, incremental=False))


def test_auto_skips_small_inputs():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 30 * 30, 2))
    occ = Occlusion(model)
    occ.attribute(torch.randn(1, 3, 32, 32), (3, 4, 4), strides=(3, 4, 4), target=0)
    assert occ.incremental_report is None
    occ.attribute(torch.randn(1, 3, 32, 32), (3, 4, 4), strides=(3, 4, 4), target=0, incremental=True)
    assert occ.incremental_report.incremental_ops > 0


def test_feature_ablation_with_a_grid_mask():
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(2, 3, 48, 48)
    cells = torch.arange(48) // 8
    grid = (cells.view(-1, 1) * 6 + cells).view(1, 1, 48, 48)
    per_example = torch.stack([grid[0], grid[0].flip(-1)])  # a different grid per example
    fa = FeatureAblation(model)
    for mask in (grid, per_example):
        full = fa.attribute(x, target=[0, 5], feature_mask=mask, incremental=False)
        inc = fa.attribute(x, target=[0, 5], feature_mask=mask)
        assert fa.incremental_report.incremental_ops > 0
        assert (inc - full).abs().max() <= 1e-5 * model(x).abs().max()


def test_scattered_features_do_not_use_it():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 14 * 14, 2))
    x = torch.randn(1, 3, 16, 16)
    checker = (torch.arange(16).view(-1, 1) + torch.arange(16)) % 2  # two features over the whole image
    fa = FeatureAblation(model)
    fa.attribute(x, target=0, feature_mask=checker.view(1, 1, 16, 16))
    assert fa.incremental_report is None
    with pytest.raises(ValueError, match="incremental=True cannot apply: each perturbation covers"):
        fa.attribute(x, target=0, feature_mask=checker.view(1, 1, 16, 16), incremental=True)


def test_errors_name_the_argument():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 14 * 14, 2))
    x = torch.randn(1, 3, 16, 16)
    occ = Occlusion(model)
    with pytest.raises(ValueError, match='incremental must be "auto", True, False or "approximate"'):
        occ.attribute(x, (3, 4, 4), target=0, incremental="yes")
    with pytest.raises(ValueError, match=r"projective_field_threshold must be a number in \(0, 1\]"):
        occ.attribute(x, (3, 4, 4), target=0, incremental="approximate", projective_field_threshold=1.5)
    two = nn.Bilinear(4, 4, 2)
    with pytest.raises(ValueError, match="incremental=True cannot apply: it takes one input tensor; got 2"):
        Occlusion(two).attribute((torch.randn(1, 4), torch.randn(1, 4)), ((1,), (1,)), target=0, incremental=True)
    with pytest.raises(ValueError, match="drill_down must be a fraction in"):
        occ.attribute(x, (3, 4, 4), target=0, drill_down=0)


def test_model_is_left_unchanged():
    torch.manual_seed(0)
    model = EveryRule(2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modules = {name: (type(m), m.training, dict(m._forward_hooks), dict(m._forward_pre_hooks))
               for name, m in model.named_modules()}
    x = torch.randn(1, 3, 32, 32)
    Occlusion(model).attribute(x, (3, 8, 8), strides=(3, 8, 8), target=0)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert modules == {name: (type(m), m.training, dict(m._forward_hooks), dict(m._forward_pre_hooks))
                       for name, m in model.named_modules()}


def test_cached_activations_stay_within_the_budget(monkeypatch):
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 64, 64)
    occ = Occlusion(model)
    full = occ.attribute(x, (3, 16, 16), strides=(3, 16, 16), target=0, incremental=False)
    unlimited = occ.attribute(x, (3, 16, 16), strides=(3, 16, 16), target=0)
    everything = occ.incremental_report.cached_bytes
    monkeypatch.setattr(config, "memory_budget", everything // 2)
    limited = occ.attribute(x, (3, 16, 16), strides=(3, 16, 16), target=0)
    kept = occ.incremental_report.cached_bytes
    assert 0 < kept <= CACHE_SHARE * everything // 2 < everything
    seen = []  # the chunks' budget leaves the cached activations out
    evaluate = perturb.evaluate_rows
    monkeypatch.setattr(perturb, "evaluate_rows", lambda *a, **k: seen.append(k["reserved_bytes"]) or evaluate(*a, **k))
    occ.attribute(x, (3, 16, 16), strides=(3, 16, 16), target=0)
    assert seen == [kept]
    scale = model(x).abs().max()
    assert (limited - full).abs().max() <= 1e-5 * scale and (unlimited - full).abs().max() <= 1e-5 * scale


def test_approximate_mode():
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 64, 64)
    occ = Occlusion(model)
    exact = occ.attribute(x, (3, 8, 8), strides=(3, 8, 8), target=0)
    whole = occ.attribute(x, (3, 8, 8), strides=(3, 8, 8), target=0, incremental="approximate",
                          projective_field_threshold=1.0)
    assert occ.incremental_report.mode == "approximate"
    assert (whole - exact).abs().max() <= 1e-5 * model(x).abs().max()  # a threshold of 1 caps nothing
    capped = occ.attribute(x, (3, 8, 8), strides=(3, 8, 8), target=0, incremental="approximate",
                           projective_field_threshold=0.25)
    assert (capped - exact).abs().max() > 1e-3 * exact.abs().max()


def test_approximate_mode_by_hand():
    """One 3x3 convolution, then a sum: a 4x4 window changes a 6x6 output box
    (5 wide at the borders); a threshold of 0.25 of 16 caps it at 4x4, centred, and
    the rest of the output keeps the unoccluded values."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 2, 3, padding=1).double()
    model = lambda t: conv(t).sum(dim=(1, 2, 3)).unsqueeze(1)  # noqa: E731
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    got = Occlusion(model).attribute(x, (3, 4, 4), strides=(3, 4, 4), target=0, incremental="approximate",
                                     projective_field_threshold=0.25)
    with torch.no_grad():
        base = conv(x)
        expected = torch.zeros_like(x)
        for i in range(4):
            for j in range(4):
                occluded = x.clone()
                occluded[..., 4 * i:4 * i + 4, 4 * j:4 * j + 4] = 0
                out = conv(occluded)
                rows, cols = [], []
                for k, keep in ((i, rows), (j, cols)):
                    lo, hi = max(0, 4 * k - 1), min(16, 4 * k + 5)
                    start = min(lo + (hi - lo - 4) // 2, 12)
                    keep.extend(range(start, start + 4))
                mixed = base.clone()
                mixed[..., rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = out[..., rows[0]:rows[-1] + 1,
                                                                             cols[0]:cols[-1] + 1]
                expected[..., 4 * i:4 * i + 4, 4 * j:4 * j + 4] = base.sum() - mixed.sum()
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    exact = Occlusion(model).attribute(x, (3, 4, 4), strides=(3, 4, 4), target=0)
    assert (got - exact).abs().max() > 1e-3  # the cap made a difference


def test_layers_recomputed_each_batch(monkeypatch):
    """Unperturbed activations that are not cached (over the budget, or made anew by
    every forward: a weight-normalised kernel) are recomputed, also in the batch that
    measures memory with autograd on."""
    torch.manual_seed(0)
    deep = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    normed = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                           nn.utils.parametrizations.weight_norm(nn.Conv2d(4, 4, 3, padding=1)), nn.ReLU(),
                           nn.Flatten(), nn.Linear(4 * 48 * 48, 2))
    x = torch.randn(2, 3, 48, 48)
    for net, budget in ((deep, 600_000), (normed, None)):  # 600 kB: room for 2 of the 147 kB activations
        monkeypatch.setattr(config, "memory_budget", budget)
        occ = Occlusion(net)
        inc = occ.attribute(x, (3, 8, 8), strides=(3, 8, 8), target=0)
        report = occ.incremental_report
        assert report.incremental_ops > 0
        if budget is not None:
            assert report.cached_bytes <= CACHE_SHARE * budget
        torch.testing.assert_close(inc, occ.attribute(x, (3, 8, 8), strides=(3, 8, 8), target=0, incremental=False),
                                   rtol=1e-5, atol=1e-6)


def test_identity_pooling_returns_a_new_tensor():
    torch.manual_seed(0)
    conv, head = nn.Conv2d(3, 4, 3, padding=1).double(), nn.Linear(4, 2).double()

    def model(x):
        y = conv(x)
        z = F.adaptive_avg_pool2d(y, y.shape[2:])  # the identity; in place on z must leave y
        z.relu_()
        return head((y - z).mean(dim=(2, 3)))

    x = torch.randn(1, 3, 48, 48, dtype=torch.float64)
    occ = Occlusion(model)
    inc = occ.attribute(x, (3, 8, 8), strides=(3, 8, 8), target=0, incremental=True)
    torch.testing.assert_close(inc, occ.attribute(x, (3, 8, 8), strides=(3, 8, 8), target=0, incremental=False))


def test_engine_rows_read_back_and_in_place_aliasing():
    torch.manual_seed(0)
    base = torch.randn(2, 3, 10, 10)
    engine = Engine(base)
    examples = torch.tensor([1, 0, 1])
    rows = base[examples].clone()
    lo, hi = torch.tensor([[2, 3], [0, 0], [7, 8]]), torch.tensor([[5, 6], [0, 0], [10, 10]])
    for r in range(3):
        rows[r, :, lo[r, 0]:hi[r, 0], lo[r, 1]:hi[r, 1]] = -1.0
    changed = engine.rows(rows, examples, lo, hi)
    assert tuple(changed.shape) == (3, 3, 10, 10) and tuple(changed.patch.shape[2:]) == (3, 3)
    torch.testing.assert_close(changed.materialize(), rows, rtol=0, atol=0)

    def mutate(x):
        y = x
        x.mul_(2)  # in place: y must see it
        return y + 0
    with torch.inference_mode():
        torch.testing.assert_close(mutate(engine.rows(rows, examples, lo, hi)).contiguous(), rows * 2)


def test_drill_down():
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(2, 3, 32, 32)
    occ = Occlusion(model)
    args = dict(sliding_window_shapes=(3, 8, 8), strides=(3, 4, 4), target=[1, 2])
    fine = occ.attribute(x, **args)
    coarse = occ.attribute(x, (3, 8, 8), strides=(3, 8, 8), target=[1, 2])
    torch.testing.assert_close(occ.attribute(x, **args, drill_down=1.0), fine, rtol=1e-5, atol=1e-6)
    drilled = occ.attribute(x, **args, drill_down=0.2)
    # the refined windows are the 20% (10 of 49) with the largest mean |coarse| over their area
    importance = F.avg_pool2d(coarse.abs()[:, :1], 8, 4).flatten(1)
    chosen = importance.topk(10, dim=1).indices
    # a position covered by exactly one fine window, which was chosen, has that window's fine value
    corner = [divmod(int(c), 7) for c in chosen[0]]
    if (0, 0) in corner:
        torch.testing.assert_close(drilled[0, :, :4, :4], fine[0, :, :4, :4], rtol=1e-5, atol=1e-6)
    # positions no chosen window covers keep the coarse value
    covered = torch.zeros(2, 32, 32, dtype=torch.bool)
    for e in range(2):
        for c in chosen[e].tolist():
            i, j = divmod(c, 7)
            covered[e, 4 * i:4 * i + 8, 4 * j:4 * j + 8] = True
    keep = ~covered.unsqueeze(1).expand_as(drilled)
    torch.testing.assert_close(drilled[keep], coarse[keep])
    assert bool((drilled[~keep] != coarse[~keep]).any())
