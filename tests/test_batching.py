"""Chunking never changes the result.

Every expanded row (integration step, baseline sample, reference row) goes through
the one chunked evaluator; whatever the chunk size (``None``, an int, ``"auto"``,
``"auto"`` under a tiny memory budget) the attributions and deltas must be equal.
Models run in float64 so the comparisons can be tight.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchexplain import config
from torchexplain.attr import DeepLiftShap, GradientShap, IntegratedGradients, NoiseTunnel, Saliency

TIGHT = dict(rtol=1e-10, atol=1e-12)
CHUNKS = [1, 3, "auto"]
N_EXAMPLES = 3


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 3 * 3, 3)

    def forward(self, x):
        return self.fc(self.pool(F.relu(self.conv(x))).flatten(1))


class Counting(nn.Module):
    """Records the batch size of every forward call in an outside list."""

    def __init__(self, inner, log):
        super().__init__()
        self.inner = inner
        self.log = log

    def forward(self, x):
        self.log.append(x.shape[0])
        return self.inner(x)


@pytest.fixture
def model():
    return SmallCNN().double().eval()


@pytest.fixture
def inputs():
    torch.manual_seed(1)
    return torch.randn(N_EXAMPLES, 2, 6, 6, dtype=torch.float64)


def baseline_rows():
    torch.manual_seed(2)
    return torch.randn(4, 2, 6, 6, dtype=torch.float64) * 0.3


N_STEPS, N_SAMPLES, N_REFS = 7, 5, 4
ROWS = {
    "IntegratedGradients": N_EXAMPLES * N_STEPS,
    "GradientShap": N_EXAMPLES * N_SAMPLES,
    "DeepLiftShap": N_EXAMPLES * N_REFS,
}
# DeepLiftShap evaluates inputs and references together: two model rows per row
MODEL_ROWS_PER_ROW = {"IntegratedGradients": 1, "GradientShap": 1, "DeepLiftShap": 2}


def run(name, model, x, chunk):
    """Attributions and convergence delta for ``name`` with ``internal_batch_size=chunk``."""
    target = [0, 2, 1]
    if name == "IntegratedGradients":
        return IntegratedGradients(model).attribute(
            x, baselines=0.1, target=target, n_steps=N_STEPS, internal_batch_size=chunk,
            return_convergence_delta=True,
        )
    if name == "GradientShap":
        return GradientShap(model).attribute(
            x, baselines=baseline_rows(), target=target, n_samples=N_SAMPLES, stdevs=0.2,
            internal_batch_size=chunk, return_convergence_delta=True,
            generator=torch.Generator().manual_seed(123),
        )
    if name == "DeepLiftShap":
        return DeepLiftShap(model).attribute(
            x, baselines=baseline_rows(), target=target, internal_batch_size=chunk,
            return_convergence_delta=True,
        )
    raise AssertionError(name)


METHODS = list(ROWS)


@pytest.mark.parametrize("chunk", CHUNKS, ids=str)
@pytest.mark.parametrize("name", METHODS)
def test_chunk_size_does_not_change_result(name, chunk, model, inputs):
    ref_attr, ref_delta = run(name, model, inputs, None)
    attr, delta = run(name, model, inputs, chunk)
    torch.testing.assert_close(attr, ref_attr, **TIGHT)
    torch.testing.assert_close(delta, ref_delta, **TIGHT)
    assert ref_attr.abs().sum() > 0


@pytest.mark.parametrize("chunk", [None, 1, 3, "auto"], ids=str)
@pytest.mark.parametrize("name", METHODS)
def test_every_row_evaluated_once_per_chunking(name, chunk, model, inputs):
    """The forward calls of the attribution cover exactly the method's rows."""
    log = []
    per_row = MODEL_ROWS_PER_ROW[name]
    if name == "IntegratedGradients":
        IntegratedGradients(Counting(model, log)).attribute(
            inputs, target=0, n_steps=N_STEPS, internal_batch_size=chunk
        )
    elif name == "GradientShap":
        GradientShap(Counting(model, log)).attribute(
            inputs, baselines=baseline_rows(), target=0, n_samples=N_SAMPLES, internal_batch_size=chunk,
            generator=torch.Generator().manual_seed(0),
        )
    else:
        DeepLiftShap(Counting(model, log)).attribute(
            inputs, baselines=baseline_rows(), target=0, internal_batch_size=chunk
        )
    assert sum(log) == ROWS[name] * per_row
    if isinstance(chunk, int):
        assert max(log) <= chunk * per_row
        assert len(log) == -(-ROWS[name] // chunk)
    if chunk is None:
        assert log == [ROWS[name] * per_row]


@pytest.mark.parametrize("name", METHODS)
def test_auto_with_one_byte_budget_runs_one_row_at_a_time(name, model, inputs, monkeypatch):
    ref_attr, ref_delta = run(name, model, inputs, None)
    monkeypatch.setattr(config, "memory_budget", 1)
    log = []
    attr, delta = run(name, Counting(model, log), inputs, "auto")
    torch.testing.assert_close(attr, ref_attr, **TIGHT)
    torch.testing.assert_close(delta, ref_delta, **TIGHT)
    per_row = MODEL_ROWS_PER_ROW[name]
    # calls with gradients come first; the delta's forward passes (no grad) follow
    grad_calls = []
    total = 0
    for size in log:
        if total >= ROWS[name] * per_row:
            break
        grad_calls.append(size)
        total += size
    assert total == ROWS[name] * per_row
    # a probe block first, then rows one at a time: nothing larger fits in one byte
    assert len(grad_calls) >= ROWS[name] - 8
    assert all(size == per_row for size in grad_calls[1:])


@pytest.mark.parametrize("name", METHODS)
def test_auto_with_small_budget_uses_several_chunks(name, model, inputs, monkeypatch):
    ref_attr, ref_delta = run(name, model, inputs, None)
    monkeypatch.setattr(config, "memory_budget", 10_000)
    log = []
    attr, delta = run(name, Counting(model, log), inputs, "auto")
    torch.testing.assert_close(attr, ref_attr, **TIGHT)
    torch.testing.assert_close(delta, ref_delta, **TIGHT)
    assert len(log) >= 4


def test_monkeypatched_budget_is_restored():
    """Guards the fixture use above: the default is automatic."""
    assert config.memory_budget is None


def test_auto_default_budget_matches_everything_at_once(model, inputs):
    a = IntegratedGradients(model).attribute(inputs, target=1, n_steps=40, internal_batch_size="auto")
    b = IntegratedGradients(model).attribute(inputs, target=1, n_steps=40, internal_batch_size=None)
    torch.testing.assert_close(a, b, **TIGHT)


@pytest.mark.parametrize("chunk", [1, 2, 5], ids=str)
def test_noise_tunnel_inner_chunking_does_not_change_result(chunk, model, inputs):
    def smooth(internal_batch_size):
        nt = NoiseTunnel(IntegratedGradients(model))
        return nt.attribute(
            inputs, nt_samples=3, stdevs=0.1, target=1, n_steps=4,
            internal_batch_size=internal_batch_size, generator=torch.Generator().manual_seed(9),
        )

    torch.testing.assert_close(smooth(chunk), smooth(None), **TIGHT)


@pytest.mark.parametrize("batch", [1, 2], ids=str)
def test_noise_tunnel_sample_batching_does_not_change_result(batch, model, inputs):
    # SRC BUG: NoiseTunnel draws the noise inside each block of nt_samples_batch_size
    # samples (shape (n * k, ...), example-major), so with a fixed generator the same
    # draws land on different (example, sample) pairs when the block size changes and
    # the result depends on nt_samples_batch_size. GradientShap draws everything up
    # front for exactly this reason.
    def smooth(nt_samples_batch_size):
        return NoiseTunnel(Saliency(model)).attribute(
            inputs, nt_samples=4, nt_samples_batch_size=nt_samples_batch_size, stdevs=0.3, target=1,
            generator=torch.Generator().manual_seed(9),
        )

    torch.testing.assert_close(smooth(batch), smooth(None), **TIGHT)


# --------------------------------------------------------------------------- memory_budget


@pytest.mark.parametrize(
    "value,error,pattern",
    [
        (-1, ValueError, r"memory_budget must be positive; got -1"),
        (0, ValueError, r"memory_budget must be positive; got 0"),
        (True, TypeError, r"memory_budget must be None, a number of bytes \(int\) or a fraction"),
        ("1GB", TypeError, r"memory_budget must be None.*got '1GB'"),
        (1.5, ValueError, r"memory_budget as a float must lie in \(0, 1\]; got 1.5"),
        (0.0, ValueError, r"memory_budget as a float must lie in \(0, 1\]; got 0.0"),
        (-0.5, ValueError, r"memory_budget as a float must lie in \(0, 1\]"),
    ],
    ids=repr,
)
def test_memory_budget_validation(value, error, pattern, monkeypatch, model, inputs):
    monkeypatch.setattr(config, "memory_budget", value)
    with pytest.raises(error, match=pattern):
        config.resolve_memory_budget("cpu")
    # the same clear error surfaces from an attribution that sizes chunks automatically
    with pytest.raises(error, match=pattern):
        IntegratedGradients(model).attribute(inputs, target=0, n_steps=4, internal_batch_size="auto")


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu")], ids=str)
def test_resolve_memory_budget_auto_is_positive_int(device):
    value = config.resolve_memory_budget(device)
    assert type(value) is int and value > 0
    assert value <= config.AUTO_CPU_CAP


def test_resolve_memory_budget_int_and_fraction(monkeypatch):
    monkeypatch.setattr(config, "memory_budget", 12_345)
    assert config.resolve_memory_budget() == 12_345
    monkeypatch.setattr(config, "memory_budget", 1.0)
    whole = config.resolve_memory_budget("cpu")
    monkeypatch.setattr(config, "memory_budget", 0.25)
    quarter = config.resolve_memory_budget("cpu")
    assert type(whole) is int and type(quarter) is int and quarter > 0
    # available memory drifts between calls; a quarter is still well below the whole
    assert quarter < 0.5 * whole


class _ViewNet(torch.nn.Module):
    """Flattens with .view, which a channels-last activation cannot do."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.fc = torch.nn.Linear(4 * 6 * 6, 3)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.fc(torch.relu(self.conv(x)).view(x.shape[0], -1))


def test_channels_last_falls_back_for_models_that_need_their_layout():
    from torchexplain import config
    from torchexplain.attr import Saliency

    net = _ViewNet().eval()
    x = torch.randn(6, 3, 8, 8)
    saved = config.channels_last
    try:
        config.channels_last = True
        retried = Saliency(net).attribute(x, target=1)
        assert net.calls == 2  # the channels-last try, then the contiguous one
        config.channels_last = False
        plain = Saliency(net).attribute(x, target=1)
    finally:
        config.channels_last = saved
    torch.testing.assert_close(retried, plain)


def test_channels_last_only_where_it_is_faster():
    """Chunks of 4+ float32 images of 128x128 or more on CPU; smaller ones (slower in
    that layout) and forced choices as config says."""
    from torchexplain import config
    from torchexplain.core.gradients import wants_channels_last

    assert wants_channels_last([torch.zeros(4, 3, 128, 128)])
    assert not wants_channels_last([torch.zeros(4, 3, 64, 64)])
    assert not wants_channels_last([torch.zeros(3, 3, 224, 224)])
    assert not wants_channels_last([torch.zeros(4, 3, 224, 224, dtype=torch.float64)])
    saved = config.channels_last
    try:
        config.channels_last = True
        assert wants_channels_last([torch.zeros(1, 3, 8, 8)])
    finally:
        config.channels_last = saved


def test_a_models_own_error_is_raised_without_a_retry():
    from torchexplain.attr import Saliency

    class Broken(_ViewNet):
        def forward(self, x):
            self.calls += 1
            raise RuntimeError("boom: the model failed")

    from torchexplain import config

    net = Broken().eval()
    saved, config.channels_last = config.channels_last, True
    try:
        with pytest.raises(RuntimeError, match="boom"):
            Saliency(net).attribute(torch.randn(6, 3, 8, 8), target=1)
    finally:
        config.channels_last = saved
    assert net.calls == 1


def test_the_measured_block_of_a_forward_only_method_frees_its_activations():
    """Occlusion's "auto" probe runs one block with autograd on to measure activations;
    none of them may outlive the call (a pack hook keeping its tensor would leave every
    probed block's graph in a cycle that only backward breaks)."""
    import gc
    import weakref

    from torchexplain.attr import Occlusion

    seen = []

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.a, self.b = nn.Linear(6, 5), nn.Linear(5, 2)

        def forward(self, x):
            hidden = torch.relu(self.a(x))  # relu saves its output for backward
            seen.append(weakref.ref(hidden))
            return self.b(hidden)

    x = torch.randn(4, 6)
    attributions = Occlusion(Net()).attribute(x, sliding_window_shapes=(1,), target=1, perturbations_per_eval="auto")
    gc.collect()
    assert len(seen) >= 2 and attributions.shape == x.shape
    assert [r for r in seen if r() is not None] == []
