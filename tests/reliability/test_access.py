"""Access control for hosted apps: nobody reaches a page without signing in, when configured."""

from __future__ import annotations

import pytest

from comet.throttle import Throttle
from comet.ui.access import exposed
from conftest import open_app

pytestmark = pytest.mark.usefixtures("app_env")

AUTH = {
    "redirect_uri": "http://localhost:8501/oauth2callback",
    "cookie_secret": "test-cookie-secret-0123456789",
    "client_id": "client",
    "client_secret": "secret",
    "server_metadata_url": "https://accounts.example.com/.well-known/openid-configuration",
}


def enter(at, password):
    at.text_input[0].input(password)
    at.button[0].click().run()
    return at


@pytest.mark.parametrize("page", [None, "pages/history.py"])
def test_with_an_app_password_no_page_shows_before_the_password(page):
    at = open_app(page, APP_PASSWORD="open sesame")
    assert not at.exception
    assert [t.value for t in at.text_input] == [""] and at.text_input[0].label == "Password"
    assert not [t for t in at.text_area if t.label == "Prompt"]
    assert not at.dataframe


def test_a_wrong_password_is_refused_and_the_right_one_lets_you_in():
    at = open_app(APP_PASSWORD="open sesame")
    enter(at, "open says me")
    assert any("not right" in e.value for e in at.error)
    assert not [t for t in at.text_area if t.label == "Prompt"]
    enter(at, "open sesame")
    assert not at.exception
    assert [t for t in at.text_area if t.label == "Prompt"]


def test_repeated_wrong_passwords_are_throttled_even_the_right_one():
    at = open_app(APP_PASSWORD="open sesame")
    for _ in range(5):
        enter(at, "guess")
    enter(at, "open sesame")
    assert any("Too many wrong passwords" in e.value for e in at.error)
    assert not [t for t in at.text_area if t.label == "Prompt"]


def test_with_an_auth_section_visitors_see_only_the_sign_in_button():
    at = open_app(auth=AUTH)
    assert not at.exception
    assert [b.label for b in at.button] == ["Sign in"]
    assert not [t for t in at.text_area if t.label == "Prompt"]


def test_a_signed_in_user_gets_the_app_and_a_sign_out_button():
    at = open_app_signed_in("ada@example.com")
    assert not at.exception
    assert [t for t in at.text_area if t.label == "Prompt"]
    assert any(b.label == "Sign out" for b in at.sidebar.button)


def open_app_signed_in(email):
    from streamlit.testing.v1 import AppTest

    from conftest import APP

    at = AppTest.from_file(str(APP), default_timeout=30)
    at.secrets["auth"] = AUTH
    at.user["is_logged_in"] = True
    at.user["email"] = email
    return at.run()


def test_the_open_app_warning_is_for_a_hosted_app_holding_a_key_without_sign_in():
    hosted = "https://team-flux.streamlit.app/"
    assert exposed(hosted, has_server_key=True, has_auth=False, has_password=False)
    assert not exposed("http://localhost:8501/", has_server_key=True, has_auth=False, has_password=False)
    assert not exposed(hosted, has_server_key=False, has_auth=False, has_password=False)  # demo mode
    assert not exposed(hosted, has_server_key=True, has_auth=True, has_password=False)
    assert not exposed(hosted, has_server_key=True, has_auth=False, has_password=True)


def test_the_throttle_counts_per_address_and_in_total():
    now = [0.0]
    throttle = Throttle(max_failures=3, window=60, lockout=30, global_max_failures=5, clock=lambda: now[0])
    for _ in range(3):
        throttle.failed("1.2.3.4")
    assert throttle.wait_seconds("1.2.3.4") == 30
    assert throttle.wait_seconds("5.6.7.8") == 0
    throttle.failed("5.6.7.8")
    throttle.failed("9.9.9.9")
    assert throttle.wait_seconds("10.0.0.1") == 30  # the whole server is being guessed at
    now[0] = 31
    assert throttle.wait_seconds("1.2.3.4") == 0
