"""The abstract bases: :class:`DataInfluence` and :class:`TracInCPBase`.

TracIn (Pruthi et al., 2020, https://arxiv.org/abs/2002.08484) scores the influence of
a training example ``z`` on a test example ``z'`` as the sum over saved checkpoints
``c`` of ``lr_c * grad L(z; w_c) . grad L(z'; w_c)``. Every implementation here loads
each checkpoint once per pass (the outer loop) and streams the training batches in
the inner loop; the user's model is restored afterwards (:mod:`._state`).
"""

from __future__ import annotations

import numbers
from abc import ABC, abstractmethod
from typing import Any, Callable, NamedTuple

import torch
from torch import nn

from . import _data
from ._checkpoints import learning_rate, load_flexible_state_dict, resolve_checkpoints
from ._grads import check_loss_fn


class KMostInfluentialResults(NamedTuple):
    """``indices[i, j]``: the training example with the ``j``-th highest (proponents)
    or lowest (opponents) influence on test example ``i``; ``influence_scores[i, j]``
    its score."""

    indices: torch.Tensor
    influence_scores: torch.Tensor


class DataInfluence(ABC):
    """Scores how much training examples influence a model's behaviour on inputs."""

    def __init__(self, model: nn.Module, train_dataset, **kwargs: Any) -> None:
        self.model = model
        self.train_dataset = train_dataset

    @abstractmethod
    def influence(self, inputs: Any = None, **kwargs: Any) -> Any:
        """Influence of the training data on ``inputs``."""

    @classmethod
    def get_name(cls) -> str:
        """The class's name (``"TracInCP"``), used in progress messages."""
        return cls.__name__


def check_k(k) -> int | None:
    if k is None:
        return None
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k: expected None or an int >= 1 (the number of proponents or opponents); got {k!r}")
    return int(k)


def top_k(scores: torch.Tensor, k: int, proponents: bool) -> KMostInfluentialResults:
    """Exact top-k of each row of an ``[n_test, n_train]`` score matrix."""
    sign = 1.0 if proponents else -1.0
    values, indices = torch.topk(scores * sign, min(k, scores.shape[1]), dim=1)
    return KMostInfluentialResults(indices, values * sign)


def _check_model(model) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected a torch.nn.Module; got {type(model).__name__}")
    return model


