"""The forward adapter: call the model, pick its output, reduce it to the explained values.

Rows are the expanded evaluations of a method (examples x steps / samples). Each row
knows its example index, which selects that example's extra arguments and target
(:mod:`.targets`). The adapter is immutable: :meth:`ForwardAdapter.with_target` and
:meth:`ForwardAdapter.with_forward` return changed copies.

A model may also return one value for the whole batch (a loss: a Python number, a
0-d or one-element tensor) or an output whose first dimension is not the batch;
the perturbation methods evaluate such models one whole perturbed batch at a time,
and :meth:`ForwardAdapter.batch_target` reads their outputs. A model may return a
``torch.futures.Future``; only adapters made with ``futures=True`` (the
``attribute_future`` methods) accept it, and then return futures of the values.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable

import torch
from torch import Tensor

from .inputs import argument_rows, format_additional_args, format_forward_kwargs
from .targets import Target

_KEEP = object()


def is_future(value) -> bool:
    """Whether ``value`` is a ``torch.futures.Future`` (or the C future that
    ``Future.then`` returns)."""
    return isinstance(value, torch._C.Future)


def as_tensor_output(output) -> Tensor:
    """A model output as a tensor: Python numbers become 0-d tensors of their own
    type (int64, float64), as in Captum."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, numbers.Number) and not isinstance(output, (bool, complex)):
        return torch.tensor(output, dtype=torch.int64 if isinstance(output, numbers.Integral) else torch.float64)
    raise TypeError(f"the selected model output must be a tensor or a number; got {type(output).__name__}")


def select_output(output: Any, selector) -> Tensor:
    """Pick the explained tensor from a model output that may be a tuple or dict."""
    if selector is not None:
        if callable(selector):
            output = selector(output)
        else:
            try:
                output = output[selector]
            except (KeyError, IndexError, TypeError):
                raise ValueError(
                    f"output_selector {selector!r} does not select anything from the model output"
                ) from None
    elif isinstance(output, (dict, tuple, list)):
        raise ValueError(
            f"the model returned a {type(output).__name__}; pass output_selector=<index, key or callable> "
            "to pick the tensor to explain"
        )
    return as_tensor_output(output)


class ForwardAdapter:
    """Calls ``forward_func`` on rows and reduces each row to the explained values."""

    __slots__ = ("forward_func", "n", "target", "args", "kwargs", "output_selector", "futures")

    def __init__(
        self,
        forward_func: Callable,
        n_examples: int,
        target=None,
        additional_forward_args=None,
        forward_kwargs=None,
        output_selector=None,
        *,
        futures: bool = False,
    ):
        if not callable(forward_func):
            raise TypeError(
                f"forward_func must be callable (an nn.Module or function); got {type(forward_func).__name__}"
            )
        self.forward_func = forward_func
        self.n = n_examples
        self.target = Target.of(target, n_examples)
        self.args = format_additional_args(additional_forward_args)
        self.kwargs = format_forward_kwargs(forward_kwargs)
        self.output_selector = output_selector
        self.futures = futures

    def _replace(self, **changes) -> "ForwardAdapter":
        new = object.__new__(ForwardAdapter)
        for name in ForwardAdapter.__slots__:
            object.__setattr__(new, name, changes.get(name, getattr(self, name)))
        return new

    def with_target(self, target) -> "ForwardAdapter":
        """This adapter explaining ``target`` (any form :class:`Target` takes)."""
        return self._replace(target=Target.of(target, self.n))

    def with_forward(
        self, forward_func: Callable, *, args=_KEEP, kwargs=_KEEP, output_selector=_KEEP
    ) -> "ForwardAdapter":
        """This adapter calling ``forward_func`` instead (with the same extra
        arguments, target and selector unless given)."""
        changes: dict = {"forward_func": forward_func}
        if args is not _KEEP:
            changes["args"] = format_additional_args(args)
        if kwargs is not _KEEP:
            changes["kwargs"] = format_forward_kwargs(kwargs)
        if output_selector is not _KEEP:
            changes["output_selector"] = output_selector
        return self._replace(**changes)

    def call(self, inputs: tuple[Tensor, ...], examples: Tensor):
        """The model's raw return for rows whose example indices are ``examples``."""
        args = tuple(argument_rows(a, examples, self.n) for a in self.args)
        kwargs = {k: argument_rows(v, examples, self.n) for k, v in self.kwargs.items()}
        return self.forward_func(*inputs, *args, **kwargs)

    def _then(self, raw, fn: Callable):
        """``fn(selected output)``, or a future of it for a model returning futures."""
        if is_future(raw):
            if not self.futures:
                raise TypeError(
                    "forward_func returned a torch.futures.Future; call attribute_future(...) instead of attribute(...)"
                )
            return raw.then(lambda done: fn(select_output(done.value(), self.output_selector)))
        if self.futures:
            raise TypeError(
                "attribute_future needs a forward_func that returns a torch.futures.Future; "
                f"it returned {type(raw).__name__} (call attribute(...) instead)"
            )
        return fn(select_output(raw, self.output_selector))

    def check_rows(self, out: Tensor, n_rows: int) -> Tensor:
        """``out`` with its first dimension checked to be the ``n_rows`` rows."""
        if out.dim() == 0:
            out = out.reshape(1)
        if out.shape[0] != n_rows and out.numel() != n_rows:
            raise ValueError(
                f"the model output has {out.shape[0]} rows for {n_rows} input rows; "
                "its first dimension must be the batch"
            )
        return out

    def selected(self, inputs: tuple[Tensor, ...], examples: Tensor):
        """The selected model output as the model returned it (any shape), or a future of it."""
        return self._then(self.call(inputs, examples), lambda out: out)

    def outputs(self, inputs: tuple[Tensor, ...], examples: Tensor) -> Tensor:
        """The selected model output for rows whose example indices are ``examples``."""
        return self._then(self.call(inputs, examples), lambda out: self.check_rows(out, inputs[0].shape[0]))

    def scalars(self, inputs: tuple[Tensor, ...], examples: Tensor) -> Tensor:
        """One explained scalar per row."""
        n_rows = inputs[0].shape[0]
        return self._then(
            self.call(inputs, examples), lambda out: self.target.select(self.check_rows(out, n_rows), examples)
        )

    def values(self, inputs: tuple[Tensor, ...], examples: Tensor) -> Tensor:
        """The explained values of each row, ``(rows, *rest)``: one scalar per row
        when the target picks one, every output element for ``target=None``."""
        n_rows = inputs[0].shape[0]
        return self._then(
            self.call(inputs, examples), lambda out: self.target.values(self.check_rows(out, n_rows), examples)
        )

    def batch_target(self, out: Tensor) -> Tensor:
        """What is explained of a whole-batch output ``out``: the output, at least 1-D,
        indexed by the target when one index shared by all examples is given."""
        out = out.reshape(1) if out.dim() == 0 else out
        target = self.target
        if target.unset:
            return out
        if target.shared is not None:
            return target.values(out, torch.zeros(out.shape[0], dtype=torch.long)).reshape(-1)
        raise ValueError(
            "the model returns one output for the whole batch (its first dimension is not the batch), so target "
            "must be None or one index shared by every example; got a per-example target"
        )


def is_batch_output(output: Tensor, n_examples: int) -> bool:
    """Whether a model output for ``n_examples`` inputs is one output for the whole
    batch (Captum's "aggregate" mode): a 0-d tensor, one value for several examples,
    or a first dimension other than the batch."""
    if output.dim() == 0:
        return True
    if n_examples > 1 and output.numel() == 1:
        return True
    return output.shape[0] != n_examples
