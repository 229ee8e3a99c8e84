#!/usr/bin/env python
"""Redraw docs/app.png, the README's picture of ``torchexplain serve``: the app on the
bundled digits in Debian's chromium, digit 3 explained with IntegratedGradients, Grad-CAM
and Occlusion, then evaluated.

    .venv/bin/python scripts/app_screenshot.py [--out docs/app.png]
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from pathlib import Path

import uvicorn
from playwright.sync_api import sync_playwright

from torchexplain import models
from torchexplain.app import create_app
from torchexplain.app.state import load_models


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "docs" / "app.png"))
    args = p.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(load_models(["digits"]), samples=models.sample_images()),
                                           host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(f"http://127.0.0.1:{port}/")
        page.click("#samples img[data-id='sample-3']")
        page.wait_for_function("() => document.querySelector('#classes li') !== null")
        for method in ("integrated_gradients", "grad_cam", "occlusion"):
            page.check(f"#m-{method}")
        page.click("#explain")
        page.wait_for_selector("#maps canvas")
        page.click("#evaluate")
        page.wait_for_selector("#ranking tr[data-method]", timeout=120_000)
        page.screenshot(path=args.out, full_page=False)
        browser.close()
    server.should_exit = True
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
