"""explain_dataset's local engine: the same values as explain() on the same images,
seeded per example, resumable after SIGKILL, bad files in errors.parquet only, and
one-line CLI errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from torchexplain import explain
from torchexplain.cli import main
from torchexplain.dataset import explain_dataset, schema
from torchexplain.dataset.output import OutputError
from torchexplain.dataset.sources import SourceError
from torchexplain.dataset.work import example_seed
from torchexplain.loading import image_transform, load_image
from torchexplain.models import MEAN, STD, load

N_IMAGES = 200
#: the configuration most tests share (cheap: 16 integration steps)
METHODS = ["integrated_gradients", "saliency", "grad_cam"]
KWARGS = {"n_steps": 16}


def write_digits(folder: Path, n: int = N_IMAGES) -> list[Path]:
    """The first ``n`` held-out digits as 32x32 grayscale PNGs in ``folder/<label>/``."""
    from PIL import Image

    from torchexplain.models.digits import digits_images

    images, labels = digits_images("test")
    paths = []
    for i in range(n):
        path = folder / str(int(labels[i])) / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((images[i, 0].numpy() * 255).round().astype(np.uint8), mode="L").save(path)
        paths.append(path)
    return paths


def load_inputs(paths) -> torch.Tensor:
    transform = image_transform(32, MEAN, STD, "L")
    return torch.stack([transform(load_image(p)) for p in paths])


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    folder = tmp_path_factory.mktemp("digits")
    return folder, write_digits(folder)


@pytest.fixture(scope="module")
def reference(digits, tmp_path_factory):
    """An uninterrupted local run of the shared configuration (store=full)."""
    folder, _ = digits
    out = tmp_path_factory.mktemp("reference")
    result = explain_dataset("digits", folder, METHODS, out=out, store="full", method_kwargs=KWARGS, progress=False)
    return out, result


def by_id(table) -> dict:
    return {row["id"]: row for row in table.to_pylist()}


def assert_same_rows(a: dict, b: dict, rtol=1e-5, atol=1e-6):
    """Two outputs' rows agree: the same ids and columns, equal ints and lists, close floats."""
    assert a.keys() == b.keys()
    for ident, row in a.items():
        other = b[ident]
        assert row.keys() == other.keys()
        for key, value in row.items():
            if key.endswith("/seconds"):
                continue
            if key.endswith("/map"):
                np.testing.assert_allclose(schema.decode_map(value, row["shape"]),
                                           schema.decode_map(other[key], row["shape"]), rtol=1e-3, atol=1e-3)
            elif isinstance(value, float) or key.endswith("/thumb"):
                np.testing.assert_allclose(value, other[key], rtol=rtol, atol=atol, err_msg=f"{ident} {key}")
            elif key.endswith("/top"):  # positions of near-equal values may swap
                assert len(set(value) & set(other[key])) >= len(value) - 2, (ident, key)
            else:
                assert value == other[key], (ident, key)


def test_local_engine_equals_explain_value_by_value(digits, reference):
    folder, paths = digits
    out, result = reference
    assert (result.done, result.skipped, result.failed) == (N_IMAGES, 0, 0)
    rows = by_id(schema.read_rows(out))
    ids = [p.relative_to(folder).as_posix() for p in paths]
    assert sorted(rows) == sorted(ids)
    model, _, _ = load("digits")
    x = load_inputs(paths)
    expected = explain(model, x, METHODS, **KWARGS)
    probs = torch.softmax(expected.outputs.double(), 1)
    for i, ident in enumerate(ids):
        row = rows[ident]
        assert row["label"] == int(Path(ident).parts[0])  # the parent folder names the class
        assert row["predicted"] == int(expected.outputs[i].argmax()) == row["target"]
        assert row["rank"] == 0 and row["shape"] == [1, 32, 32] and row["thumb_shape"] == [16, 16]
        assert row["probability"] == pytest.approx(float(probs[i].max()), rel=1e-6)
        for m in METHODS:
            a = expected.attributions[m][i].double()
            summed = a.sum(0)
            assert row[f"{m}/total"] == pytest.approx(float(a.sum()), rel=1e-5, abs=1e-6)
            np.testing.assert_allclose(schema.decode_map(row[f"{m}/map"], row["shape"]), a.half().float().numpy(),
                                       rtol=1e-3, atol=1e-4)
            thumb = F.avg_pool2d(summed[None, None], 2).reshape(-1).numpy()  # 32 -> 16: 2x2 means
            np.testing.assert_allclose(row[f"{m}/thumb"], thumb, rtol=1e-4, atol=1e-6)
            top = row[f"{m}/top"]  # the positions of the 10 largest |channel sum|, largest first
            largest = summed.abs().reshape(-1).sort(descending=True).values[:10].numpy()
            np.testing.assert_allclose(summed.abs().reshape(-1)[top].numpy(), largest, rtol=1e-5, atol=1e-7)
        delta = expected.deltas["integrated_gradients"][i]
        assert row["integrated_gradients/delta"] == pytest.approx(float(delta), rel=1e-4, abs=1e-6)
        assert row["saliency/delta"] is None


