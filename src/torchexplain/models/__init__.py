"""Bundled models, shipped with the package and loaded offline (nothing is downloaded).

>>> model, preprocess, class_names = load("digits")
>>> x = preprocess(sample_images()[3])          # (1, 32, 32), normalised
>>> class_names[model(x.unsqueeze(0)).argmax().item()]
'3'

``digits``: :class:`DigitsNet`, a small CNN trained by ``scripts/train_digits.py`` on
scikit-learn's 8x8 digits upsampled to 32x32 (white strokes on black).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .digits import CLASS_NAMES, MEAN, SIZE, STD, DigitsNet, digits_images, normalise
from .preprocess import Preprocess

DATA_DIR = Path(__file__).resolve().parent / "data"
_WEIGHTS = {"digits": "digits_cnn.pt"}
NAMES = tuple(_WEIGHTS)

__all__ = ["MEAN", "STD", "NAMES", "DigitsNet", "Preprocess", "load", "sample_images", "digits_data"]


def _check_name(name) -> None:
    if name not in _WEIGHTS:
        raise ValueError(f"name: expected one of {list(NAMES)}, got {name!r}")


def load(name: str = "digits", device: torch.device | str = "cpu") -> tuple[nn.Module, Preprocess, list[str]]:
    """``(model, preprocess, class_names)`` for a bundled model: the model in eval mode
    on ``device``; ``preprocess(image)`` turns a PIL image, a path, a NumPy array or a
    tensor into the normalised (1, 32, 32) tensor the model takes, on ``device``."""
    _check_name(name)
    device = torch.device(device)
    model = DigitsNet()
    state = torch.load(DATA_DIR / _WEIGHTS[name], map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.to(device).eval()
    return model, Preprocess(MEAN, STD, SIZE, device), list(CLASS_NAMES)


def sample_images(name: str = "digits") -> list[Path]:
    """The shipped held-out sample images (one 32x32 8-bit grayscale PNG per class),
    sorted by digit."""
    _check_name(name)
    return [DATA_DIR / f"digit_{d}.png" for d in range(len(CLASS_NAMES))]


def digits_data(split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """``(X, y)`` of the digits split used in training (``"train"`` or the held-out
    ``"test"``): X normalised float32 (N, 1, 32, 32), y int64 (N,). Needs scikit-learn."""
    images, labels = digits_images(split)
    return normalise(images), labels
