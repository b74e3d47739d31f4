"""The key is a secret: it reaches the configured base URL and nothing else. Not a page, a log
line, a stored row, an export, a snippet, an output host or a redirect target."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect, sync_playwright

from comet.config import Settings
from comet.export import images_zip, spreadsheet_csv
from comet.sim import Sim
from comet.store import Store
from support.apphost import AppServer, launch_chromium, wait_until_idle

KEY = "sk-hygiene-0123456789abcdefghijklmnop"

pytestmark = pytest.mark.e2e


def test_after_a_whole_session_the_key_is_nowhere_but_the_api_requests(tmp_path):
    data = tmp_path / "data"
    with Sim(start_delay=0.2, run_time=0.8) as standin, sync_playwright() as playwright:
        env = {"COMETAPI_KEY": KEY, "COMETAPI_BASE_URL": standin.url}
        with AppServer(data, env=env) as app:
            browser = launch_chromium(playwright)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(app.url)
            wait_until_idle(page)
            box = page.get_by_role("textbox", name="Prompt")
            box.fill("a key-free lighthouse")
            box.press("Tab")
            wait_until_idle(page)
            page.get_by_text("Request: JSON · curl · Python").click()
            page.get_by_role("button", name="Generate").click()
            expect(page.get_by_test_id("stImage").first).to_be_visible(timeout=30_000)
            pages_html = [page.content()]
            for tab in ("curl", "Python"):
                page.get_by_role("tab", name=tab).click()
                pages_html.append(page.content())
            page.goto(f"{app.url}/history")
            wait_until_idle(page)
            pages_html.append(page.content())
            browser.close()
            server_log = app.log()

        # Every request carrying the key went to the API routes of the configured base URL;
        # the output files were fetched without it.
        for request in standin.requests:
            has_key = KEY in request["headers"].get("authorization", "")
            assert has_key == request["path"].startswith("/replicate/v1/"), request["path"]
        assert any(r["path"].startswith("/files/") for r in standin.requests)

    assert all(KEY not in html for html in pages_html)
    assert any("$COMETAPI_KEY" in html for html in pages_html)
    assert KEY not in server_log
    for stored in data.rglob("*"):
        if stored.is_file():
            assert KEY.encode() not in stored.read_bytes(), stored.name

    store = Store.for_settings(Settings.from_sources({"COMETAPI_KEY": KEY}, {"COMET_DATA_DIR": str(data)}))
    rows = store.export_rows()
    assert len(rows) == 1
    assert KEY not in spreadsheet_csv(rows)

    archive = images_zip(store, list(rows["id"]))
    assert KEY.encode() not in archive
    store.close()
