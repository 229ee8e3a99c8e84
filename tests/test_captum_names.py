"""torchexplain.attr against captum.attr name by name: every class both define must
behave alike where Captum's own code and tests read it, so that Captum code works by
changing the import."""

from __future__ import annotations

import inspect

import captum.attr as ca
import torch
from torch import nn

import torchexplain.attr as te


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.lin(x))


class _Fit:
    """The least an interpretable model needs for LimeBase's constructor."""

    def fit(self, *args, **kwargs):
        return None

    def representation(self):
        return torch.zeros(1)


def _nothing(*args, **kwargs):
    return None


def _construct(lib, name: str, model: nn.Module, **extra):
    """``lib.<name>`` built from its required constructor arguments (by Captum's
    argument names), plus ``extra``."""
    shared = {
        "forward_func": model, "model": model, "layer": model.lin,
        "attribution_method": lib.IntegratedGradients(model), "attr_method": lib.FeatureAblation(model),
        "interpretable_model": _Fit(), "similarity_func": _nothing, "perturb_func": _nothing,
        "perturb_interpretable_space": True, "from_interp_rep_transform": _nothing, "to_interp_rep_transform": None,
    }
    cls = getattr(lib, name)
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    required = [p.name for p in params if p.default is inspect.Parameter.empty
                and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    missing = [p for p in required if p not in shared]
    assert not missing, f"{lib.__name__}.{name} needs {missing}: teach _construct those arguments"
    return cls(**{p: shared[p] for p in required}, **extra)


def _shared_attribution_classes() -> list[str]:
    return sorted(
        name for name in set(ca.__all__) & set(dir(te))
        if inspect.isclass(getattr(ca, name)) and issubclass(getattr(ca, name), ca.Attribution)
    )


def test_multiplies_by_inputs_equals_captums_for_every_shared_class():
    # the LLM wrappers take another method (and a tokenizer): that method multiplies or not
    names = [n for n in _shared_attribution_classes() if "LLM" not in n]
    assert len(names) >= 40  # the test sees the classes (none silently filtered out)
    model = _Tiny()
    differ = []
    for name in names:
        ours, theirs = _construct(te, name, model), _construct(ca, name, model)
        if ours.multiplies_by_inputs != theirs.multiplies_by_inputs:
            differ.append(f"{name}: ours {ours.multiplies_by_inputs}, Captum's {theirs.multiplies_by_inputs}")
        takes = ["multiply_by_inputs" in inspect.signature(getattr(lib, name).__init__).parameters for lib in (te, ca)]
        if all(takes):
            ours = _construct(te, name, model, multiply_by_inputs=False)
            theirs = _construct(ca, name, model, multiply_by_inputs=False)
            if ours.multiplies_by_inputs != theirs.multiplies_by_inputs:
                differ.append(f"{name}(multiply_by_inputs=False): ours {ours.multiplies_by_inputs}, "
                              f"Captum's {theirs.multiplies_by_inputs}")
    assert not differ, differ


def _leading(fn) -> list[str]:
    return [p.name for p in inspect.signature(fn).parameters.values() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]


def test_every_shared_class_takes_captums_parameters_first():
    """Captum code passes arguments by position and by name: constructors and
    ``attribute`` take Captum's parameters first, in Captum's order (ours after)."""
    differ = []
    for name in _shared_attribution_classes():
        for meth in ("__init__", "attribute", "attribute_future"):
            theirs_fn, ours_fn = getattr(getattr(ca, name), meth, None), getattr(getattr(te, name), meth, None)
            if theirs_fn is None:
                continue
            theirs, ours = _leading(theirs_fn), _leading(ours_fn)
            if meth == "attribute_future" and (theirs == ["self"] or name == "LayerFeaturePermutation"):
                # Captum's NotImplementedError stub (ours raises too: tests/test_captum_forms.py), and
                # LayerFeaturePermutation's, which Captum inherits from FeaturePermutation unchanged, so
                # that it permutes the inputs, not the layer; ours raises NotImplementedError instead
                continue
            if ours[: len(theirs)] != theirs:
                differ.append(f"{name}.{meth}: Captum {theirs[1:]}, ours {ours[1:]}")
    assert not differ, "\n".join(differ)


def test_every_public_name_of_captum_attr_exists():
    missing = sorted(set(ca.__all__) - set(te.__all__))
    assert not missing, missing
    for name in ca.__all__:
        assert getattr(te, name) is not None


def test_the_exception_list_is_well_formed():
    """tests/captum_exceptions.md: one line per Captum test, each with a known category
    and a reason (read by scripts/captum-exceptions, which compares a suite run with it)."""
    import importlib.machinery
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parent.parent / "scripts" / "captum-exceptions"
    loader = importlib.machinery.SourceFileLoader("captum_exceptions", str(path))
    spec = importlib.util.spec_from_loader("captum_exceptions", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    listed = module.listed()  # exits on an unknown category
    lines = [line for path in module.LISTS for line in path.read_text().splitlines() if line.startswith("- `")]
    assert len(lines) == len(listed) >= 1  # every entry parsed, none repeated
    for path in module.LISTS:  # captum_exceptions.md: attr; captum_exceptions_robust.md: robust
        family = path.stem.removeprefix("captum_exceptions").lstrip("_") or "attr"
        tests = [line.split("`")[1] for line in path.read_text().splitlines() if line.startswith("- `")]
        assert all(test.startswith(f"tests/{family}/") for test in tests), path.name
    log = "tests/robust/test_FGSM.py ..F.  [ 50%]\nFAILED tests/concept/test_tcav.py::T::t - x\n"
    assert module.files_run(log) == {"tests/robust/test_FGSM.py", "tests/concept/test_tcav.py"}
    failed, _ = module.outcomes("FAILED tests/attr/a.py::T::t - AssertionError: x\nERROR tests/attr/b.py\n")
    assert failed == {"tests/attr/a.py::T::t", "tests/attr/b.py"}
