"""The wheel works on its own: built with ``python -m build`` (an sdist, then the wheel
from the sdist) and installed into a fresh virtual environment outside the checkout, it
answers ``--version``, runs the demo and imports every package with its data (the
digits model, the tree hierarchies, the app's static files).

The fresh environment borrows the third-party dependencies (torch and the rest) from
the development environment through a path entry: installing torch again would take
minutes and gigabytes. torchexplain itself comes only from the wheel (the development
environment's editable install is not activated there, and the test checks where the
package was imported from).
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

import torchexplain

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["app", "attr", "cam", "concept", "core", "dataset", "influence", "metrics", "models", "nbdt", "report",
            "robust", "shap", "viz"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"  # a copy: building writes build/ and *.egg-info beside the sources
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    # python -m build: the sdist, then the wheel built from the unpacked sdist (so the sdist is complete);
    # no isolation: the build backend comes from the development environment, offline
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(work / "dist"), str(source)],
                   check=True, cwd=work, capture_output=True)
    wheel = next((work / "dist").glob("torchexplain-*.whl"))
    env_dir = work / "env"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True)
    own = Path(subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"], check=True,
                              capture_output=True, text=True).stdout.strip())
    (own / "borrowed_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return wheel, python, work


def test_sdist_holds_the_sources_and_the_data(installed):
    import tarfile

    _, _, work = installed
    (sdist,) = (work / "dist").glob("torchexplain-*.tar.gz")
    assert sdist.name == f"torchexplain-{torchexplain.__version__}.tar.gz"
    names = {n.split("/", 1)[1] for n in tarfile.open(sdist).getnames() if "/" in n}
    assert {"pyproject.toml", "README.md", "src/torchexplain/__init__.py", "src/torchexplain/py.typed"} <= names
    assert any(n.startswith("src/torchexplain/models/data/") for n in names)
    assert any(n.startswith("src/torchexplain/app/static/") for n in names)


def _run(python: Path, cwd: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run([str(python), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def test_wheel_holds_the_package_data(installed):
    import zipfile

    wheel, _, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert "torchexplain/py.typed" in names
    assert any(n.startswith("torchexplain/models/data/") for n in names)
    assert any(n.startswith("torchexplain/app/static/") for n in names)
    assert wheel.name.startswith(f"torchexplain-{torchexplain.__version__}-")


def test_installed_wheel_runs_on_its_own(installed):
    _, python, work = installed
    scripts = python.parent
    assert _run(scripts / "torchexplain", work, "--version").strip() == f"torchexplain {torchexplain.__version__}"
    out = _run(python, work, "-c", (
        "import importlib, pathlib, torchexplain\n"
        f"for name in {PACKAGES!r}: importlib.import_module('torchexplain.' + name)\n"
        "from torchexplain import models\n"
        "model, preprocess, names = models.load('digits')\n"
        "static = pathlib.Path(torchexplain.__file__).parent / 'app' / 'static'\n"
        "print(torchexplain.__file__, len(names), len(list(static.iterdir())) > 0)\n"
    ))
    where, n_classes, has_static = out.split()
    assert Path(where).is_relative_to(python.parent.parent) and not Path(where).is_relative_to(ROOT)
    assert n_classes == "10" and has_static == "True"
    _run(scripts / "torchexplain", work, "demo", "--quiet", "--out", str(work / "demo"))
    assert (work / "demo" / "report.html").stat().st_size > 10_000
