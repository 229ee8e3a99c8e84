"""nbdt's helpers, as nbdt's readers type them: ``DATASET_TO_CLASSES`` and
``load_image_from_path``.

The class names of CIFAR10, CIFAR100 and ImageNet (``"Imagenet1000"``, nbdt's name,
or ``"ImageNet"``) ship with the package: nothing is downloaded. ImageNet's 1000
names, in class-index order, are the data file ``data/imagenet_classes.txt`` (written
by ``scripts/write_imagenet_classes.py``), read on first use.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

#: CIFAR-100's fine labels, in label order (alphabetical)
CIFAR100_CLASSES = tuple("""
apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can castle
caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin elephant flatfish
forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle
mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine
possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake spider squirrel streetcar
sunflower sweet_pepper table tank telephone television tiger tractor train trout tulip turtle wardrobe whale
willow_tree wolf woman worm
""".split())

IMAGENET_FILE = Path(__file__).resolve().parent / "data" / "imagenet_classes.txt"


@lru_cache(maxsize=1)
def _imagenet() -> list[str]:
    names = IMAGENET_FILE.read_text().splitlines()
    if len(names) != 1000:
        raise RuntimeError(f"{IMAGENET_FILE} holds {len(names)} names, not ImageNet's 1000; reinstall torchexplain")
    return names


class _DatasetClasses(Mapping):
    """dataset name -> list of class names (a fresh list each time, so callers may edit it)."""

    _known = {"CIFAR10": lambda: list(CIFAR10_CLASSES), "CIFAR100": lambda: list(CIFAR100_CLASSES),
              "Imagenet1000": lambda: list(_imagenet()), "ImageNet": lambda: list(_imagenet())}

    def __getitem__(self, name):
        if name not in self._known:
            raise KeyError(f"no class names for dataset {name!r}; known: {', '.join(self._known)}")
        return self._known[name]()

    def __iter__(self):
        return iter(self._known)

    def __len__(self) -> int:
        return len(self._known)

    def __repr__(self) -> str:
        return f"DATASET_TO_CLASSES({', '.join(self._known)})"


#: ``DATASET_TO_CLASSES["CIFAR10"]`` -> the 10 names in label order; also "CIFAR100",
#: "Imagenet1000" (nbdt's name for ImageNet-1k) and "ImageNet"
DATASET_TO_CLASSES: Mapping[str, list[str]] = _DatasetClasses()

DATASET_TO_NUM_CLASSES = {"CIFAR10": 10, "CIFAR100": 100, "Imagenet1000": 1000, "ImageNet": 1000}


def dataset_classes(dataset: str) -> list[str]:
    """The class names of ``dataset``, or a ValueError naming the known ones."""
    if not isinstance(dataset, str) or dataset not in DATASET_TO_CLASSES:
        raise ValueError(
            f"dataset must be one of {', '.join(map(repr, DATASET_TO_CLASSES))} (their class names ship with "
            f"torchexplain); got {dataset!r}. For another dataset pass classes=[names...] instead"
        )
    return DATASET_TO_CLASSES[dataset]


def load_image_from_path(path):
    """A PIL image from a local path or an ``http(s)://`` / ``file://`` URL (nbdt's
    helper). A URL is fetched only because it was asked for; when it cannot be, the
    error says so and names the URL."""
    from ..loading import LoadError, load_image

    text = str(path)
    if not text.startswith(("http://", "https://", "file://")):
        return load_image(path)
    import io
    import urllib.request

    from PIL import Image, UnidentifiedImageError

    try:
        with urllib.request.urlopen(text, timeout=30) as response:  # noqa: S310 - the caller's own URL
            data = response.read()
    except (OSError, ValueError) as err:
        raise LoadError(f"cannot fetch image {text}: {err}; download it and pass its local path") from None
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.copy()
    except (UnidentifiedImageError, OSError) as err:
        raise LoadError(f"{text} is not an image file: {err}") from None
