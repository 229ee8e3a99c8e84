"""Loading what the command line names: model specs and image files, with one-line
errors for everything a user can get wrong."""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: the seed of a torchvision model's random initialisation when no weights are given,
#: so that every run (explain, evaluate, nbdt) sees the same model
RANDOM_INIT_SEED = 0


class RandomWeightsWarning(UserWarning):
    """A model was built without trained weights (randomly initialised, seeded)."""


class LoadError(ValueError):
    """A model, weights file or image that cannot be used; the message is one line."""


class ImageNotFound(LoadError, FileNotFoundError):
    """An image path that does not exist (both a LoadError and a FileNotFoundError)."""


def load_image(path):
    """Open an image file with Pillow, fully decoded, or raise :class:`LoadError`."""
    path = Path(path)
    if not path.exists():
        raise ImageNotFound(f"image not found: {path}")
    if not path.is_file():
        raise LoadError(f"not a file: {path}")
    try:
        return decode_image(path)
    except NotAnImage:
        raise LoadError(f"not an image file: {path}") from None
    except LoadError as err:
        raise LoadError(f"cannot read image {path}: {err}") from None


class NotAnImage(LoadError):
    """Data that Pillow does not recognise as any image format."""


def decode_image(source):
    """A file path or file-like object decoded whole by Pillow (a PIL image, detached
    from ``source``): :class:`NotAnImage` when it is no image format, :class:`LoadError`
    (the decoder's message) when it is one but cannot be decoded (e.g. truncated)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source) as image:
            image.load()
            return image.copy()
    except UnidentifiedImageError:
        raise NotAnImage("not an image") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise LoadError(str(err)) from None


def image_transform(
    size: int, mean: Sequence[float] | None, std: Sequence[float] | None, mode: str = "RGB"
) -> Callable:
    """PIL image -> normalised float tensor (C, size, size)."""
    import numpy as np
    from PIL import Image

    def transform(image) -> Tensor:
        image = image.convert(mode).resize((size, size), Image.BILINEAR)
        array = np.asarray(image, dtype=np.float32) / 255.0
        x = torch.from_numpy(array).reshape(size, size, -1).permute(2, 0, 1).contiguous()
        if mean is not None:
            x = (x - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)
        return x

    return transform


def _load_state(model: nn.Module, weights: str | Path, spec: str) -> None:
    path = Path(weights)
    if not path.is_file():
        raise LoadError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (any unreadable file is one message)
        raise LoadError(f"cannot read weights {path}: {type(err).__name__}: {str(err).splitlines()[0]}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise LoadError(f"weights {path} do not match the architecture of {spec}: {first}") from None


def _torchvision(name: str, weights, spec: str, notify: Callable[[str], None]):
    try:
        import torchvision
    except ImportError:
        raise LoadError("torchvision is not installed; pip install 'torchexplain[vision]'") from None
    if name not in torchvision.models.list_models():
        raise LoadError(f"unknown torchvision model {name!r} in {spec}")
    enum = torchvision.models.get_model_weights(name)
    categories = next((w.meta.get("categories") for w in enum if w.meta.get("categories")), None)
    if weights is not None and not Path(weights).exists() and str(weights).split(".")[-1] in enum.__members__:
        try:  # a weights enum name: downloads, only because the user asked for it
            model = torchvision.models.get_model(name, weights=enum[str(weights).split(".")[-1]])
        except Exception as err:  # noqa: BLE001
            raise LoadError(f"cannot fetch torchvision weights {weights}: {str(err).splitlines()[0]}") from None
    elif weights is not None:
        model = torchvision.models.get_model(name, weights=None)
        _load_state(model, weights, spec)
    else:
        with torch.random.fork_rng(devices=[]):  # the caller's global RNG is left as it was
            torch.manual_seed(RANDOM_INIT_SEED)
            model = torchvision.models.get_model(name, weights=None)
        default = getattr(enum, "DEFAULT", None)
        hint = f" or a torchvision weights name ({default.name})" if default is not None else ""
        notify(
            f"{spec} has no weights: its weights are random (seeded with {RANDOM_INIT_SEED}, the same on every "
            f"run), so its explanations say nothing about a trained model; pass --weights FILE{hint}"
        )
    return model, categories


def _warn(message: str) -> None:
    warnings.warn(message, RandomWeightsWarning, stacklevel=4)


def load_model(spec: str, weights=None, device: str = "cpu", notify: Callable[[str], None] | None = None):
    """``(model, class_names, default preprocessing)`` for a model spec: ``digits``,
    ``torchvision:NAME``, a TorchScript file, or ``package.module:factory``. The
    preprocessing is ``(size, mean, std, mode)``.

    A torchvision model without ``weights`` is randomly initialised from a fixed seed
    (:data:`RANDOM_INIT_SEED`), so every call builds the same model; ``notify(message)``
    is told so (default: a :class:`RandomWeightsWarning`)."""
    from . import models

    if spec == "digits":
        model, _, names = models.load("digits", device=device)
        if weights is not None:
            _load_state(model, weights, spec)
        return model.eval(), names, (32, models.MEAN, models.STD, "L")
    if spec.startswith("torchvision:"):
        model, names = _torchvision(spec.split(":", 1)[1], weights, spec, notify or _warn)
        return model.eval().to(device), names, (224, IMAGENET_MEAN, IMAGENET_STD, "RGB")
    if Path(spec).is_file():
        try:
            model = torch.jit.load(spec, map_location=device)
        except Exception as err:  # noqa: BLE001
            raise LoadError(f"{spec} is not a TorchScript file: {str(err).splitlines()[0]}") from None
        return model.eval(), None, (224, None, None, "RGB")
    if ":" in spec and not spec.startswith(("/", ".")):
        module_name, factory = spec.split(":", 1)
        try:
            model = getattr(importlib.import_module(module_name), factory)()
        except (ImportError, AttributeError) as err:
            raise LoadError(f"cannot load model factory {spec}: {err}") from None
        if not isinstance(model, nn.Module):
            raise LoadError(f"{spec} returned {type(model).__name__}, not an nn.Module")
        if weights is not None:
            _load_state(model, weights, spec)
        return model.eval().to(device), None, (224, None, None, "RGB")
    raise LoadError(
        f"unknown model spec {spec!r}: use 'digits', 'torchvision:NAME', a TorchScript file or 'package.module:factory'"
    )
