"""The bundled digits model: a small CNN for scikit-learn's 8x8 digits, upsampled to 32x32.

Images are white strokes on a black background, scaled to [0, 1], resized to 32x32
(bilinear) and normalised with :data:`MEAN` / :data:`STD` (computed from the training
split by ``scripts/train_digits.py``). The held-out split is recreated exactly as
training made it: stratified, ``test_size=0.2``, ``random_state=0``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: side of the square images the model takes
SIZE = 32
#: mean and standard deviation of the training split's [0, 1] 32x32 pixels
MEAN = 0.305383
STD = 0.323652
#: how the held-out split is drawn (sklearn.model_selection.train_test_split, stratified)
TEST_SIZE = 0.2
SPLIT_SEED = 0
CLASS_NAMES = [str(d) for d in range(10)]
SPLITS = ("train", "test")


class DigitsNet(nn.Module):
    """Three 3x3 conv blocks, global average pooling and one linear layer (about 24k
    parameters). Every ReLU is its own module, so module hooks see each of them.

    ``features``: 0 conv(1, 16), 1 bn, 2 relu, 3 maxpool -> 16x16,
    4 conv(16, 32), 5 bn, 6 relu, 7 maxpool -> 8x8, 8 conv(32, 64), 9 bn, 10 relu.
    ``head``: 0 adaptive average pool, 1 flatten, 2 linear(64, 10).
    """

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def resize(images: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    """Bilinear resize of (N, C, H, W) images to ``size`` x ``size`` (antialiased when
    shrinking; the same as plain bilinear when enlarging)."""
    if tuple(images.shape[-2:]) == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def normalise(images01: torch.Tensor) -> torch.Tensor:
    return (images01 - MEAN) / STD


def digits_images(split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """Un-normalised [0, 1] images (N, 1, 32, 32) float32 and labels (N,) int64 of one
    split of ``sklearn.datasets.load_digits``. Needs scikit-learn."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {list(SPLITS)}, got {split!r}")
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as e:  # pragma: no cover - scikit-learn is an optional extra
        raise ImportError("digits_data needs scikit-learn (pip install scikit-learn)") from e
    data = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        data.images, data.target, test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=data.target
    )
    x, y = (x_train, y_train) if split == "train" else (x_test, y_test)
    images = torch.as_tensor(x, dtype=torch.float32).unsqueeze(1) / 16.0
    return resize(images), torch.as_tensor(y, dtype=torch.int64)
