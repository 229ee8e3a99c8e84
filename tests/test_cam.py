"""Class activation maps (torchexplain.cam) against their oracles.

* GradCAM at the layer's resolution against Captum's LayerGradCam;
* GradCAM, XGradCAM, LayerCAM, HiResCAM, ScoreCAM, AblationCAM and EigenCAM against
  pytorch-grad-cam, both min-max scaled per image, where the peer is right: its
  ScoreCAM resizes masks with align_corners=True (ours: False, like the authors'
  code and every final upsampling), so the two are compared on a layer at the
  input's resolution and ours on a coarse layer against a hand loop; its EigenCAM
  keeps NumPy's arbitrary SVD sign, so the projections are compared up to sign;
* GradCAMPlusPlus and CAM against hand evaluations of their formulas;
* per-example targets, automatic layer location, vision-transformer tokens, bad
  inputs, and the model left as it was.
"""

from __future__ import annotations

import copy
import functools
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import torchexplain.cam as tc
from torchexplain.cam.base import min_max

pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection  # noqa: E402

import helpers  # noqa: E402

ALL = ["GradCAM", "GradCAMPlusPlus", "XGradCAM", "LayerCAM", "HiResCAM", "CAM", "EigenCAM", "ScoreCAM", "AblationCAM"]


# --------------------------------------------------------------------------- models


class SmallNet(nn.Module):
    """features (conv, ReLU, strided conv, ReLU) -> global average pool -> linear."""

    def __init__(self, seed=0, stride=2, classes=5, norm=False):
        super().__init__()
        torch.manual_seed(seed)
        layers = [nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 12, 3, padding=1, stride=stride)]
        layers += [nn.BatchNorm2d(12)] if norm else []
        self.features = nn.Sequential(*layers, nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, classes)
        self.eval()

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class CrossNet(nn.Module):
    """Earlier features are concatenated with the target layer's after it: the
    ablated rows cannot run from the layer on alone."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.features = nn.Sequential(nn.Conv2d(6, 8, 3, padding=1, stride=2), nn.ReLU())
        self.fc = nn.Linear(14, 4)
        self.eval()

    def forward(self, x):
        early = self.stem(x)
        late = self.features(early)
        return self.fc(torch.cat([early.mean((2, 3)), late.mean((2, 3))], 1))


def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


images = functools.partial(helpers.images, size=64)


def layer_values(model, layer, x):
    """The layer's output for x (hand-rolled hook, independent of the library)."""
    seen = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, a, o: seen.setdefault("v", o.clone()))
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        handle.remove()
    return seen["v"], out


def peer(name, model, layer, x, targets, **kwargs):
    """pytorch-grad-cam's map (N, H, W), on a copy of the model."""
    model = copy.deepcopy(model)
    cls = getattr(pgc, name)
    with cls(model=model, target_layers=[dict(model.named_modules())[layer]], **kwargs) as cam:
        out = cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
    return torch.from_numpy(np.asarray(out))


close = functools.partial(helpers.close, rtol=0, atol=1e-4)


def close_scaled(ours, theirs):
    """Both min-max scaled per image agree within 1e-4; ours (N, 1, H, W) is not
    constant, so the agreement says something."""
    flat = ours.flatten(1)
    assert bool((flat.amax(1) > flat.amin(1)).all()), "a constant map compares trivially"
    close(min_max(ours[:, 0]), min_max(theirs))


# --------------------------------------------------------------------------- oracles


@pytest.mark.slow
def test_gradcam_equals_captum_layergradcam():
    from captum.attr import LayerGradCam

    model, x, target = resnet18(), images(3), [1, 7, 3]
    ours = tc.GradCAM(model, "layer3").attribute(x, target=target, upsample=False)
    theirs = LayerGradCam(model, model.layer3).attribute(x, target=target, relu_attributions=True).detach()
    assert ours.shape == (3, 1, 4, 4) and theirs.abs().max() > 0
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5 * float(theirs.abs().max()))


@pytest.mark.parametrize("name", ["GradCAM", "XGradCAM", "LayerCAM", "HiResCAM"])
@pytest.mark.slow
def test_gradient_cams_match_pytorch_grad_cam(name):
    model, x, target = resnet18(), images(2), [3, 8]
    ours = getattr(tc, name)(model, "layer3").attribute(x, target=target)
    theirs = peer(name, model, "layer3", x, target)
    assert ours.shape == (2, 1, 64, 64)
    close_scaled(ours, theirs)


