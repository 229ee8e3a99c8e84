"""Exact top-k inner products of query rows against stored rows, in chunks."""

from __future__ import annotations

import torch

#: score-matrix elements per chunk (queries x stored rows)
CHUNK_ELEMENTS = 1 << 22


def chunked_top_k(queries: torch.Tensor, stored: torch.Tensor, k: int, proponents: bool = True,
                  chunk_elements: int = CHUNK_ELEMENTS):
    """``(indices, scores)``: per query row, the ``k`` stored rows with the largest
    (``proponents``) or smallest inner product, sorted; the score matrix is built
    ``chunk_elements`` at a time and merged into a running top-k."""
    sign = 1.0 if proponents else -1.0
    n, total = queries.shape[0], stored.shape[0]
    k = min(k, total)
    step = max(1, chunk_elements // max(n, 1))
    best_v = best_i = None
    for a in range(0, total, step):
        block = (queries @ stored[a:a + step].T) * sign
        v, i = torch.topk(block, min(k, block.shape[1]), dim=1)
        i = i + a
        if best_v is not None:
            v, i = torch.cat([best_v, v], 1), torch.cat([best_i, i], 1)
            v, order = torch.topk(v, min(k, v.shape[1]), dim=1)
            i = torch.gather(i, 1, order)
        best_v, best_i = v, i
    if best_v is None:
        raise ValueError("train_dataset: no training examples to rank")
    return best_i, best_v * sign
