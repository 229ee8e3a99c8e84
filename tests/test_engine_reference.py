"""The one gradient engine and the one sampler give the values the code gave before
them: tests/data/engine_reference.pt holds the outputs of commit 75ae898 at fixed
seeds (GradientExplainer with ranked outputs and at a layer, DeepExplainer,
NoiseTunnel, GradientShap and its layer and neuron forms, the example-major
convergence deltas, every CAM, infidelity and sensitivity_max), written by
scripts/write_engine_reference.py, whose ``compute`` this test runs again."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "engine_reference.pt"

#: largest change allowed, relative to the largest magnitude of each output: the float32
#: rounding of a convolution's other memory layout (the reference was written when its
#: 64x64 chunks ran channels-last; they now run contiguous) moves VarGrad, a variance of
#: gradients, by 3e-6
RELATIVE = 1e-5


def _script():
    path = ROOT / "scripts" / "write_engine_reference.py"
    spec = importlib.util.spec_from_file_location("write_engine_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference():
    stored = torch.load(FIXTURE, weights_only=True)
    state = {k[len("state."):]: v for k, v in stored.items() if k.startswith("state.")}
    expected = {k[len("out."):]: v for k, v in stored.items() if k.startswith("out.")}
    return expected, _script().compute(state)


def relative_difference(got: torch.Tensor, want: torch.Tensor, scale: float | None = None) -> float:
    """max |got - want| / max |want| (exact equality for integer outputs); ``scale``
    replaces max |want| where the output's own size is not its rounding's scale."""
    if not want.is_floating_point():
        return 0.0 if torch.equal(got, want) else float("inf")
    scale = float(want.abs().max()) if scale is None else scale
    diff = float((got.double() - want.double()).abs().max())
    return diff / scale if scale > 0 else diff


def test_fixture_is_small_and_holds_every_family(reference):
    expected, _ = reference
    assert FIXTURE.stat().st_size < 256 * 1024
    families = {name.split(".")[0] for name in expected}
    assert families == {"shap", "deep", "nt", "gs", "delta", "cam", "metric"}
    cams = {name.split(".")[1] for name in expected if name.startswith("cam.")}
    assert {"GradCAM", "GradCAMPlusPlus", "XGradCAM", "LayerCAM", "HiResCAM", "CAM", "EigenCAM", "ScoreCAM",
            "AblationCAM"} <= cams


def test_outputs_equal_the_reference(reference):
    expected, got = reference
    assert sorted(got) == sorted(expected)
    worst = {}
    for name, want in expected.items():
        assert got[name].shape == want.shape and got[name].dtype == want.dtype, name
        # a convergence delta (``delta.<method>.1``) is a sum of attributions minus an output difference,
        # near 0 by design: its rounding is relative to the attributions it sums (the chunk sizes of the
        # evaluator move a 1e-8 delta by 1e-8)
        attributions = expected.get(name[:-1] + "0") if name.startswith("delta.") and name.endswith(".1") else None
        scale = None if attributions is None else max(float(want.abs().max()), float(attributions.abs().max()))
        worst[name] = relative_difference(got[name], want, scale)
    bad = {k: v for k, v in worst.items() if not v <= RELATIVE}
    assert not bad, f"outputs changed beyond {RELATIVE} relative: {bad}"