def test_scorecam_matches_pytorch_grad_cam_at_input_resolution():
    # layer at the input's resolution: both libraries' masks are the activations
    model, x, target = SmallNet(stride=1), images(2, size=12), [0, 3]
    ours = tc.ScoreCAM(model, "features").attribute(x, target=target)
    theirs = peer("ScoreCAM", model, "features", x, target)
    close_scaled(ours, theirs)


def test_scorecam_on_a_coarse_layer_equals_a_hand_loop():
    model, x, target = SmallNet(), images(2, size=12), [2, 4]
    ours = tc.ScoreCAM(model, "features").attribute(x, target=target, upsample=False, relu=False)
    acts, _ = layer_values(model, "features", x)
    for i, c in enumerate(target):
        scores = []
        for k in range(acts.shape[1]):
            m = F.interpolate(acts[i : i + 1, k : k + 1], size=(12, 12), mode="bilinear", align_corners=False)
            m = (m - m.min()) / (m.max() - m.min()) if m.max() > m.min() else torch.zeros_like(m)
            with torch.no_grad():
                scores.append(model(x[i : i + 1] * m)[0, c])
        weights = torch.softmax(torch.stack(scores), 0)
        close(ours[i, 0], (weights[:, None, None] * acts[i]).sum(0), atol=1e-5)


def test_ablationcam_matches_pytorch_grad_cam():
    model, x, target = SmallNet(), images(1, size=16), [2]
    acts, _ = layer_values(model, "features", x)
    assert acts.min() == 0  # the peer ablates with 0 only when the minimum is 0
    ours = tc.AblationCAM(model, "features").attribute(x, target=target)
    theirs = peer("AblationCAM", model, "features", x, target)
    close_scaled(ours, theirs)


def zero_channel(values, k):
    values[:, k] = 0


def hand_ablation(model, layer, x, target, channels, ablate=zero_channel):
    """w_k = (y - y_k) / y for every channel k, ablating with a forward hook."""
    acts, out = layer_values(model, layer, x)
    module = dict(model.named_modules())[layer]
    weights = []
    for k in range(channels):
        def hook(m, a, o, k=k):
            o = o.clone()
            ablate(o, k)
            return o

        handle = module.register_forward_hook(hook)
        try:
            with torch.no_grad():
                weights.append((out[0, target] - model(x)[0, target]) / out[0, target])
        finally:
            handle.remove()
    return acts, torch.stack(weights)


@pytest.mark.parametrize("net", [SmallNet, CrossNet])
def test_ablationcam_equals_a_hand_loop(net, caplog):
    model, x = net(), images(1, size=16, seed=3)
    acts, weights = hand_ablation(model, "features", x, 1, 8 if net is CrossNet else 12)
    with caplog.at_level(logging.DEBUG, logger="torchexplain.cam"):
        ours = tc.AblationCAM(model, "features").attribute(x, target=1, upsample=False, relu=False)
    close(ours[0, 0], (weights[:, None, None] * acts[0]).sum(0), atol=1e-5)
    # CrossNet reuses earlier features after the layer: whole forwards are needed
    assert ("whole forward passes" in caplog.text) == (net is CrossNet)


@pytest.mark.slow
def test_eigencam_matches_pytorch_grad_cam_projection_up_to_sign():
    model, x = resnet18(), images(2)
    ours = tc.EigenCAM(model, "layer3").attribute(x, upsample=False, relu=False)[:, 0]
    acts, _ = layer_values(model, "layer3", x)
    theirs = torch.from_numpy(get_2d_projection(acts.numpy()))
    for i in range(2):
        sign = 1.0 if float((ours[i] * theirs[i]).sum()) >= 0 else -1.0
        close(min_max(ours[i : i + 1]), min_max(sign * theirs[i : i + 1]))
        # our sign: the map correlates positively with the channel-summed activations
        total = acts[i].sum(0)
        assert float((ours[i] * (total - total.mean())).sum()) > 0


def test_gradcam_plus_plus_hand_derived_numbers():
    # one channel, two positions: A = [1, 3], score = 1*A_0 + 2*A_1, so g = [1, 2],
    # sum(A) = 4; alpha = g^2 / (2 g^2 + 4 g^3) = [1/6, 1/10]; w = 1/6 + 2/10 = 11/30
    # and the map is 11/30 * [1, 3]. (Without the denominator: w = 1 + 8 = 9.)
    class Linear(nn.Module):
        def __init__(self):
            super().__init__()
            self.feat = nn.Identity()

        def forward(self, a):
            return (self.feat(a) * torch.tensor([[1.0, 2.0]])).sum((1, 2, 3)).unsqueeze(1)

    a = torch.tensor([[[[1.0, 3.0]]]])
    ours = tc.GradCAMPlusPlus(Linear(), "feat").attribute(a, target=0, upsample=False)
    close(ours[0, 0, 0], torch.tensor([11 / 30, 33 / 30]), atol=1e-6)


