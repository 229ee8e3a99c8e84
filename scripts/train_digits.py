"""Train the bundled digits CNN, reproducibly, on CPU, offline.

    python scripts/train_digits.py            # writes src/torchexplain/models/data/*

Data: scikit-learn's bundled ``load_digits`` (8x8, values 0..16), scaled to [0, 1],
upsampled to 32x32 (bilinear) and normalised with the MEAN / STD hard-coded in
``torchexplain.models.digits`` (checked here against the training split). Split:
stratified 80/20, ``random_state=0``. Fixed seed, deterministic algorithms, one thread (about 15 s).

Writes the weights (a weights-only state dict), one held-out PNG per digit (the
un-normalised 32x32 image as 8-bit gray) and ``digits_metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from torchexplain.models import DATA_DIR, Preprocess
from torchexplain.models.digits import MEAN, SIZE, SPLIT_SEED, STD, TEST_SIZE, DigitsNet, digits_images, normalise

SEED = 0
EPOCHS = 30
BATCH = 32
LR = 3e-3
WEIGHT_DECAY = 1e-4
MIN_ACCURACY = 0.97


def check_stats(train01: torch.Tensor) -> None:
    mean, std = train01.double().mean().item(), train01.double().std(unbiased=False).item()
    print(f"training split pixels: mean {mean:.6f}, std {std:.6f} (hard-coded: {MEAN}, {STD})")
    if abs(mean - MEAN) > 1e-6 or abs(std - STD) > 1e-6:
        sys.exit("MEAN / STD in torchexplain/models/digits.py do not match the training split: update them")


def shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random translation of each image by up to ``max_shift`` pixels (zero background)."""
    n = x.shape[0]
    padded = F.pad(x, [max_shift] * 4)
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2, n), generator=gen)
    size = x.shape[-1]
    return torch.stack([padded[i, :, dy[i] : dy[i] + size, dx[i] : dx[i] + size] for i in range(n)])


def train(x: torch.Tensor, y: torch.Tensor, epochs: int) -> DigitsNet:
    gen = torch.Generator().manual_seed(SEED)
    model = DigitsNet()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    steps = epochs * ((len(x) + BATCH - 1) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for start in range(0, len(x), BATCH):
            idx = order[start : start + BATCH]
            xb = normalise(shift(x[idx], gen))
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if epoch % 5 == 4 or epoch == epochs - 1:
            print(f"epoch {epoch + 1:3d}  loss {total / len(x):.4f}")
    return model.eval()


def write_samples(model, x_test01: torch.Tensor, y_test: torch.Tensor, out: Path) -> dict[str, int]:
    """Per digit, the first held-out image that the model classifies correctly after the
    8-bit PNG round trip; returns {digit: row of the held-out split}."""
    preprocess = Preprocess(MEAN, STD, SIZE)
    rows = {}
    with torch.no_grad():
        for digit in range(10):
            for row in torch.nonzero(y_test == digit).flatten().tolist():
                pixels = np.round(x_test01[row, 0].numpy() * 255).astype(np.uint8)
                if model(preprocess(pixels).unsqueeze(0)).argmax().item() == digit:
                    Image.fromarray(pixels).save(out / f"digit_{digit}.png", format="PNG")
                    rows[str(digit)] = row
                    break
            else:
                sys.exit(f"no held-out image of digit {digit} is classified correctly")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="output folder (default: the package's data folder)")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    args = parser.parse_args()

    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # bitwise reproducible; a tiny net gains nothing from more

    x_train, y_train = digits_images("train")
    x_test, y_test = digits_images("test")
    check_stats(x_train)

    start = time.perf_counter()
    model = train(x_train, y_train, args.epochs)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        accuracy = (model(normalise(x_test)).argmax(1) == y_test).float().mean().item()
    print(f"trained {args.epochs} epochs in {seconds:.1f} s; held-out accuracy {accuracy:.4f} ({len(y_test)} images)")
    if accuracy < MIN_ACCURACY:
        sys.exit(f"held-out accuracy {accuracy:.4f} is below {MIN_ACCURACY}: nothing written")

    args.out.mkdir(parents=True, exist_ok=True)
    weights = args.out / "digits_cnn.pt"
    torch.save(model.state_dict(), weights)
    rows = write_samples(model, x_test, y_test, args.out)
    metrics = {
        "accuracy": round(accuracy, 6),
        "correct": int(round(accuracy * len(y_test))),
        "n_test": len(y_test),
        "n_train": len(y_train),
        "seed": SEED,
        "split": {"function": "sklearn.model_selection.train_test_split", "test_size": TEST_SIZE,
                  "random_state": SPLIT_SEED, "stratify": True},
        "epochs": args.epochs,
        "batch_size": BATCH,
        "optimizer": f"AdamW(lr={LR}, weight_decay={WEIGHT_DECAY}), OneCycleLR",
        "augmentation": "random shifts of up to 2 pixels",
        "mean": MEAN,
        "std": STD,
        "sample_rows": rows,
        "torch": torch.__version__.split("+")[0],
    }
    (args.out / "digits_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"wrote {weights} ({weights.stat().st_size / 1024:.0f} KiB), 10 PNGs and digits_metrics.json to {args.out}")


if __name__ == "__main__":
    main()
