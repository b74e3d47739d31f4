"""Take the README's screenshots from the running app (demo mode) in headless Chromium.

    python tests/support/screenshots.py   # writes tests/screenshots/*.png: create-light, create-dark,
                                          # history-light, history-detail-light, usage-light, batch-light
    python tests/support/screenshots.py history   # only those whose names start with "history"
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: tests/, for support
from support.apphost import AppServer, launch_chromium, wait_until_idle  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "screenshots"
PROMPTS = ["a lighthouse on a cliff at dusk, oil painting", "a paper boat on a calm lake at sunrise"]


def generate(page, prompt: str) -> None:
    box = page.get_by_role("textbox", name="Prompt")
    box.fill(prompt)
    box.press("Tab")
    wait_until_idle(page)
    page.get_by_role("button", name="Generate").click()
    page.wait_for_timeout(500)
    expect(page.get_by_text("Waiting for a worker")).to_have_count(0, timeout=30_000)
    expect(page.get_by_text("Generating")).to_have_count(0, timeout=30_000)
    expect(page.get_by_role("button", name="Download").first).to_be_visible(timeout=30_000)


def newest_id(page) -> str:
    """The id in the newest result card's share link (the card on top)."""
    link = page.locator('[data-testid="stPageLink-NavLink"][href*="history?id="]').first
    return re.search(r"id=([\w-]+)", link.get_attribute("href"))[1]


def to_top(page) -> None:
    page.get_by_test_id("stMain").evaluate("main => main.scrollTo(0, 0)")
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_timeout(300)


def batch(page, url: str) -> None:
    """A sweep of guidance over two prompts on FLUX.1 [dev], its contact sheet filled in."""
    page.set_viewport_size({"width": 1360, "height": 1240})
    page.goto(f"{url}/batch")
    wait_until_idle(page)
    page.get_by_role("textbox", name="Prompts").fill("\n".join(PROMPTS))
    page.get_by_role("textbox", name="Prompts").press("Control+Enter")
    wait_until_idle(page)
    models = page.get_by_test_id("stMultiSelect").first.get_by_role("combobox")
    models.click()
    models.press("Backspace")  # FLUX.1 [schnell] out: it has no guidance to sweep
    page.get_by_role("option", name="FLUX.1 [dev]").click()
    page.keyboard.press("Escape")
    wait_until_idle(page)
    page.get_by_test_id("stSelectbox").filter(has_text="Sweep (columns)").click()
    page.get_by_role("option", name="Guidance").click()
    wait_until_idle(page)
    values = page.get_by_role("textbox", name="Values of Guidance")
    values.fill("2, 3.5, 5")
    values.press("Enter")
    wait_until_idle(page)
    page.get_by_role("button", name="Run batch").click()
    expect(page.get_by_text("done · ").first).to_be_visible(timeout=30_000)
    expect(page.get_by_text("0 pending")).to_be_visible(timeout=60_000)
    page.wait_for_timeout(2500)
    to_top(page)


def main(only: list[str]) -> None:
    """Every screenshot, or those whose names start with one of `only` (e.g. "history")."""
    def save(page, name: str) -> None:
        if not only or name.startswith(tuple(only)):
            page.screenshot(path=OUT / f"{name}.png")

    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as data, AppServer(Path(data)) as app, sync_playwright() as p:
        browser = launch_chromium(p)
        schemes = ("light", "dark") if not only or any(name.startswith("create") for name in only) else ("light",)
        for scheme in schemes:
            page = browser.new_page(viewport={"width": 1360, "height": 900}, color_scheme=scheme)
            page.goto(app.url)
            wait_until_idle(page)
            for prompt in PROMPTS:
                generate(page, prompt)
            to_top(page)
            save(page, f"create-{scheme}")
            if scheme == "light":
                newest = newest_id(page)
                page.goto(f"{app.url}/history")
                wait_until_idle(page)
                page.wait_for_timeout(1500)
                save(page, "history-light")
                # Taller: the prompt, the result and everything listed beside it.
                page.set_viewport_size({"width": 1360, "height": 1240})
                page.goto(f"{app.url}/history?id={newest}")
                wait_until_idle(page)
                expect(page.get_by_test_id("stImage").first).to_be_visible(timeout=15_000)
                page.wait_for_timeout(1000)
                save(page, "history-detail-light")
                page.set_viewport_size({"width": 1360, "height": 1000})
                page.goto(f"{app.url}/usage")
                wait_until_idle(page)
                page.wait_for_timeout(1500)
                save(page, "usage-light")
                batch(page, app.url)
                save(page, "batch-light")
            page.close()
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1:])
