"""The app's API in-process (fastapi.testclient): its answers against explain() and the
model computed directly, every refusal with its 4xx status and message, jobs that keep
their own results when two run at once, cancellation; and the server as a process that
stops cleanly on SIGINT / SIGTERM."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from torchexplain import explain, models  # noqa: E402
from torchexplain.app import create_app  # noqa: E402
from torchexplain.app.state import load_models  # noqa: E402
from torchexplain.loading import image_transform, load_image  # noqa: E402


@pytest.fixture(scope="module")
def served():
    return load_models(["digits"])


@pytest.fixture
def client(served):
    app = create_app(served, samples=models.sample_images(), max_upload=50_000)
    with TestClient(app) as c:
        yield c


def digit(i: int) -> torch.Tensor:
    return image_transform(32, models.MEAN, models.STD, "L")(load_image(models.sample_images()[i])).unsqueeze(0)


def wait(client, job: dict, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while job["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.02)
        job = client.get(f"/api/jobs/{job['id']}").json()
    return job


def summed_map(client, job: dict, method: dict) -> np.ndarray:
    """A method's channel-summed map as the page fetches it (float32 bytes)."""
    r = client.get(f"/api/jobs/{job['id']}/{method['name']}.f32")
    assert r.status_code == 200
    return np.frombuffer(r.content, dtype="<f4").reshape(method["shape"])


def explain_request(image="sample-3", methods=("ig", "grad_cam"), **extra) -> dict:
    return {"model": "digits", "image": image, "methods": list(methods),
            "arguments": {"integrated_gradients": {"n_steps": 16, "baselines": 0.0}}, **extra}  # 0.0: None's zeros


def test_info_lists_models_methods_with_defaults_and_samples(client):
    from torchexplain.methods import available

    info = client.get("/api/info").json()
    assert info["models"][0]["name"] == "digits" and info["models"][0]["classes"] == 10
    methods = {m["name"]: m for m in info["methods"]}
    assert list(methods) == available()
    assert methods["integrated_gradients"]["fields"] == {"n_steps": 50, "baselines": 0.0}
    assert methods["integrated_gradients"]["delta"] and methods["saliency"]["fields"] == {}
    assert methods["occlusion"]["fields"] == {"sliding_window_shapes": [1, 4, 4], "strides": [1, 2, 2], "baselines": 0.0}
    assert info["samples"] == [f"sample-{i}" for i in range(10)] and info["max_upload"] == 50_000


def test_predict_is_the_models_softmax(client, served):
    got = client.post("/api/predict", json={"model": "digits", "image": "sample-7", "k": 3}).json()["classes"]
    with torch.no_grad():
        probs = torch.softmax(served["digits"].module(digit(7)).double(), 1)[0]
    values, indices = probs.topk(3)
    assert [c["index"] for c in got] == indices.tolist() and got[0]["name"] == str(int(indices[0]))
    np.testing.assert_allclose([c["probability"] for c in got], values.numpy(), rtol=1e-9)


def test_explain_job_gives_explains_maps_summed_over_channels(client, served):
    job = wait(client, client.post("/api/explain", json=explain_request(target="5")).json())
    assert job["state"] == "done" and job["done"] == job["total"] == 2
    result = job["result"]
    assert result["target"] == {"index": 5, "name": "5"}
    expected = explain(served["digits"].module, digit(3), ["ig", "grad_cam"], 5, n_steps=16)
    for m in result["methods"]:
        a = expected.attributions[m["name"]][0].sum(0)
        assert m["shape"] == [32, 32]
        np.testing.assert_allclose(summed_map(client, job, m), a.numpy(), rtol=1e-5, atol=1e-6)
        assert m["vmax"] == pytest.approx(float(a.abs().max()), rel=1e-6)
    ig = next(m for m in result["methods"] if m["name"] == "integrated_gradients")
    assert ig["delta"] == pytest.approx(float(expected.deltas["integrated_gradients"][0]), rel=1e-5, abs=1e-7)
    npy = client.get(f"/api/jobs/{job['id']}/integrated_gradients.npy")
    assert npy.status_code == 200
    np.testing.assert_allclose(np.load(io.BytesIO(npy.content)), expected.attributions["integrated_gradients"][0],
                               rtol=1e-5, atol=1e-6)


def test_an_upload_is_decoded_and_served_back(client):
    from PIL import Image

    buffer = io.BytesIO()
    Image.open(models.sample_images()[2]).save(buffer, "PNG")
    ident = client.post("/api/images", content=buffer.getvalue(), headers={"x-filename": "../../two.png"}).json()["id"]
    back = Image.open(io.BytesIO(client.get(f"/api/images/{ident}.png").content))
    np.testing.assert_array_equal(np.array(back), np.array(Image.open(models.sample_images()[2])))
    predicted = client.post("/api/predict", json={"model": "digits", "image": ident}).json()["classes"][0]
    assert predicted["index"] == 2


