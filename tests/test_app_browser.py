"""The app in a real browser (Debian's chromium through Playwright): pick a sample
digit, run IntegratedGradients and Grad-CAM, see two overlays with their captions, move
the opacity slider and see the canvas change, hover a pixel and read its values; the
time from pressing Explain to the overlays drawn is printed against the methods' own."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

import pytest

from helpers import CHROMIUM, playwright_or_skip

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from torchexplain import models  # noqa: E402
from torchexplain.app import create_app  # noqa: E402
from torchexplain.app.state import load_models  # noqa: E402

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """The output of ``torchexplain explain`` on three sample digits."""
    from torchexplain.cli import main

    out = tmp_path_factory.mktemp("explained")
    images = [str(p) for p in models.sample_images()[3:6]]
    assert main(["explain", *images, "--model", "digits", "--method", "saliency,ig", "--out", str(out), "--quiet",
                 "--overwrite"]) == 0
    return out


@pytest.fixture(scope="module")
def url(run_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    served = load_models(["digits", "torchvision:resnet18"], notify=lambda message: None)  # random weights
    app = create_app(served, samples=models.sample_images(), runs=[run_dir])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the server did not start"
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=10)


class Steps:
    """Names the step a failure happened in, with a screenshot of the page at that moment."""

    def __init__(self, page, folder: Path):
        self.page, self.folder, self.n = page, folder, 0

    def __call__(self, name: str, check) -> object:
        self.n += 1
        try:
            value = check()
        except Exception as err:
            shot = self.folder / f"{self.n:02d}-failed-{name.replace(' ', '-')}.png"
            self.page.screenshot(path=str(shot))
            raise AssertionError(f"step {self.n} ({name}) failed: {err}; screenshot {shot}") from err
        self.page.screenshot(path=str(self.folder / f"{self.n:02d}-{name.replace(' ', '-')}.png"))
        return value


@contextlib.contextmanager
def browser_page(folder: Path):
    """(page, step, errors): a chromium page, its :class:`Steps` and the script errors it raised."""
    playwright = playwright_or_skip()
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            yield page, Steps(page, folder), errors
        finally:
            browser.close()


CANVAS_SUM = "(c) => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;" \
             " let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i] + 2 * d[i + 1] + 3 * d[i + 2]; return s; }"


def test_explain_two_methods_in_the_page(url, tmp_path):
    with browser_page(tmp_path) as (page, step, errors):
        step("load the page", lambda: (page.goto(url), page.wait_for_selector("#samples img[data-id='sample-3']")))
        step("pick digit 3", lambda: (page.click("#samples img[data-id='sample-3']"),
                                       page.wait_for_function("() => document.querySelector('#classes li') !== null")))
        top = page.inner_text("#classes li")
        assert top.startswith("3: "), top
        step("choose the methods", lambda: (page.check("#m-integrated_gradients"), page.check("#m-grad_cam")))
        page.fill("fieldset[data-method=integrated_gradients] input[name=n_steps]", "32")
        timings = []
        for _ in range(3):  # the first includes the page's own warm-up
            step("explain", lambda: (page.click("#explain"),
                                     page.wait_for_function("() => document.body.dataset.lastExplainMs !== undefined")))
            ms = float(page.evaluate("() => document.body.dataset.lastExplainMs"))
            seconds = float(page.inner_text("#status").split("done in ")[1].split(" s")[0])
            timings.append((ms, seconds * 1000))
            page.evaluate("() => { delete document.body.dataset.lastExplainMs; }")
        assert page.evaluate("() => document.querySelector('#maps').dataset.target") == "3"  # the top class
        step("explain for a typed class", lambda: (page.fill("#targettext", "8"), page.click("#explain"),
                                                   page.wait_for_function("() => document.querySelector('#maps')"
                                                                          ".dataset.target === '8'")))
        page.fill("#targettext", "")
        page.evaluate("() => { delete document.body.dataset.lastExplainMs; }")
        captions = page.locator("#maps figcaption").all_inner_texts()
        assert len(captions) == 2, captions
        assert captions[0].startswith("integrated_gradients") and "delta" in captions[0], captions
        assert captions[1].startswith("grad_cam") and "delta" not in captions[1], captions
        canvas = page.locator("#maps canvas").first
        before = canvas.evaluate(CANVAS_SUM)
        step("move the opacity slider", lambda: page.locator("#opacity").fill("0.1"))
        after = page.locator("#maps canvas").first.evaluate(CANVAS_SUM)
        assert after != before, "the opacity slider did not change the canvas"
        step("hover a pixel", lambda: page.locator("#maps canvas").first.hover(position={"x": 112, "y": 112}))
        readout = page.inner_text("#readout")
        assert "integrated_gradients" in readout and "grad_cam" in readout and "(16, 16)" in readout, readout
        step("evaluate", lambda: (page.click("#evaluate"),
                                  page.wait_for_selector("#ranking tr[data-method]", timeout=120_000)))
        ranked = page.eval_on_selector_all("#ranking tr[data-method]", "rows => rows.map(r => r.dataset.method)")
        assert sorted(ranked) == ["grad_cam", "integrated_gradients"], ranked
        headers = page.locator("#ranking th").all_inner_texts()
        assert headers[:5] == ["method", "deletion ↓", "insertion ↑", "infidelity ↓", "sparseness ↑"], headers
        charts = page.eval_on_selector_all("#curves svg", "s => s.map(v => [v.dataset.metric, "
                                                           "v.querySelectorAll('polyline').length])")
        assert charts == [["deletion", 2], ["insertion", 2]], charts
        legend = page.eval_on_selector_all("#curves svg:first-child text", "t => t.map(e => e.textContent)")
        assert legend[1:] == ["integrated_gradients", "grad_cam"], legend
        step("open a layer", lambda: (page.select_option("#layer", "features.0"),
                                      page.wait_for_selector("#layerview[data-layer='features.0']")))
        titles = page.locator("#layerview h3").all_inner_texts()
        assert titles == ["feature maps of features.0 (16 shown)", "filters of features.0, each scaled to [0, 1]",
                          "Grad-CAM at features.0"], titles
        assert page.locator("#layerview canvas").count() == 16 + 16 + 1
        step("switch to resnet18", lambda: (page.select_option("#model", "torchvision:resnet18"),
                                            page.wait_for_function("() => document.querySelector('#classes li')"
                                                                   ".textContent.includes('%')")))
        window = "fieldset[data-method=occlusion] input[name=sliding_window_shapes]"
        assert page.input_value(window) == "[3,28,28]"  # the defaults are resnet18's, not the digits model's
        assert page.locator("#maps canvas, #layerview canvas, #ranking tr").count() == 0  # the digits results went
        assert page.input_value("fieldset[data-method=integrated_gradients] input[name=n_steps]") == "50"
        page.uncheck("#m-grad_cam")
        page.fill("fieldset[data-method=integrated_gradients] input[name=n_steps]", "16")
        big = []
        for _ in range(2):
            step("explain at 224", lambda: (page.click("#explain"), page.wait_for_function(
                "() => document.body.dataset.lastExplainMs !== undefined", timeout=120_000)))
            seconds = float(page.inner_text("#status").split("done in ")[1].split(" s")[0])
            big.append((float(page.evaluate("() => document.body.dataset.lastExplainMs")), seconds * 1000))
            page.evaluate("() => { delete document.body.dataset.lastExplainMs; }")
        assert page.locator("#maps canvas").evaluate("c => [c.width, c.height]") == [224, 224]
        page.select_option("#model", "digits")
        page.wait_for_function("() => document.querySelector('#classes li').textContent.startsWith('3: ')")
        step("open the tree", lambda: (page.click("#showtree"), page.wait_for_selector("#tree .nbdt")))
        assert page.inner_text("#treeline").startswith("Prediction: 3 // Decisions: ")
        step("find a class", lambda: (page.fill("#treesearch", "7"), page.press("#treesearch", "Enter"),
                                      page.wait_for_selector("#tree li.found")))
        found = page.locator("#tree li.found")
        assert found.is_visible() and found.locator(":scope > .nbdt-name").inner_text() == "7"
        assert not errors, errors
    added = [ms - method_ms for ms, method_ms in timings[1:]]
    print(f"\napp: IntegratedGradients (32 steps) + Grad-CAM on one digit: pressing Explain to the overlays drawn "
          f"{[round(t[0]) for t in timings]} ms; the app adds {[round(a) for a in added]} ms over the job's own time")
    print(f"app: IntegratedGradients (16 steps) on one resnet18 224 image: {[round(t[0]) for t in big]} ms; the app "
          f"adds {[round(ms - job_ms) for ms, job_ms in big]} ms")


def test_open_a_run_written_by_explain(url, tmp_path):
    with browser_page(tmp_path) as (page, step, errors):
        step("load the runs", lambda: (page.goto(url), page.wait_for_selector("#runrows tr[data-row]")))
        assert page.locator("#runs-section").is_visible()
        assert page.locator("#runrows tr[data-row]").count() == 3
        width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"the page is {width[0]} px wide in a {width[1]} px window"
        assert page.locator("#runrows th").all_inner_texts() == ["id", "class", "predicted", "probability",
                                                                 "saliency/total", "integrated_gradients/total"]
        step("filter by class", lambda: page.fill("#runfilter", "4"))
        visible = page.eval_on_selector_all("#runrows tr[data-row]", "rows => rows.filter(r => !r.hidden)"
                                                                      ".map(r => r.dataset.class)")
        assert visible == ["4"], visible
        page.fill("#runfilter", "")
        step("filter by prediction and a total", lambda: (page.fill("#runpredicted", "5"),
                                                          page.select_option("#runmetric", "saliency"),
                                                          page.fill("#runmetricmin", "-1e9")))
        visible = page.eval_on_selector_all("#runrows tr[data-row]", "rows => rows.filter(r => !r.hidden)"
                                                                      ".map(r => r.dataset.predicted)")
        assert visible == ["5"], visible
        page.fill("#runmetricmin", "1e9")  # no saliency total is that large
        assert page.eval_on_selector_all("#runrows tr[data-row]", "rows => rows.filter(r => !r.hidden).length") == 0
        page.fill("#runmetricmin", "")
        page.fill("#runpredicted", "")
        page.fill("#runfilter", "4")
        step("open its maps", lambda: (page.click("#runrows tr[data-row]:not([hidden])"),
                                       page.wait_for_selector("#runmaps canvas")))
        assert page.locator("#runmaps figcaption").all_inner_texts() == ["saliency · row 1",
                                                                        "integrated_gradients · row 1"]
        assert not errors, errors