def test_gradcam_plus_plus_equals_the_formula_evaluated_by_hand():
    class Quadratic(nn.Module):  # score_c = sum M_c * A + 0.5 sum Q_c * A^2, so g = M_c + Q_c * A
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(5)
            self.feat = nn.Identity()
            self.m = torch.randn(2, 3, 2, 3, generator=g, dtype=torch.float64)
            self.q = torch.randn(2, 3, 2, 3, generator=g, dtype=torch.float64)

        def forward(self, a):
            a = self.feat(a)
            return torch.stack([(self.m[c] * a + 0.5 * self.q[c] * a * a).sum((1, 2, 3)) for c in range(2)], 1)

    net = Quadratic()
    a = torch.rand(1, 3, 2, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    ours = tc.GradCAMPlusPlus(net, "feat").attribute(a, target=1, upsample=False, relu=False)
    A, M, Q = a[0].tolist(), net.m[1].tolist(), net.q[1].tolist()
    w = []
    for k in range(3):
        s = sum(sum(row) for row in A[k])
        total = 0.0
        for i in range(2):
            for j in range(3):
                g = M[k][i][j] + Q[k][i][j] * A[k][i][j]
                den = 2 * g**2 + s * g**3
                total += (g**2 / den if den != 0 else 0.0) * max(g, 0.0)
        w.append(total)
    expected = [[sum(w[k] * A[k][i][j] for k in range(3)) for j in range(3)] for i in range(2)]
    torch.testing.assert_close(ours[0, 0], torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_cam_equals_the_weighted_sum_by_hand():
    model, x = SmallNet(), images(2, size=12)
    ours = tc.CAM(model).attribute(x, target=[3, 1], upsample=False, relu=False)
    acts, out = layer_values(model, "features", x)
    w = model.fc.weight.detach()
    for i, c in enumerate([3, 1]):
        expected = sum(w[c, k] * acts[i, k] for k in range(acts.shape[1]))
        close(ours[i, 0], expected, atol=1e-6)
        # global average pooling: the raw map's mean plus the bias is the logit
        close(ours[i, 0].mean() + model.fc.bias[c], out[i, c], atol=1e-5)


def test_cam_mean_plus_bias_is_the_logit_on_resnet18():
    model, x = resnet18(), images(2)
    ours = tc.CAM(model).attribute(x, upsample=False, relu=False)  # target None: the prediction
    with torch.no_grad():
        logits = model(x)
    predicted = logits.argmax(1)
    got = ours.mean((1, 2, 3)) + model.fc.bias[predicted]
    close(got, logits.max(1).values, atol=1e-4)


# --------------------------------------------------------------------------- targets, batches


@pytest.mark.parametrize("name", ALL)
def test_batch_with_per_example_targets_equals_single_calls(name):
    model, x, target = SmallNet(), images(4, size=12, seed=2), [0, 3, 1, 4]
    method = getattr(tc, name)(model)
    batch = method.attribute(x, target=target, batch_size=3)
    singles = torch.cat([method.attribute(x[i : i + 1], target=target[i]) for i in range(4)])
    close(batch, singles, atol=1e-5)
    if name != "EigenCAM":  # class-agnostic
        other = method.attribute(x, target=[1, 1, 1, 1])
        assert not torch.allclose(other[[0, 2]], batch[[0, 2]])


@pytest.mark.parametrize("name", ["GradCAM", "ScoreCAM", "CAM"])
def test_target_none_explains_each_predicted_class(name):
    model, x = SmallNet(), images(3, size=12) * torch.tensor([1.0, 3.0, 6.0]).view(3, 1, 1, 1)
    with torch.no_grad():
        predicted = model(x).argmax(1).tolist()
    assert len(set(predicted)) > 1
    method = getattr(tc, name)(model)
    close(method.attribute(x), method.attribute(x, target=torch.tensor(predicted)), atol=1e-6)


@pytest.mark.slow
def test_raw_by_default_and_normalized_on_request():
    model, x = resnet18(), images(2)
    method = tc.GradCAM(model, "layer3")
    raw = method.attribute(x, target=[0, 1])
    scaled = method.attribute(x, target=[0, 1], normalize=True)
    assert isinstance(raw, torch.Tensor) and raw.device == x.device and raw.dtype == x.dtype
    assert raw.amax((1, 2, 3)).sub(1).abs().min() > 1e-3  # not scaled to 1
    close(scaled, min_max(raw), atol=1e-6)
    assert scaled.amin() == 0 and torch.allclose(scaled.amax((1, 2, 3)), torch.ones(2))
    small = method.attribute(x, target=[0, 1], upsample=False)
    close(raw, F.interpolate(small, size=(64, 64), mode="bilinear", align_corners=False), atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ALL)
def test_results_stay_on_the_inputs_device(name):
    model, x = SmallNet(), images(2, size=12)
    cpu = getattr(tc, name)(model).attribute(x, target=[1, 2])
    gpu = getattr(tc, name)(copy.deepcopy(model).cuda()).attribute(x.cuda(), target=[1, 2])
    assert gpu.device.type == "cuda"
    close(gpu.cpu(), cpu, atol=1e-4)


# --------------------------------------------------------------------------- layer location


@pytest.mark.parametrize("arch, expected", [
    ("resnet18", "layer4"), ("vgg11", "features"), ("mobilenet_v3_small", "features"), ("densenet121", "features"),
])
@pytest.mark.slow
def test_automatic_layer_location(arch, expected, caplog):
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(num_classes=10).eval()
    method = tc.GradCAM(model)
    with caplog.at_level(logging.INFO, logger="torchexplain.cam"):
        cam = method.attribute(images(1), target=3)
    assert method.target_layer_name == expected
    assert method.target_layer is dict(model.named_modules())[expected]
    assert repr(expected) in caplog.text
    close(cam, tc.GradCAM(model, expected).attribute(images(1), target=3), atol=1e-6)


@pytest.mark.slow
def test_cam_locates_the_linear_classifier():
    torch.manual_seed(0)
    dense = torchvision.models.densenet121(num_classes=10).eval()
    method = tc.CAM(dense)
    method.attribute(images(1))
    assert (method.target_layer_name, method.fc_layer_name) == ("features", "classifier")
    small = tc.CAM(SmallNet())
    small.attribute(images(1, size=12))
    assert small.fc_layer is small.model.fc


@pytest.mark.parametrize("arch, pattern", [
    ("vgg11", "in_features=25088"),  # flatten of a 7x7 map, no global pooling
    ("mobilenet_v3_small", "followed by more computation"),  # a non-linear head
])
@pytest.mark.slow
def test_cam_without_a_linear_head_on_the_layer_is_refused(arch, pattern):
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(num_classes=10).eval()
    with pytest.raises(ValueError, match=f"fc_layer.*{pattern}|{pattern}.*fc_layer"):
        tc.CAM(model).attribute(images(1))


def test_cam_without_any_linear_layer():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ValueError, match="nn.Linear layer after target_layer '2'.*fc_layer"):
        tc.CAM(model, target_layer="2").attribute(images(1, size=8), target=1)


# --------------------------------------------------------------------------- vision transformers


def tiny_vit():
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=64, patch_size=16, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10
    ).eval()
    nn.init.normal_(model.heads.head.weight)  # torchvision starts the head at zero: every output would be 0
    return model


