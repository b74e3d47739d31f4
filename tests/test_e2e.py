"""Whole flows in a real headless Chromium against `streamlit run streamlit_app.py`."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect, sync_playwright

from apphost import AppServer, launch_chromium, wait_until_idle

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def demo_app(tmp_path_factory):
    with AppServer(tmp_path_factory.mktemp("demo")) as app:
        yield app


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    yield page
    context.close()


def test_with_nothing_configured_the_app_opens_in_demo_mode(demo_app, page):
    page.goto(demo_app.url)
    wait_until_idle(page)
    expect(page.get_by_test_id("stSidebar")).to_contain_text("Demo mode")
    expect(page.get_by_test_id("stMain")).to_contain_text("nothing is sent to CometAPI")
    expect(page.get_by_test_id("stException")).to_have_count(0)


def test_the_history_page_has_its_own_address(demo_app, page):
    page.goto(f"{demo_app.url}/history")
    wait_until_idle(page)
    expect(page.get_by_role("heading", name="History")).to_be_visible()
    expect(page.get_by_test_id("stSidebar")).to_contain_text("Demo mode")
    expect(page.get_by_test_id("stException")).to_have_count(0)
