"""Regenerate the README's pictures from the bundled digits model (what `torchexplain demo` shows)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402

import torchexplain  # noqa: E402
from torchexplain import models  # noqa: E402
from torchexplain.explanation import figure_png  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "docs"


def main() -> None:
    torch.manual_seed(0)
    model, preprocess, names = models.load("digits")
    paths = [models.sample_images()[i] for i in (2, 5, 8)]
    x = torch.stack([preprocess(p) for p in paths])
    result = torchexplain.explain(model, x, method=torchexplain.available_methods(), class_names=names,
                                  mean=models.MEAN, std=models.STD)
    OUT.mkdir(exist_ok=True)
    (OUT / "gradient_methods.png").write_bytes(figure_png(result.plot()))


if __name__ == "__main__":
    main()