def test_sampling_methods_are_seeded_per_example_not_per_batch(digits, tmp_path):
    folder, paths = digits
    runs = [explain_dataset("digits", folder, ["smoothgrad", "lime"], out=tmp_path / f"b{b}", batch_size=b, limit=12,
                            progress=False) for b in (5, 12)]
    first, second = (by_id(r.rows()) for r in runs)
    assert_same_rows(first, second, rtol=1e-6, atol=1e-7)
    model, _, _ = load("digits")
    ident = sorted(first)[3]
    x = load_inputs([folder / ident])
    seed = example_seed(0, "smoothgrad", ident)
    alone = explain(model, x, "smoothgrad", generator=torch.Generator().manual_seed(seed))
    assert first[ident]["smoothgrad/total"] == pytest.approx(float(alone.attributions["smoothgrad"].sum()), rel=1e-5)
    lime = explain(model, x, "lime", seed=example_seed(0, "lime", ident))
    assert first[ident]["lime/total"] == pytest.approx(float(lime.attributions["lime"].sum()), rel=1e-5, abs=1e-6)
    other = explain(model, x, "smoothgrad", generator=torch.Generator().manual_seed(seed + 1))
    assert first[ident]["smoothgrad/total"] != pytest.approx(float(other.attributions["smoothgrad"].sum()), rel=1e-3)


def test_topk_targets_rows_and_summary_store(digits, tmp_path):
    folder, paths = digits
    result = explain_dataset("digits", folder, "saliency", target="topk:3", out=tmp_path, limit=10, progress=False)
    table = result.rows()
    assert table.num_rows == 30 and "saliency/map" not in table.column_names
    assert table.column_names == schema.shard_columns(["saliency"])
    rows = table.to_pylist()
    for ident in {r["id"] for r in rows}:
        mine = sorted((r for r in rows if r["id"] == ident), key=lambda r: r["rank"])
        assert [r["rank"] for r in mine] == [0, 1, 2]
        assert mine[0]["target"] == mine[0]["predicted"]
        probs = [r["target_probability"] for r in mine]
        assert probs == sorted(probs, reverse=True) and probs[0] == pytest.approx(mine[0]["probability"])


