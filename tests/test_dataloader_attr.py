"""DataLoaderAttribution: hand-derived attributions of linear models, Captum's on the
same data, the number of passes and forwards, input roles and clear errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from torchexplain.attr import DataLoaderAttribution, FeatureAblation, FeaturePermutation
from torchexplain.attr.dataloader import InputRole

X = torch.tensor([[0.0, 0.1], [0.3, 0.4], [0.6, 0.7], [0.9, 1.0], [1.2, 1.3]])
Y = torch.tensor([[[0.1, 0.2], [0.3, 0.2]], [[0.4, 0.5], [0.3, 0.2]], [[0.8, 0.1], [0.2, 0.5]],
                  [[1.1, 0.7], [0.1, 0.7]], [[0.6, 1.4], [1.2, 0.4]]])
LABEL = torch.tensor([[0], [1], [0], [0], [1]])
WX, WY = torch.tensor([2.0, -1.0]), torch.tensor([[0.5, 1.0], [-2.0, 3.0]])


def linear(x, y, label=None):
    return x @ WX + (y * WY).sum((1, 2)) + (0 if label is None else label[:, 0].float())


class Counted:
    """A loader that counts its passes over the data."""

    def __init__(self, loader):
        self.loader, self.passes = loader, 0

    def __iter__(self):
        self.passes += 1
        return iter(self.loader)


def test_linear_model_per_example_attributions():
    loader = DataLoader(TensorDataset(X, Y), batch_size=2)
    ax, ay = DataLoaderAttribution(FeatureAblation(linear)).attribute(loader, baselines=(0.5, 0.0))
    torch.testing.assert_close(ax, WX * (X - 0.5))  # linear: each scalar's share of the output
    torch.testing.assert_close(ay, WY * Y)


def test_a_loader_of_tensors_gives_a_tensor(capsys):
    loader = DataLoader(X, batch_size=3)  # batches are plain tensors
    attr = DataLoaderAttribution(FeatureAblation(lambda x: x @ WX)).attribute(loader, show_progress=True)
    assert isinstance(attr, torch.Tensor)
    torch.testing.assert_close(attr, WX * X)
    assert "100%" in capsys.readouterr().err


def test_metric_from_reduce_and_to_metric_with_a_shared_mask():
    loader = DataLoader(TensorDataset(X, Y), batch_size=2)
    masks = (torch.tensor([[0, 0]]), torch.tensor([[[1, 2], [0, 2]]]))  # id 0 spans both inputs

    def reduce(accum, output, inputs):
        total, count = accum or (0.0, 0)
        return total + output.sum(), count + output.numel()

    dl = DataLoaderAttribution(FeatureAblation(linear))
    attr = dl.attribute(loader, feature_mask=masks, reduce=reduce, to_metric=lambda a: a[0] / a[1],
                        return_input_shape=False)
    contrib = torch.cat([X * WX, (Y * WY).flatten(1)], 1).mean(0)  # mean output change per scalar
    expected = torch.stack([contrib[[0, 1, 4]].sum(), contrib[2], contrib[[3, 5]].sum()]).view(1, 3)
    torch.testing.assert_close(attr, expected)


@pytest.mark.parametrize("per_pass", [1, 3, 7])
def test_passes_and_forwards(per_pass):
    calls = []

    def model(x, y):
        calls.append(x.shape[0])
        return linear(x, y)

    loader = Counted(DataLoader(TensorDataset(X, Y), batch_size=2))
    attr = DataLoaderAttribution(FeatureAblation(model)).attribute(loader, perturbations_per_pass=per_pass)
    n_features, n_batches = 6, 3
    assert loader.passes == 2 + math.ceil(n_features / per_pass)  # format, unperturbed, then the passes
    assert len(calls) == n_batches * (1 + math.ceil(n_features / per_pass))  # per-example outputs: one forward
    torch.testing.assert_close(attr[1], WY * Y)


def test_roles_and_a_model_with_one_value_per_batch():
    seen = []

    def reduce(accum, output, inputs):
        seen.append(len(inputs))
        return output if accum is None else accum + output

    def total(x, label):  # one value for the whole batch
        return (x @ WX).sum() + label.float().sum()

    loader = DataLoader(TensorDataset(X, Y, LABEL), batch_size=2)
    roles = (InputRole.need_attr, InputRole.no_forward, InputRole.need_forward)
    (attr,) = DataLoaderAttribution(FeatureAblation(total)).attribute(
        loader, input_roles=roles, reduce=reduce, perturbations_per_pass=2
    )
    torch.testing.assert_close(attr, (WX * X.sum(0)).view(1, 2))
    assert set(seen) == {3}  # reduce sees every element of the batch


def test_int_input_with_float_baseline_is_promoted():
    loader = DataLoader(TensorDataset(X, LABEL), batch_size=5)
    ax, al = DataLoaderAttribution(FeatureAblation(lambda x, label: linear(x, Y, label))).attribute(
        loader, baselines=(0.0, 0.5)
    )
    torch.testing.assert_close(al, LABEL.float() - 0.5)


def test_same_as_captum():
    from captum.attr import DataLoaderAttribution as CaptumDL
    from captum.attr import FeatureAblation as CaptumFA

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    loader = DataLoader(TensorDataset(Y), batch_size=2)
    mask = torch.tensor([[[0, 1], [1, 2]]])
    ours = DataLoaderAttribution(FeatureAblation(net)).attribute(loader, feature_mask=(mask,), baselines=(0.2,),
                                                                 perturbations_per_pass=2)
    theirs = CaptumDL(CaptumFA(net)).attribute(loader, feature_mask=(mask,), baselines=(0.2,),
                                               perturbations_per_pass=2)
    torch.testing.assert_close(ours[0], theirs[0])


def test_errors():
    loader = DataLoader(TensorDataset(X, Y), batch_size=2)
    dl = DataLoaderAttribution(FeatureAblation(linear))
    with pytest.raises(TypeError, match="FeatureAblation"):
        DataLoaderAttribution(FeaturePermutation(linear))
    with pytest.raises(ValueError, match="one role per element"):
        dl.attribute(loader, input_roles=(0,))
    with pytest.raises(ValueError, match="at least one element need_attr"):
        dl.attribute(loader, input_roles=(1, 1))
    with pytest.raises(ValueError, match=r"feature_mask\[0\] must have first dimension 1"):
        dl.attribute(loader, feature_mask=(torch.zeros(2, 2, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long)))
    with pytest.raises(TypeError, match="must be a tensor"):
        dl.attribute(loader, reduce=lambda a, o, i: 1.0)
    with pytest.raises(ValueError, match="perturbations_per_pass"):
        dl.attribute(loader, perturbations_per_pass=0)
    with pytest.raises(NotImplementedError):
        dl.attribute_future()
