"""Feature masks: Captum 0.9 forms (None, tensor, tuple; global ids), broadcasting,
vectorised ablation and expansion, and clear errors."""

import pytest
import torch

from torchexplain.attr.feature_mask import format_feature_mask

QUADS = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])


def test_default_mask_numbers_every_scalar_globally():
    x, y = torch.randn(2, 3, 2, 2), torch.randn(2, 5)
    fm = format_feature_mask(None, (x, y))
    assert fm.n_features == 12 + 5
    assert torch.equal(fm.masks[0].reshape(-1), torch.arange(12))
    assert torch.equal(fm.masks[1].reshape(-1), torch.arange(12, 17))
    assert not fm.per_example
    assert torch.equal(fm.feature_counts(), torch.ones(17, dtype=torch.long))


def test_ids_are_global_sorted_and_may_span_inputs():
    x, y = torch.randn(2, 3, 4, 4), torch.randn(2, 5)
    fm = format_feature_mask((QUADS, torch.tensor([[3, 3, 7, 7, 9]])), (x, y))
    assert fm.ids.tolist() == [0, 1, 2, 3, 7, 9]
    assert fm.present.tolist() == [[True] * 4 + [False] * 2, [False] * 3 + [True] * 3]
    # the (4, 4) mask broadcasts over 3 channels: 12 scalars per quadrant; feature 3 adds 2 of y
    assert fm.feature_counts().tolist() == [12, 12, 12, 14, 2, 1]


def test_ablate_replaces_exactly_the_chosen_features_per_row():
    x, y = torch.randn(2, 3, 4, 4), torch.randn(2, 5)
    fm = format_feature_mask((QUADS, torch.tensor([[3, 3, 7, 7, 9]])), (x, y))
    base = (torch.full((1, 3, 4, 4), -9.0), torch.full((1, 5), -9.0))
    replaced = torch.zeros(2, fm.n_features, dtype=torch.bool)
    replaced[0, 0] = True  # id 0: top-left quadrant of x, row 0
    replaced[1, 3] = True  # id 3: bottom-right of x and y[:2], row 1
    ax, ay = fm.ablate((x, y), base, replaced)
    hit_x = torch.zeros(2, 3, 4, 4, dtype=torch.bool)
    hit_x[0, :, :2, :2] = True
    hit_x[1, :, 2:, 2:] = True
    hit_y = torch.zeros(2, 5, dtype=torch.bool)
    hit_y[1, :2] = True
    assert torch.equal(ax, torch.where(hit_x, torch.tensor(-9.0), x))
    assert torch.equal(ay, torch.where(hit_y, torch.tensor(-9.0), y))


def test_ablate_leaves_untouched_inputs_uncopied():
    x, y = torch.randn(2, 4), torch.randn(2, 3)
    fm = format_feature_mask((torch.tensor([[0, 0, 1, 1]]), torch.tensor([[2, 2, 2]])), (x, y))
    replaced = torch.tensor([[True, False, False], [False, True, False]])
    ax, ay = fm.ablate((x, y), (torch.zeros(1, 4), torch.zeros(1, 3)), replaced)
    assert ay is y
    assert torch.equal(ax, torch.tensor([[0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]]) * x)


def test_per_example_masks_ablate_and_expand_by_example():
    y = torch.randn(2, 5)
    fm = format_feature_mask(torch.tensor([[0, 1, 1, 2, 2], [2, 2, 0, 0, 1]]), (y,))
    assert fm.per_example
    (expanded,) = fm.expand(torch.tensor([[1.0, 2, 3], [4, 5, 6]]))
    assert torch.equal(expanded, torch.tensor([[1.0, 2, 2, 3, 3], [6, 6, 4, 4, 5]]))
    # rows 2 and 3 are copies of examples 0 and 1
    rows = y.repeat(2, 1)
    replaced = torch.tensor([[True, False, False]] * 2 + [[False, False, True]] * 2)
    (ablated,) = fm.ablate((rows,), (torch.zeros(1, 5),), replaced, torch.tensor([0, 1, 0, 1]))
    keep = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 0, 0, 1], [1, 1, 1, 0, 0], [0, 0, 1, 1, 1]]).bool()
    assert torch.equal(ablated, torch.where(keep, rows, torch.zeros(())))
    assert fm.feature_counts().tolist() == [[1, 2, 2], [2, 1, 2]]