VIT_LAYER = "encoder.layers.encoder_layer_1.ln_1"


def test_vit_reshape_transform_lays_out_patch_tokens():
    tokens = torch.arange(2 * 17 * 3).reshape(2, 17, 3)  # class token + 4x4 patches, 3 features
    grid = tc.vit_reshape_transform(tokens)
    assert grid.shape == (2, 3, 4, 4)
    for r in range(4):
        for c in range(4):
            assert torch.equal(grid[:, :, r, c], tokens[:, 1 + 4 * r + c, :])
    with pytest.raises(ValueError, match="square grid"):
        tc.vit_reshape_transform(tokens[:, :16])


def test_vit_gradcam_matches_pytorch_grad_cam():
    model, x, target = tiny_vit(), images(2), [2, 5]
    ours = tc.GradCAM(model, VIT_LAYER, reshape_transform=tc.vit_reshape_transform).attribute(x, target=target)
    theirs = peer("GradCAM", model, VIT_LAYER, x, target, reshape_transform=tc.vit_reshape_transform)
    assert ours.shape == (2, 1, 64, 64) and bool((ours.amax((1, 2, 3)) > 0).all())
    close_scaled(ours, theirs)


def test_vit_ablationcam_zeroes_one_feature_of_the_patch_tokens():
    model, x = tiny_vit(), images(1, seed=1)
    ours = tc.AblationCAM(model, VIT_LAYER, reshape_transform=tc.vit_reshape_transform)
    got = ours.attribute(x, target=6, upsample=False, relu=False)
    # hand loop: zero feature k of tokens 1.. (the class token is no part of the map)
    acts, weights = hand_ablation(model, VIT_LAYER, x, 6, 32, ablate=lambda o, k: o[:, 1:, k].zero_())
    grid = tc.vit_reshape_transform(acts)[0]
    close(got[0, 0], (weights[:, None, None] * grid).sum(0), atol=1e-5)


