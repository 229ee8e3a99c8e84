"""Writes the names of ImageNet-1k's 1000 classes, in class-index order, one a line, to
src/torchexplain/nbdt/data/imagenet_classes.txt, so that torchexplain.nbdt ships them
offline. The names are read from the installed torchvision (the categories of its
pretrained weights' metadata); run it from the project's root after upgrading torchvision:

    .venv/bin/python scripts/write_imagenet_classes.py
"""

from __future__ import annotations

from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "src" / "torchexplain" / "nbdt" / "data" / "imagenet_classes.txt"


def main() -> None:
    import torchvision

    names = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    if len(names) != 1000 or any("\n" in n for n in names):
        raise SystemExit(f"unexpected ImageNet categories from torchvision {torchvision.__version__}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(names) + "\n")
    print(f"wrote {len(names)} names to {OUT}")


if __name__ == "__main__":
    main()
