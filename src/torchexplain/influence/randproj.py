"""TracInCPFastRandProj: TracInCPFast's factors, randomly projected and stored.

Each example's final-layer weight gradient is ``outer(J, x)``. With random Gaussian
matrices ``P1`` (``out x d1``) and ``P2`` (``in x d2``), entries of variance ``1/d1``
and ``1/d2``, the example's vector is ``sqrt(lr) * outer(J P1, x P2)`` flattened, per
checkpoint, concatenated over checkpoints. Since ``E[P P^T] = I`` and the two
projections are independent, ``E[<outer(J_a P1, x_a P2), outer(J_b P1, x_b P2)>] =
(J_a . J_b)(x_a . x_b)``: inner products of the vectors estimate the TracIn scores
without bias (exactly equal when ``projection_dim`` is None or not smaller than
``out * in``). ``d1 = min(isqrt(projection_dim), out)``, ``d2 = min(isqrt(projection_dim),
in)``, as in Captum. The training vectors are computed once, at construction; the
top-k search is an exact, chunked matrix product, or a user-supplied
``nearest_neighbors`` object (Captum's ``NearestNeighbors`` interface: ``setup(data)``,
``get_nearest_neighbors(query, k) -> (indices, distances)``). No approximate
index is built here. The constructor is one pass: each checkpoint loaded once, the
projections sized from the first training batch.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, Callable

import torch
from torch import nn

from . import _data
from ._checkpoints import load_flexible_state_dict
from ._state import borrowed
from ._topk import chunked_top_k
from .base import KMostInfluentialResults, check_k
from .fast import TracInCPFast


def _check_projection_dim(value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"projection_dim: expected None or an int >= 1; got {value!r}")
    return int(value)


def _check_neighbors(value):
    if value is None:
        return None
    if not (callable(getattr(value, "setup", None)) and callable(getattr(value, "get_nearest_neighbors", None))):
        raise ValueError(
            "nearest_neighbors: expected None or an object with setup(data) and get_nearest_neighbors(query, k) "
            f"(Captum's NearestNeighbors interface); got {value!r}"
        )
    return value


class TracInCPFastRandProj(TracInCPFast):
    r"""TracInCPFast with random projections (Pruthi et al. 2020), the training
    examples' (optionally projected) final-layer
    gradient vectors stored at construction, so ``influence`` needs only the test
    examples' forward passes. ``projection_dim``: the target size of each
    checkpoint's vector (None: no projection, exact scores). ``seed`` seeds a
    private ``torch.Generator`` for the projections (the global RNG is untouched).
    The stored vectors take ``n_train * d1 * d2 * n_checkpoints`` numbers.

    Formula:
        $$v_c(z) = \sqrt{\eta_c}\, \operatorname{vec}\big((J_z P_1)^\top (x_z P_2)\big), \qquad
        \operatorname{TracIn}(a, b) \approx \sum_{c=1}^{C} v_c(a) \cdot v_c(b)$$

        with \(J_z\) and \(x_z\) the gradient of the loss with respect to the final
        layer's output and its input at checkpoint \(c\) (learning rate \(\eta_c\)), and
        \(P_1\) (\(\text{out} \times d_1\)), \(P_2\) (\(\text{in} \times d_2\)) Gaussian
        matrices of variances \(1/d_1, 1/d_2\), \(d_1 = \min(\lfloor \sqrt{D} \rfloor, \text{out})\),
        \(d_2 = \min(\lfloor \sqrt{D} \rfloor, \text{in})\), \(D\) = ``projection_dim``. The
        estimate is unbiased, and equals :class:`TracInCPFast`'s scores
        when there is no projection (``projection_dim`` None or at least out x in).

    Cost:
        At construction, per checkpoint, one forward pass per training batch and one
        backward pass from the loss to the final layer's output only; per
        ``influence`` call the same for the test batches, then a
        \(N_{\text{test}} \times N_{\text{train}}\) product of vectors of
        \(d_1 d_2 C\) numbers (an exact, chunked top-k, or ``nearest_neighbors``).

    Examples:
        >>> import os, tempfile
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> from torchexplain.influence import TracInCPFast, TracInCPFastRandProj
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
        >>> train = TensorDataset(torch.randn(6, 4), torch.randint(0, 3, (6,)))
        >>> test = (torch.randn(2, 4), torch.randint(0, 3, (2,)))
        >>> loss = torch.nn.CrossEntropyLoss(reduction="sum")
        >>> with tempfile.TemporaryDirectory() as checkpoints:
        ...     torch.save(model.state_dict(), os.path.join(checkpoints, "ckpt-1.pt"))
        ...     exact = TracInCPFastRandProj(model, "2", train, checkpoints, loss_fn=loss, batch_size=3)
        ...     fast = TracInCPFast(model, "2", train, checkpoints, loss_fn=loss, batch_size=3)
        ...     same = torch.allclose(exact.influence(test, k=None), fast.influence(test), atol=1e-5)
        ...     projected = TracInCPFastRandProj(model, "2", train, checkpoints, loss_fn=loss, batch_size=3,
        ...                                      projection_dim=4)
        ...     top = projected.influence(test, k=2)
        >>> same, projected.src_intermediate_quantities.shape, top.indices.shape  # d1 = d2 = 2
        (True, torch.Size([6, 4]), torch.Size([2, 2]))
    """

    def __init__(
        self,
        model: nn.Module,
        final_fc_layer,
        train_dataset,
        checkpoints,
        checkpoints_load_func: Callable[[nn.Module, Any], float] = load_flexible_state_dict,
        loss_fn: Callable | None = None,
        batch_size: int | None = 1,
        test_loss_fn: Callable | None = None,
        vectorize: bool = False,
        nearest_neighbors=None,
        projection_dim: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(model, final_fc_layer, train_dataset, checkpoints, checkpoints_load_func, loss_fn,
                         batch_size, test_loss_fn, vectorize)
        self.projection_dim = _check_projection_dim(projection_dim)
        self.nearest_neighbors = _check_neighbors(nearest_neighbors)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise ValueError(f"seed: expected an int; got {seed!r}")
        self.seed = int(seed)
        self.projection_quantities = None
        self._pending = self.projection_dim is not None  # sized from the first training batch's factors
        with borrowed(self.model):
            self.src_intermediate_quantities = self._vectors(
                self.train_dataloader, self.loss_fn, self.reduction_type, "train_dataset")
        if self.nearest_neighbors is not None:
            self.nearest_neighbors.setup(self.src_intermediate_quantities)

    def _projections(self, jac: torch.Tensor, x: torch.Tensor):
        """``(P1, P2)`` for factors of ``out`` and ``in`` features, or None when
        ``out * in`` is already at most ``projection_dim``."""
        out_dim, in_dim = jac.shape[1], x.shape[1]
        if out_dim * in_dim <= self.projection_dim:
            return None
        side = math.isqrt(self.projection_dim)
        d1, d2 = min(side, out_dim), min(side, in_dim)
        gen = torch.Generator().manual_seed(self.seed)
        p1 = torch.randn(out_dim, d1, generator=gen, dtype=torch.float64) / math.sqrt(d1)
        p2 = torch.randn(in_dim, d2, generator=gen, dtype=torch.float64) / math.sqrt(d2)
        return p1.to(device=jac.device, dtype=jac.dtype), p2.to(device=x.device, dtype=x.dtype)

    def _vectors(self, batches, loss_fn, reduction, name: str) -> torch.Tensor:
        """``[n, d1 * d2 * C]``, built one batch at a time (only the projected factors'
        outer products are ever formed)."""
        per_checkpoint = []
        for checkpoint in self.checkpoints:
            lr = self._load(checkpoint)
            if lr < 0:
                raise ValueError(f"checkpoints_load_func: a negative learning rate ({lr}) for {checkpoint!r} "
                                 f"has no square root; {self.get_name()} needs lr >= 0")
            rows = []
            for batch in batches:
                jac, x = self._factors(batch, loss_fn, reduction, name)
                if self._pending:
                    self.projection_quantities, self._pending = self._projections(jac, x), False
                if self.projection_quantities is not None:
                    jac, x = jac @ self.projection_quantities[0], x @ self.projection_quantities[1]
                rows.append((jac[:, :, None] * x[:, None, :]).flatten(1) * math.sqrt(lr))
            if not rows:
                raise ValueError(f"{name}: expected at least one batch; got none")
            per_checkpoint.append(torch.cat(rows))
        return torch.cat(per_checkpoint, dim=1)

    def compute_intermediate_quantities(self, inputs) -> torch.Tensor:
        """The vectors of the examples of ``inputs`` (a batch or a DataLoader), with
        ``loss_fn``: their inner products with each other are the (estimated) scores."""
        batches = _data.as_batches(inputs)
        with borrowed(self.model):
            return self._vectors(batches, self.loss_fn, self.reduction_type, "inputs")

    def influence(self, inputs=None, k: int | None = 5, proponents: bool = True,
                  show_progress: bool = False) -> torch.Tensor | KMostInfluentialResults:
        """``k=None``: ``[n_test, n_train]`` (estimated) scores; ``k`` (default 5, as in
        Captum): ``(indices, influence_scores)`` of the top-k proponents or opponents,
        exact over the stored vectors, or from ``nearest_neighbors`` when given."""
        k = check_k(k)
        tests = _data.as_batches(inputs)
        with borrowed(self.model):
            query = self._vectors(tests, self.test_loss_fn, self.test_reduction_type, "inputs")
        stored = self.src_intermediate_quantities
        if k is None:
            return query @ stored.T
        if self.nearest_neighbors is None:
            return KMostInfluentialResults(*chunked_top_k(query, stored, k, proponents))
        sign = 1.0 if proponents else -1.0
        indices, distances = self.nearest_neighbors.get_nearest_neighbors(query * sign, k)
        return KMostInfluentialResults(indices, distances * sign)

    def self_influence(self, inputs=None, show_progress: bool = False,
                       outer_loop_by_checkpoints: bool = False) -> torch.Tensor:
        """Not provided (as in Captum): self influence stores nothing, so projecting
        only loses accuracy. Use :class:`TracInCPFast` with the same arguments."""
        warnings.warn("TracInCPFastRandProj has no self_influence: use TracInCPFast, which computes it exactly "
                      "with the same memory", stacklevel=2)
        raise NotImplementedError("TracInCPFastRandProj.self_influence: use TracInCPFast(...).self_influence")
