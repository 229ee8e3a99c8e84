"""``torchexplain serve``: a local web app to explore a model's explanations (FastAPI and
uvicorn; plain HTML, CSS and JavaScript shipped in the package, nothing loaded from the
network). :func:`create_app` builds the ASGI app; :func:`serve` runs it until SIGINT or
SIGTERM (``pip install 'torchexplain[app]'``)."""

from __future__ import annotations

import signal
import threading

__all__ = ["create_app", "serve"]


def create_app(*args, **kwargs):
    """Build the web app's ASGI application (a FastAPI app) without serving it; pass it
    to an ASGI server (uvicorn, as :func:`serve` does) or to FastAPI's ``TestClient``.

    Takes the arguments of ``torchexplain.app.server.create_app``:

    * ``models``: ``{name: ServedModel}``, the models offered (build it with
      ``torchexplain.app.state.load_models(["digits", ...])``); the first one is the
      default;
    * ``max_upload`` (keyword): the largest accepted image upload, in bytes (default
      20 MiB);
    * ``samples`` (keyword): image files offered in the page as samples (e.g.
      ``torchexplain.models.sample_images()``);
    * ``runs`` (keyword): output folders of ``torchexplain explain`` and
      ``explain-dataset`` to browse, served by id;
    * ``workers`` (keyword): threads running explanation jobs (default 2).

    The app serves the page at ``/``, its JSON API under ``/api/`` (``/api/info``:
    the models, methods and samples) and stops its jobs when its lifespan ends.
    Importing this package needs nothing extra; calling this needs FastAPI
    (``pip install 'torchexplain[app]'``).

    Examples:
        >>> from fastapi.testclient import TestClient
        >>> from torchexplain.app import create_app
        >>> from torchexplain.app.state import load_models
        >>> app = create_app(load_models(["digits"]))
        >>> with TestClient(app) as client:
        ...     info = client.get("/api/info").json()
        >>> [model["name"] for model in info["models"]], sorted(info)
        (['digits'], ['max_upload', 'methods', 'models', 'samples'])
    """
    from .server import create_app as build

    return build(*args, **kwargs)


def serve(models=("digits",), *, weights=None, labels=None, runs=None, host: str = "127.0.0.1", port: int = 8765,
          device: str = "cpu", max_upload: int | None = None, notify=print, ready=None) -> None:
    """Load ``models`` (specs; ``weights``/``labels`` for the first), then serve the app
    on ``host:port`` until interrupted. With the bundled digits model first, its sample
    images are offered; ``runs``: output folders of explain / explain-dataset to browse.
    ``ready(url)`` is called once the server listens."""
    try:
        import uvicorn
    except ImportError:
        raise RuntimeError("torchexplain serve needs FastAPI and uvicorn: pip install 'torchexplain[app]'") from None
    from .. import models as bundled
    from .state import MAX_UPLOAD, load_models

    served = load_models(list(models), weights, device, labels)
    samples = bundled.sample_images() if list(models)[0] == "digits" else []
    app = create_app(served, max_upload=max_upload or MAX_UPLOAD, samples=samples, runs=runs)
    url = f"http://{host}:{port}/"

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets)
            if self.started:  # listening
                notify(f"torchexplain serve: {url} (Ctrl+C stops it)")
                if ready is not None:
                    ready(url)

    # uvicorn stops cleanly on SIGINT and SIGTERM, then raises the signal again for the
    # previous handler: here, a stop that returns normally (exit status 0)
    previous = signal.signal(signal.SIGTERM, _stop) if threading.current_thread() is threading.main_thread() else None
    try:
        Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")).run()
    except (KeyboardInterrupt, _Stopped):
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    notify("torchexplain serve: stopped")


class _Stopped(Exception):
    pass


def _stop(signum, frame):
    raise _Stopped()
