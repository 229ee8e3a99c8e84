"""Where random draws are made: every sampling method draws from the caller's
generator on the generator's own device and moves the draws to its inputs' device
(a CPU generator with CUDA inputs used to fail in NoiseTunnel and GradientShap,
which drew on the inputs' device with the caller's generator).

On CPU: the sampler, given ``meta`` inputs and a CPU generator, must advance the
generator exactly as the same draws made on the CPU do (a draw made on the inputs'
device would leave the CPU generator untouched), and every gradient sampling method
must make all its draws through the sampler. The ``gpu`` tests run the methods with
a CPU generator and CUDA inputs (and a CUDA generator with CPU inputs)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchexplain.attr as te
import torchexplain.shap as tes
from torchexplain.core.sampling import BY_INPUT, BY_SAMPLE, PathDraws, Sampler


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()


def data(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, 6, 6, generator=g), torch.randn(5, 3, 6, 6, generator=g)


# --------------------------------------------------------------------------- the sampler, on CPU


def test_draws_for_meta_inputs_are_made_on_the_generators_device():
    """The draws land on the inputs' (meta) device, and the CPU generator advanced
    exactly as for the same draws made on the CPU, in the same order."""
    meta = [torch.empty(2, 3, 4, device="meta"), torch.empty(2, 5, device="meta")]
    baselines = [torch.empty(4, 3, 4, device="meta"), torch.empty(4, 5, device="meta")]
    generator = torch.Generator().manual_seed(3)
    sampler = Sampler(generator)
    by_sample = sampler.noise(meta, (0.5, 0.0), 3, BY_SAMPLE)
    paths = PathDraws(meta, baselines, 3, (0.1, 0.2), sampler)
    picks = sampler.picks(4, 2, 3)
    assert [t.device.type for t in by_sample] == ["meta", "meta"]
    assert [e.device.type for e in paths.noise] == ["meta", "meta"]
    assert paths.picks.device.type == paths.alphas.device.type == picks.device.type == "cpu"

    replay = torch.Generator().manual_seed(3)
    for _ in range(3):  # BY_SAMPLE: sample after sample; the std-0 input draws nothing
        torch.randn(2, 3, 4, generator=replay)
    expected_picks = torch.randint(4, (6,), generator=replay)
    expected_alphas = torch.rand(6, generator=replay, dtype=torch.float64)
    torch.randn(6, 3, 4, generator=replay)
    torch.randn(6, 5, generator=replay)
    assert torch.equal(paths.picks, expected_picks) and torch.equal(paths.alphas, expected_alphas)
    again = torch.stack([torch.randint(4, (2,), generator=replay) for _ in range(3)], 1).flatten()
    assert torch.equal(picks, again)
    assert torch.equal(generator.get_state(), replay.get_state())


def test_cpu_draws_are_the_generators_values_in_either_order():
    x = [torch.zeros(2, 3, dtype=torch.float64), torch.zeros(2, 1, dtype=torch.float64)]
    by_input = Sampler(torch.Generator().manual_seed(5)).noise(x, (2.0, 0.5), 2, BY_INPUT)
    g = torch.Generator().manual_seed(5)
    torch.testing.assert_close(by_input[0], 2.0 * torch.randn(4, 3, generator=g, dtype=torch.float64), rtol=0, atol=0)
    torch.testing.assert_close(by_input[1], 0.5 * torch.randn(4, 1, generator=g, dtype=torch.float64), rtol=0, atol=0)
    by_sample = Sampler(torch.Generator().manual_seed(5)).noise(x, (2.0, 0.5), 2, BY_SAMPLE)
    g = torch.Generator().manual_seed(5)
    first = [2.0 * torch.randn(2, 3, generator=g, dtype=torch.float64), 0.5 * torch.randn(2, 1, generator=g,
                                                                                           dtype=torch.float64)]
    second = [2.0 * torch.randn(2, 3, generator=g, dtype=torch.float64), 0.5 * torch.randn(2, 1, generator=g,
                                                                                            dtype=torch.float64)]
    for i in range(2):  # (n, n_samples, *features)
        torch.testing.assert_close(by_sample[i], torch.stack([first[i], second[i]], 1), rtol=0, atol=0)
    with pytest.raises(ValueError, match="order"):
        Sampler().noise(x, (1.0, 1.0), 2, "by_example")
    with pytest.raises(TypeError, match="generator"):
        Sampler(3)


def _spy_on_sampler(monkeypatch) -> list:
    """Record every draw the sampler makes: (primitive, generator, arguments)."""
    calls: list = []
    for name in ("normal", "indices", "uniform"):
        original = getattr(Sampler, name)

        def spy(self, *args, _original=original, _name=name):
            calls.append((_name, self.generator, args))
            return _original(self, *args)

        monkeypatch.setattr(Sampler, name, spy)
    return calls


def _replayed_state(seed: int, calls) -> torch.Tensor:
    """A CPU generator's state after making the recorded draws on the CPU."""
    g = torch.Generator().manual_seed(seed)
    for name, _, args in calls:
        if name == "normal":
            shape, _, like = args
            torch.randn(tuple(shape), generator=g, dtype=like.dtype)
        elif name == "indices":
            torch.randint(args[0], (args[1],), generator=g)
        else:
            torch.rand(args[0], generator=g, dtype=torch.float64)
    return g.get_state()


