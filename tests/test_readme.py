"""The README's Python blocks run as written, in order, in a fresh interpreter: a user
who pastes them one after another gets no error."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_python_blocks():
    blocks = python_blocks()
    assert len(blocks) >= 8
    assert all(block.strip() for block in blocks)


@pytest.mark.slow
def test_the_readme_blocks_run_in_order(tmp_path):
    script = "\n\n".join(f"# --- README block {i}\n{block}" for i, block in enumerate(python_blocks()))
    (tmp_path / "readme.py").write_text(script)
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "readme.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