def test_bad_files_go_to_errors_only(digits, tmp_path):
    folder, paths = digits
    source = tmp_path / "mixed"
    good = write_digits(source, 20)
    (source / "empty.png").write_bytes(b"")
    (source / "text.png").write_text("not an image\n")
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.open(good[0]).convert("RGB").resize((64, 64)).save(buffer, "JPEG")
    (source / "sub").mkdir()
    (source / "sub" / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    result = explain_dataset("digits", source, "saliency", out=tmp_path / "out", batch_size=8, progress=False)
    assert (result.done, result.failed) == (20, 3)
    errors = {e["id"]: e for e in result.errors().to_pylist()}
    assert {k: e["stage"] for k, e in errors.items()} == {"empty.png": "read", "text.png": "decode",
                                                          "sub/cut.jpg": "decode"}
    assert errors["sub/cut.jpg"]["path"] == str((source / "sub" / "cut.jpg").resolve())
    rows = result.rows().column("id").to_pylist()
    assert sorted(rows) == sorted(p.relative_to(source).as_posix() for p in good)


def test_tensor_sources_match_the_folder(digits, reference, tmp_path):
    folder, paths = digits
    out, _ = reference
    x = load_inputs(paths[:24])
    labels = torch.tensor([int(p.parent.name) for p in paths[:24]])
    x[5, 0, 3, 3] = float("nan")
    data = torch.utils.data.TensorDataset(x, labels)
    loader = torch.utils.data.DataLoader(data, batch_size=7)
    model, _, _ = load("digits")
    ref = by_id(schema.read_rows(out))
    for i, source in enumerate((data, loader)):
        result = explain_dataset(model, source, METHODS, out=tmp_path / str(i), store="full", method_kwargs=KWARGS,
                                 progress=False)
        assert (result.done, result.failed) == (23, 1)
        assert result.errors().to_pylist() == [{"id": "5", "path": None, "stage": "decode",
                                                "message": "the input has NaN or infinite values"}]
        rows = by_id(result.rows())
        renamed = {str(j): {**ref[p.relative_to(folder).as_posix()], "id": str(j), "path": None}
                   for j, p in enumerate(paths[:24]) if j != 5}
        assert_same_rows(rows, renamed)


def test_csv_and_parquet_manifests(digits, tmp_path):
    folder, paths = digits
    import pyarrow as pa

    records = [{"path": str(p.relative_to(folder)), "label": p.parent.name, "id": f"img{j}"}
               for j, p in enumerate(paths[:6])]
    csv_file = folder / "list.csv"
    csv_file.write_text("path,label,id\n" + "".join(f"{r['path']},{r['label']},{r['id']}\n" for r in records))
    pq.write_table(pa.Table.from_pylist([{"path": r["path"]} for r in records]), folder / "list.parquet")
    try:
        by_csv = by_id(explain_dataset("digits", csv_file, "saliency", out=tmp_path / "c", progress=False).rows())
        by_pq = explain_dataset("digits", folder / "list.parquet", "saliency", out=tmp_path / "p", progress=False)
    finally:
        csv_file.unlink()
        (folder / "list.parquet").unlink()
    assert sorted(by_csv) == [f"img{j}" for j in range(6)]
    assert [by_csv[f"img{j}"]["label"] for j in range(6)] == [int(p.parent.name) for p in paths[:6]]
    rows = by_id(by_pq.rows())
    assert sorted(rows) == [str(j) for j in range(6)]  # no id column: the row number
    assert all(rows[str(j)]["label"] is None for j in range(6))
    assert rows["2"]["saliency/total"] == pytest.approx(by_csv["img2"]["saliency/total"], rel=1e-6)


KILLED = """
import sys
from torchexplain.dataset import explain_dataset
explain_dataset("digits", sys.argv[1], {methods!r}, out=sys.argv[2], store="full", batch_size=4, shard_rows=8,
                method_kwargs={kwargs!r}, progress=False)
"""


def test_sigkill_then_resume_gives_one_row_per_image_and_the_same_values(digits, reference, tmp_path):
    folder, _ = digits
    out = tmp_path / "killed"
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(KILLED.format(methods=METHODS, kwargs=KWARGS)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, str(script), str(folder), str(out)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(schema.shard_paths(out)) < 3 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    written = schema.written_ids(out)
    assert 0 < len(written) < N_IMAGES
    for shard in schema.shard_paths(out):
        pq.read_table(shard)  # every shard there is whole
    (out / schema.SHARDS / "part-00042.parquet.tmp").write_bytes(b"PAR1 cut short")  # as a crash leaves one
    result = explain_dataset("digits", folder, METHODS, out=out, store="full", method_kwargs=KWARGS, progress=False)
    assert result.skipped == len(written) and result.done == N_IMAGES - len(written)
    assert not list((out / schema.SHARDS).glob("*.tmp"))
    ids = schema.read_rows(out, ["id"]).column("id").to_pylist()
    assert len(ids) == len(set(ids)) == N_IMAGES
    assert_same_rows(by_id(schema.read_rows(out)), by_id(schema.read_rows(reference[0])))
    again = explain_dataset("digits", folder, METHODS, out=out, store="full", method_kwargs=KWARGS, progress=False)
    assert (again.done, again.skipped, again.rows_written) == (0, N_IMAGES, 0)


def test_another_configuration_is_refused_unless_overwrite(digits, tmp_path):
    folder, _ = digits
    explain_dataset("digits", folder, "saliency", out=tmp_path, limit=4, progress=False)
    with pytest.raises(OutputError, match="another configuration .*methods.*--overwrite"):
        explain_dataset("digits", folder, "input_x_gradient", out=tmp_path, limit=4, progress=False)
    with pytest.raises(OutputError, match="another configuration .*top_k"):
        explain_dataset("digits", folder, "saliency", out=tmp_path, limit=4, top_k=3, progress=False)
    with pytest.raises(OutputError, match="already holds rows"):
        explain_dataset("digits", folder, "saliency", out=tmp_path, limit=4, resume=False, progress=False)
    done = explain_dataset("digits", folder, "input_x_gradient", out=tmp_path, limit=4, overwrite=True,
                           progress=False)
    assert done.done == 4 and schema.read_manifest(tmp_path)["methods"] == {"input_x_gradient": {}}
    assert "saliency/total" not in done.rows().column_names
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not empty"):
        explain_dataset("digits", folder, "saliency", out=tmp_path / "elsewhere", limit=4, progress=False)


def test_bad_arguments(digits, tmp_path):
    folder, _ = digits
    model, _, _ = load("digits")
    with pytest.raises(TypeError, match="as a spec.*torch.jit.save.*state_dict"):
        explain_dataset(model, folder, "saliency", out=tmp_path, engine="ray")
    with pytest.raises(SourceError, match="source not found"):
        explain_dataset("digits", tmp_path / "nowhere", "saliency", out=tmp_path / "o")
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        explain_dataset("digits", folder, "nope", out=tmp_path / "o")
    with pytest.raises(ValueError, match="engine must be one of local, ray"):
        explain_dataset("digits", folder, "saliency", out=tmp_path / "o", engine="spark")
    with pytest.raises(ValueError, match="cannot use it"):
        explain_dataset("digits", folder, "feature_permutation", out=tmp_path / "o", limit=2)
    with pytest.raises(RuntimeError, match="every example of the first batch failed"):
        explain_dataset("digits", folder, "saliency", out=tmp_path / "p", limit=4, target=12)
    assert not (tmp_path / "o").exists()


def _cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_runs_and_resumes(digits, tmp_path, capsys):
    folder, _ = digits
    args = ["explain-dataset", str(folder), "--model", "digits", "--method", "saliency,ig", "--out", str(tmp_path),
            "--limit", "12", "--batch-size", "5"]
    code, out, err = _cli(capsys, *args)
    assert code == 0 and "12 done, 0 skipped, 0 failed" in out and "images/s" in out
    code, out, _ = _cli(capsys, *args[:-4], "--limit", "20")
    assert code == 0 and "8 done, 12 skipped, 0 failed" in out
    assert schema.read_rows(tmp_path).num_rows == 20
    manifest = schema.read_manifest(tmp_path)
    assert list(manifest["methods"]) == ["saliency", "integrated_gradients"]
    assert manifest["config_hash"] == schema.config_hash(manifest)
    page = (tmp_path / schema.SUMMARY).read_text()
    assert 'data-examples="20"' in page and "data-evaluated" not in page
    code, out, _ = _cli(capsys, *args[:-4], "--limit", "20", "--metrics", "deletion")
    assert code == 0 and "0 done, 20 skipped, 0 failed" in out
    assert 'data-evaluated="16"' in (tmp_path / schema.SUMMARY).read_text()  # the default sample


@pytest.mark.parametrize("case", ["missing folder", "empty folder", "unknown method", "other configuration",
                                  "bad batch size", "unknown metric"])
def test_cli_bad_inputs_are_one_line_and_a_nonzero_exit(digits, tmp_path, capsys, case):
    folder, _ = digits
    source, out, method = str(folder), tmp_path / "out", "saliency"
    if case == "missing folder":
        source = str(tmp_path / "missing")
    elif case == "empty folder":
        (tmp_path / "empty").mkdir()
        source = str(tmp_path / "empty")
    elif case == "unknown method":
        method = "saliency,telepathy"
    elif case == "other configuration":
        assert _cli(capsys, "explain-dataset", source, "--model", "digits", "--out", str(out), "--limit", "2",
                    "--method", "ig")[0] == 0
    extra = {"bad batch size": ["--batch-size", "0"], "unknown metric": ["--metrics", "deletion,recall"]}.get(case, [])
    code, stdout, err = _cli(capsys, "explain-dataset", source, "--model", "digits", "--method", method, "--out",
                             str(out), "--limit", "2", *extra)
    usage = case in ("unknown method", "bad batch size", "unknown metric")
    assert code == (2 if usage else 1) and stdout == ""  # 2: a usage error; 1: the run cannot go on
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("torchexplain: error: "), err
    expected = {"missing folder": "source not found", "empty folder": "holds no images",
                "unknown method": "unknown method 'telepathy'", "other configuration": "another configuration",
                "bad batch size": "--batch-size must be a positive number",
                "unknown metric": "unknown metric(s) recall"}[case]
    assert expected in lines[0]
    assert case == "other configuration" or not out.exists()  # refused before anything is written


def test_ray_actors_share_the_cpus_and_leave_one_for_reads():
    from torchexplain.dataset.ray_engine import actor_cpus

    assert actor_cpus(2, 2, 1, reads=False) == 2.0  # one actor on a laptop: every core
    assert actor_cpus(2, 2, 2, reads=False) == 1.0
    assert actor_cpus(16, 4, 2, reads=False) == 4.0  # at most a node's CPUs
    assert actor_cpus(2, 2, 4, reads=False) == 0.5
    assert actor_cpus(2, 2, 2, reads=True) == 0.5  # read_images' tasks need the other CPU
    assert actor_cpus(2, 2, 1, reads=True) == 1.0
    assert actor_cpus(1, 1, 1, reads=True) == 0.0
