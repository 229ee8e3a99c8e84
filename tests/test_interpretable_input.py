"""Interpretable inputs (TextTemplateInput, TextTokenInput, ImageMaskInput) with a
character-level tokenizer written here and tiny images; and one end to end with
LimeBase."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from torchexplain.attr import (
    ImageMaskInput,
    InterpretableInput,
    LimeBase,
    ProductBaselines,
    TextTemplateInput,
    TextTokenInput,
)
from torchexplain.attr.surrogate import WeightedLinearRegression

VOCAB = ["<s>", "<unk>", "a", "b", "c", " "]


class CharTokenizer:
    """One token per character, a start token first; encode / decode only."""

    def encode(self, text, add_special_tokens=True, return_tensors=None):
        ids = ([0] if add_special_tokens else []) + [VOCAB.index(ch) if ch in VOCAB else 1 for ch in text]
        return torch.tensor([ids]) if return_tensors == "pt" else ids

    def decode(self, ids):
        return "".join(VOCAB[int(i)] for i in ids)


def test_text_token_input_with_encode_decode_tokenizer():
    inp = TextTokenInput("abca", CharTokenizer(), baselines=1)
    assert isinstance(inp, InterpretableInput)
    assert inp.values == ["<s>", "a", "b", "c", "a"] and inp.n_itp_features == 5
    assert inp.to_model_input().tolist() == [[0, 2, 3, 4, 2]]
    torch.testing.assert_close(inp.to_tensor(), torch.ones(1, 5, dtype=torch.long))
    z = torch.tensor([[1.0, 0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0, 1.0]])
    assert inp.to_model_input(z).tolist() == [[0, 1, 3, 4, 1], [1, 2, 3, 1, 2]]
    attr = torch.arange(5.0).view(1, 5)
    assert inp.format_attr(attr) is attr
    as_text = TextTokenInput("ab", CharTokenizer(), baselines="c")  # a token string: its one id
    assert as_text.to_model_input(torch.tensor([[1, 0, 1]])).tolist() == [[0, 4, 3]]


def test_text_token_input_skip_tokens_and_callable_tokenizer():
    def tokenize(text):  # a bare callable: text -> ids
        return [0] + [VOCAB.index(ch) for ch in text]

    for tokenizer, skip in ((CharTokenizer(), ["<s>"]), (tokenize, [0])):
        inp = TextTokenInput("ab c", tokenizer, baselines=5, skip_tokens=skip)
        assert inp.n_itp_features == 4  # the start token is never a feature
        assert inp.to_model_input(torch.tensor([[0, 1, 1, 0]])).tolist() == [[0, 5, 3, 5, 5]]
    assert TextTokenInput("ab", tokenize).values == ["0", "2", "3"]  # no decode: ids as names
    with pytest.raises(ValueError, match=r"shape \(B, 3\)"):
        TextTokenInput("ab", CharTokenizer()).to_model_input(torch.ones(1, 4))
    with pytest.raises(TypeError, match="encode"):
        TextTokenInput("ab", object())


@pytest.mark.parametrize("keyed", [False, True])
def test_text_template_input_values_baselines_and_mask(keyed):
    template = "{a} likes {b} and {c}" if keyed else "{} likes {} and {}"
    values = ["Ann", "tea", "cake"]
    pack = (lambda v: dict(zip("abc", v))) if keyed else list
    inp = TextTemplateInput(template, pack(values), baselines=pack(["Bob", "water", "bread"]), mask=pack([0, 1, 0]))
    assert inp.n_itp_features == 2 and inp.n_features == 3
    assert inp.to_model_input() == "Ann likes tea and cake"
    assert inp.to_model_input(torch.tensor([[0.0, 1.0]])) == "Bob likes tea and bread"
    assert inp.to_model_input(torch.tensor([[1.0, 0.0]])) == "Ann likes water and cake"
    torch.testing.assert_close(inp.format_attr(torch.tensor([[0.25, -1.0]])), torch.tensor([[0.25, -1.0, 0.25]]))
    plain = TextTemplateInput(template, pack(values))
    assert plain.to_model_input(torch.tensor([[1, 0, 1]])) == "Ann likes  and cake"


def test_text_template_input_callable_template_and_baselines():
    choices = ProductBaselines([["X"], ["Y", "Z"]])
    inp = TextTemplateInput(lambda a, b: f"{a}-{b}", ["p", "q"], baselines=choices)
    assert inp.to_model_input(torch.tensor([[0, 1]])) == "X-q"
    assert inp.to_model_input(torch.tensor([[1, 0]])) in ("p-Y", "p-Z")
    with pytest.raises(ValueError, match="one entry per segment"):
        TextTemplateInput("{} {}", ["a", "b"], mask=[0])
    with pytest.raises(TypeError, match="dict like values"):
        TextTemplateInput("{x}", {"x": "a"}, baselines=["b"])


def image_4x5():
    pixels = (np.arange(4 * 5 * 3).reshape(4, 5, 3) * 4).astype(np.uint8)
    return Image.fromarray(pixels), pixels


def test_image_mask_input_segments():
    image, pixels = image_4x5()
    mask = torch.tensor([[3, 3, 7, 7, 9]] * 4)
    inp = ImageMaskInput(image, mask=mask, baseline=(1, 2, 3))
    assert inp.n_itp_features == 3 and inp.values == ["image_feature_3", "image_feature_7", "image_feature_9"]
    out = np.array(inp.to_model_input(torch.tensor([[1.0, 0.0, 1.0]])))
    expected = pixels.copy()
    expected[:, 2:4] = (1, 2, 3)
    assert np.array_equal(out, expected)
    assert inp.to_model_input() is image  # the identity processor
    pixel_attr = inp.format_pixel_attr(torch.tensor([[0.5, -1.0, 2.0]]))
    assert pixel_attr.shape == (1, 4, 5) and pixel_attr[0, 0].tolist() == [0.5, 0.5, -1.0, -1.0, 2.0]


def test_image_mask_list_overlaps_processor_and_grayscale():
    image, pixels = image_4x5()
    left = torch.zeros(4, 5, dtype=torch.bool)
    left[:, :3] = True
    top = torch.zeros(4, 5, dtype=torch.bool)
    top[:2] = True
    inp = ImageMaskInput(image, mask_list=[left, top], processor_fn=lambda im: torch.from_numpy(np.array(im)))
    out = inp.to_model_input(torch.tensor([[0, 1]]))
    assert (out[:, :3] == 255).all() and torch.equal(out[:, 3:], torch.from_numpy(pixels[:, 3:]))
    summed = inp.format_pixel_attr(torch.tensor([[1.0, 10.0]]))
    assert summed[0, 0].tolist() == [11, 11, 11, 10, 10] and summed[0, 3].tolist() == [1, 1, 1, 0, 0]
    gray = ImageMaskInput(image.convert("L"), mask=left.long())
    assert (np.array(gray.to_model_input(torch.tensor([[1, 0]])))[:, :3] == 255).all()  # white, as luma
    figure, axis = inp.plot_mask_overlay(border_width=1)
    assert len(axis.images) == 1 + 2 * 2  # the image, then a tint and a border per segment
    with pytest.raises(ValueError, match=r"shape \(4, 5\)"):
        ImageMaskInput(image, mask=torch.zeros(5, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="PIL"):
        ImageMaskInput(pixels)


def test_lime_base_on_token_input_recovers_a_counting_model():
    inp = TextTokenInput("abcab", CharTokenizer(), baselines=1, skip_tokens=["<s>"])
    weights = torch.tensor([0.0, 0.0, 2.0, -1.0, 0.5, 0.0])

    def model(ids):  # a linear score of the tokens
        return weights[ids].sum(1)

    g = torch.Generator().manual_seed(0)

    def perturb(original, **kwargs):
        return (torch.rand(1, inp.n_itp_features, generator=g) < 0.5).float()

    lime = LimeBase(
        model, WeightedLinearRegression(), lambda *a, **k: 1.0, perturb, True,
        lambda z, original, **kwargs: inp.to_model_input(z), None,
    )
    coefs = lime.attribute(inp.to_model_input(), n_samples=40, perturbations_per_eval="auto")
    torch.testing.assert_close(coefs, torch.tensor([2.0, -1.0, 0.5, 2.0, -1.0], dtype=torch.float64),
                               rtol=1e-4, atol=1e-4)
