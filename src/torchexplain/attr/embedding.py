"""Embedding helpers with Captum's names (``captum.attr._models.base``).

Two ways to attribute to token embeddings:

* :class:`~torchexplain.attr.LayerIntegratedGradients` on the embedding layer, which
  leaves the model as it is (preferred);
* Captum's older pattern, kept for its users: :func:`configure_interpretable_embedding_layer`
  swaps the embedding module for an :class:`InterpretableEmbeddingBase` that passes
  precomputed embeddings through, so input-space methods take embeddings as inputs;
  :func:`remove_interpretable_embedding_layer` puts the original module back. This
  is the one place where torchexplain changes a model, and only when called: the
  swap lasts from the configure call to the remove call.

:class:`TokenReferenceBase` makes reference (baseline) token sequences.
"""

from __future__ import annotations

import numbers
import warnings

import torch
from torch import Tensor, nn


class InterpretableEmbeddingBase(nn.Module):
    """Stands in for an embedding module: ``forward`` returns its first argument
    (the precomputed embeddings, positional or keyword) unchanged, and
    :meth:`indices_to_embeddings` runs the original module.

    Args:
        embedding: the original embedding module (kept as ``self.embedding``).
        full_name: its dotted path in the model (e.g. ``"encoder.embed"``).
    """

    def __init__(self, embedding: nn.Module, full_name: str) -> None:
        super().__init__()
        self.num_embeddings = getattr(embedding, "num_embeddings", None)
        self.embedding_dim = getattr(embedding, "embedding_dim", None)
        self.embedding = embedding
        self.full_name = full_name

    def forward(self, *inputs, **kwargs):
        """The embedding tensor given as the first positional argument, or else as
        the first keyword argument."""
        if inputs:
            return inputs[0]
        if kwargs:
            return next(iter(kwargs.values()))
        raise ValueError(
            f"InterpretableEmbeddingBase ({self.full_name}) needs the precomputed embeddings as its first "
            "argument (positional or keyword); it was called without arguments"
        )

    def indices_to_embeddings(self, *input, **kwargs) -> Tensor:
        """The original module's output for these arguments (e.g. token ids)."""
        return self.embedding(*input, **kwargs)


class TokenReferenceBase:
    """Reference sequences made of one token (e.g. padding), as baselines for text.

    Args:
        reference_token_idx: the id of the reference token in the vocabulary.
    """

    def __init__(self, reference_token_idx: int = 0) -> None:
        self.reference_token_idx = reference_token_idx

    def generate_reference(self, sequence_length, device: torch.device = None) -> Tensor:
        """A long tensor ``[reference_token_idx] * sequence_length`` on ``device``."""
        whole = isinstance(sequence_length, numbers.Integral) and not isinstance(sequence_length, bool)
        if not whole or sequence_length < 0:
            raise ValueError(f"sequence_length must be a non-negative int; got {sequence_length!r}")
        return torch.full((int(sequence_length),), int(self.reference_token_idx), dtype=torch.long, device=device)


def _parent_and_name(model: nn.Module, path: str, what: str) -> tuple[nn.Module, str, nn.Module]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if not isinstance(path, str) or not path:
        raise TypeError(f"{what} must be the dotted name of a submodule (e.g. 'embedding'); got {path!r}")
    parts = path.split(".")
    parent = model
    for i, part in enumerate(parts[:-1]):
        parent = getattr(parent, part, None)
        if not isinstance(parent, nn.Module):
            raise ValueError(f"{what} {path!r}: the model has no submodule {'.'.join(parts[: i + 1])!r}")
    module = getattr(parent, parts[-1], None)
    if not isinstance(module, nn.Module):
        raise ValueError(f"{what} {path!r}: the model has no submodule of that name")
    return parent, parts[-1], module


def configure_interpretable_embedding_layer(
    model: nn.Module, embedding_layer_name: str = "embedding"
) -> InterpretableEmbeddingBase:
    """Replace the submodule ``embedding_layer_name`` of ``model`` with an
    :class:`InterpretableEmbeddingBase` wrapping it, and return the wrapper.

    Until :func:`remove_interpretable_embedding_layer` is called, the model takes
    embeddings (``wrapper.indices_to_embeddings(ids)``) where it took the embedding
    module's inputs. Warns, as Captum does, that the model is changed.
    """
    parent, name, layer = _parent_and_name(model, embedding_layer_name, "embedding_layer_name")
    if isinstance(layer, InterpretableEmbeddingBase):
        raise ValueError(
            f"embedding_layer_name {embedding_layer_name!r} is already an InterpretableEmbeddingBase; "
            "call remove_interpretable_embedding_layer first"
        )
    warnings.warn(
        f"model.{embedding_layer_name} is replaced by an InterpretableEmbeddingBase that takes embedding "
        "vectors as inputs (get them with indices_to_embeddings); put the original layer back with "
        "remove_interpretable_embedding_layer(model, interpretable_emb) when done. "
        "LayerIntegratedGradients on the embedding layer needs no change to the model.",
        stacklevel=2,
    )
    wrapper = InterpretableEmbeddingBase(layer, embedding_layer_name)
    setattr(parent, name, wrapper)
    return wrapper


def remove_interpretable_embedding_layer(model: nn.Module, interpretable_emb: InterpretableEmbeddingBase) -> None:
    """Put back the embedding module that ``interpretable_emb`` replaced."""
    if not isinstance(interpretable_emb, InterpretableEmbeddingBase):
        raise TypeError(
            "interpretable_emb must be the InterpretableEmbeddingBase returned by "
            f"configure_interpretable_embedding_layer; got {type(interpretable_emb).__name__}"
        )
    parent, name, current = _parent_and_name(model, interpretable_emb.full_name, "interpretable_emb.full_name")
    if current is not interpretable_emb:
        raise ValueError(
            f"model.{interpretable_emb.full_name} is not this InterpretableEmbeddingBase (it was already removed "
            "or belongs to another model)"
        )
    setattr(parent, name, interpretable_emb.embedding)


__all__ = [
    "InterpretableEmbeddingBase",
    "TokenReferenceBase",
    "configure_interpretable_embedding_layer",
    "remove_interpretable_embedding_layer",
]
