"""Model specs and image loading behind the command line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from torchexplain.loading import (
    RANDOM_INIT_SEED,
    LoadError,
    RandomWeightsWarning,
    image_transform,
    load_image,
    load_model,
)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)
        self.fc = nn.Linear(2, 4)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def tiny():
    torch.manual_seed(0)
    return Tiny()


def test_torchscript_file(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.jit.script(tiny()).save(str(path))
    model, names, (size, mean, std, mode) = load_model(str(path))
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(model(x), tiny()(x))
    assert names is None and (size, mean, mode) == (224, None, "RGB")


def test_factory_spec_with_weights(tmp_path):
    reference = tiny()
    with torch.no_grad():
        reference.fc.bias.add_(1.0)
    torch.save(reference.state_dict(), tmp_path / "w.pt")
    model, _, _ = load_model(f"{__name__}:tiny", weights=tmp_path / "w.pt")
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(model(x), reference(x))
    assert not model.training


def test_torchvision_spec_has_imagenet_names():
    pytest.importorskip("torchvision")
    with pytest.warns(RandomWeightsWarning, match="weights are random"):
        model, names, (size, mean, std, mode) = load_model("torchvision:resnet18")
    assert len(names) == 1000 and names[0] == "tench" and size == 224 and mode == "RGB"
    assert model.fc.out_features == 1000


def test_torchvision_without_weights_is_the_same_seeded_model_every_time():
    torchvision = pytest.importorskip("torchvision")
    state = torch.random.get_rng_state()
    told = []
    first, _, _ = load_model("torchvision:squeezenet1_1", notify=told.append)
    second, _, _ = load_model("torchvision:squeezenet1_1", notify=told.append)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is untouched
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    torch.manual_seed(RANDOM_INIT_SEED)
    expected = torchvision.models.squeezenet1_1()
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), expected.state_dict().values()))
    assert len(told) == 2 and "random" in told[0] and "--weights" in told[0] and "IMAGENET1K_V1" in told[0]


@pytest.mark.parametrize(
    "spec, message",
    [("nosuch_module_xyz:f", "cannot load model factory"), ("torchvision:nosuchnet", "unknown torchvision model"),
     ("nothing", "unknown model spec")],
)
def test_bad_specs(spec, message):
    with pytest.raises(LoadError, match=message):
        load_model(spec)


def test_weights_mismatch_and_garbage(tmp_path):
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "bad.pt")
    with pytest.raises(LoadError, match="do not match the architecture"):
        load_model(f"{__name__}:tiny", weights=tmp_path / "bad.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(LoadError, match="cannot read weights"):
        load_model(f"{__name__}:tiny", weights=tmp_path / "junk.pt")


def test_image_transform_values(tmp_path):
    pixels = np.array([[[0, 128, 255], [255, 255, 255]], [[10, 20, 30], [0, 0, 0]]], dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    x = image_transform(2, [0.5, 0.5, 0.5], [0.5, 0.25, 0.5])(image)
    expected = (torch.tensor(pixels, dtype=torch.float32).permute(2, 0, 1) / 255 - 0.5) / torch.tensor([0.5, 0.25, 0.5]).view(3, 1, 1)
    torch.testing.assert_close(x, expected)
    gray = image_transform(2, None, None, "L")(image)
    assert gray.shape == (1, 2, 2) and float(gray[0, 0, 1]) == pytest.approx(255 / 255, abs=1e-6)