class TracInCPBase(DataInfluence):
    """Common arguments of the TracIn implementations.

    ``train_dataset``: a Dataset (batched with ``batch_size``) or a DataLoader, whose
    batches are tuples ``(inputs..., labels)``: ``model(*batch[:-1])`` is the output
    and ``batch[-1]`` the labels. ``checkpoints``: a directory (every file in it), a
    glob, a list of paths (sorted naturally: ``ckpt-2`` before ``ckpt-10``) or an
    iterable of objects ``checkpoints_load_func(model, checkpoint)`` understands; that
    function loads one into ``model`` and returns its learning rate.
    ``test_loss_fn`` (default: ``loss_fn``) is applied to test examples.
    """

    def __init__(
        self,
        model: nn.Module,
        train_dataset,
        checkpoints,
        checkpoints_load_func: Callable[[nn.Module, Any], float] = load_flexible_state_dict,
        loss_fn: Callable | None = None,
        batch_size: int | None = 1,
        test_loss_fn: Callable | None = None,
    ) -> None:
        self.model = _check_model(model)
        self.train_dataset = train_dataset
        self.checkpoints = checkpoints
        if not callable(checkpoints_load_func):
            raise ValueError(
                f"checkpoints_load_func: expected a callable (model, checkpoint) -> learning rate; "
                f"got {checkpoints_load_func!r}"
            )
        self.checkpoints_load_func = checkpoints_load_func
        self.loss_fn = loss_fn
        self.test_loss_fn = loss_fn if test_loss_fn is None else test_loss_fn
        self.reduction_type = check_loss_fn(loss_fn, "loss_fn")
        self.test_reduction_type = (
            self.reduction_type if test_loss_fn is None else check_loss_fn(test_loss_fn, "test_loss_fn")
        )
        self.batch_size = batch_size
        self.train_dataloader = _data.train_loader(train_dataset, batch_size)
        self.train_dataloader_len = _data.loader_length(self.train_dataloader)

    @property
    def checkpoints(self) -> list:
        return self._checkpoints

    @checkpoints.setter
    def checkpoints(self, checkpoints) -> None:
        self._checkpoints = resolve_checkpoints(checkpoints)

    def _load(self, checkpoint) -> float:
        """Load one checkpoint into the model; its learning rate."""
        return learning_rate(self.checkpoints_load_func(self.model, checkpoint), checkpoint)

    @abstractmethod
    def self_influence(self, inputs=None, show_progress: bool = False) -> torch.Tensor:
        """Self influence of each example of ``inputs`` (default: the training data)."""

    @abstractmethod
    def influence(self, inputs, k: int | None = None, proponents: bool = True, show_progress: bool = False):
        """Influence scores ``[n_test, n_train]`` (``k=None``) or the top-k proponents or opponents."""

    # ------------------------------------------------------------------ shared passes
    # Subclasses provide three hooks, each for the checkpoint currently loaded:
    #   _test_side(batches, aggregate) -> what the test examples contribute (gradients, factors)
    #   _pair_scores(test_side, batch) -> [n_test, batch rows] scores, before the learning rate
    #   _self_scores(batch) -> [batch rows] squared gradient norms, before the learning rate

    def _influence_pass(self, tests, aggregate: bool, show_progress: bool, desc: str) -> torch.Tensor:
        """``sum_c lr_c * scores_c``, ``[n_test, n_train]``: each checkpoint loaded once,
        the test side computed once per checkpoint, the training batches streamed."""
        blocks: list[torch.Tensor] = []
        n_batches = self.train_dataloader_len
        total = None if n_batches is None else n_batches * len(self.checkpoints)
        with _data.progress(show_progress, desc, total) as bar:
            for c, checkpoint in enumerate(self.checkpoints):
                lr = self._load(checkpoint)
                test_side = self._test_side(tests, aggregate)
                b = -1
                for b, batch in enumerate(self.train_dataloader):
                    block = self._pair_scores(test_side, batch) * lr
                    if c == 0:
                        blocks.append(block)
                    elif b < len(blocks) and blocks[b].shape == block.shape:
                        blocks[b] += block
                    else:
                        raise ValueError("train_dataset: yielded different batches for different checkpoints; "
                                         "expected the same batches in the same order (shuffle=False)")
                    bar.update()
                if b + 1 != len(blocks):
                    raise ValueError("train_dataset: yielded a different number of batches for different checkpoints")
        if not blocks:
            raise ValueError("train_dataset: expected at least one training batch; the DataLoader yielded none")
        return torch.cat(blocks, dim=1)

    def _self_influence_pass(self, batches, show_progress: bool, by_checkpoints: bool) -> torch.Tensor:
        """``sum_c lr_c * ||grad||^2`` per example of ``batches``; each checkpoint loaded
        once whatever ``by_checkpoints`` (which only chooses how progress is shown)."""
        name = self.get_name()
        n_batches = _data.loader_length(batches)
        k = len(self.checkpoints)
        per_batch = f"Using {name} to compute self influence. Processing batch"
        outer = _data.progress(show_progress and by_checkpoints,
                               f"Using {name} to compute self influence. Processing checkpoint", k)
        flat_total = None if n_batches is None else n_batches * k
        flat = _data.progress(show_progress and not by_checkpoints, per_batch, flat_total)
        parts: list[torch.Tensor] = []
        with outer, flat:
            for c, checkpoint in enumerate(self.checkpoints):
                lr = self._load(checkpoint)
                with _data.progress(show_progress and by_checkpoints, per_batch, n_batches) as inner:
                    b = -1
                    for b, batch in enumerate(batches):
                        scores = self._self_scores(batch) * lr
                        if c == 0:
                            parts.append(scores)
                        elif b < len(parts) and parts[b].shape == scores.shape:
                            parts[b] += scores
                        else:
                            raise ValueError("inputs: yielded different batches for different checkpoints")
                        inner.update()
                        flat.update()
                    if b + 1 != len(parts):
                        raise ValueError("inputs: yielded a different number of batches for different checkpoints")
                outer.update()
        if not parts:
            raise ValueError("inputs: expected at least one batch; got none")
        return torch.cat(parts, dim=0)

    def _test_side(self, tests, aggregate: bool):  # pragma: no cover - abstract hook
        raise NotImplementedError

    def _pair_scores(self, test_side, batch) -> torch.Tensor:  # pragma: no cover - abstract hook
        raise NotImplementedError

    def _self_scores(self, batch) -> torch.Tensor:  # pragma: no cover - abstract hook
        raise NotImplementedError
