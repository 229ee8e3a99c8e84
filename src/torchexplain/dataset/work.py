"""The work of a dataset run, written once: :class:`Job` (everything a worker needs,
plain data that travels to Ray actors) and :class:`Worker` (the model and methods
built from a job): ``decode(item)`` turns an :class:`~.sources.Item` into an input
tensor, ``explain_batch(items, x)`` turns a batch into result rows, and ``run`` does
both for a list of items, setting aside the examples that fail. Both engines call it.

Values do not depend on how examples are batched: a method that draws random samples
(it takes ``seed`` or ``generator``) or whose defaults look at the whole batch
(``deeplift_shap``/``gradient_shap`` baselines) runs example by example, seeded from
the run's seed, the method's name and the example's id (:func:`example_seed`); the
others run on the whole batch. So a resumed run, or another engine, gives the same rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from . import schema
from .rows import method_fields, prediction_fields
from .sources import Item

#: methods whose one-call defaults depend on the other examples of the batch
BATCH_DEFAULTS = ("deeplift_shap", "gradient_shap")
#: methods that cannot run one example at a time (their values need a batch)
BATCH_ONLY = ("feature_permutation",)


class ExampleError(Exception):
    """An example that cannot be explained: ``stage`` (read, decode, explain) and a message."""

    def __init__(self, stage: str, message: str):
        super().__init__(message)
        self.stage = stage


@dataclass
class Job:
    """What a worker needs, as plain data: the model spec (and weights file), the
    device, the canonical method names and their keyword arguments, the target, the
    preprocessing ``{size, mean, std, mode}``, the class names and the output options."""

    model: str
    weights: str | None = None
    device: str = "cpu"
    methods: list = field(default_factory=lambda: ["integrated_gradients"])
    method_kwargs: dict = field(default_factory=dict)
    target: object = "top1"
    preprocess: dict = field(default_factory=dict)
    class_names: list | None = None
    top_k: int = 10
    thumb: int = 16
    store: str = "summary"
    seed: int = 0


def example_seed(seed: int, method: str, ident: str) -> int:
    """The seed of one example's draws for one method (a 31-bit int from SHA-256)."""
    digest = hashlib.sha256(f"{seed}/{method}/{ident}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _draw_params(call) -> set[str]:
    """Which of ``seed`` and ``generator`` the method's ``attribute`` names."""
    import inspect

    return {"seed", "generator"} & set(inspect.signature(call.method.attribute).parameters)


def per_example(call) -> bool:
    """Whether a method call must run one example at a time (see the module's doc)."""
    return bool(_draw_params(call)) or call.spec.name in BATCH_DEFAULTS


def check_methods(specs: list) -> list:
    """``specs``, unless one cannot run on a dataset (a ValueError naming it)."""
    bad = [s.name for s in specs if s.name in BATCH_ONLY]
    if bad:
        raise ValueError(
            f"method {bad[0]} shuffles features across the batch, so its values depend on which examples "
            "share a batch; explain_dataset cannot use it"
        )
    return specs


def _finite(x: Tensor) -> Tensor:
    if not torch.isfinite(x).all():
        raise ExampleError("decode", "the input has NaN or infinite values")
    return x


class Worker:
    """A job's model and methods, built once (``model``: an nn.Module to use instead
    of loading the job's spec; the local engine only)."""

    def __init__(self, job: Job, model=None):
        from ..loading import image_transform, load_model
        from ..methods import method_calls, resolve

        self.job = job
        if model is None:
            model, _, _ = load_model(job.model, job.weights, job.device, notify=lambda message: None)
        self.model = model
        pre = job.preprocess
        self.transform = image_transform(pre["size"], pre.get("mean"), pre.get("std"), pre.get("mode", "RGB")) \
            if pre.get("size") else None
        self.mode = pre.get("mode", "RGB")
        specs = check_methods([resolve(m) for m in job.methods])
        self.calls = method_calls(specs, model, job.method_kwargs)

    # -- decoding ------------------------------------------------------------------------
    def decode(self, item: Item) -> Tensor:
        """The model's input for one example, (C, H, W) on the CPU; an
        :class:`ExampleError` when it cannot be read or is not a usable image."""
        if item.data is None:
            return _finite(self._image(self._read(item.path)))
        return _finite(self._memory(item.data))

    @staticmethod
    def _read(path) -> bytes:
        if path is None:
            raise ExampleError("read", "the example has neither data nor a path")
        try:
            data = Path(path).read_bytes()
        except OSError as err:
            raise ExampleError("read", f"cannot read {path}: {err.strerror or err}") from None
        if not data:
            raise ExampleError("read", f"{path} is an empty file")
        return data

    def _image(self, data) -> Tensor:
        from ..loading import LoadError, NotAnImage, decode_image

        try:
            image = decode_image(io.BytesIO(data) if isinstance(data, bytes) else data)
        except NotAnImage:
            raise ExampleError("decode", "not an image file") from None
        except LoadError as err:
            raise ExampleError("decode", f"cannot decode the image: {err}") from None
        return self._pil(image)

    def _pil(self, image) -> Tensor:
        if self.transform is None:
            from ..loading import image_transform

            side = image.size
            if side[0] != side[1]:
                raise ExampleError("decode", f"image is {side[0]}x{side[1]}; give a size to resize images to")
            return image_transform(side[0], None, None, self.mode)(image)
        return self.transform(image)

    def _memory(self, data) -> Tensor:
        import numpy as np
        from PIL import Image

        if isinstance(data, Image.Image):
            return self._pil(data)
        if isinstance(data, np.ndarray) and data.dtype == np.uint8:
            try:
                return self._pil(Image.fromarray(data))
            except (TypeError, ValueError) as err:
                message = f"cannot take a uint8 array of shape {data.shape} as an image: {err}"
                raise ExampleError("decode", message) from None
        if isinstance(data, np.ndarray):
            data = torch.from_numpy(data)
        if not isinstance(data, Tensor):
            raise ExampleError("decode", f"expected a tensor, an array or a PIL image; got {type(data).__name__}")
        x = data.detach().cpu().float()
        if x.dim() == 2:
            x = x.unsqueeze(0)
        if x.dim() != 3:
            raise ExampleError("decode", f"expected a (C, H, W) image tensor; got shape {tuple(data.shape)}")
        return x

    # -- explaining ----------------------------------------------------------------------
    def run(self, decoded: list[tuple[Item, Tensor]]) -> tuple[list[dict], list[tuple[Item, str, str]]]:
        """Rows of every decodable example and (item, stage, message) of the others.
        A batch whose explanation fails is retried example by example, so that one bad
        example does not take its batch with it. Examples of different shapes run in
        separate batches."""
        rows, failed = [], []
        groups: dict[tuple, list] = {}
        for item, x in decoded:
            groups.setdefault(tuple(x.shape), []).append((item, x))
        for group in groups.values():
            try:
                rows += self.explain_batch([i for i, _ in group], torch.stack([x for _, x in group]))
                continue
            except Exception as err:  # noqa: BLE001  (retried below, example by example)
                if len(group) == 1:
                    failed.append((group[0][0], "explain", _message(err)))
                    continue
            for item, x in group:
                try:
                    rows += self.explain_batch([item], x.unsqueeze(0))
                except Exception as err:  # noqa: BLE001
                    failed.append((item, "explain", _message(err)))
        return rows, failed

    def explain_batch(self, items: list[Item], x: Tensor) -> list[dict]:
        """The rows of a batch: one per (example, target class), with the prediction
        columns and each method's summary (:mod:`torchexplain.dataset.rows`)."""
        from ..core.hooks import model_guard
        from ..core.targets import class_targets

        job = self.job
        x = x.to(job.device)
        with model_guard(self.model), torch.no_grad():
            outputs = self.model(x)
        if not isinstance(outputs, Tensor) or outputs.dim() != 2:
            raise ValueError("explain_dataset needs a classifier returning (N, classes) scores")
        examples, classes = class_targets(job.target, outputs, job.class_names)
        rows = [prediction_fields(items[int(e)], outputs[int(e)], int(c), tuple(x.shape[1:]), job.thumb)
                for e, c in zip(examples, classes)]
        inputs, classes = x[examples.to(x.device)], classes.to(x.device)
        for call in self.calls:
            maps, deltas, seconds = self._attribute(call, items, examples, inputs, classes)
            for r, row in enumerate(rows):
                row.update(method_fields(call.spec.name, maps[r], deltas[r], seconds[r], tuple(x.shape[1:]),
                                         job.top_k, job.thumb, job.store == "full"))
        return rows

    def _attribute(self, call, items, examples: Tensor, inputs: Tensor, classes: Tensor):
        """(maps, deltas, seconds per row) of one method over the batch's rows."""
        if not per_example(call):
            done = call(inputs, classes, delta=True)
            each = done.seconds / len(inputs)
            return _maps(done.attributions), _deltas(done.delta, len(inputs)), [each] * len(inputs)
        maps, deltas, seconds = [None] * len(inputs), [None] * len(inputs), [0.0] * len(inputs)
        for e in examples.unique().tolist():
            where = (examples == e).nonzero().flatten().tolist()
            draw = _draw_kwargs(call, example_seed(self.job.seed, call.spec.name, items[e].id))
            done = dataclasses.replace(call, kwargs={**call.kwargs, **draw})(
                inputs[where], classes[where], delta=True)
            got, dl = _maps(done.attributions), _deltas(done.delta, len(where))
            for j, r in enumerate(where):
                maps[r], deltas[r], seconds[r] = got[j], dl[j], done.seconds / len(where)
        return maps, deltas, seconds


def _draw_kwargs(call, seed: int) -> dict:
    takes = _draw_params(call)
    if "seed" in takes:
        return {"seed": seed, **({"generator": None} if "generator" in takes else {})}
    if "generator" in takes:
        return {"generator": torch.Generator().manual_seed(seed)}
    torch.manual_seed(seed)  # a batch-dependent method without its own generator
    return {}


def _maps(attributions) -> Tensor:
    if isinstance(attributions, tuple):
        if len(attributions) != 1:
            raise ValueError("explain_dataset takes one input tensor per example")
        attributions = attributions[0]
    return attributions.detach().float().cpu()


def _deltas(delta, n: int) -> list:
    if delta is None:
        return [None] * n
    values = torch.as_tensor(delta).detach().double().cpu().reshape(-1)
    return values.tolist() if values.numel() == n else [float(values.sum())] * n


def _message(err: Exception) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def rows_table(rows: list[dict], methods, store: str):
    """Rows (dicts) as a pyarrow Table of the shard schema."""
    import pyarrow as pa

    return pa.Table.from_pylist(rows, schema=schema.arrow_schema(methods, store))
