"""Prompts, logs, errors and anything else from users or the API are shown as text: no HTML or
script from them runs, and no markdown link from them becomes `javascript:`."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect, sync_playwright

from apphost import AppServer, launch_chromium, wait_until_idle
from comet.config import Settings
from comet.prediction import Prediction
from comet.store import Store
from comet.ui.safe import plain

HOSTILE = (
    "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script> "
    "[click me](javascript:document.title='pwned') **bold** :red[red] $x^2$"
)
ID = "hostile0prediction0000001"


def test_plain_escapes_every_markdown_and_html_construct():
    escaped = plain(HOSTILE)
    # Every character markdown, HTML or Streamlit's directives act on is backslash-escaped.
    assert re.search(r"(?<!\\)[<>\[\]()*:$`]", escaped) is None
    assert escaped.replace("\\", "") == HOSTILE


@pytest.mark.e2e
def test_hostile_text_from_the_api_is_shown_as_text_in_a_real_browser(tmp_path):
    store = Store.for_settings(Settings.from_sources({}, {"COMET_DATA_DIR": str(tmp_path)}))
    store.record(Prediction.from_json({
        "id": ID, "model": "black-forest-labs/flux-schnell", "status": "failed", "error": HOSTILE,
        "input": {"prompt": HOSTILE}, "logs": HOSTILE, "created_at": "2026-11-25T10:00:00Z",
        "completed_at": "2026-11-25T10:00:05Z",
    }))
    store.update(Prediction.from_json({
        "id": ID, "model": "black-forest-labs/flux-schnell", "status": "failed", "error": HOSTILE,
        "input": {"prompt": HOSTILE}, "logs": HOSTILE, "created_at": "2026-11-25T10:00:00Z",
        "completed_at": "2026-11-25T10:00:05Z",
    }))
    store.close()
    with AppServer(tmp_path) as app, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page()
        page.goto(f"{app.url}/history?id={ID}")
        wait_until_idle(page)
        main = page.get_by_test_id("stMain")
        error = main.get_by_test_id("stAlert").filter(has_text="Failed")
        # Shown literally: markdown would have eaten the brackets, the asterisks and the tags.
        expect(error).to_contain_text("[click me](javascript:document.title='pwned') **bold** :red[red]")
        expect(error).to_contain_text("<script>")
        assert page.title() != "pwned"
        assert page.locator("a[href^='javascript']").count() == 0
        assert main.locator("img[src='x']").count() == 0
        assert main.locator("script").count() == 0
        browser.close()
