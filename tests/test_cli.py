"""The real console script in a subprocess: explain, evaluate, nbdt, and every bad
input (the demo and its report: test_demo_report.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow  # every test runs the console script in a subprocess

SCRIPT = Path(sys.executable).with_name("torchexplain")


def run(*args, cwd=None):
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def one_line_error(proc, code, pattern):
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 or (code == 2 and lines[-1].startswith("torchexplain")), proc.stderr
    assert pattern in lines[-1], lines[-1]


@pytest.fixture(scope="module")
def digit():
    from torchexplain import models

    return models.sample_images()[3]


def test_explain_digits(tmp_path, digit):
    proc = run("explain", digit, "--model", "digits", "--method", "ig,saliency", "--out", tmp_path, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert (tmp_path / "integrated_gradients.npy").exists() and (tmp_path / "report.html").exists()
    import json

    rows = json.loads((tmp_path / "explanation.json").read_text())["rows"]
    assert rows[0]["prediction"] == "3"
    page = (tmp_path / "report.html").read_text()
    assert page.count('<th class="method"') == 2 and page.count("<tr data-row=") == 1
    assert "digit_3.png" in page and "integrated_gradients" in page and "Do the attributions add up?" in page


def test_explain_torchvision_state_dict(tmp_path, digit):
    torchvision = pytest.importorskip("torchvision")
    weights = tmp_path / "r18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    proc = run("explain", digit, "--model", "torchvision:resnet18", "--weights", weights, "--size", 64,
               "--method", "saliency", "--target", "tench", "--out", tmp_path / "o")
    assert proc.returncode == 0, proc.stderr
    assert "tench" in (tmp_path / "o" / "explanation.json").read_text()


def test_bad_inputs(tmp_path, digit):
    torchvision = pytest.importorskip("torchvision")
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(Path(digit).read_bytes()[:60])
    weights = tmp_path / "r18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    out = tmp_path / "out"
    cases = [
        (("explain", tmp_path / "missing.png", "--model", "digits"), 1, "image not found"),
        (("explain", text, "--model", "digits"), 1, "not an image file"),
        (("explain", corrupt, "--model", "digits"), 1, "cannot read image"),
        (("explain", digit, "--model", "nosuch"), 1, "unknown model spec 'nosuch'"),
        (("explain", digit, "--model", "torchvision:resnet34", "--weights", weights), 1, "do not match the architecture"),
        (("explain", digit, "--model", "digits", "--method", "magic"), 2, "unknown method 'magic'"),
        (("explain", digit, "--model", "digits", "--target", "12"), 1, "out of range"),
        (("explain", digit, "--model", "digits", "--target", "seven"), 1, "unknown class name 'seven'"),
        (("explain", digit, "--model", "digits", "--out", text / "sub"), 1, "cannot create output directory"),
        (("explain", digit), 2, "--model"),
    ]
    for args, code, pattern in cases:
        one_line_error(run(*args, "--out", out) if "--out" not in args else run(*args), code, pattern)


def test_existing_files_are_kept_without_overwrite(tmp_path, digit):
    (tmp_path / "report.html").write_text("mine")
    proc = run("explain", digit, "--model", "digits", "--method", "saliency", "--out", tmp_path, "--quiet")
    one_line_error(proc, 1, "already exists; pass --overwrite")
    assert (tmp_path / "report.html").read_text() == "mine"
    proc = run("explain", digit, "--model", "digits", "--method", "saliency", "--out", tmp_path, "--quiet", "--overwrite")
    assert proc.returncode == 0 and (tmp_path / "report.html").read_text() != "mine"


def test_nbdt_prints_the_seed_format_and_writes_the_tree(tmp_path, digit):
    from torchexplain import models

    eight = models.sample_images()[8]
    proc = run("nbdt", digit, eight, "--model", "digits", "--html", tmp_path / "tree.html",
               "--save-tree", tmp_path / "tree.json")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("Prediction: 3 // Decisions: ") and lines[1].startswith("Prediction: 8 // Decisions: ")
    assert lines[0].endswith("3 (99.68%)")  # the leaf is the last decision
    page = (tmp_path / "tree.html").read_text()
    assert page.count('class="tree-row"') == 2 and "default-src 'none'" in page
    assert "<b>digit_3.png</b>: predicted <b>3</b>" in page
    hard = run("nbdt", digit, "--model", "digits", "--tree", tmp_path / "tree.json", "--hard")
    assert hard.returncode == 0 and hard.stdout.startswith("Prediction: 3 // Decisions: "), hard.stderr
    (tmp_path / "bad.json").write_text('{"name": "root", "children": [{"name": "0"}, {"name": "1"}]}')
    one_line_error(run("nbdt", digit, "--model", "digits", "--tree", tmp_path / "bad.json"), 1,
                   "the tree has no leaf for classes [2, 3, 4, 5, 6, 7, 8, 9]")
    one_line_error(run("nbdt", digit, "--model", "digits", "--html", tmp_path / "tree.html"), 1,
                   "already exists; pass --overwrite")


def test_evaluate_ranks_methods(tmp_path, digit):
    proc = run("evaluate", digit, "--model", "digits", "--methods", "saliency,ig", "--metrics", "deletion,sparseness",
               "--steps", "8", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| method | seconds | deletion") and len(table) == 3
    assert {"evaluation.md", "evaluation.csv", "evaluation.html", "evaluation.json"} <= {p.name for p in tmp_path.iterdir()}
    assert "± n/a" in (tmp_path / "evaluation.md").read_text()  # one image: no standard error
    assert "Which explanation to trust?" in (tmp_path / "evaluation.html").read_text()
    rows = (tmp_path / "evaluation.csv").read_text().splitlines()
    assert rows[0].startswith("method,seconds,deletion,deletion_stderr,deletion_rank") and len(rows) == 3
    one_line_error(run("evaluate", digit, "--model", "digits", "--metrics", "accuracy", "--out", tmp_path / "x"), 2,
                   "unknown metric(s) accuracy")


def test_evaluate_a_random_torchvision_model_says_so(tmp_path):
    pytest.importorskip("torchvision")
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.fromarray((np_rng().uniform(0, 255, (64, 64, 3))).astype("uint8")).save(photo)
    proc = run("evaluate", photo, "--model", "torchvision:resnet18", "--size", "64", "--methods", "saliency,gradcam",
               "--metrics", "infidelity,sparseness", "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert "torchexplain: note: torchvision:resnet18 has no weights: its weights are random" in proc.stderr
    assert "note: grad_cam: its one-channel map is broadcast over the input's 3 channels for infidelity" in proc.stdout
    rows = (tmp_path / "out" / "evaluation.csv").read_text().splitlines()
    assert rows[0].split(",")[2:] == [f"{m}{s}" for m in ("infidelity", "sparseness") for s in ("", "_stderr", "_rank")]
    assert rows[2].startswith("grad_cam,") and "note: grad_cam" in (tmp_path / "out" / "evaluation.md").read_text()


def np_rng():
    import numpy as np

    return np.random.default_rng(0)
