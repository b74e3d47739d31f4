"""Take the README's screenshots from the running app (demo mode) in headless Chromium.

    python tests/screenshots.py        # writes tests/screenshots/*.png
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).parent))
from apphost import AppServer, launch_chromium, wait_until_idle  # noqa: E402

OUT = Path(__file__).parent / "screenshots"


def main() -> None:
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as data, AppServer(Path(data)) as app, sync_playwright() as p:
        browser = launch_chromium(p)
        for scheme in ("light", "dark"):
            page = browser.new_page(viewport={"width": 1280, "height": 860}, color_scheme=scheme)
            page.goto(app.url)
            wait_until_idle(page)
            page.wait_for_timeout(500)
            page.screenshot(path=OUT / f"create-{scheme}.png")
            page.close()
        browser.close()


if __name__ == "__main__":
    main()
