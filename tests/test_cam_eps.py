"""GradCAM++'s ``eps``: with pytorch-grad-cam's 1e-6 in the alpha denominator the
maps are pytorch-grad-cam's; the default (0, the formula exactly) differs from them."""

from __future__ import annotations

import pytest
import torch
from test_cam import images, peer, resnet18

import torchexplain.cam as tc
from torchexplain.cam.base import min_max


@pytest.mark.slow
def test_gradcam_plus_plus_eps_matches_pytorch_grad_cam_after_min_max():
    model, x, target = resnet18(), images(2), [3, 8]
    theirs = min_max(peer("GradCAMPlusPlus", model, "layer3", x, target))
    matched = tc.GradCAMPlusPlus(model, "layer3", eps=1e-6).attribute(x, target=target)
    exact = tc.GradCAMPlusPlus(model, "layer3").attribute(x, target=target)
    assert matched.shape == (2, 1, 64, 64) and float(theirs.std()) > 0.1
    torch.testing.assert_close(min_max(matched[:, 0]), theirs, rtol=0, atol=1e-5)
    # the default is the formula without eps: visibly different where alphas' denominators are small
    assert float((min_max(exact[:, 0]) - theirs).abs().max()) > 1e-3


def test_gradcam_plus_plus_eps_is_checked():
    with pytest.raises(ValueError, match="eps must be a non-negative number"):
        tc.GradCAMPlusPlus(resnet18(), "layer3", eps=-1.0)
