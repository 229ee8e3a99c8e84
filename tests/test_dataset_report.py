"""The dataset summary (``summary.html`` of an explain-dataset run, ``torchexplain report``),
read as data: an output directory built by hand with pyarrow after the layout contract
(torchexplain.dataset.schema), so these tests stand without the engine; the page's
numbers against means computed by hand, pictures decoded from its PNGs."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from PIL import Image  # noqa: E402

from torchexplain import cli  # noqa: E402
from torchexplain.dataset import schema  # noqa: E402
from torchexplain.report import tiles  # noqa: E402
from torchexplain.report.dataset import write_summary  # noqa: E402
from torchexplain.report.dataset_eval import evaluate_sample, stratified_sample  # noqa: E402
from torchexplain.report.dataset_stats import read_stats  # noqa: E402

IG, OCC = "integrated_gradients", "occlusion"
METHODS = {IG: {"n_steps": 8}, OCC: {"sliding_window_shapes": [1, 8, 8], "strides": [1, 8, 8]}}


def manifest(source, model="digits", methods=METHODS, class_names=None) -> dict:
    m = {"format": 1, "model": model, "weights": None, "weights_sha256": None, "methods": methods,
         "target": "top1", "store": "summary", "top_k": 2, "thumb": 2, "source": str(source),
         "class_names": class_names, "preprocess": {"size": 32, "mean": [0.5], "std": [0.5], "mode": "L"},
         "seed": 0, "torch": "x", "torchexplain": "y"}
    m["config_hash"] = schema.config_hash(m)
    return m


def shard(rows: list[dict], methods=(IG, OCC)):
    """A shard table from rows given as {id, path, label, p, target, thumbs: {method: list}, totals, shape}."""
    columns = {name: [] for name in schema.shard_columns(methods)}
    for r in rows:
        thumbs = r["thumbs"]
        shape = r.get("shape", (2, 2))
        values = {"id": r["id"], "path": r.get("path"), "label": r.get("label"), "predicted": r["target"],
                  "probability": r["p"], "target": r["target"], "rank": 0, "target_probability": r["p"],
                  "shape": [1, 32, 32], "thumb_shape": list(shape)}
        for m in methods:
            values.update({f"{m}/total": r.get("totals", {}).get(m, float(np.sum(thumbs[m]))), f"{m}/top": [0, 1],
                           f"{m}/delta": r.get("delta"), f"{m}/seconds": r.get("seconds", 0.01),
                           f"{m}/thumb": [float(v) for v in thumbs[m]]})
        for name in columns:
            columns[name].append(values[name])
    return pa.table(columns, schema=schema.arrow_schema(methods))


def write_shard(out, index: int, rows, tmp: bool = False, methods=(IG, OCC)) -> None:
    folder = out / schema.SHARDS
    folder.mkdir(parents=True, exist_ok=True)
    name = schema.shard_name(index) + (schema.TMP_SUFFIX if tmp else "")
    pq.write_table(shard(rows, methods), folder / name)


def digit_png(path, value: int = 200) -> str:
    pixels = np.zeros((32, 32), dtype=np.uint8)
    pixels[8:24, 12:20] = value
    Image.fromarray(pixels).save(path)
    return str(path)


# hand-made rows: class 0 = a, b, d; class 1 = c, e (ig thumbs; occlusion = 10 x ig)
IG_THUMBS = {"a": [1, 0, -2, 4], "b": [3, 2, 0, -4], "c": [0.5, -0.5, 0, 0], "d": [2, 2, -3, 3], "e": [1.5, 0.5, 0, -2]}
TARGETS = {"a": 0, "b": 0, "c": 1, "d": 0, "e": 1}
PROBS = {"a": 0.9, "b": 0.4, "c": 0.99, "d": 0.6, "e": 0.2}
LABELS = {"a": 0, "b": 1, "c": 1, "d": None, "e": 1}


def row(name: str, tmp_path, picture: bool = False) -> dict:
    path = digit_png(tmp_path / f"{name}.png") if picture else str(tmp_path / "gone" / f"{name}.png")
    ig = IG_THUMBS[name]
    return {"id": name, "path": path, "label": LABELS[name], "p": PROBS[name], "target": TARGETS[name],
            "thumbs": {IG: ig, OCC: [10 * v for v in ig]}, "delta": 0.5 if name == "a" else -0.25}


@pytest.fixture
def out(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    schema.write_manifest(out, manifest(tmp_path, class_names=["zero", "one"]))
    write_shard(out, 0, [row("a", tmp_path, True), row("b", tmp_path), row("c", tmp_path, True)])
    write_shard(out, 1, [row("d", tmp_path), row("e", tmp_path)])
    partial = {"id": "half", "path": None, "p": 0.01, "target": 0, "thumbs": {IG: [100] * 4, OCC: [100] * 4}}
    write_shard(out, 2, [partial], tmp=True)  # an unfinished write: never read
    errors = pa.table({"id": ["bad1", "bad2"], "path": ["/x/bad1.png", "/x/bad2.png"], "stage": ["decode", "read"],
                       "message": ["cannot identify image file", "empty file"]}, schema=schema.errors_schema())
    pq.write_table(errors, out / schema.ERRORS)
    return out


def section(page: str, anchor: str) -> str:
    match = re.search(rf'<section id="{anchor}">(.*?)</section>', page, re.S)
    assert match, anchor
    return match.group(1)


def sprite(page: str, anchor: str, column: int) -> np.ndarray:
    """The palette indices of one column's sprite of the grid in section ``anchor``."""
    uid = re.search(r'<table class="grid (s\d+)', section(page, anchor)).group(1)
    data = re.search(rf"\.{uid}c{column}>i\.signed\{{background-image:url\(data:image/png;base64,([^)]+)\)", page)
    image = Image.open(io.BytesIO(base64.b64decode(data.group(1))))
    assert image.mode == "P"
    return np.array(image)