def _runs():
    model = net()
    x, baselines = data()
    return {
        "NoiseTunnel": lambda g: te.NoiseTunnel(te.IntegratedGradients(model)).attribute(
            x, nt_samples=3, nt_samples_batch_size=2, stdevs=0.1, baselines=baselines, draw_baseline_from_distrib=True,
            n_steps=3, target=1, generator=g),
        "GradientShap": lambda g: te.GradientShap(model).attribute(
            x, baselines, n_samples=3, stdevs=0.1, target=0, generator=g),
        "LayerGradientShap": lambda g: te.LayerGradientShap(model, model[2]).attribute(
            x, baselines, n_samples=3, stdevs=0.1, target=2, generator=g),
        "NeuronGradientShap": lambda g: te.NeuronGradientShap(model, model[2]).attribute(
            x, (1, 2, 2), baselines, n_samples=3, stdevs=0.1, generator=g),
    }


@pytest.mark.parametrize("method", ["NoiseTunnel", "GradientShap", "LayerGradientShap", "NeuronGradientShap"])
def test_every_draw_of_a_gradient_sampling_method_goes_through_the_sampler(method, monkeypatch):
    """Replaying the sampler's recorded draws on a fresh generator reproduces the
    caller's generator state: no draw from it was made anywhere else."""
    calls = _spy_on_sampler(monkeypatch)
    generator = torch.Generator().manual_seed(11)
    _runs()[method](generator)
    assert calls and all(g is generator for _, g, _ in calls)
    assert {name for name, _, _ in calls} >= {"normal", "indices"}
    assert torch.equal(generator.get_state(), _replayed_state(11, calls))


def test_gradient_explainer_draws_through_the_sampler(monkeypatch):
    calls = _spy_on_sampler(monkeypatch)
    x, background = data()
    tes.GradientExplainer(net(), background, local_smoothing=0.1).shap_values(x, nsamples=4, rseed=13)
    generators = {id(g) for _, g, _ in calls}
    assert len(generators) == 1 and {name for name, _, _ in calls} == {"normal", "indices", "uniform"}
    assert torch.equal(calls[0][1].get_state(), _replayed_state(13, calls))


# --------------------------------------------------------------------------- across devices, on a GPU


