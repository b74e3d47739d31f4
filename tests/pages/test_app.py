"""The app as a user opens it, through Streamlit's AppTest (no browser)."""

from __future__ import annotations

import pytest

from support.api import KEY
from support.apptest import open_app

pytestmark = pytest.mark.usefixtures("app_env")


def page_text(at) -> str:
    parts = [str(getattr(element, "value", "")) for element in list(at.main) + list(at.sidebar)]
    parts += [badge.proto.label for badge in at.get("badge")]
    return "\n".join(parts)


def test_with_nothing_configured_the_app_opens_in_demo_mode():
    at = open_app()
    assert not at.exception
    assert any("Demo mode" in info.value for info in at.info)
    assert "Demo mode" in page_text(at)


@pytest.mark.parametrize("page", ["pages/create.py", "pages/history.py"])
def test_every_page_opens_without_an_exception_and_says_demo(page):
    at = open_app(page)
    assert not at.exception
    assert any("Demo mode" in info.value for info in at.info)


def test_with_a_key_the_badge_shows_the_live_host_and_never_the_key(sim):
    at = open_app(COMETAPI_KEY=KEY, COMETAPI_BASE_URL=sim.url)
    assert not at.exception
    assert all("Demo mode" not in info.value for info in at.info)
    host = sim.url.split("//")[1]
    text = page_text(at)
    assert f"Live · {host}" in text
    assert KEY not in text


def test_a_malformed_base_url_is_a_clear_message_not_a_traceback():
    at = open_app(COMETAPI_KEY=KEY, COMETAPI_BASE_URL="api.cometapi.com")
    assert not at.exception
    assert any("COMETAPI_BASE_URL" in error.value.replace("\\", "") for error in at.error)