@pytest.mark.parametrize("case, status, message", [
    ("oversized upload", 413, "limit is 50000"),
    ("non-image upload", 415, "not an image"),
    ("empty upload", 400, "empty"),
    ("unknown method", 400, "unknown method 'telepathy'"),
    ("bad target", 400, "target 12 is not a class index"),
    ("unknown target name", 400, "neither top1"),
    ("unknown model", 404, "unknown model 'resnet'"),
    ("unknown model's defaults", 404, "unknown model 'resnet'"),
    ("unknown image", 404, "unknown image"),
    ("unknown job", 404, "unknown job"),
    ("not json", 400, "must be JSON"),
    ("bad argument", 400, "has no argument 'weights_path'"),
])
def test_refusals_are_4xx_with_a_message(client, case, status, message):
    post = {"explain": lambda **b: client.post("/api/explain", json=explain_request(**b))}
    if case == "oversized upload":
        r = client.post("/api/images", content=b"\x89PNG" + b"0" * 60_000)
    elif case == "non-image upload":
        r = client.post("/api/images", content=b"#!/bin/sh\nrm -rf /\n")
    elif case == "empty upload":
        r = client.post("/api/images", content=b"")
    elif case == "unknown method":
        r = post["explain"](methods=["ig", "telepathy"])
    elif case == "bad target":
        r = post["explain"](target=12)
    elif case == "unknown target name":
        r = post["explain"](target="seven")
    elif case == "unknown model":
        r = client.post("/api/explain", json={**explain_request(), "model": "resnet"})
    elif case == "unknown model's defaults":
        r = client.get("/api/info", params={"model": "resnet"})
    elif case == "unknown image":
        r = post["explain"](image="nope")
    elif case == "unknown job":
        r = client.get("/api/jobs/0123")
    elif case == "not json":
        r = client.post("/api/explain", content=b"{methods: ig}")
    else:
        r = client.post("/api/explain", json={**explain_request(), "arguments": {"ig": {"weights_path": "/etc"}}})
    assert r.status_code == status and message in r.json()["error"], r.text
    assert "Traceback" not in r.text


@pytest.mark.parametrize("path", ["/static/../server.py", "/static/%2e%2e/server.py", "/static//etc/passwd",
                                  "/api/images/..%2fserver.png", "/api/jobs/../../etc/passwd"])
def test_paths_from_the_browser_never_reach_the_filesystem(client, path):
    r = client.get(path)
    assert r.status_code == 404 and b"def create_app" not in r.content and b"root:" not in r.content


def test_two_jobs_at_once_keep_their_own_results(client, served):
    requests = [explain_request(image="sample-1", methods=["saliency", "ig"]),
                explain_request(image="sample-8", methods=["saliency", "ig"])]
    started = [None, None]

    def submit(i):
        started[i] = client.post("/api/explain", json=requests[i]).json()

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done = [wait(client, s) for s in started]
    for i, image in zip(range(2), (1, 8)):
        expected = explain(served["digits"].module, digit(image), ["saliency", "ig"], n_steps=16)
        for m in done[i]["result"]["methods"]:
            np.testing.assert_allclose(summed_map(client, done[i], m), expected.attributions[m["name"]][0].sum(0).numpy(),
                                       rtol=1e-5, atol=1e-6)


def test_a_cancelled_job_stops_before_its_next_method(client):
    request = {**explain_request(methods=["ig", "saliency", "grad_cam"]),
               "arguments": {"integrated_gradients": {"n_steps": 4000}}}
    job = client.post("/api/explain", json=request).json()
    assert client.delete(f"/api/jobs/{job['id']}").status_code == 200
    job = wait(client, job)
    assert job["state"] == "cancelled" and job["done"] < 3 and "result" not in job


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_the_server_stops_cleanly_and_leaves_no_process(sig):
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "torchexplain.cli", "serve", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline, answered = time.monotonic() + 60, None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/info", timeout=2) as r:
                    answered = r.status
                    break
            except OSError:
                time.sleep(0.2)
        assert answered == 200, server.stderr.read() if server.poll() is not None else "no answer"
        server.send_signal(sig)
        code = server.wait(timeout=30)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
    out, err = server.communicate()
    assert code == 0, err
    assert f"http://127.0.0.1:{port}/" in out and "Traceback" not in err
    with pytest.raises(ProcessLookupError):
        os.killpg(server.pid, 0)  # nothing of its process group is left