def test_expand_scatters_to_broadcast_positions():
    x = torch.randn(2, 3, 4, 4)
    fm = format_feature_mask(QUADS.reshape(1, 1, 4, 4), (x,))
    (attr,) = fm.expand(torch.arange(8.0).view(2, 4))
    assert attr.shape == x.shape and attr.is_contiguous()
    assert torch.equal(attr[1, 2], 4.0 + QUADS.float())
    (as64,) = fm.expand(torch.arange(8.0).view(2, 4), dtype=torch.float64)
    assert as64.dtype == torch.float64


def test_non_consecutive_and_negative_ids():
    x = torch.randn(1, 4)
    fm = format_feature_mask(torch.tensor([[-5, 10, 10, 3]]), (x,))
    assert fm.ids.tolist() == [-5, 3, 10]
    (attr,) = fm.expand(torch.tensor([[1.0, 2.0, 3.0]]))
    assert attr.tolist() == [[1.0, 3.0, 3.0, 2.0]]


def test_bool_masks_are_ids_zero_and_one():
    fm = format_feature_mask(torch.tensor([[True, False, True]]), (torch.randn(1, 3),))
    assert fm.ids.tolist() == [0, 1]


@pytest.mark.parametrize(
    "mask, match",
    [
        (torch.tensor([[0.5, 1.0, 2.0, 3.0]]), "integer"),
        (torch.zeros(3, 3, 4, 4, dtype=torch.long), "broadcast"),
        (torch.zeros(1, 3, 4, 5, dtype=torch.long), "broadcast"),
        (torch.zeros(1, 1, 1, 4, 4, dtype=torch.long), "more dimensions"),
    ],
)
def test_bad_masks_name_the_argument(mask, match):
    with pytest.raises(ValueError, match="feature_mask") as err:
        format_feature_mask(mask, (torch.randn(2, 3, 4, 4),))
    assert match in str(err.value)


def test_tuple_mask_length_and_element_errors():
    x, y = torch.randn(2, 4), torch.randn(2, 3)
    with pytest.raises(ValueError, match="one mask per input"):
        format_feature_mask((torch.zeros(1, 4, dtype=torch.long),), (x, y))
    with pytest.raises(ValueError, match=r"feature_mask\[1\]"):
        format_feature_mask((torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long)), (x, y))
    with pytest.raises(TypeError, match=r"feature_mask\[0\]"):
        format_feature_mask(([0, 1, 2, 3], torch.zeros(1, 3, dtype=torch.long)), (x, y))


def test_ablate_features_equals_one_hot_ablate():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(3, 2, 4, 4, generator=g), torch.randn(3, 5, generator=g)
    masks = (torch.randint(0, 4, (3, 1, 4, 4), generator=g), torch.tensor([[4, 4, 1, 5, 5]]))
    fm = format_feature_mask(masks, (x, y))
    rows = torch.arange(3 * (fm.n_features + 1))
    examples, features = rows % 3, rows // 3 - 1  # -1: nothing replaced
    xs, ys = x[examples], y[examples]
    base = (torch.full((1, 2, 4, 4), 7.0), torch.full((1, 5), 7.0))
    one_hot = torch.nn.functional.one_hot(features.clamp_min(0), fm.n_features).bool() & (features >= 0).unsqueeze(1)
    expected = fm.ablate((xs, ys), base, one_hot, examples)
    got = fm.ablate_features((xs, ys), base, features, examples)
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
    assert not torch.equal(got[0], xs) and not torch.equal(got[1], ys)
