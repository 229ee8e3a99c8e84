"""explain_dataset's Ray engine on a real local Ray cluster (two CPUs, started once for
the module): the same rows and values as the local engine, resume, a ray.data.Dataset
source, and bad files recorded by the actors."""

from __future__ import annotations

import os

import pytest
import torch
from test_dataset import KWARGS, METHODS, N_IMAGES, assert_same_rows, by_id, write_digits

from torchexplain.dataset import explain_dataset, schema
from torchexplain.models import load

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module", autouse=True)
def cluster():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    folder = tmp_path_factory.mktemp("digits")
    return folder, write_digits(folder)


def test_ray_gives_the_local_rows_and_values_and_resumes(digits, tmp_path):
    folder, _ = digits
    options = {"store": "full", "method_kwargs": KWARGS, "progress": False}
    local = explain_dataset("digits", folder, METHODS, out=tmp_path / "local", **options)
    first = explain_dataset("digits", folder, METHODS, out=tmp_path / "ray", engine="ray", workers=2, limit=60,
                            batch_size=16, **options)
    assert (first.done, first.skipped, first.failed) == (60, 0, 0)
    rest = explain_dataset("digits", folder, METHODS, out=tmp_path / "ray", engine="ray", workers=2, batch_size=16,
                           **options)
    assert (rest.done, rest.skipped, rest.failed) == (N_IMAGES - 60, 60, 0)
    assert ray.is_initialized()  # the test's cluster was used, and left running
    ours, theirs = by_id(local.rows()), by_id(schema.read_rows(tmp_path / "ray"))
    assert len(theirs) == N_IMAGES == schema.read_rows(tmp_path / "ray").num_rows
    assert_same_rows(theirs, ours)
    assert schema.read_manifest(tmp_path / "ray")["config_hash"] == schema.read_manifest(tmp_path / "local")[
        "config_hash"]


def test_ray_datasets_weights_files_and_bad_files(digits, tmp_path):
    folder, paths = digits
    source = tmp_path / "some"
    write_digits(source, 12)
    (source / "empty.png").write_bytes(b"")
    (source / "text.png").write_text("text")
    model, _, _ = load("digits")
    with torch.no_grad():
        model.head[2].bias += torch.arange(10.0)  # weights that differ from the bundled ones
    weights = tmp_path / "w.pt"
    torch.save(model.state_dict(), weights)
    result = explain_dataset("digits", source, "saliency", out=tmp_path / "bad", engine="ray", workers=2,
                             weights=weights, batch_size=4, progress=False)
    assert (result.done, result.failed) == (12, 2)
    assert {e["id"]: e["stage"] for e in result.errors().to_pylist()} == {"empty.png": "read", "text.png": "decode"}
    local = explain_dataset(model, source, "saliency", out=tmp_path / "local", size=32, mean=[0.305383],
                            std=[0.323652], mode="L", class_names=[str(d) for d in range(10)], progress=False)
    assert_same_rows(by_id(result.rows()), by_id(local.rows()))
    assert schema.read_manifest(tmp_path / "bad")["weights_sha256"] is not None

    unlabelled = explain_dataset("digits", source / "7", "saliency", out=tmp_path / "nolabels", engine="ray",
                                 workers=2, weights=weights, progress=False)
    rows = by_id(unlabelled.rows())
    assert rows and all(r["label"] is None for r in rows.values())  # no class folders: no labels
    assert {k: r["saliency/total"] for k, r in rows.items()} == pytest.approx(
        {k[2:]: r["saliency/total"] for k, r in by_id(local.rows()).items() if k.startswith("7/")}, rel=1e-5)

    images = ray.data.read_images(str(source / "7"), include_paths=True, mode="L")
    from_ray = explain_dataset("digits", images, "saliency", out=tmp_path / "images", engine="ray", workers=2,
                               weights=weights, progress=False)
    rows = from_ray.rows().to_pylist()
    assert from_ray.done == len(rows) == len(list((source / "7").glob("*.png"))) > 0
    for row in rows:
        name = "7/" + os.path.basename(row["path"])
        expected = by_id(local.rows())[name]
        assert row["saliency/total"] == pytest.approx(expected["saliency/total"], rel=1e-5)
        assert row["predicted"] == expected["predicted"]
