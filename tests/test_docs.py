"""The documentation: every method's docstring states its formula and cost and has an
example that runs (executed here); the site builds strict (a warning fails it) with
every tutorial executed; every name of every package's ``__all__`` is in the reference."""

from __future__ import annotations

import doctest
import importlib
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import playwright_or_skip

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs" / "hooks"))
import reference  # noqa: E402  (docs/hooks/reference.py: the packages and where each name is documented)

#: the methods: each docstring has a Formula section (LaTeX), a Cost section and a
#: runnable Examples section
METHODS = {
    "torchexplain.attr": [
        "Saliency", "InputXGradient", "GuidedBackprop", "Deconvolution", "IntegratedGradients", "DeepLift",
        "DeepLiftShap", "GradientShap", "NoiseTunnel", "LRP", "FeatureAblation", "FeaturePermutation", "Occlusion",
        "ShapleyValueSampling", "ShapleyValues", "Lime", "KernelShap", "LimeBase", "RISE",
        "LayerActivation", "LayerGradientXActivation", "LayerGradCam", "GuidedGradCam", "InternalInfluence",
        "LayerConductance", "LayerDeepLift", "LayerDeepLiftShap", "LayerGradientShap", "LayerIntegratedGradients",
        "LayerFeatureAblation", "LayerFeaturePermutation", "LayerLRP",
        "NeuronGradient", "NeuronIntegratedGradients", "NeuronConductance", "NeuronDeepLift", "NeuronDeepLiftShap",
        "NeuronGradientShap", "NeuronGuidedBackprop", "NeuronDeconvolution", "NeuronFeatureAblation",
        "LLMAttribution", "LLMGradientAttribution", "DataLoaderAttribution",
    ],
    "torchexplain.cam": ["CAM", "GradCAM", "GradCAMPlusPlus", "XGradCAM", "LayerCAM", "HiResCAM", "EigenCAM",
                         "ScoreCAM", "AblationCAM"],
    "torchexplain.shap": ["GradientExplainer", "DeepExplainer"],
    "torchexplain.nbdt": ["SoftNBDT", "HardNBDT", "induce_hierarchy"],
    "torchexplain.metrics": ["evaluate", "completeness", "deletion", "insertion", "infidelity", "sensitivity_max",
                             "sparseness", "randomization_check"],
    "torchexplain.concept": ["TCAV"],
    "torchexplain.robust": ["FGSM", "PGD", "MinParamPerturbation", "AttackComparator"],
    "torchexplain.influence": ["TracInCP", "TracInCPFast", "TracInCPFastRandProj", "SimilarityInfluence"],
    "torchexplain": ["explain"],
}

CASES = [(package, name) for package, names in METHODS.items() for name in names]
SECTION = re.compile(r"^(\s*)(Formula|Cost|Examples):\s*$", re.M)


def _sections(doc: str) -> dict[str, str]:
    """The body of each Google-style section of ``doc`` named in SECTION."""
    found, matches = {}, list(SECTION.finditer(doc))
    for match, following in zip(matches, matches[1:] + [None]):
        found[match.group(2)] = doc[match.end():following.start() if following else len(doc)]
    return found


@pytest.mark.parametrize("package, name", CASES, ids=[f"{p.split('.')[-1]}.{n}" for p, n in CASES])
def test_method_docstring_has_formula_cost_and_a_running_example(package, name):
    obj = getattr(importlib.import_module(package), name)
    doc = inspect.getdoc(obj) or ""
    sections = _sections(doc)
    missing = [s for s in ("Formula", "Cost", "Examples") if s not in sections]
    assert not missing, f"{package}.{name}: no {', '.join(missing)} section in the docstring"
    assert re.search(r"\$\$|\\\(", sections["Formula"]), f"{package}.{name}: the Formula section has no LaTeX"
    assert re.search(r"forward|backward|pass", sections["Cost"]), f"{package}.{name}: Cost names no passes"
    tests = doctest.DocTestFinder(recurse=False).find(obj, f"{package}.{name}", globs={})
    assert tests and tests[0].examples, f"{package}.{name}: the Examples section has no >>> lines"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    out = []
    for test in tests:
        runner.run(test, out=out.append)
    assert runner.failures == 0, "".join(out)


def test_every_method_of_the_method_packages_is_listed():
    """A new attribution class must come with its docstring sections: the list above
    covers every Attribution subclass exported by torchexplain.attr that a user runs."""
    from torchexplain.attr.base import Attribution

    attr = importlib.import_module("torchexplain.attr")
    bases = {"Attribution", "GradientAttribution", "PerturbationAttribution", "LayerAttribution", "NeuronAttribution"}
    exported = {n for n in attr.__all__ if inspect.isclass(getattr(attr, n)) and issubclass(getattr(attr, n), Attribution)}
    assert exported - bases - set(METHODS["torchexplain.attr"]) == set()


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    playwright_or_skip()  # tutorials 7 and 8 photograph pages in chromium
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-8000:]
    return out


@pytest.mark.slow
def test_every_public_name_is_in_the_reference(site):
    missing = []
    for package, _ in reference.PACKAGES:
        page = (site / reference.page_name(package)[:-3] / "index.html").read_text()
        module = importlib.import_module(package)
        for name in module.__all__:
            if inspect.ismodule(getattr(module, name)):
                continue
            if f'id="{reference.identifier(package, name)}"' not in page:
                missing.append(f"{package}.{name}")
    assert not missing, f"not in the reference: {missing}"


@pytest.mark.slow
def test_the_command_line_page_has_every_subcommand(site):
    page = (site / "reference" / "cli" / "index.html").read_text()
    for command in ("demo", "explain", "evaluate", "nbdt", "explain-dataset", "report", "serve", "tcav", "influence",
                    "explain-text"):
        assert f"usage: torchexplain {command}" in page, command


@pytest.mark.slow
def test_tutorials_ran_and_show_their_output(site):
    pages = sorted((ROOT / "docs" / "tutorials").glob("[0-9]*.md"))
    assert len(pages) >= 8
    for source in pages:
        html = (site / "tutorials" / source.stem / "index.html").read_text()
        runs = source.read_text().count("```python")
        assert runs, f"{source.name} runs no code"
        assert "data:image/png;base64," in html, f"{source.name} shows no picture"
        assert "Traceback" not in html, source.name


@pytest.mark.slow
def test_math_is_rendered_as_mathml_and_no_role_is_left(site):
    page = (site / "reference" / "attr" / "index.html").read_text()
    assert '<math xmlns="http://www.w3.org/1998/Math/MathML" display="block">' in page
    assert "arithmatex" not in page
    assert not re.search(r":(class|meth|func|mod|attr):<code>", page)
