"""Fine-tuning a classifier so that its induced tree decides well: the soft tree
supervision loss of NBDT, and a short training loop."""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .hierarchy import Hierarchy
from .inference import TreeTables


class SoftTreeSupLoss(nn.Module):
    """``criterion(outputs, y) + tree_supervision_weight * NLL(soft-NBDT(outputs), y)``:
    the usual loss on the logits plus the negative log-likelihood of the true class
    under soft tree inference."""

    def __init__(self, criterion: nn.Module, hierarchy: Hierarchy, tree_supervision_weight: float = 1.0):
        super().__init__()
        if not isinstance(hierarchy, Hierarchy):
            raise TypeError(f"hierarchy must be a Hierarchy; got {type(hierarchy).__name__}")
        if tree_supervision_weight < 0:
            raise ValueError(f"tree_supervision_weight must be >= 0; got {tree_supervision_weight}")
        self.criterion = criterion
        self.tables = TreeTables(hierarchy)
        self.tree_supervision_weight = float(tree_supervision_weight)

    def forward(self, outputs: Tensor, targets: Tensor) -> Tensor:
        tables = self.tables.to(outputs.device)
        leaf = tables.leaf_log_probs(tables.decision_log_probs(outputs))
        return self.criterion(outputs, targets) + self.tree_supervision_weight * F.nll_loss(leaf, targets)


def finetune(
    model: nn.Module,
    hierarchy: Hierarchy,
    loader: Iterable,
    epochs: int = 4,
    lr: float = 3e-3,
    tree_supervision_weight: float = 1.0,
    device: torch.device | str | None = None,
) -> list[float]:
    """Train ``model`` in place with :class:`SoftTreeSupLoss` (cross-entropy plus tree
    supervision) for ``epochs`` passes over ``loader`` (batches of ``(x, y)``): Adam
    under a one-cycle schedule peaking at ``lr`` (a short warm-up, then annealing, so
    that a trained network is reshaped gently). Returns the mean loss of each epoch;
    the model's training flag is restored."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1; got {epochs}")
    if not hasattr(loader, "__len__") or len(loader) == 0:
        raise ValueError("loader must be a non-empty sized iterable of (x, y) batches, such as a DataLoader")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    loss_fn = SoftTreeSupLoss(nn.CrossEntropyLoss(), hierarchy, tree_supervision_weight).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * len(loader))
    was_training = model.training
    history = []
    try:
        model.train()
        for _ in range(epochs):
            total, batches = 0.0, 0
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                optimizer.zero_grad()
                loss = loss_fn(model(x), y)
                loss.backward()
                optimizer.step()
                schedule.step()
                total, batches = total + loss.item(), batches + 1
            history.append(total / max(batches, 1))
    finally:
        model.train(was_training)
    return history
