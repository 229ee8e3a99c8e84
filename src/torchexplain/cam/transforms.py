"""Reshape transforms: a layer's output that is not a feature map -> (N, C, h, w)."""

from __future__ import annotations

import math

from torch import Tensor


def vit_reshape_transform(tokens: Tensor, prefix_tokens: int = 1) -> Tensor:
    """A vision transformer's tokens ``(N, T, D)`` as a feature map ``(N, D, s, s)``:
    the first ``prefix_tokens`` (torchvision's class token) are dropped and the
    remaining ``s * s`` patch tokens, in row-major order, laid out on an ``s x s``
    grid, channels first. The grid size is inferred from the token count (196 patch
    tokens of ``vit_b_16`` at 224x224: 14x14)."""
    if not isinstance(tokens, Tensor) or tokens.dim() != 3:
        got = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
        raise ValueError(f"vit_reshape_transform expects tokens of shape (N, T, D); got {got}")
    patches = tokens[:, prefix_tokens:, :]
    count = patches.shape[1]
    side = math.isqrt(count)
    if count == 0 or side * side != count:
        raise ValueError(
            f"vit_reshape_transform: {count} patch tokens (after dropping {prefix_tokens} prefix token(s)) "
            "do not form a square grid; pass prefix_tokens or a transform of your own"
        )
    return patches.reshape(tokens.shape[0], side, side, tokens.shape[2]).permute(0, 3, 1, 2)
