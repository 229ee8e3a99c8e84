"""``torchexplain demo`` once (the real console script), then its report: the files,
the size, and the page in a real headless browser (Debian's chromium, through
Playwright): one grid row per digit and one column per method, colour bars centred
at zero, the view toggle, the tree's script, and no request leaving the machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from helpers import CHROMIUM, playwright_or_skip

SCRIPT = Path(sys.executable).with_name("torchexplain")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
#: the digits demo's report (20 methods x 10 digits) must stay small enough to open at once
MAX_REPORT_BYTES = 600_000


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(SCRIPT), "demo", "--out", str(out)], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc, out


class _Grid(HTMLParser):
    def __init__(self):
        super().__init__()
        self.methods, self.rows = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "th" and attrs.get("class") == "method":
            self.methods.append(attrs["data-method"])
        if tag == "tr" and "data-row" in attrs:
            self.rows.append(attrs["data-row"])


@pytest.mark.slow
def test_demo_writes_a_small_report_with_every_method(demo):
    from torchexplain import Explanation
    from torchexplain.methods import available

    proc, out = demo
    assert "report:" in proc.stdout and "digit_3" in proc.stdout
    page = (out / "report.html").read_text()
    assert (out / "report.html").stat().st_size < MAX_REPORT_BYTES
    grid = _Grid()
    grid.feed(page)
    assert grid.methods == available() and grid.rows == [str(i) for i in range(10)]
    assert "http:" not in page and "https:" not in page
    assert "progress" not in proc.stderr and "explaining" not in proc.stderr  # stderr is not a terminal here
    # the data beside it: the explanation reads back, the evaluation and the tree as JSON
    back = Explanation.load(out)
    assert back.methods == available() and back.inputs.shape == (10, 1, 32, 32)
    assert json.loads((out / "evaluation.json").read_text())["metrics"] == ["deletion", "insertion", "sparseness"]
    assert len(json.loads((out / "nbdt.json").read_text())["rows"]) == 10
    # the neural-backed decision tree of the digits: a line per digit, in the report and a page of its own
    lines = [line for line in proc.stdout.splitlines() if line.startswith("digit_") and "// Decisions:" in line]
    assert len(lines) == 10 and all(line.startswith(f"digit_{d}: Prediction: {d} //") for d, line in enumerate(lines))
    assert 'href="nbdt.html"' in page and page.count('class="tree-row"') == 10
    assert (out / "nbdt.html").read_text().count('class="tree-row"') == 10
    # a short evaluation of the methods, in the output and the report
    assert "| integrated_gradients |" in proc.stdout and "deletion" in proc.stdout
    assert "Which explanation to trust?" in page and "RISE scores each pixel" in page


BARS = """() => [...document.querySelectorAll('th.method')].map(th => {
  const bar = th.querySelector('.cbar.signed').getBoundingClientRect();
  const zero = th.querySelector('.ticks.signed .mid').getBoundingClientRect();
  return {vmin: +th.querySelector('.cbar.signed').dataset.vmin, vmax: +th.querySelector('.cbar.signed').dataset.vmax,
          bar: bar.left + bar.width / 2, zero: zero.left + zero.width / 2, x: bar.left, y: bar.top + bar.height / 2,
          width: bar.width};
})"""


@pytest.mark.slow
@pytest.mark.browser
def test_demo_report_in_a_browser(demo, tmp_path):
    from PIL import Image

    from torchexplain.methods import available

    playwright = playwright_or_skip()
    _, out = demo
    requests, errors = [], []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto((out / "report.html").as_uri())
            # one row per image, one column per method, a picture in every cell
            rows = page.locator("table.grid tbody tr")
            assert rows.count() == 10
            assert page.eval_on_selector_all("table.grid thead th.method", "ths => ths.map(t => t.dataset.method)") \
                == available()
            assert page.eval_on_selector_all("table.grid tbody tr", "trs => trs.map(t => t.cells.length)") == [21] * 10
            layers = page.evaluate("""() => [...document.querySelectorAll('table.grid tbody .tile i.signed')]
                .map(i => getComputedStyle(i).backgroundImage.slice(0, 26))""")
            assert len(layers) == 200 and set(layers) == {'url("data:image/png;base64'}
            under = page.evaluate("""() => getComputedStyle(document.querySelector('table.grid tbody td .tile'),
                '::before').backgroundImage.slice(0, 16)""")
            assert under == 'url("data:image/'
            # every colour bar centred at zero: symmetric range, "0" under the middle, the zero colour there
            bars = page.evaluate(BARS)
            assert len(bars) == 20
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot))
            pixels = Image.open(shot).convert("RGB")
            for b in bars:
                assert b["vmin"] == -b["vmax"] and b["vmax"] > 0
                assert abs(b["zero"] - b["bar"]) <= 1.0
                if b["x"] + b["width"] < 1600:  # on screen
                    middle = pixels.getpixel((round(b["bar"]), round(b["y"])))
                    assert all(abs(c - 247) <= 6 for c in middle), middle
                    left = pixels.getpixel((round(b["x"] + 3), round(b["y"])))
                    assert left[2] > left[0] + 60  # blue for negative
            # the |attribution| view replaces the signed one
            assert page.locator("table.grid .tile i.abs").first.is_hidden()
            page.click("label[for$='-abs']")
            assert page.locator("table.grid .tile i.abs").first.is_visible()
            assert page.locator("table.grid .tile i.signed").first.is_hidden()
            # the tree: a collapsed sibling opens on a click (built by the page's script)
            page.click("details.tree-row[data-row='3'] > summary")
            tree = page.locator("details.tree-row[data-row='3'] .nbdt")
            before = tree.locator("li").count()
            tree.locator("button.nbdt-toggle[aria-expanded='false']").first.click()
            assert tree.locator("li").count() > before
            page.goto((out / "nbdt.html").as_uri())
            assert page.locator(".nbdt").count() == 10
        finally:
            browser.close()
    assert not errors, errors
    assert requests and all(url.startswith(("file://", "data:")) for url in requests), \
        [u for u in requests if not u.startswith(("file://", "data:"))]
