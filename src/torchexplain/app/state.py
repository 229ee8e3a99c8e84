"""What the app serves: the models named on the command line (loaded once, each with a
lock, since methods hook into a model while they run) and the images the browser sent
or picked, held in memory by id (uploads are decoded as images and nothing else)."""

from __future__ import annotations

import io
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

from torch import nn

#: upload size limit by default (bytes)
MAX_UPLOAD = 20 * 1024 * 1024


class AppError(ValueError):
    """A request the app refuses: ``status`` (4xx) and a one-line message."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class ServedModel:
    """A model of the app: its name (the spec), module, class names and preprocessing."""

    name: str
    module: nn.Module
    class_names: list | None
    size: int
    mean: list | None
    std: list | None
    mode: str
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def transform(self):
        from ..loading import image_transform

        return image_transform(self.size, self.mean, self.std, self.mode)

    def info(self) -> dict:
        return {"name": self.name, "classes": len(self.class_names) if self.class_names else None,
                "class_names": self.class_names, "size": self.size, "mode": self.mode}


def load_models(specs, weights=None, device: str = "cpu", labels=None, notify=None) -> dict[str, ServedModel]:
    """The served models by name, from specs (``weights``/``labels``: for the first one)."""
    from ..loading import load_model

    served = {}
    for i, spec in enumerate(specs):
        module, names, (size, mean, std, mode) = load_model(spec, weights if i == 0 else None, device, notify=notify)
        if i == 0 and labels is not None:
            names = list(labels)
        served[spec] = ServedModel(spec, module, names, size, _floats(mean), _floats(std), mode)
    return served


def _floats(values) -> list | None:
    if values is None:
        return None
    return [float(v) for v in values] if isinstance(values, (list, tuple)) else [float(values)]


class Images:
    """Images by id (the most recent ``keep``): samples and uploads, as PIL images."""

    def __init__(self, keep: int = 256):
        self._images: OrderedDict[str, tuple] = OrderedDict()
        self._lock = threading.Lock()
        self.keep = keep

    def add(self, image, name: str, ident: str | None = None) -> str:
        ident = ident or uuid.uuid4().hex
        with self._lock:
            self._images[ident] = (image, name)
            while len(self._images) > self.keep:
                self._images.popitem(last=False)
        return ident

    def get(self, ident: str):
        with self._lock:
            found = self._images.get(ident)
        if found is None:
            raise AppError(f"unknown image {ident!r}: upload it or pick a sample", 404)
        return found

    def decode(self, data: bytes, name: str, limit: int = MAX_UPLOAD) -> str:
        """Decode an upload as an image (nothing else is accepted) and keep it."""
        from ..loading import LoadError, NotAnImage, decode_image

        if not data:
            raise AppError("the upload is empty")
        if len(data) > limit:
            raise AppError(f"the upload is {len(data)} bytes; the limit is {limit}", 413)
        try:
            image = decode_image(io.BytesIO(data))
        except NotAnImage:
            raise AppError("the upload is not an image", 415) from None
        except LoadError as err:
            raise AppError(f"cannot decode the image: {err}", 415) from None
        return self.add(image, name)

    def png(self, ident: str) -> bytes:
        image, _ = self.get(ident)
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        return buffer.getvalue()
