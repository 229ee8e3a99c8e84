"""Every subpackage is an attribute after ``import torchexplain``, imported on first use."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # a fresh interpreter

LAZY = ("models", "shap", "nbdt", "viz", "masks", "inspect", "concept", "influence", "dataset")


def test_subpackages_are_attributes_imported_on_first_use():
    code = f"""
import sys
import torchexplain
lazy = {LAZY!r}
assert not [n for n in lazy if "torchexplain." + n in sys.modules], "imported eagerly"
model, preprocess, names = torchexplain.models.load("digits")
assert names[3] == "3" and "torchexplain.models" in sys.modules and "torchexplain.shap" not in sys.modules
for name in lazy + ("cam", "metrics", "attr", "core"):
    module = getattr(torchexplain, name)
    assert module is sys.modules["torchexplain." + name] and name in dir(torchexplain)
assert torchexplain.shap.DeepExplainer and torchexplain.nbdt.HardNBDT and torchexplain.metrics.infidelity
try:
    torchexplain.nosuch
except AttributeError as err:
    assert "nosuch" in str(err)
else:
    raise AssertionError("no AttributeError")
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