def expected_index(values, scale: float) -> np.ndarray:
    half = (tiles.SIGNED_LEVELS - 1) / 2
    return np.rint(half + half * np.clip(np.asarray(values) / scale, -1, 1)).astype(int)


def test_class_means_are_the_mean_thumbnails_and_tmp_shards_are_ignored(out):
    page = write_summary(out, outlier_perc=0).read_text()
    mean0 = np.mean([IG_THUMBS[k] for k in "abd"], 0)  # [2, 4/3, -5/3, 1]
    mean1 = np.mean([IG_THUMBS[k] for k in "ce"], 0)  # [1, 0, 0, -1]
    classes = section(page, "classes")
    # one scale per method: max |mean| (no saturation), 2 for ig and 20 for occlusion
    assert re.findall(r'data-vmin="([^"]+)" data-vmax="([^"]+)"', classes) == [("-2", "2"), ("-20", "20")]
    for column in (0, 1):
        indices = sprite(page, "classes", column)
        assert indices.shape == (4, 2)  # two classes' 2x2 maps stacked
        np.testing.assert_array_equal(indices[:2].ravel(), expected_index(mean0, 2))
        np.testing.assert_array_equal(indices[2:].ravel(), expected_index(mean1, 2))
    assert re.findall(r'data-class="(\d)" data-count="(\d)"', classes) == [("0", "3"), ("1", "2")]
    totals = re.findall(r'data-method="integrated_gradients" data-mean-total="([^"]+)"', classes)
    assert [float(t) for t in totals] == pytest.approx([mean0.sum(), mean1.sum()], rel=1e-5)  # 6 digits
    assert "half" not in page  # the *.tmp shard's row
    run = section(page, "run")
    assert 'data-examples="5"' in run and 'data-rows="5"' in run and "1 <code>*.tmp</code>" in run
    assert 'data-accuracy="0.75"' in run  # a, c, e of the labelled a, b, c, e (d has none)
    assert 'data-method-seconds="0.1"' in run  # 2 methods x 5 rows x 0.01 s


def test_least_and_most_confident_examples_with_their_pictures(out):
    page = write_summary(out, examples=2, outlier_perc=0).read_text()
    low, high = section(page, "lowest-probability"), section(page, "highest-probability")
    assert re.findall(r'<tr data-row="\d" data-id="(\w+)"', low) == ["e", "b"]
    assert re.findall(r'<tr data-row="\d" data-id="(\w+)"', high) == ["c", "a"]
    # c and a have readable files: each row's picture under its maps; e and b's files are gone
    uid_high = re.search(r'<table class="grid (s\d+)', high).group(1)
    uid_low = re.search(r'<table class="grid (s\d+)', low).group(1)
    assert len(re.findall(rf"\.{uid_high}r\d::before\{{background-image:url\(data:image/png", page)) == 2
    assert not re.search(rf"\.{uid_low}r\d::before", page)
    # each example's own thumbnail, on its grid's scale (max |value| of c and a: 4)
    indices = sprite(page, "highest-probability", 0)
    np.testing.assert_array_equal(indices[:2].ravel(), expected_index(IG_THUMBS["c"], 4))
    np.testing.assert_array_equal(indices[2:].ravel(), expected_index(IG_THUMBS["a"], 4))


