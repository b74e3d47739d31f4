"""The app as a user opens it, through Streamlit's AppTest (no browser)."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from conftest import KEY

APP = Path(__file__).resolve().parent.parent / "streamlit_app.py"


@pytest.fixture(autouse=True)
def isolated_app(tmp_path, monkeypatch):
    for name in ("COMETAPI_KEY", "COMETAPI_BASE_URL", "COMET_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COMET_DATA_DIR", str(tmp_path))
    # Caches outlive an AppTest within one pytest process: every test starts from a cold app.
    st.cache_data.clear()
    st.cache_resource.clear()
    yield


def open_app(**secrets) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=30)
    for name, value in secrets.items():
        at.secrets[name] = value
    return at.run()


def page_text(at: AppTest) -> str:
    parts = [str(getattr(element, "value", "")) for element in at.main] + [
        str(getattr(element, "value", "")) for element in at.sidebar
    ]
    parts += [badge.proto.label for badge in at.get("badge")] if hasattr(at, "get") else []
    return "\n".join(parts)


def test_with_nothing_configured_the_app_opens_in_demo_mode():
    at = open_app()
    assert not at.exception
    assert any("Demo mode" in info.value for info in at.info)
    assert "Demo mode" in page_text(at)


@pytest.mark.parametrize("page", ["pages/create.py", "pages/history.py"])
def test_every_page_opens_without_an_exception_and_says_demo(page):
    at = open_app()
    at.switch_page(page).run()
    assert not at.exception
    assert any("Demo mode" in info.value for info in at.info)


def test_with_a_key_the_badge_shows_the_live_host_and_never_the_key(sim):
    at = open_app(COMETAPI_KEY=KEY, COMETAPI_BASE_URL=sim.url)
    assert not at.exception
    assert not at.info or all("Demo mode" not in info.value for info in at.info)
    host = sim.url.split("//")[1]
    text = page_text(at)
    assert f"Live · {host}" in text
    assert KEY not in text


def test_a_malformed_base_url_is_a_clear_message_not_a_traceback():
    at = open_app(COMETAPI_KEY=KEY, COMETAPI_BASE_URL="api.cometapi.com")
    assert not at.exception
    assert any("COMETAPI_BASE_URL" in error.value for error in at.error)
