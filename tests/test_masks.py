"""torchexplain.masks: grid cells and SLIC superpixels as feature masks."""

import sys

import pytest
import torch

from torchexplain.attr.ablation import FeatureAblation
from torchexplain.attr.feature_mask import format_feature_mask
from torchexplain.masks import grid, superpixels


def test_grid_numbers_cells_row_by_row_with_cut_off_borders():
    mask = grid((5, 7), (2, 3))
    expected = torch.tensor(
        [
            [0, 0, 0, 1, 1, 1, 2],
            [0, 0, 0, 1, 1, 1, 2],
            [3, 3, 3, 4, 4, 4, 5],
            [3, 3, 3, 4, 4, 4, 5],
            [6, 6, 6, 7, 7, 7, 8],
        ]
    )
    assert mask.dtype == torch.long and torch.equal(mask, expected)


def test_grid_shapes_broadcast_and_take_tensors():
    assert grid((1, 3, 8, 8), 4).shape == (1, 1, 8, 8)
    x = torch.zeros(2, 3, 6, 4)
    mask = grid(x, 2)
    assert mask.shape == (1, 1, 6, 4) and mask.device == x.device
    assert mask.unique().tolist() == list(range(6))
    assert torch.equal(grid((3, 3), 5), torch.zeros(3, 3, dtype=torch.long))  # one cell


def test_grid_is_a_feature_mask_for_feature_ablation():
    x = torch.arange(32.0).view(2, 1, 4, 4)
    w = torch.linspace(-1, 1, 16)
    f = lambda t: t.flatten(1) @ w  # noqa: E731
    mask = grid(x, 2)
    attr = FeatureAblation(f).attribute(x, feature_mask=mask)
    # linear model, baseline 0: each cell gets the sum of w * x over the cell
    contrib = (w.view(1, 1, 4, 4) * x).flatten(1)
    cells = torch.zeros(2, 4).index_add_(1, mask.flatten(), contrib)
    assert torch.allclose(attr, cells[:, mask.flatten()].view(2, 1, 4, 4), atol=1e-4)


@pytest.mark.parametrize("bad", [0, (2, 0), (2, 2, 2), 1.5, True])
def test_grid_bad_cell(bad):
    with pytest.raises(ValueError, match="cell"):
        grid((4, 4), bad)


@pytest.mark.parametrize("bad", [(4,), (4, 0), "44", (4.0, 4)])
def test_grid_bad_shape(bad):
    with pytest.raises(ValueError, match="shape"):
        grid(bad, 2)


def quadrant_image():
    img = torch.zeros(3, 32, 32)
    img[0, :16, :16] = 1.0
    img[1, :16, 16:] = 1.0
    img[2, 16:, :16] = 1.0
    img[:, 16:, 16:] = 0.5
    return img


def test_superpixels_follow_colour_boundaries():
    pytest.importorskip("skimage")
    img = quadrant_image()
    mask = superpixels(img, n_segments=4)
    assert mask.shape == (1, 32, 32) and mask.dtype == torch.long
    ids = mask.unique()
    assert torch.equal(ids, torch.arange(ids.numel()))  # consecutive from 0
    # no superpixel straddles two flat quadrants
    quadrant = (torch.arange(32) // 16).view(32, 1) * 2 + (torch.arange(32) // 16).view(1, 32)
    for i in ids:
        assert quadrant[mask[0] == i].unique().numel() == 1
    # usable as feature_mask for a batch of such images
    fm = format_feature_mask(mask, (img.expand(2, 3, 32, 32),))
    assert fm.n_features == ids.numel()


def test_superpixels_shapes_for_gray_and_batches():
    pytest.importorskip("skimage")
    gray = torch.rand(16, 16, generator=torch.Generator().manual_seed(0))
    assert superpixels(gray, n_segments=5).shape == (16, 16)
    batch = torch.stack([quadrant_image(), quadrant_image().flip(-1)])
    masks = superpixels(batch, n_segments=4)
    assert masks.shape == (2, 1, 32, 32)
    assert torch.equal(masks[1, 0], superpixels(batch[1], n_segments=4)[0])
    assert format_feature_mask(masks, (batch,)).per_example


def test_superpixels_bad_arguments():
    pytest.importorskip("skimage")
    with pytest.raises(ValueError, match="n_segments"):
        superpixels(torch.rand(3, 8, 8), n_segments=0)
    with pytest.raises(ValueError, match="image"):
        superpixels(torch.rand(8), n_segments=4)


def test_superpixels_without_scikit_image_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.segmentation", None)
    with pytest.raises(ImportError, match=r"torchexplain\[masks\]"):
        superpixels(torch.rand(3, 8, 8))
