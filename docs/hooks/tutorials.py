"""MkDocs hook: the tutorials are executed on every build, so they cannot go stale.

Every ```python block of a page under ``docs/tutorials/`` (their index excepted) and of
the home page runs, in order, in one namespace per page and in a fresh temporary
working directory. What a block prints is shown after it; so is the value of its last
line when that is an expression (a matplotlib Figure or anything with ``_repr_png_`` as
a picture), every figure it leaves open in pyplot, and whatever it passes to
``display(obj)``. A block that raises fails the build, naming the page and the line. Blocks fenced as
```py are shown, not run (code that needs the network or real weights).
"""

from __future__ import annotations

import ast
import base64
import contextlib
import io
import logging
import os
import re
import tempfile
import time
import traceback

from mkdocs.exceptions import PluginError

log = logging.getLogger("mkdocs.hooks.tutorials")

FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)


class _Page:
    """One tutorial's namespace and what its current block has shown so far."""

    def __init__(self):
        self.namespace = {"__name__": "__tutorial__", "display": self.display}
        self.shown: list[str] = []

    def display(self, obj) -> None:
        png = _png(obj)
        if png is not None:
            self.shown.append(_image(png))
            _close(obj)  # a pyplot figure shown as a value is not shown again as an open figure
        elif obj is not None:
            print(repr(obj))

    def run(self, code: str, filename: str) -> str:
        """Execute one block; return the Markdown that shows its output."""
        import matplotlib.pyplot as plt

        tree = ast.parse(code, filename)
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        out = io.StringIO()
        self.shown = []
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            exec(compile(tree, filename, "exec"), self.namespace)
            if last is not None:
                value = eval(compile(ast.Expression(last.value), filename, "eval"), self.namespace)
                self.display(value)
        for number in plt.get_fignums():
            figure = plt.figure(number)
            self.shown.append(_image(_png(figure)))
            plt.close(figure)
        text = out.getvalue().rstrip()
        parts = [f"```text\n{text}\n```"] if text else []
        return "\n\n".join(parts + self.shown)


def _png(obj) -> bytes | None:
    from matplotlib.figure import Figure

    if isinstance(obj, Figure):
        buffer = io.BytesIO()
        obj.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
        return buffer.getvalue()
    if hasattr(obj, "_repr_png_") and not isinstance(obj, type):
        return obj._repr_png_()
    return None


def _close(obj) -> None:
    from matplotlib.figure import Figure

    if isinstance(obj, Figure):
        import matplotlib.pyplot as plt

        plt.close(obj)


def _image(png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="tutorial-output" alt="output" src="data:image/png;base64,{data}">'


def execute(markdown: str, name: str) -> str:
    """Run the page's ```python blocks and insert their outputs after each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    torch.manual_seed(0)
    numpy_options = np.get_printoptions()
    page = _Page()
    pieces, end = [], 0
    start = time.perf_counter()
    here = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="torchexplain-tutorial-") as workdir:
        os.chdir(workdir)
        try:
            for match in FENCE.finditer(markdown):
                line = markdown.count("\n", 0, match.start()) + 1
                try:
                    shown = page.run(match.group(1), f"{name}:{line}")
                except Exception as error:
                    raise PluginError(f"tutorial {name}, the block at line {line} raised "
                                      f"{type(error).__name__}:\n{traceback.format_exc()}") from None
                pieces += [markdown[end:match.end()], "\n\n" + shown if shown else ""]
                end = match.end()
        finally:
            os.chdir(here)
            plt.close("all")
            torch.set_printoptions(profile="default")  # a page's print settings do not leak into the next
            np.set_printoptions(**numpy_options)
    log.info("tutorial %s ran in %.1f s", name, time.perf_counter() - start)
    return "".join(pieces) + markdown[end:]


def on_page_markdown(markdown, page, config, files):
    uri = page.file.src_uri
    if uri == "index.md" or (uri.startswith("tutorials/") and not uri.endswith("index.md")):
        return execute(markdown, uri)
    return markdown


if __name__ == "__main__":  # python docs/hooks/tutorials.py PAGE.md [OUT.md]: run one tutorial alone
    import sys

    logging.basicConfig(level=logging.INFO)
    source = sys.argv[1]
    rendered = execute(open(source).read(), os.path.basename(source))
    if len(sys.argv) > 2:
        open(sys.argv[2], "w").write(rendered)
    else:
        print(rendered)
