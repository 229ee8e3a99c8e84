"""Captum's embedding helpers (configure / remove an interpretable embedding layer,
TokenReferenceBase) and ProductBaselines."""

from __future__ import annotations

import random
import warnings

import pytest
import torch
from torch import nn

from torchexplain.attr import (
    IntegratedGradients,
    InterpretableEmbeddingBase,
    LayerIntegratedGradients,
    ProductBaselines,
    TokenReferenceBase,
    configure_interpretable_embedding_layer,
    remove_interpretable_embedding_layer,
)


class TextNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Module()
        self.encoder.embed = nn.Embedding(10, 4)
        self.layers = nn.ModuleList([nn.Embedding(10, 4)])
        self.head = nn.Linear(4, 3)

    def forward(self, ids):
        return self.head(torch.tanh(self.encoder.embed(ids)).mean(1))


def configure(model, name):
    with pytest.warns(UserWarning, match="remove_interpretable_embedding_layer"):
        return configure_interpretable_embedding_layer(model, name)


def test_configure_swaps_and_remove_restores_exactly():
    model = TextNet()
    ids = torch.tensor([[1, 2, 3], [4, 5, 0]])
    original, keys, expected = model.encoder.embed, list(model.state_dict()), model(ids)
    emb = configure(model, "encoder.embed")
    assert model.encoder.embed is emb and emb.embedding is original
    assert (emb.num_embeddings, emb.embedding_dim, emb.full_name) == (10, 4, "encoder.embed")
    vectors = emb.indices_to_embeddings(ids)
    torch.testing.assert_close(vectors, original(ids))
    torch.testing.assert_close(model(vectors), expected)  # the model now takes embeddings
    torch.testing.assert_close(emb(input=vectors), vectors)
    remove_interpretable_embedding_layer(model, emb)
    assert model.encoder.embed is original and list(model.state_dict()) == keys
    torch.testing.assert_close(model(ids), expected)


def test_integrated_gradients_on_configured_embeddings_match_layer_ig():
    model = TextNet().eval()
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    ref = TokenReferenceBase(0).generate_reference(3, device="cpu").expand(2, -1)
    layer_attr = LayerIntegratedGradients(model, model.encoder.embed).attribute(ids, ref, target=1, n_steps=64)
    emb = configure(model, "encoder.embed")
    try:
        x, b = emb.indices_to_embeddings(ids), emb.indices_to_embeddings(ref)
        attr, delta = IntegratedGradients(model).attribute(x, b, target=1, n_steps=64, return_convergence_delta=True)
        gap = model(x)[:, 1] - model(b)[:, 1]
    finally:
        remove_interpretable_embedding_layer(model, emb)
    torch.testing.assert_close(attr, layer_attr, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(attr.sum((1, 2)), gap, rtol=1e-3, atol=1e-4)  # completeness
    assert delta.abs().max() < 1e-3


def test_module_list_paths_and_errors():
    model = TextNet()
    emb = configure(model, "layers.0")
    assert isinstance(model.layers[0], InterpretableEmbeddingBase)
    with pytest.raises(ValueError, match="already an InterpretableEmbeddingBase"):
        configure_interpretable_embedding_layer(model, "layers.0")
    remove_interpretable_embedding_layer(model, emb)
    assert isinstance(model.layers[0], nn.Embedding)
    with pytest.raises(ValueError, match="not this InterpretableEmbeddingBase"):
        remove_interpretable_embedding_layer(model, emb)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is changed (nor warned about) on a bad name
        with pytest.raises(ValueError, match="no submodule 'encoder.nope'"):
            configure_interpretable_embedding_layer(model, "encoder.nope.embed")
    with pytest.raises(TypeError, match="InterpretableEmbeddingBase"):
        remove_interpretable_embedding_layer(model, model.head)
    with pytest.raises(ValueError, match="first argument"):
        InterpretableEmbeddingBase(nn.Embedding(2, 2), "e")()


def test_token_reference():
    ref = TokenReferenceBase(reference_token_idx=7).generate_reference(4, torch.device("cpu"))
    assert ref.tolist() == [7, 7, 7, 7] and ref.dtype == torch.long
    assert TokenReferenceBase().generate_reference(0, "cpu").shape == (0,)
    with pytest.raises(ValueError, match="sequence_length"):
        TokenReferenceBase().generate_reference(-1, "cpu")


def test_product_baselines_forms_and_captum_draws():
    from captum.attr._utils.baselines import ProductBaselines as CaptumProduct

    values = [[1, 2, 3], [4, 5, 6, 7], [8, 9]]
    draw, seen = ProductBaselines(values, rng=random.Random(0)), set()
    for _ in range(400):
        sample = draw()
        assert all(v in choices for v, choices in zip(sample, values))
        seen.add(tuple(sample))
    assert len(seen) == 3 * 4 * 2  # every element of the product is drawn
    grouped = {("f1", "f2"): [(1, "1"), (2, "2")], "f3": [4, 5]}
    sample = ProductBaselines(grouped)()
    assert set(sample) == {"f1", "f2", "f3"} and (sample["f1"], sample["f2"]) in grouped[("f1", "f2")]
    random.seed(3)
    ours = [ProductBaselines(grouped)() for _ in range(20)]
    random.seed(3)
    theirs = [CaptumProduct(grouped)() for _ in range(20)]
    assert ours == theirs  # same generator, same draws as Captum


def test_product_baselines_errors():
    with pytest.raises(ValueError, match="non-empty"):
        ProductBaselines([[1], []])
    with pytest.raises(ValueError, match="tuples of 2"):
        ProductBaselines({("a", "b"): [1, 2]})
    with pytest.raises(TypeError, match="list of lists or a dict"):
        ProductBaselines(3)
