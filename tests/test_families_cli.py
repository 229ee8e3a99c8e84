"""``torchexplain tcav`` and ``torchexplain influence``: their numbers are the library's
(TCAV.significance, TracInCP.influence called directly on the same tensors), their
pages show them, and bad input is one line with exit status 1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from torchexplain import models
from torchexplain.cli import main

DIGITS = models.sample_images()


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Path:
    """train/<class>/*.png (each shipped digit shifted by -1, 0, 1 pixels), a
    concept of stripes and four folders of noise."""
    root = tmp_path_factory.mktemp("families")
    rng = np.random.default_rng(0)
    for path in DIGITS:
        pixels = np.asarray(Image.open(path).convert("L"))
        label = path.stem.split("_")[1]
        (root / "train" / label).mkdir(parents=True)
        for shift in range(3):
            Image.fromarray(np.roll(pixels, shift - 1, axis=1)).save(root / "train" / label / f"{shift}.png")
    for name in ("stripes", "r1", "r2", "r3", "r4"):
        (root / name).mkdir()
    for k in range(6):
        stripes = np.zeros((28, 28), np.uint8)
        stripes[:, k % 3::3] = 255
        Image.fromarray(stripes).save(root / "stripes" / f"{k}.png")
        for name in ("r1", "r2", "r3", "r4"):
            Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(root / name / f"{k}.png")
    return root


def _images(paths, preprocess):
    return torch.stack([preprocess(p) for p in paths])


def test_tcav_writes_the_significance_test_of_the_library(folders, tmp_path, capsys):
    from torchexplain.concept import TCAV, Concept

    images = [DIGITS[3], DIGITS[8], DIGITS[1]]
    args = ["tcav", *images, "--model", "digits", "--layer", "features.6,features.10", "--concept",
            folders / "stripes", *[a for r in ("r1", "r2", "r3", "r4") for a in ("--random", folders / r)],
            "--classifier", "fastcav", "--out", tmp_path / "out"]
    assert main(list(map(str, args))) == 0
    printed = capsys.readouterr().out
    saved = json.loads((tmp_path / "out" / "tcav.json").read_text())
    assert [(r["concept"], r["layer"]) for r in saved["scores"]] == [("stripes", "features.6"),
                                                                      ("stripes", "features.10")]
    model, preprocess, _ = models.load("digits")
    x = _images(images, preprocess)

    def concept(i, name):
        files = sorted((folders / name).glob("*.png"))
        return Concept(i, name, [_images(files, preprocess)])

    tcav = TCAV(model, ["features.6", "features.10"], classifier="fastcav", save_path=str(tmp_path / "cav"))
    target = model(x).argmax(1).tolist()
    expected = tcav.significance(x, [concept(0, "stripes")], [concept(k, f"r{k}") for k in range(1, 5)],
                                 target=target)
    for row in saved["scores"]:
        want = expected["0"][row["layer"]]
        assert row["concept_scores"] == pytest.approx(want["concept_scores"].tolist(), abs=1e-6)
        assert row["random_scores"] == pytest.approx(want["random_scores"].tolist(), abs=1e-6)
        assert row["tcav_score"] == pytest.approx(float(want["concept_mean"]), abs=1e-6)
        assert row["significant"] == want["significant"]
    page = (tmp_path / "out" / "report.html").read_text()
    assert page.count('data-concept="stripes"') == 2 and 'data-layer="features.10"' in page
    assert f'data-score="{saved["scores"][0]["tcav_score"]:.6g}"' in page
    assert "stripes" in printed and "features.10" in printed


def test_influence_lists_the_library_proponents_and_opponents(folders, tmp_path, capsys):
    from torch.utils.data import TensorDataset

    from torchexplain.influence import TracInCP

    images = [DIGITS[3], DIGITS[8]]
    args = ["influence", *images, "--model", "digits", "--train", folders / "train", "--k", "2",
            "--out", tmp_path / "out"]
    assert main(list(map(str, args))) == 0
    rows = json.loads((tmp_path / "out" / "influence.json").read_text())["rows"]
    model, preprocess, names = models.load("digits")
    files = sorted((folders / "train").rglob("*.png"), key=lambda p: p.relative_to(folders / "train").as_posix())
    train = TensorDataset(_images(files, preprocess), torch.tensor([int(p.parent.name) for p in files]))
    torch.save(model.state_dict(), tmp_path / "c.pt")
    tracin = TracInCP(model, train, [tmp_path / "c.pt"], loss_fn=torch.nn.CrossEntropyLoss(reduction="sum"),
                      batch_size=32)
    x = _images(images, preprocess)
    scores = tracin.influence((x, model(x).argmax(1)))  # [2 test, 30 train]
    ids = [p.relative_to(folders / "train").as_posix() for p in files]
    for row, s in zip(rows, scores):
        order = s.argsort(descending=True).tolist()
        assert [e["id"] for e in row["proponents"]] == [ids[i] for i in order[:2]]
        assert [e["id"] for e in row["opponents"]] == [ids[i] for i in order[::-1][:2]]
        assert [e["score"] for e in row["proponents"]] == pytest.approx(s[order[:2]].tolist(), rel=1e-4)
    assert rows[0]["prediction"] == "3" and rows[1]["prediction"] == "8"
    page = (tmp_path / "out" / "report.html").read_text()
    assert page.count('class="pro"') == 4 and page.count('class="opp"') == 4
    assert rows[0]["proponents"][0]["id"] in page
    assert "report:" in capsys.readouterr().out


@pytest.mark.parametrize("method", ["fast", "randproj"])
def test_influence_fast_methods_run_on_the_last_linear_layer(folders, tmp_path, method):
    args = ["influence", DIGITS[3], "--model", "digits", "--train", folders / "train", "--method", method,
            "--out", tmp_path, "--quiet"]
    assert main(list(map(str, args))) == 0
    row = json.loads((tmp_path / "influence.json").read_text())["rows"][0]
    scores = [e["score"] for e in row["proponents"]] + [e["score"] for e in row["opponents"]][::-1]
    assert scores == sorted(scores, reverse=True) and len(scores) == 6


def _one_line_error(capsys, args, pattern):
    assert main(list(map(str, args))) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and pattern in err[0], err


def test_bad_inputs_are_one_line(folders, tmp_path, capsys):
    tcav = ["tcav", DIGITS[3], "--model", "digits", "--concept", folders / "stripes", "--out", tmp_path / "t"]
    randoms = [a for r in ("r1", "r2", "r3") for a in ("--random", folders / r)]
    _one_line_error(capsys, [*tcav, "--layer", "features.6", "--random", folders / "r1", "--random",
                             folders / "r2"], "at least 3")
    _one_line_error(capsys, [*tcav, "--layer", "nope", *randoms], "'nope' is not a module")
    _one_line_error(capsys, [*tcav, "--layer", "features.6", *randoms[:4], "--random", tmp_path / "none"],
                    "does not exist")
    influence = ["influence", DIGITS[3], "--model", "digits", "--out", tmp_path / "i"]
    _one_line_error(capsys, [*influence, "--train", folders, "--k", "1"], "not in a subfolder named")
    _one_line_error(capsys, [*influence, "--train", folders / "train", "--k", "0"], "--k must be")
    _one_line_error(capsys, [*influence, "--train", folders / "train", "--checkpoint", tmp_path / "no.pt"],
                    "no.pt")


def test_sections_refuse_mismatched_rows():
    from torchexplain.report.families import InfluenceSection

    picture = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="one entry per test image"):
        InfluenceSection([(picture, "a")], [[]], [])
