"""The app's HTTP side (FastAPI): the page and its static files, and a small JSON API.

``GET /api/info?model=``: models, methods with their form fields (defaults for that
model, the first one if none is named), sample images, limits.
``POST /api/images`` (the raw image bytes): an image id. ``GET /api/images/{id}.png``.
``POST /api/predict`` {model, image, k}: the top-k classes.
``POST /api/explain`` {model, image, methods, target, arguments}: a job;
``POST /api/evaluate`` {model, image, methods, metrics, target, arguments}: a job
whose result is the ranked table and the deletion / insertion curves.
``GET /api/layers?model=``: the module tree; ``POST /api/layer`` {model, image, layer,
target}: the layer's feature maps, filters and Grad-CAM there.
``POST /api/tree`` {model, image}: the NBDT decisions and outline (``/tree.js`` and
``/tree.css`` draw it).
``GET /api/runs``, ``/api/runs/{id}/rows``, ``/api/runs/{id}/rows/{row}``: the opened
runs, their rows, a row's maps.
``GET /api/jobs/{id}`` a job's progress and, when done, the maps; ``DELETE`` cancels it;
``GET /api/jobs/{id}/{method}.npy`` a map as NumPy, ``.f32`` its channel sum as
float32 bytes (what the page draws). Errors are ``{"error": message}``
with a 4xx status, never a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .explain import (
    check_arguments,
    check_methods,
    check_metrics,
    evaluate_job,
    explain_job,
    inputs,
    layer_tree,
    layer_view,
    method_fields,
    parse_target,
    top_classes,
    tree_view,
)
from .jobs import Jobs
from .runs import open_runs, run_of
from .state import MAX_UPLOAD, AppError, Images

STATIC = Path(__file__).parent / "static"


def _body(request_json: dict, key: str, kind=str):
    value = request_json.get(key)
    if not isinstance(value, kind):
        raise AppError(f"{key} must be a {kind.__name__}; got {type(value).__name__}")
    return value


def create_app(models: dict, *, max_upload: int = MAX_UPLOAD, samples=None, runs=None, workers: int = 2):
    """The ASGI app serving ``models`` (name -> :class:`~.state.ServedModel`), ``samples``
    (image files offered in the page) and ``runs`` (output folders of explain and
    explain-dataset, served by id)."""
    opened = open_runs(runs)
    images, jobs = Images(), Jobs(workers)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        jobs.shutdown()  # cancel what runs; no thread outlives the server

    app = FastAPI(title="torchexplain", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.jobs = jobs
    sample_ids = []
    for i, path in enumerate(samples or []):
        from ..loading import load_image

        sample_ids.append(images.add(load_image(path), Path(path).name, f"sample-{i}"))
    fields = {}  # model name -> the methods' form fields (computed on first use)

    @app.exception_handler(AppError)
    async def refused(request, err: AppError):
        return JSONResponse({"error": str(err)}, status_code=err.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, err: StarletteHTTPException):
        return JSONResponse({"error": str(err.detail)}, status_code=err.status_code)

    @app.exception_handler(RequestValidationError)
    async def malformed(request, err: RequestValidationError):
        first = (err.errors() or [{}])[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return JSONResponse({"error": f"{where or 'the request'}: {first.get('msg', 'is not valid')}"}, status_code=422)

    @app.exception_handler(Exception)
    async def failed(request, err: Exception):
        text = str(err).splitlines()[0] if str(err) else ""
        return JSONResponse({"error": f"{type(err).__name__}: {text}"}, status_code=500)

    def model_of(name) -> object:
        if not isinstance(name, str) or name not in models:
            raise AppError(f"unknown model {name!r}; this server has {', '.join(models)}", 404)
        return models[name]

    async def json_body(request: Request) -> dict:
        try:
            body = await request.json()
        except ValueError:
            raise AppError("the request body must be JSON") from None
        if not isinstance(body, dict):
            raise AppError("the request body must be a JSON object")
        return body

    @app.get("/")
    async def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/info")
    async def info(model: str | None = None):
        served = next(iter(models.values())) if model is None else model_of(model)
        if served.name not in fields:
            fields[served.name] = method_fields(served)
        return {"models": [m.info() for m in models.values()], "methods": fields[served.name],
                "samples": sample_ids, "max_upload": max_upload}

    @app.post("/api/images")
    async def upload(request: Request):
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_upload:
            raise AppError(f"the upload is {declared} bytes; the limit is {max_upload}", 413)
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > max_upload:
                raise AppError(f"the upload is over the limit of {max_upload} bytes", 413)
        name = request.headers.get("x-filename", "upload")
        return {"id": images.decode(bytes(data), Path(name).name, max_upload)}

    @app.get("/api/images/{ident}.png")
    async def image_png(ident: str):
        return Response(images.png(ident), media_type="image/png")

    @app.post("/api/predict")
    async def predict(request: Request):
        body = await json_body(request)
        model = model_of(body.get("model"))
        image, _ = images.get(_body(body, "image"))
        k = body.get("k", 5)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise AppError(f"k must be a positive int; got {k!r}")
        return {"classes": top_classes(model, inputs(model, image), k)}

    def method_request(body: dict):
        """(model, input batch, canonical methods, target, arguments) of a job request."""
        model = model_of(body.get("model"))
        image, _ = images.get(_body(body, "image"))
        methods = check_methods(body.get("methods"))
        target = parse_target(model, body.get("target"))
        return model, inputs(model, image), methods, target, check_arguments(methods, body.get("arguments") or {})

    @app.post("/api/explain")
    async def explain(request: Request):
        model, x, methods, target, arguments = method_request(await json_body(request))
        job = jobs.submit("explain", len(methods), lambda job: explain_job(job, model, x, methods, target, arguments))
        return job.status()

    @app.post("/api/evaluate")
    async def evaluate(request: Request):
        body = await json_body(request)
        model, x, methods, target, arguments = method_request(body)
        metrics = check_metrics(body.get("metrics") or ["deletion", "insertion", "infidelity", "sparseness"])
        job = jobs.submit("evaluate", len(methods) + 1,
                          lambda job: evaluate_job(job, model, x, methods, metrics, target, arguments))
        return job.status()

    @app.get("/api/layers")
    async def layers(model: str):
        return {"layers": layer_tree(model_of(model))}

    @app.post("/api/layer")
    def layer(body: dict):  # a plain def: FastAPI runs it in a thread (the model works)
        model = model_of(body.get("model"))
        image, _ = images.get(_body(body, "image"))
        return layer_view(model, inputs(model, image), body.get("layer"), parse_target(model, body.get("target")))

    hierarchies: dict = {}  # model name -> its induced tree

    @app.post("/api/tree")
    def tree(body: dict):
        model = model_of(body.get("model"))
        image, _ = images.get(_body(body, "image"))
        return tree_view(model, inputs(model, image), hierarchies)

    @app.get("/tree.js")
    async def tree_js():
        from ..nbdt.render import TREE_JS

        return Response(TREE_JS, media_type="text/javascript")

    @app.get("/tree.css")
    async def tree_css():
        from ..report.tree import TREE_SECTION_CSS

        return Response(TREE_SECTION_CSS, media_type="text/css")

    @app.get("/api/runs")
    async def list_runs():
        return {"runs": [{"id": k, "kind": r.kind, "name": r.folder.name, "methods": r.methods}
                         for k, r in opened.items()]}

    @app.get("/api/runs/{ident}/rows")
    async def run_rows(ident: str):
        run = run_of(opened, ident)
        return {"methods": run.methods, "rows": run.rows()}

    @app.get("/api/runs/{ident}/rows/{row}")
    async def run_maps(ident: str, row: int):
        return {"maps": run_of(opened, ident).maps(row)}

    def job_of(ident: str):
        job = jobs.get(ident)
        if job is None:
            raise AppError(f"unknown job {ident!r}", 404)
        return job

    @app.get("/api/jobs/{ident}")
    async def job_status(ident: str, wait: float = 0.0):
        """The job's status; with ``wait`` (seconds, at most 5), once it has moved on or ended."""
        job = job_of(ident)
        seen, deadline = (job.state, job.done), time.monotonic() + min(max(wait, 0.0), 5.0)
        while job.state == "running" and (job.state, job.done) == seen and time.monotonic() < deadline:
            await asyncio.sleep(0.003)
        status = job.status()
        if job.state == "done":
            status["result"] = {k: v for k, v in job.result.items() if k not in ("maps", "summed")}
        return status

    @app.delete("/api/jobs/{ident}")
    async def cancel(ident: str):
        job = job_of(ident)
        job.cancel()
        return job.status()

    @app.get("/api/jobs/{ident}/{method}.f32")
    async def summed_map(ident: str, method: str):
        job = job_of(ident)
        if job.state != "done" or method not in job.result.get("summed", {}):
            raise AppError(f"job {ident} has no map of {method!r}", 404)
        return Response(job.result["summed"][method], media_type="application/octet-stream")

    @app.get("/api/jobs/{ident}/{method}.npy")
    async def npy(ident: str, method: str):
        import numpy as np

        job = job_of(ident)
        if job.state != "done" or method not in job.result.get("maps", {}):
            raise AppError(f"job {ident} has no map of {method!r}", 404)
        buffer = io.BytesIO()
        np.save(buffer, job.result["maps"][method].numpy())
        return Response(buffer.getvalue(), media_type="application/octet-stream",
                        headers={"Content-Disposition": f'attachment; filename="{method}.npy"'})

    return app
