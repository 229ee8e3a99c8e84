"""Write tests/data/engine_reference.pt: reference outputs of the sampling and
layer-gradient methods at fixed seeds, which tests/test_engine_reference.py checks
the current code against (values must not change beyond 1e-6 relative).

The references were taken from commit 75ae8985cd198b2fe2dce91a90d6b6ae5327e779 (the
code before the one gradient engine and the one sampler of issue 13), with

    git archive 75ae898 | tar -x -C /tmp/ref && PYTHONPATH=/tmp/ref/src \
        .venv/bin/python scripts/write_engine_reference.py tests/data/engine_reference.pt

Run it again the same way only to take new references on purpose. The fixture
holds tensors only (loaded with ``weights_only=True``): the models' weights, the
inputs, and every output under its name. :func:`compute` is what the test calls
with the stored weights and inputs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn


class ConvNet(nn.Module):
    """Two convolutions, global average pooling and a linear classifier (3 classes):
    small, and a model every CAM takes (CAM's linear layer on the pooled map)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(self.pool(x).flatten(1))


class TwoInputs(nn.Module):
    """f(a, b) = W2 relu(W1 [a, b]): two inputs, so draws for several tensors are seen."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(5 + 3, 6)
        self.out = nn.Linear(6, 2)

    def forward(self, a, b):
        return self.out(torch.relu(self.hidden(torch.cat([a, b], 1))))


def fresh_state() -> dict[str, torch.Tensor]:
    """Weights and inputs, drawn once from seed 0 (stored in the fixture, so the test
    does not depend on how torch initialises modules)."""
    torch.manual_seed(0)
    state = {f"net.{k}": v for k, v in ConvNet().state_dict().items()}
    state.update({f"two.{k}": v for k, v in TwoInputs().state_dict().items()})
    state["x"] = torch.randn(3, 3, 8, 8)
    state["background"] = torch.randn(4, 3, 8, 8)
    state["a"], state["b"] = torch.randn(3, 5), torch.randn(3, 3)
    state["a_background"], state["b_background"] = torch.randn(4, 5), torch.randn(4, 3)
    return state


def models(state):
    net, two = ConvNet(), TwoInputs()
    net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
    two.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("two.")})
    return net.eval(), two.eval()


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _tensors(value) -> list[torch.Tensor]:
    """A result (tensor, array, tuple or list of them) as a flat list of tensors."""
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return [torch.as_tensor(value).detach().clone()]


def _gradient_explainer(out, state, net, two):
    from torchexplain.shap import GradientExplainer

    x, bg = state["x"], state["background"]
    out["shap.input"] = GradientExplainer(net, bg).shap_values(x, nsamples=8, rseed=1)
    out["shap.input_chunked"] = GradientExplainer(net, bg, batch_size=5).shap_values(x, nsamples=8, rseed=1)
    out["shap.ranked"] = GradientExplainer(net, bg).shap_values(x, nsamples=8, ranked_outputs=2, rseed=2)
    out["shap.smoothing"] = GradientExplainer(net, bg, local_smoothing=0.1).shap_values(x, nsamples=6, rseed=3)
    out["shap.layer"] = GradientExplainer((net, "conv2"), bg).shap_values(x, nsamples=8, ranked_outputs=2, rseed=4)
    out["shap.layer_smoothing"] = GradientExplainer((net, net.conv2), bg, local_smoothing=0.1).shap_values(
        x, nsamples=6, rseed=5)
    out["shap.layer_shap"] = GradientExplainer((net, "conv2"), bg, compat="shap").shap_values(x, nsamples=6, rseed=6)
    pair = [state["a"], state["b"]]
    data = [state["a_background"], state["b_background"]]
    out["shap.two_inputs"] = GradientExplainer(two, data, local_smoothing=0.2).shap_values(pair, nsamples=5, rseed=7)
    explainer = GradientExplainer(net, bg)
    out["shap.expected_value"] = explainer.expected_value


def _deep_explainer(out, state, net):
    from torchexplain.shap import DeepExplainer

    x, bg = state["x"], state["background"]
    out["deep.input"] = DeepExplainer(net, bg).shap_values(x, ranked_outputs=2)
    out["deep.layer"] = DeepExplainer((net, "conv2"), bg).shap_values(x)


def _noise_tunnel(out, state, net, two):
    import torchexplain.attr as te

    x, bg = state["x"], state["background"]
    for nt_type in ("smoothgrad", "smoothgrad_sq", "vargrad"):
        out[f"nt.{nt_type}"] = te.NoiseTunnel(te.Saliency(net)).attribute(
            x, nt_type=nt_type, nt_samples=4, stdevs=0.1, target=[0, 1, 2], generator=gen(10))
    out["nt.batched"] = te.NoiseTunnel(te.Saliency(net)).attribute(
        x, nt_samples=5, nt_samples_batch_size=2, stdevs=0.2, target=1, generator=gen(11))
    out["nt.ig_distribution"] = te.NoiseTunnel(te.IntegratedGradients(net)).attribute(
        x, nt_samples=5, nt_samples_batch_size=2, stdevs=0.1, baselines=bg, draw_baseline_from_distrib=True,
        n_steps=4, target=2, return_convergence_delta=True, generator=gen(12))
    out["nt.two_inputs"] = te.NoiseTunnel(te.InputXGradient(two)).attribute(
        (state["a"], state["b"]), nt_type="vargrad", nt_samples=3, stdevs=(0.1, 0.3), target=0, generator=gen(13))


def _gradient_shap(out, state, net, two):
    import torchexplain.attr as te

    x, bg = state["x"], state["background"]
    out["gs.net"] = te.GradientShap(net).attribute(
        x, bg, n_samples=5, stdevs=0.1, target=[0, 1, 2], return_convergence_delta=True, generator=gen(20))
    out["gs.chunked"] = te.GradientShap(net).attribute(
        x, bg, n_samples=5, stdevs=0.1, target=1, internal_batch_size=4, generator=gen(21))
    out["gs.two_inputs"] = te.GradientShap(two).attribute(
        (state["a"], state["b"]), (state["a_background"], state["b_background"]), n_samples=4, stdevs=(0.1, 0.2),
        target=1, return_convergence_delta=True, generator=gen(22))
    out["gs.layer"] = te.LayerGradientShap(net, net.conv1).attribute(
        x, bg, n_samples=5, stdevs=0.1, target=[2, 1, 0], return_convergence_delta=True, generator=gen(23))
    out["gs.layer_input"] = te.LayerGradientShap(net, net.relu1, multiply_by_inputs=False).attribute(
        x, bg, n_samples=3, target=0, attribute_to_layer_input=True, generator=gen(24))
    out["gs.neuron"] = te.NeuronGradientShap(net, net.conv2).attribute(
        x, (1, 2, 3), bg, n_samples=4, stdevs=0.1, generator=gen(25))


def _deltas(out, state, net):
    """The methods whose example-major convergence delta is one shared helper."""
    import torchexplain.attr as te

    x, bg = state["x"], state["background"]
    out["delta.deeplift"] = te.DeepLift(net).attribute(x, bg[:1], target=1, return_convergence_delta=True)
    out["delta.deeplift_shap"] = te.DeepLiftShap(net).attribute(x, bg, target=[0, 1, 2], return_convergence_delta=True)
    out["delta.layer_deeplift"] = te.LayerDeepLift(net, net.conv2).attribute(
        x, bg[:1], target=1, return_convergence_delta=True)
    out["delta.layer_deeplift_shap"] = te.LayerDeepLiftShap(net, net.conv1).attribute(
        x, bg[:2], target=2, return_convergence_delta=True)
    out["delta.layer_ig"] = te.LayerIntegratedGradients(net, net.conv1).attribute(
        x, bg[:1], target=0, n_steps=6, return_convergence_delta=True)
    out["delta.layer_conductance"] = te.LayerConductance(net, net.conv2).attribute(
        x, bg[:1], target=0, n_steps=6, return_convergence_delta=True)


def _cams(out, state, net):
    import torchexplain.cam as tc

    x = state["x"]
    for name in tc.__all__:
        cls = getattr(tc, name)
        if not isinstance(cls, type) or name in ("BaseCAM", "GradientCAM"):
            continue
        out[f"cam.{name}"] = cls(net, "relu2").attribute(x, target=[0, 1, 2])
    out["cam.GradCAM_located_chunked"] = tc.GradCAM(net).attribute(x, batch_size=2, upsample=False)
    out["cam.GradCAMPlusPlus_predicted"] = tc.GradCAMPlusPlus(net, net.conv1).attribute(x, relu=False)


def _metrics(out, state, net):
    import torchexplain.attr as te
    from torchexplain.metrics import infidelity, sensitivity_max

    x = state["x"]

    def perturb(inputs):
        noise = torch.randn(inputs.shape) * 0.05
        return noise, inputs - noise

    saliency = te.Saliency(net)
    attributions = saliency.attribute(x, target=1)
    for normalize in (False, True):
        torch.manual_seed(30)
        out[f"metric.infidelity_{normalize}"] = infidelity(
            net, perturb, x, attributions, target=1, n_perturb_samples=5, max_examples_per_batch=7,
            normalize=normalize)
    torch.manual_seed(31)
    out["metric.sensitivity"] = sensitivity_max(
        saliency.attribute, x, n_perturb_samples=5, max_examples_per_batch=7, target=[0, 1, 2])


def compute(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every reference output, named, for the weights and inputs in ``state``
    (single-threaded, so reductions run in one order)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net, two = models(state)
        raw: dict = {}
        _gradient_explainer(raw, state, net, two)
        _deep_explainer(raw, state, net)
        _noise_tunnel(raw, state, net, two)
        _gradient_shap(raw, state, net, two)
        _deltas(raw, state, net)
        _cams(raw, state, net)
        _metrics(raw, state, net)
    finally:
        torch.set_num_threads(threads)
    out = {}
    for name, value in raw.items():
        for i, t in enumerate(_tensors(value)):
            out[f"{name}.{i}"] = t
    return out


def main(path: str) -> None:
    state = fresh_state()
    outputs = compute(state)
    fixture = {f"state.{k}": v for k, v in state.items()}
    fixture.update({f"out.{k}": v for k, v in outputs.items()})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, path)
    size = Path(path).stat().st_size
    print(f"wrote {len(outputs)} outputs ({size / 1024:.1f} KiB) to {path}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/engine_reference.pt")