def _run_on(device: str, method: str, generator: torch.Generator):
    """One method on ``device`` (model and inputs), drawing from ``generator``."""
    model = net().to(device)
    x, baselines = (t.to(device) for t in data())
    channels = torch.arange(3, device=device).view(1, 3, 1, 1)  # one feature per colour channel
    runs = {
        "NoiseTunnel": lambda: te.NoiseTunnel(te.Saliency(model)).attribute(
            x, nt_samples=3, stdevs=0.1, target=1, generator=generator),
        "NoiseTunnel-baselines": lambda: te.NoiseTunnel(te.IntegratedGradients(model)).attribute(
            x, nt_samples=3, stdevs=0.1, baselines=baselines, draw_baseline_from_distrib=True, n_steps=3, target=1,
            generator=generator),
        "GradientShap": lambda: te.GradientShap(model).attribute(
            x, baselines, n_samples=3, stdevs=0.1, target=0, return_convergence_delta=True, generator=generator),
        "LayerGradientShap": lambda: te.LayerGradientShap(model, model[2]).attribute(
            x, baselines, n_samples=3, stdevs=0.1, target=2, generator=generator),
        "NeuronGradientShap": lambda: te.NeuronGradientShap(model, model[2]).attribute(
            x, (1, 2, 2), baselines, n_samples=3, stdevs=0.1, generator=generator),
        "ShapleyValueSampling": lambda: te.ShapleyValueSampling(model).attribute(
            x, target=0, n_samples=2, feature_mask=channels, generator=generator),
        "FeaturePermutation": lambda: te.FeaturePermutation(model).attribute(x, target=0, generator=generator),
        "Lime": lambda: te.Lime(model).attribute(
            x, target=0, n_samples=20, feature_mask=channels, generator=generator),
        "KernelShap": lambda: te.KernelShap(model).attribute(
            x, target=0, n_samples=20, feature_mask=channels, generator=generator),
        "RISE": lambda: te.RISE(model).attribute(x, target=0, n_masks=16, generator=generator),
    }
    return runs[method]()


@pytest.fixture
def full_precision():
    """CUDA convolutions and matmuls in float32, not TF32, so GPU values compare with CPU ones."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


GPU_METHODS = ["NoiseTunnel", "NoiseTunnel-baselines", "GradientShap", "LayerGradientShap", "NeuronGradientShap",
               "ShapleyValueSampling", "FeaturePermutation", "Lime", "KernelShap", "RISE"]


@pytest.mark.gpu
@pytest.mark.parametrize("method", GPU_METHODS)
def test_cpu_generator_with_cuda_inputs_gives_the_cpu_values(method, full_precision):
    on_gpu = _run_on("cuda", method, torch.Generator().manual_seed(7))
    on_cpu = _run_on("cpu", method, torch.Generator().manual_seed(7))
    for got, want in zip(_flat(on_gpu), _flat(on_cpu)):
        assert got.device.type == "cuda"
        torch.testing.assert_close(got.cpu(), want, rtol=1e-3, atol=1e-5)


@pytest.mark.gpu
def test_gradient_explainer_on_cuda_gives_the_cpu_values(full_precision):
    x, background = data()
    values = {}
    for device in ("cpu", "cuda"):
        explainer = tes.GradientExplainer(net().to(device), background.to(device), local_smoothing=0.1)
        values[device] = explainer.shap_values(x.to(device), nsamples=4, ranked_outputs=2, rseed=3)
    torch.testing.assert_close(torch.as_tensor(values["cuda"][0]), torch.as_tensor(values["cpu"][0]),
                               rtol=1e-3, atol=1e-6)
    assert torch.equal(values["cuda"][1], values["cpu"][1])


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["NoiseTunnel", "NoiseTunnel-baselines", "GradientShap", "LayerGradientShap",
                                    "NeuronGradientShap"])
def test_cuda_generator_with_cpu_inputs_draws_on_the_gpu(method):
    first = _run_on("cpu", method, torch.Generator(device="cuda").manual_seed(7))
    again = _run_on("cpu", method, torch.Generator(device="cuda").manual_seed(7))
    for a, b in zip(_flat(first), _flat(again)):
        assert a.device.type == "cpu"
        assert torch.equal(a, b)


def _flat(value):
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _flat(v)]
    return [value]