def test_failures_are_listed_and_the_page_loads_nothing(out):
    page = write_summary(out).read_text()
    failures = section(page, "failures")
    assert 'data-failures="2"' in failures and "decode: 1, read: 1" in failures
    assert re.findall(r'<tr data-id="(\w+)"><td>', failures) == ["bad1", "bad2"]
    assert "cannot identify image file" in failures and "/x/bad2.png" in failures
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)  # base64 may hold "//"
    assert not re.search(r"https?:|//", text, re.I)
    assert all(u.startswith("data:image/png;base64,") for u in re.findall(r"url\(([^)]*)\)", page))
    assert "default-src 'none'" in page  # the Content-Security-Policy
    assert not re.search(r"<(img|link|iframe|object|embed)\b|\bsrc=", page)
    assert len(page) < 100_000


def test_many_failures_are_counted_and_the_first_listed(out):
    n = 150
    errors = pa.table({"id": [f"e{i}" for i in range(n)], "path": [None] * n, "stage": ["explain"] * n,
                       "message": ["NaN in the input"] * n}, schema=schema.errors_schema())
    pq.write_table(errors, out / schema.ERRORS)
    failures = section(write_summary(out).read_text(), "failures")
    assert 'data-failures="150"' in failures and "explain: 150" in failures
    assert len(re.findall(r'<tr data-id="', failures)) == 100 and "and 50 more" in failures


def test_thumbnails_of_another_shape_are_resampled_into_the_class_mean(tmp_path):
    out = tmp_path / "out"
    schema.write_manifest(out.mkdir() or out, manifest(tmp_path, methods={IG: {}}))
    rows = [{"id": "s1", "p": 0.5, "target": 0, "thumbs": {IG: [4, 0, 0, -4]}},
            {"id": "s2", "p": 0.5, "target": 0, "thumbs": {IG: [2, 2, 2, 2]}},
            {"id": "big", "p": 0.5, "target": 0, "shape": (4, 4), "thumbs": {IG: [3.0] * 16}}]
    write_shard(out, 0, rows, methods=(IG,))
    stats = read_stats(out)
    assert stats.thumb_shape == (2, 2)  # the most common shape
    np.testing.assert_allclose(stats.class_means(IG)[0].ravel(), [3, 5 / 3, 5 / 3, 1 / 3])  # (s1 + s2 + 3) / 3


def test_a_stratified_sample_spreads_over_classes_and_skips_unreadable_files(tmp_path):
    out = tmp_path / "out"
    schema.write_manifest(out.mkdir() or out, manifest(tmp_path, methods={IG: {}}))
    rows = []
    for c, n in ((0, 8), (1, 3), (2, 2)):
        for i in range(n):
            readable = c != 2 or i == 0  # class 2 has one readable file
            path = digit_png(tmp_path / f"{c}_{i}.png") if readable else str(tmp_path / f"gone{i}.png")
            rows.append({"id": f"{c}_{i}", "path": path, "p": 0.5, "target": c, "thumbs": {IG: [0, 0, 0, 0]}})
    write_shard(out, 0, rows, methods=(IG,))
    stats = read_stats(out)
    picked = stratified_sample(stats, 6, seed=1)
    classes = [c for _, _, c in picked]
    assert len(picked) == 6 and sorted(classes) in ([0, 0, 1, 1, 1, 2], [0, 0, 0, 1, 1, 2])
    assert all(p.is_file() for _, p, _ in picked) and len({i for i, _, _ in picked}) == 6
    assert picked == stratified_sample(stats, 6, seed=1)  # seeded


def test_metrics_on_a_sample_equal_evaluate_with_the_runs_model_and_arguments(tmp_path):
    import torch

    from torchexplain import models
    from torchexplain.loading import image_transform, load_image
    from torchexplain.metrics import evaluate

    out = tmp_path / "out"
    schema.write_manifest(out.mkdir() or out, manifest(tmp_path))
    rows = [dict(row(name, tmp_path), path=digit_png(tmp_path / f"{name}.png", 90 + 30 * i))
            for i, name in enumerate("abcde")]
    write_shard(out, 0, rows)
    stats = read_stats(out)
    done = evaluate_sample(stats, ["deletion", "insertion"], size=3, seed=0)
    assert done.table is not None and len(done.ids) == 3 and done.rows_with_path == 5
    model, _, _ = models.load("digits")
    transform = image_transform(32, [0.5], [0.5], "L")
    x = torch.stack([transform(load_image(tmp_path / f"{i}.png")) for i in done.ids])
    target = torch.tensor([TARGETS[i] for i in done.ids])
    for name, arguments in METHODS.items():
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in arguments.items()}
        direct = evaluate(model, x, methods=[name], metrics=["deletion", "insertion"], target=target, **kwargs)
        for metric in ("deletion", "insertion"):
            torch.testing.assert_close(done.table.results[(name, metric)].values,
                                       direct.results[(name, metric)].values)
    page = write_summary(out, metrics="deletion,insertion", sample=3).read_text()
    evaluation = section(page, "evaluation")
    assert 'data-evaluated="3"' in evaluation and "stratified sample of 3 images" in evaluation
    assert re.findall(r'<tr data-method="(\w+)">', evaluation) == [IG, OCC]
    value = done.table.results[(IG, "deletion")].mean
    assert f"{value:.4g}" in evaluation


