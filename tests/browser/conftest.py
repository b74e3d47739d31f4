"""Fixtures of the browser tests: the real app (`streamlit run`) looked at in headless Chromium."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium per test module (Debian's where it exists)."""
    from playwright.sync_api import sync_playwright

    from support.apphost import launch_chromium

    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()