def test_evaluate_job_ranks_as_evaluate_and_its_curves_have_the_tables_areas(client, served):
    from torchexplain.metrics import area_under_curve, evaluate

    request = {"model": "digits", "image": "sample-4", "methods": ["saliency", "grad_cam"],
               "metrics": ["deletion", "insertion", "sparseness"]}
    job = wait(client, client.post("/api/evaluate", json=request).json())
    assert job["state"] == "done" and job["total"] == 3, job
    table = job["result"]["table"]
    direct = evaluate(served["digits"].module, digit(4), ["saliency", "grad_cam"], ["deletion", "insertion",
                                                                                     "sparseness"])
    assert [r["method"] for r in table["rows"]] == ["saliency", "grad_cam"]
    for row in table["rows"]:
        for metric in ("deletion", "insertion", "sparseness"):
            assert row[metric] == pytest.approx(direct.results[(row["method"], metric)].mean, rel=1e-6)
            assert row[f"{metric}_rank"] == direct.rows[[r["method"] for r in direct.rows].index(row["method"])][
                f"{metric}_rank"]
        for metric in ("deletion", "insertion"):
            curve = torch.tensor(job["result"]["curves"][metric][row["method"]])
            assert len(curve) == 51 and float(area_under_curve(curve)) == pytest.approx(row[metric], rel=1e-6)
    r = client.post("/api/evaluate", json={**request, "metrics": ["deletion", "accuracy"]})
    assert r.status_code == 400 and "unknown metric 'accuracy'" in r.json()["error"]


def test_layer_view_gives_the_layers_output_filters_and_grad_cam_there(client, served):
    from torchexplain.cam import GradCAM

    model = served["digits"].module
    tree = client.get("/api/layers", params={"model": "digits"}).json()["layers"]
    assert [t["name"] for t in tree] == [n for n, _ in model.named_modules() if n]
    conv = next(t["name"] for t in tree if t["conv"])
    view = client.post("/api/layer", json={"model": "digits", "image": "sample-6", "layer": conv, "target": 6}).json()
    seen = []
    handle = dict(model.named_modules())[conv].register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    try:
        with torch.no_grad():
            model(digit(6))
    finally:
        handle.remove()
    maps = np.array(view["feature_maps"]["values"]).reshape(-1, *view["feature_maps"]["shape"])
    np.testing.assert_allclose(maps, seen[0][0, : len(maps)].numpy(), rtol=1e-5, atol=1e-6)
    weight = dict(model.named_modules())[conv].weight.detach()[:, 0]  # one input channel: drawn as it is
    low = weight.amin((1, 2), keepdim=True)
    scaled = (weight - low) / (weight.amax((1, 2), keepdim=True) - low)
    kernels = np.array(view["filters"]["values"]).reshape(-1, *view["filters"]["shape"])
    np.testing.assert_allclose(kernels, scaled[: len(kernels)].numpy(), rtol=1e-5, atol=1e-6)
    cam = GradCAM(model, conv).attribute(digit(6), target=6)[0].sum(0)
    np.testing.assert_allclose(np.array(view["grad_cam"]["values"]).reshape(cam.shape), cam.numpy(), rtol=1e-5,
                               atol=1e-7)
    r = client.post("/api/layer", json={"model": "digits", "image": "sample-6", "layer": "features.99"})
    assert r.status_code == 404 and "unknown layer 'features.99'" in r.json()["error"]
    r = client.get("/api/layers")
    assert r.status_code == 422 and "model" in r.json()["error"]


def test_tree_view_is_the_nbdt_of_the_model_for_the_image(client, served):
    from torchexplain.nbdt import SoftNBDT, decision_line, induce_hierarchy

    model = served["digits"].module
    view = client.post("/api/tree", json={"model": "digits", "image": "sample-3"}).json()
    hierarchy = induce_hierarchy(model, served["digits"].class_names)
    with torch.no_grad():
        probs, decisions = SoftNBDT(model, hierarchy).forward_with_decisions(digit(3))
    assert view["line"] == decision_line(hierarchy.class_names, int(probs[0].argmax()), decisions[0])
    assert view["line"].startswith("Prediction: 3 // Decisions: ") and view["predicted"] == "3"
    assert view["nodes"] == hierarchy.n_nodes and 'class="nbdt"' in view["html"]
    assert client.get("/tree.js").headers["content-type"].startswith("text/javascript")