def test_metrics_without_readable_images_say_why(out, tmp_path):
    for name in "ac":
        (tmp_path / f"{name}.png").unlink()
    page = write_summary(out, metrics=["deletion"]).read_text()
    assert 'data-evaluated="0"' in page and "no explained example has a readable image file" in page


def test_bad_arguments_are_refused(out):
    with pytest.raises(ValueError, match="metrics: unknown metric"):
        write_summary(out, metrics=["delete"])
    with pytest.raises(ValueError, match="sample must be a positive int"):
        write_summary(out, metrics=["deletion"], sample=0)


def test_cli_report_writes_the_page(out, capsys):
    assert cli.main(["report", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"summary: {out / schema.SUMMARY}"
    assert 'data-examples="5"' in (out / schema.SUMMARY).read_text()


@pytest.mark.parametrize("case, message", [
    ("missing", "output directory not found"),
    ("empty", "is not an explain-dataset output"),
    ("no-shards", "has no shards"),
])
def test_cli_report_errors_are_one_line(tmp_path, capsys, case, message):
    target = tmp_path / "d"
    if case != "missing":
        target.mkdir()
    if case == "no-shards":
        schema.write_manifest(target, manifest(tmp_path))
    assert cli.main(["report", str(target)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("torchexplain: error: ") and message in err


def test_cli_report_refuses_an_unknown_metric(out, capsys):
    assert cli.main(["report", str(out), "--metrics", "deletion,nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err
    assert not (out / schema.SUMMARY).exists()


def test_manifest_fields_shown(out):
    page = write_summary(out).read_text()
    run = section(page, "run")
    assert "digits" in run and json.dumps(METHODS[IG]).replace('"', "&quot;") in run


@pytest.mark.slow
def test_explain_dataset_then_report_end_to_end(tmp_path, capsys):
    """20 digit files through the local engine (the CLI), then ``torchexplain report``:
    the page's class means are the means of explain()'s maps, pooled to the thumbnails."""
    import torch
    import torch.nn.functional as F

    from torchexplain import explain, models
    from torchexplain.loading import image_transform, load_image, load_model

    folder = tmp_path / "digits"
    for d, path in enumerate(models.sample_images()):
        (folder / str(d)).mkdir(parents=True)
        image = Image.open(path)
        image.save(folder / str(d) / "a.png")
        Image.fromarray(np.roll(np.array(image), 1, axis=1)).save(folder / str(d) / "b.png")
    out = tmp_path / "out"
    methods = "integrated_gradients,occlusion"
    assert cli.main(["explain-dataset", str(folder), "--model", "digits", "--method", methods, "--out", str(out),
                     "--quiet"]) == 0
    assert cli.main(["report", str(out), "--metrics", "deletion,insertion", "--sample", "4", "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    page = (out / schema.SUMMARY).read_text()
    assert 'data-examples="20"' in page and 'data-failures="0"' in page and 'data-evaluated="4"' in page

    model, _, (size, mean, std, mode) = load_model("digits")
    files = sorted(folder.rglob("*.png"))
    x = torch.stack([image_transform(size, mean, std, mode)(load_image(p)) for p in files])
    result = explain(model, x, method=methods.split(","))
    classes = sorted(set(result.target.tolist()))
    stats = read_stats(out)
    assert sorted(stats.classes) == classes and stats.thumb_shape == (16, 16)
    for c, name in enumerate(methods.split(",")):
        pooled = F.adaptive_avg_pool2d(result.attributions[name].sum(1, keepdim=True), (16, 16))[:, 0].double()
        expected = np.stack([pooled[result.target == k].mean(0).numpy() for k in classes])
        means = stats.class_means(name)
        np.testing.assert_allclose(np.stack([means[k] for k in classes]), expected, rtol=1e-4,
                                   atol=1e-5 * np.abs(expected).max())
        scale = tiles.column_scale(expected, 2.0)
        indices = sprite(page, "classes", c).reshape(len(classes), 16, 16)
        assert np.abs(indices - expected_index(expected, scale)).max() <= 1
