"""The bundled digits model: held-out accuracy, shipped samples, loading and preprocessing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from torchexplain import models
from torchexplain.models import MEAN, STD, digits_data, load, sample_images

DATA = Path(models.__file__).parent / "data"
QUANTUM = 1 / 255


@pytest.fixture(scope="module")
def bundle():
    return load("digits")


@pytest.fixture(scope="module")
def heldout():
    return digits_data("test")


def unnormalise(x: torch.Tensor) -> torch.Tensor:
    return x * STD + MEAN


def test_heldout_accuracy(bundle, heldout):
    model, _, _ = bundle
    x, y = heldout
    assert x.shape == (360, 1, 32, 32) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and torch.equal(y.bincount(), torch.tensor([36, 36, 35, 37, 36, 37, 36, 36, 35, 36]))
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy >= 0.97


def test_split_is_the_sklearn_split_and_stats_match_training():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    _, x_test, _, y_test = train_test_split(data.images, data.target, test_size=0.2, random_state=0, stratify=data.target)
    x, y = digits_data("test")
    assert torch.equal(y, torch.as_tensor(y_test))
    # [0, 1] scaling then bilinear upsampling of the 8x8 images
    direct = F.interpolate(torch.as_tensor(x_test, dtype=torch.float32)[:, None] / 16, size=32, mode="bilinear", align_corners=False)
    torch.testing.assert_close(unnormalise(x), direct, atol=1e-5, rtol=0)
    x_train, y_train = digits_data("train")
    assert len(x_train) + len(x) == len(data.target) == 1797
    # MEAN / STD are the training split's statistics: normalised training pixels have mean 0, std 1
    assert abs(x_train.double().mean().item()) < 1e-5
    assert abs(x_train.double().std(unbiased=False).item() - 1) < 1e-5
    with pytest.raises(ValueError, match="split.*'train', 'test'.*'valid'"):
        digits_data("valid")


def test_samples_are_heldout_rows_and_predicted(bundle, heldout):
    model, preprocess, class_names = bundle
    x, y = heldout
    rows = json.loads((DATA / "digits_metrics.json").read_text())["sample_rows"]
    paths = sample_images()
    assert [p.name for p in paths] == [f"digit_{d}.png" for d in range(10)]
    for digit, path in enumerate(paths):
        with Image.open(path) as im:
            assert im.mode == "L" and im.size == (32, 32)
        t = preprocess(path)
        assert t.shape == (1, 32, 32)
        row = rows[str(digit)]
        assert y[row].item() == digit
        diff = (unnormalise(t) - unnormalise(x[row])).abs().max().item()
        assert diff <= QUANTUM / 2 + 1e-6, (digit, diff)
        with torch.no_grad():
            assert class_names[model(t.unsqueeze(0)).argmax(1).item()] == str(digit)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))])
def test_load_eval_device_and_names(device):
    model, preprocess, class_names = load("digits", device=device)
    assert isinstance(model, models.DigitsNet)
    assert not any(m.training for m in model.modules())
    assert {p.device.type for p in model.parameters()} | {b.device.type for b in model.buffers()} == {device}
    assert class_names == [str(d) for d in range(10)]
    x = preprocess(sample_images()[7])
    assert x.device.type == device and x.dtype == torch.float32
    with torch.no_grad():
        assert model(x.unsqueeze(0)).argmax().item() == 7


def test_weights_file_small_and_weights_only():
    path = DATA / "digits_cnn.pt"
    assert path.stat().st_size < 2 * 1024 * 1024
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert set(state) == set(models.DigitsNet().state_dict())


def test_every_relu_is_its_own_module_called_once(bundle):
    model, preprocess, _ = bundle
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 3 and len({id(m) for m in relus}) == 3
    calls = []
    handles = [m.register_forward_hook(lambda m, i, o: calls.append(m)) for m in relus]
    try:
        with torch.no_grad():
            model(preprocess(sample_images()[0]).unsqueeze(0))
    finally:
        for h in handles:
            h.remove()
    assert calls == relus


def test_unknown_name():
    with pytest.raises(ValueError, match="name.*'digits'.*'mnist'"):
        load("mnist")
    with pytest.raises(ValueError, match="name"):
        sample_images("mnist")


# ---- preprocess: every accepted form gives the same tensor ----

@pytest.fixture(scope="module")
def reference():
    """A held-out image as uint8 pixels, and what preprocess must return for it."""
    path = sample_images()[4]
    with Image.open(path) as im:
        pixels = np.array(im)
    expected = (torch.from_numpy(pixels).float()[None] / 255 - MEAN) / STD
    return path, pixels, expected


def forms(path: Path, pixels: np.ndarray):
    rgb = np.repeat(pixels[..., None], 3, axis=2)
    f = pixels.astype(np.float32) / 255
    return {
        "path str": str(path),
        "Path": path,
        "PIL L": Image.fromarray(pixels),
        "PIL RGB": Image.fromarray(rgb),
        "PIL RGBA": Image.fromarray(np.dstack([rgb, np.full_like(pixels, 255)])),
        "PIL LA": Image.fromarray(np.dstack([pixels, np.full_like(pixels, 255)])).convert("LA"),
        "PIL P": Image.fromarray(pixels).convert("P"),
        "PIL I;16": Image.fromarray(pixels.astype(np.uint16) * 257),
        "PIL F": Image.fromarray(f),
        "np HxW uint8": pixels,
        "np HxWx1 uint8": pixels[..., None],
        "np HxWx3 uint8": rgb,
        "np HxWx4 uint8": np.dstack([rgb, np.zeros_like(pixels)]),
        "np HxW float32": f,
        "np HxW float64": f.astype(np.float64),
        "np HxWx3 float": np.repeat(f[..., None], 3, axis=2),
        "np HxW uint16": pixels.astype(np.uint16) * 257,
        "torch HxW uint8": torch.from_numpy(pixels.copy()),
        "torch 1xHxW float": torch.from_numpy(f)[None],
        "torch 3xHxW uint8": torch.from_numpy(rgb.copy()).permute(2, 0, 1),
        "torch 1x1xHxW float": torch.from_numpy(f)[None, None],
        "torch float64 requires_grad": torch.from_numpy(f).double().requires_grad_(),
    }


@pytest.mark.parametrize("form", list(forms(Path("x"), np.zeros((2, 2), np.uint8))))
def test_preprocess_forms(bundle, reference, form):
    _, preprocess, _ = bundle
    path, pixels, expected = reference
    out = preprocess(forms(path, pixels)[form])
    assert out.shape == (1, 32, 32) and out.dtype == torch.float32 and not out.requires_grad
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_preprocess_colour_uses_luma_weights(bundle):
    _, preprocess, _ = bundle
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    gray = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255
    torch.testing.assert_close(preprocess(rgb)[0], torch.from_numpy((gray - MEAN) / STD).float(), atol=1e-5, rtol=0)
    # PIL's own conversion rounds to 8 bits: within one quantum
    pil = np.asarray(Image.fromarray(rgb).convert("L")) / 255
    assert np.abs(unnormalise(preprocess(rgb)[0]).numpy() - pil).max() <= QUANTUM


def test_preprocess_resizes(bundle):
    _, preprocess, _ = bundle
    # an 8x8 digit in [0, 1] is upsampled exactly as the training data was
    from sklearn.datasets import load_digits

    image8 = load_digits().images[0] / 16
    expected = F.interpolate(torch.as_tensor(image8, dtype=torch.float32)[None, None], size=32, mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(unnormalise(preprocess(image8)), expected, atol=1e-5, rtol=0)
    # shrinking is antialiased like PIL's bilinear resize
    rng = np.random.default_rng(1)
    big = rng.random((96, 80)).astype(np.float32)
    pil = np.asarray(Image.fromarray(big).resize((32, 32), Image.BILINEAR))
    assert np.abs(unnormalise(preprocess(big)[0]).numpy() - pil).max() < 1e-3
    # a constant image stays constant
    torch.testing.assert_close(unnormalise(preprocess(np.full((50, 70), 0.25))), torch.full((1, 32, 32), 0.25), atol=1e-6, rtol=0)


def test_preprocess_rejects_bad_input(bundle, tmp_path):
    _, preprocess, _ = bundle
    missing = tmp_path / "nowhere" / "digit.png"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        preprocess(str(missing))
    not_image = tmp_path / "notes.png"
    not_image.write_text("not an image")
    with pytest.raises(ValueError, match="notes.png"):
        preprocess(not_image)
    with pytest.raises(TypeError, match="image.*list"):
        preprocess([[0, 1], [1, 0]])
    bad = {
        "float.*\\[0, 1\\].*16": np.full((8, 8), 16.0),
        "finite": np.full((8, 8), np.nan),
        "numpy array \\(H, W\\)": np.zeros((1, 1, 8, 8)),
        "channels": np.zeros((8, 8, 5), np.uint8),
        "dtype.*int64": np.zeros((8, 8), np.int64),
        "non-empty": np.zeros((0, 8), np.uint8),
        "tensor \\(H, W\\)": torch.zeros(2, 1, 8, 8),
        "channels.*\\(5, 8, 8\\)": torch.zeros(5, 8, 8),
    }
    for message, image in bad.items():
        with pytest.raises(ValueError, match="image: .*" + message):
            preprocess(image)