@pytest.fixture(scope="module")
def runs(served, tmp_path_factory):
    """An explain output (4 digits, topk:2) and an explain-dataset output (6 digit files, store=full)."""
    from PIL import Image

    from torchexplain.dataset import explain_dataset

    root = tmp_path_factory.mktemp("runs")
    x = torch.cat([digit(i) for i in (0, 3, 5, 9)])
    explained = explain(served["digits"].module, x, ["saliency", "ig"], "topk:2", class_names=served["digits"].class_names,
                        n_steps=8)
    explained.save(root / "explained")
    folder = root / "images"
    for d in range(6):
        (folder / str(d)).mkdir(parents=True)
        Image.open(models.sample_images()[d]).save(folder / str(d) / "a.png")
    explain_dataset("digits", folder, ["saliency"], out=root / "dataset", store="full", progress=False)
    return root, explained


def test_runs_are_served_by_id_with_their_rows_and_maps(served, runs):
    root, explained = runs
    app = create_app(served, runs=[root / "explained", root / "dataset"])
    with TestClient(app) as c:
        listed = c.get("/api/runs").json()["runs"]
        assert [(r["id"], r["kind"], r["methods"]) for r in listed] == [
            ("run-0", "explain", ["saliency", "integrated_gradients"]), ("run-1", "dataset", ["saliency"])]
        rows = c.get("/api/runs/run-0/rows").json()["rows"]
        assert len(rows) == 8 and [r["target"] for r in rows] == explained.target.tolist()
        assert rows[1]["integrated_gradients/total"] == pytest.approx(
            float(explained.attributions["integrated_gradients"][1].sum()), rel=1e-6)
        maps = c.get("/api/runs/run-0/rows/1").json()["maps"]
        np.testing.assert_allclose(np.array(maps["saliency"]["values"]).reshape(32, 32),
                                   explained.attributions["saliency"][1].sum(0).numpy(), rtol=1e-6)
        rows = {r["id"]: r for r in c.get("/api/runs/run-1/rows").json()["rows"]}
        assert sorted(rows) == [f"{d}/a.png" for d in range(6)] and all(r["label"] == int(k[0]) for k, r in rows.items())
        alone = explain(served["digits"].module, digit(4), "saliency")
        maps = c.get(f"/api/runs/run-1/rows/{rows['4/a.png']['row']}").json()["maps"]
        np.testing.assert_allclose(np.array(maps["saliency"]["values"]).reshape(32, 32),
                                   alone.attributions["saliency"][0].sum(0).numpy(), rtol=2e-3, atol=1e-4)  # float16
        for path in ("/api/runs/run-7/rows", "/api/runs/..%2F..%2Fetc/rows", "/api/runs/run-0/rows/99"):
            r = c.get(path)
            assert r.status_code == 404 and "error" in r.json(), path
    with pytest.raises(ValueError, match="neither an explain output"):
        create_app(served, runs=[root / "images"])


def test_every_method_runs_with_the_fields_the_page_shows(client):
    info = {m["name"]: m["fields"] for m in client.get("/api/info").json()["methods"]}
    job = client.post("/api/explain", json={"model": "digits", "image": "sample-0", "methods": list(info),
                                            "arguments": info}).json()
    job = wait(client, job, timeout=120)
    assert job["state"] == "done", job["error"]
    assert [m["name"] for m in job["result"]["methods"]] == list(info)
    flat = [m["name"] for m in job["result"]["methods"] if m["shape"] != [32, 32] or not m["vmax"] > 0]
    assert flat == ["feature_permutation"], flat  # it shuffles features across the batch: one image, all zeros


def test_each_models_defaults_are_sized_for_its_own_input():
    served = load_models(["digits", "torchvision:resnet18"], notify=lambda message: None)  # random weights
    with TestClient(create_app(served)) as client:
        occlusion = {}
        for model in (None, "digits", "torchvision:resnet18"):
            methods = client.get("/api/info", params={"model": model} if model else {}).json()["methods"]
            occlusion[model] = next(m["fields"] for m in methods if m["name"] == "occlusion")
    assert occlusion[None] == occlusion["digits"] == {"sliding_window_shapes": [1, 4, 4], "strides": [1, 2, 2],
                                                      "baselines": 0.0}  # a 1x32x32 input: windows of 4x4
    assert occlusion["torchvision:resnet18"] == {"sliding_window_shapes": [3, 28, 28], "strides": [3, 14, 14],
                                                 "baselines": 0.0}  # 3x224x224: an eighth of the side


def test_serve_takes_several_models_and_runs_either_way():
    from torchexplain.cli import _parser

    args = _parser().parse_args(["serve", "--model", "digits", "torchvision:resnet18", "--runs", "a", "--runs", "b"])
    assert args.model == ["digits", "torchvision:resnet18"] and args.runs == ["a", "b"]
    args = _parser().parse_args(["serve", "--model", "digits", "--model", "x.pt"])
    assert args.model == ["digits", "x.pt"] and args.host == "127.0.0.1" and args.port == 8765
