"""Helpers shared by the test modules: comparisons, inputs and model snapshots.

``close`` compares element by element (``torch.testing.assert_close``);
``close_to_largest`` compares every element against the largest magnitude of the
expected value, the right scale for attributions that pass through zero.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.nn.modules import module as module_globals


def _pairs(actual, expected):
    """Matched (actual, expected) tensors of possibly nested tuples or lists."""
    if isinstance(actual, (tuple, list)):
        assert isinstance(expected, (tuple, list)) and len(actual) == len(expected), (type(expected), len(actual))
        for a, b in zip(actual, expected):
            yield from _pairs(a, b)
        return
    assert isinstance(actual, Tensor), f"expected a tensor, got {type(actual).__name__}"
    expected = torch.as_tensor(expected, dtype=actual.dtype, device=actual.device)
    assert actual.shape == expected.shape, (tuple(actual.shape), tuple(expected.shape))
    yield actual.detach(), expected.detach().to(actual.dtype)


def close(actual, expected, rtol: float = 1e-5, atol: float = 1e-8) -> None:
    """Each tensor of ``actual`` equals ``expected`` (tensors, nested tuples or lists,
    or nested lists of numbers) element by element, in ``actual``'s dtype."""
    for a, b in _pairs(actual, expected):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


def close_to_largest(actual, expected, rtol: float = 1e-5, floor: float = 0.0) -> None:
    """``max |actual - expected| <= rtol * max(floor, max |expected|)`` for each tensor."""
    for a, b in _pairs(actual, expected):
        error = float((a - b).abs().max()) if a.numel() else 0.0
        scale = max(floor, float(b.abs().max()) if b.numel() else 0.0, 1e-12)
        assert error <= rtol * scale, f"max |difference| {error:.3g} > {rtol:g} x {scale:.3g}"


def images(n: int = 3, size: int = 8, seed: int = 0, dtype=torch.float32, shift: float = 0.0) -> Tensor:
    """``n`` random 3-channel ``size`` x ``size`` images from their own generator."""
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype) + shift


# --------------------------------------------------------------------------- model snapshots

_SIMPLE = (bool, int, float, str, type(None), tuple)
_GLOBAL_HOOKS = [n for n in dir(module_globals) if n.startswith("_global") and n.endswith("hooks")]


def snapshot(model: nn.Module) -> dict:
    """Everything about ``model`` that an attribution could change: module objects
    and attributes, flags, hooks, parameter and buffer objects, values, storages and
    gradients, and torch's global module hooks."""
    snap = {"modules": {}, "params": {}, "buffers": {}}
    for name, m in model.named_modules():
        snap["modules"][name] = {
            "object": m,
            "keys": sorted(vars(m).keys()),
            "training": m.training,
            "hooks": {k: dict(v) for k, v in vars(m).items() if k.endswith("hooks") and isinstance(v, dict)},
            "simple": {k: v for k, v in vars(m).items() if isinstance(v, _SIMPLE)},
            "param_objects": dict(m._parameters),
            "buffer_objects": dict(m._buffers),
            "children": dict(m._modules),
        }
    for name, p in model.named_parameters():
        snap["params"][name] = {
            "object": p, "value": p.detach().clone(), "ptr": p.data_ptr(), "requires_grad": p.requires_grad,
            "grad": p.grad, "grad_value": None if p.grad is None else p.grad.clone(),
        }
    for name, b in model.named_buffers():
        snap["buffers"][name] = {"object": b, "value": b.clone(), "ptr": b.data_ptr()}
    snap["global_hooks"] = {n: dict(getattr(module_globals, n)) for n in _GLOBAL_HOOKS}
    return snap


def assert_unchanged(model: nn.Module, before: dict) -> None:
    """``model`` is as :func:`snapshot` found it."""
    after = snapshot(model)
    assert after["modules"].keys() == before["modules"].keys()
    for name, b in before["modules"].items():
        a = after["modules"][name]
        where = name or "<root>"
        assert a["object"] is b["object"], where
        assert a["keys"] == b["keys"], f"{where}: attributes added or removed"
        assert a["training"] == b["training"], f"{where}: training flag"
        assert a["hooks"] == b["hooks"], f"{where}: hooks differ"
        assert a["simple"] == b["simple"], f"{where}: plain attributes differ"
        assert a["param_objects"].keys() == b["param_objects"].keys()
        assert all(a["param_objects"][k] is v for k, v in b["param_objects"].items()), f"{where}: parameters replaced"
        assert a["buffer_objects"].keys() == b["buffer_objects"].keys()
        assert all(a["buffer_objects"][k] is v for k, v in b["buffer_objects"].items()), f"{where}: buffers replaced"
        assert all(a["children"][k] is v for k, v in b["children"].items()), f"{where}: submodules replaced"
    for name, b in before["params"].items():
        a = after["params"][name]
        assert a["object"] is b["object"], name
        assert torch.equal(a["value"], b["value"]), f"{name}: value changed"
        assert a["ptr"] == b["ptr"], f"{name}: storage replaced"
        assert a["requires_grad"] == b["requires_grad"], f"{name}: requires_grad changed"
        assert a["grad"] is b["grad"], f"{name}: .grad set or replaced"
        if b["grad_value"] is not None:
            assert torch.equal(a["grad"], b["grad_value"]), f"{name}: .grad values changed"
    for name, b in before["buffers"].items():
        a = after["buffers"][name]
        assert a["object"] is b["object"], name
        assert torch.equal(a["value"], b["value"]), f"{name}: buffer changed"
        assert a["ptr"] == b["ptr"], f"{name}: buffer storage replaced"
    assert after["global_hooks"] == before["global_hooks"], "global module hooks left behind"
    assert torch._C._len_torch_function_stack() == 0, "a TorchFunctionMode is still active"
    assert torch._C._autograd._top_saved_tensors_default_hooks(False) is None, "saved-tensor hooks left active"
    assert torch.is_grad_enabled()


#: Debian's chromium, which the browser tests (and tutorials 7 and 8) drive through Playwright
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def playwright_or_skip():
    """``playwright.sync_api``, or a skip when Playwright or chromium is missing."""
    playwright = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (a dev extra)")
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium); CI installs it")
    return playwright
