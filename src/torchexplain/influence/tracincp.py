"""TracInCP: TracIn over the gradients of chosen (default: all trainable) parameters."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

from . import _data
from ._checkpoints import load_flexible_state_dict
from ._grads import PerExampleGrads, default_parameter_names, layer_parameter_names
from ._state import borrowed
from .base import KMostInfluentialResults, TracInCPBase, check_k, top_k


class TracInCP(TracInCPBase):
    r"""TracIn with checkpoints (Pruthi et al. 2020):
    ``influence(z, z') = sum_c lr_c * g_c(z) . g_c(z')``, with
    ``g_c(z)`` the gradient of ``z``'s loss with respect to the parameters of ``layers``
    (default: every parameter that requires grad) at checkpoint ``c``.

    Per-example gradients come from ``torch.func`` (``vmap`` of ``grad`` over each
    batch); each example's loss is ``loss_fn`` on that example alone, summed over its
    elements (no ``loss_fn``: the sum of the model's outputs). That is the per-example
    loss for ``reduction`` ``"none"``, ``"sum"`` and ``"mean"`` alike, so
    ``sample_wise_grads_per_batch`` (Captum's switch between a per-example loop and a
    hook trick that pairs with reducing losses) is accepted for compatibility and
    changes nothing. Each checkpoint is loaded once per call; the model's parameters,
    buffers, ``requires_grad`` flags and modes are restored after every call.

    Formula:
        $$\operatorname{TracIn}(z, z') = \sum_{c=1}^{C} \eta_c\, \nabla_\theta \ell(z; \theta_c) \cdot
        \nabla_\theta \ell(z'; \theta_c), \qquad
        \operatorname{self}(z) = \sum_{c=1}^{C} \eta_c \lVert \nabla_\theta \ell(z; \theta_c) \rVert^2$$

        with \(\theta_c\) the weights of checkpoint \(c\) (of \(C\)), \(\eta_c\) the
        learning rate ``checkpoints_load_func`` returns, \(\theta\) the parameters of
        ``layers``, \(\ell\) = ``loss_fn`` (``test_loss_fn`` for the test example
        \(z'\)) on one example, \(z\) a training example. ``self_influence`` is the
        diagonal: \(\operatorname{self}(z) = \operatorname{TracIn}(z, z)\).

    Cost:
        Per checkpoint, one forward and one backward pass per test and per training
        example (per-example gradients, vectorised over each batch with ``vmap``; one
        batched forward and backward per batch on the fallback), then an
        \(N_{\text{test}} \times N_{\text{train}}\) matrix product over the \(P\) chosen
        parameters. Memory: a batch of \(P\)-sized gradients and every test gradient.
        The first call in a process also pays ``torch.func``'s one-time start-up.

    Examples:
        >>> import os, tempfile
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> from torchexplain.influence import TracInCP
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
        >>> train = TensorDataset(torch.randn(6, 4), torch.randint(0, 3, (6,)))
        >>> test = (torch.randn(2, 4), torch.randint(0, 3, (2,)))  # one batch: (inputs, labels)
        >>> loss = torch.nn.CrossEntropyLoss(reduction="sum")
        >>> with tempfile.TemporaryDirectory() as checkpoints:
        ...     torch.save(model.state_dict(), os.path.join(checkpoints, "ckpt-1.pt"))
        ...     tracin = TracInCP(model, train, checkpoints, loss_fn=loss, batch_size=3)
        ...     scores = tracin.influence(test)
        ...     top = tracin.influence(test, k=2)  # the 2 proponents of each test example
        ...     on_itself = tracin.influence(train.tensors)
        ...     self_scores = tracin.self_influence()
        >>> scores.shape, top.indices.shape
        (torch.Size([2, 6]), torch.Size([2, 2]))
        >>> bool(torch.allclose(self_scores, torch.diagonal(on_itself), atol=1e-5))
        True
    """

    def __init__(
        self,
        model: nn.Module,
        train_dataset,
        checkpoints,
        checkpoints_load_func: Callable[[nn.Module, Any], float] = load_flexible_state_dict,
        layers: list | None = None,
        loss_fn: Callable | None = None,
        batch_size: int | None = 1,
        test_loss_fn: Callable | None = None,
        sample_wise_grads_per_batch: bool = False,
    ) -> None:
        super().__init__(model, train_dataset, checkpoints, checkpoints_load_func, loss_fn, batch_size,
                         test_loss_fn)
        self.sample_wise_grads_per_batch = bool(sample_wise_grads_per_batch)
        if layers is None:
            self.layer_modules = None
            names = default_parameter_names(model)
        else:
            names, self.layer_modules = layer_parameter_names(model, layers)
        self.parameter_names = names
        self._per_example = PerExampleGrads(model, names)

    # ---------------------------------------------------------------- gradients
    def _grads(self, batch, loss_fn, reduction, name: str) -> torch.Tensor:
        inputs, targets = _data.split(batch, name)
        return self._per_example(inputs, targets, loss_fn, reduction)

    def _stacked(self, batches, loss_fn, reduction, aggregate: bool, name: str) -> torch.Tensor:
        parts = []
        for batch in batches:
            g = self._grads(batch, loss_fn, reduction, name)
            parts.append(g.sum(0, keepdim=True) if aggregate else g)
        if not parts:
            raise ValueError(f"{name}: expected at least one batch; got none")
        return torch.stack(parts).sum(0) if aggregate else torch.cat(parts, dim=0)

    def _test_side(self, tests, aggregate: bool) -> torch.Tensor:
        return self._stacked(tests, self.test_loss_fn, self.test_reduction_type, aggregate, "inputs")

    def _pair_scores(self, test_side: torch.Tensor, batch) -> torch.Tensor:
        return test_side @ self._grads(batch, self.loss_fn, self.reduction_type, "train_dataset").T

    def _self_scores(self, batch) -> torch.Tensor:
        g = self._grads(batch, self.loss_fn, self.reduction_type, "inputs")
        return (g * g).sum(1)

    # ---------------------------------------------------------------- public
    def influence(
        self,
        inputs,
        k: int | None = None,
        proponents: bool = True,
        show_progress: bool = False,
        aggregate: bool = False,
    ) -> torch.Tensor | KMostInfluentialResults:
        """``k=None``: the ``[n_test, n_train]`` influence of every training example on
        every example of ``inputs`` (a batch ``(inputs..., labels)`` or a DataLoader of
        them). ``k`` given: ``(indices, influence_scores)`` of the ``k`` proponents
        (highest scores) or, with ``proponents=False``, opponents (lowest) per test
        example. ``aggregate=True``: one row, the influence on the sum of the test
        losses."""
        k = check_k(k)
        tests = _data.as_batches(inputs)
        name = self.get_name()
        desc = (f"Using {name} to compute influence for training batches" if k is None else
                f"Using {name} to perform computation for getting {'proponents' if proponents else 'opponents'}. "
                "Processing training batches")
        with borrowed(self.model):
            scores = self._influence_pass(tests, bool(aggregate), show_progress, desc)
        return scores if k is None else top_k(scores, k, proponents)

    def self_influence(self, inputs=None, show_progress: bool = False,
                       outer_loop_by_checkpoints: bool = False) -> torch.Tensor:
        """``sum_c lr_c * ||g_c(z)||^2`` for each example of ``inputs`` (a batch, a
        DataLoader; default: the training data). Checkpoints are loaded once each
        either way; ``outer_loop_by_checkpoints`` only changes the progress display."""
        batches = self.train_dataloader if inputs is None else _data.as_batches(inputs)
        with borrowed(self.model):
            return self._self_influence_pass(batches, show_progress, bool(outer_loop_by_checkpoints))

    def compute_intermediate_quantities(self, inputs, aggregate: bool = False) -> torch.Tensor:
        """``[n, P * C]``: per checkpoint ``c``, ``sqrt(lr_c) * g_c(z)`` concatenated, so
        that the dot product of two rows is their influence score (``aggregate``: the
        sum over the examples, one row)."""
        batches = _data.as_batches(inputs)
        parts = []
        with borrowed(self.model):
            for checkpoint in self.checkpoints:
                lr = self._load(checkpoint)
                if lr < 0:
                    raise ValueError(f"checkpoints_load_func: a negative learning rate ({lr}) for {checkpoint!r} "
                                     "has no square root; intermediate quantities need lr >= 0")
                g = self._stacked(batches, self.loss_fn, self.reduction_type, bool(aggregate), "inputs")
                parts.append(g * math.sqrt(lr))
        return torch.cat(parts, dim=1)