# --------------------------------------------------------------------------- bad inputs


def test_unknown_layer_name_lists_close_matches():
    with pytest.raises(ValueError, match="target_layer 'layer5'.*close matches: .*layer4"):
        tc.GradCAM(resnet18(), "layer5")


@pytest.mark.parametrize("name", ["GradCAM", "ScoreCAM", "EigenCAM"])
def test_layer_without_a_feature_map(name):
    with pytest.raises(ValueError, match="target_layer 'fc' has an output of shape \\(1, 10\\).*4-D.*reshape_transform"):
        getattr(tc, name)(resnet18(), "fc").attribute(images(1), target=0)


def test_reshape_transform_problems():
    with pytest.raises(ValueError, match="target_layer is required with reshape_transform"):
        tc.GradCAM(tiny_vit(), reshape_transform=tc.vit_reshape_transform)
    with pytest.raises(ValueError, match="reshape_transform must return a 4-D"):
        tc.GradCAM(tiny_vit(), VIT_LAYER, reshape_transform=lambda t: t[:, 1:]).attribute(images(1), target=0)
    with pytest.raises(TypeError, match="reshape_transform must be None or a callable"):
        tc.GradCAM(tiny_vit(), VIT_LAYER, reshape_transform="vit")
    with pytest.raises(ValueError, match="AblationCAM.*reshape_transform.*select"):
        bad = lambda t: tc.vit_reshape_transform(t) * 0.5  # noqa: E731
        tc.AblationCAM(tiny_vit(), VIT_LAYER, reshape_transform=bad).attribute(images(1), target=0)


@pytest.mark.parametrize("target, error, pattern", [
    ("cat", TypeError, "target must be"),
    ([1, 2, 3], ValueError, "target list has 3 entries but the batch has 2"),
    (10, ValueError, "target index 10 is out of range"),
    (torch.tensor([0.5, 1.0]), TypeError, "target tensor must hold integer"),
])
@pytest.mark.parametrize("name", ["GradCAM", "ScoreCAM", "AblationCAM"])
def test_wrong_targets(name, target, error, pattern):
    with pytest.raises(error, match=pattern):
        getattr(tc, name)(SmallNet(classes=10)).attribute(images(2, size=12), target=target)


def test_cam_target_problems():
    method = tc.CAM(SmallNet())
    with pytest.raises(TypeError, match="callable target"):
        method.attribute(images(1, size=12), target=lambda out: out[:, 0])
    with pytest.raises(ValueError, match="target class out of range for fc_layer 'fc'"):
        method.attribute(images(1, size=12), target=7)
    with pytest.raises(TypeError, match="fc_layer must be an nn.Linear"):
        tc.CAM(SmallNet(), fc_layer="pool")


@pytest.mark.parametrize("inputs, error", [
    (np.zeros((1, 3, 8, 8), dtype=np.float32), TypeError),
    (torch.zeros(3, 8, 8), ValueError),
    (torch.zeros(1, 3, 8, 8, dtype=torch.long), ValueError),
])
def test_inputs_must_be_an_image_batch(inputs, error):
    with pytest.raises(error, match="inputs must be"):
        tc.GradCAM(SmallNet()).attribute(inputs, target=0)


# --------------------------------------------------------------------------- the model is borrowed


def model_state(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [m.training for m in model.modules()],
        [len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()],
        [p.grad for p in model.parameters()],
    )


def assert_same(before, after):
    assert before[0].keys() == after[0].keys()
    for k in before[0]:
        assert torch.equal(before[0][k], after[0][k]), k
    assert before[1:] == after[1:]


@pytest.mark.parametrize("name", ALL)
def test_model_unchanged_after_success_and_error(name):
    model = SmallNet(norm=True).train()  # batch norm in training mode updates running statistics
    before = model_state(model)
    method = getattr(tc, name)(model)
    method.attribute(images(2, size=12), target=[0, 1])
    assert_same(before, model_state(model))
    with pytest.raises(ValueError):
        method.attribute(images(2, size=12), target=9)
    assert_same(before, model_state(model))
