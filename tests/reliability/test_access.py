"""Access control for hosted apps: nobody reaches a page without signing in, when configured."""

from __future__ import annotations

import pytest

from comet.throttle import Throttle, client_address, client_keys
from comet.ui import access
from comet.ui.access import exposed, trusted_proxies
from conftest import open_app

pytestmark = pytest.mark.usefixtures("app_env")


@pytest.fixture(autouse=True)
def no_proxy_setting(monkeypatch):
    monkeypatch.delenv("COMET_TRUSTED_PROXIES", raising=False)


@pytest.fixture(autouse=True)
def slowdowns(monkeypatch):
    """The flood slow-down each wrong answer was held back by, recorded instead of slept."""
    held: list[float] = []
    monkeypatch.setattr(access, "_sleep", held.append)
    return held


AUTH = {
    "redirect_uri": "http://localhost:8501/oauth2callback",
    "cookie_secret": "test-cookie-secret-0123456789",
    "client_id": "client",
    "client_secret": "secret",
    "server_metadata_url": "https://accounts.example.com/.well-known/openid-configuration",
}


def prompt(at):
    return [t for t in at.text_area if t.label == "Prompt"]


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


def test_five_wrong_passwords_make_that_session_wait_but_a_teammate_gets_in():
    guesser = open_app(APP_PASSWORD="open sesame")
    for _ in range(5):
        enter(guesser, "guess")
    enter(guesser, "open sesame")
    assert [e.value for e in guesser.error] == ["Too many wrong passwords. Try again in 60 s."]
    assert not prompt(guesser)
    # Another browser session: the guesser's failures are not its own.
    teammate = enter(open_app(APP_PASSWORD="open sesame"), "open sesame")
    assert not teammate.exception and prompt(teammate)


def test_a_flood_of_wrong_passwords_never_refuses_or_delays_the_right_one(slowdowns):
    for _ in range(10):  # 50 wrong passwords from 10 sessions (as many reloads)
        at = open_app(APP_PASSWORD="open sesame")
        for _ in range(5):
            enter(at, "guess")
            assert [e.value for e in at.error] == ["That password is not right."]
    # Wrong answers were held back more as the flood grew, never past the bound.
    assert slowdowns[:5] == [0.0] * 5 and slowdowns == sorted(slowdowns) and slowdowns[-1] == 2.0
    teammate = open_app(APP_PASSWORD="open sesame")
    enter(teammate, "open says me")
    assert [e.value for e in teammate.error] == ["That password is not right."]  # slowed, not refused
    assert slowdowns[-1] == 2.0
    held_back = len(slowdowns)
    enter(teammate, "open sesame")
    assert prompt(teammate) and len(slowdowns) == held_back  # in at once


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


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_the_throttle_makes_only_the_failing_key_wait_and_only_for_a_while():
    clock = Clock()
    throttle = Throttle(max_failures=3, window=60, lockout=30, clock=clock)
    for _ in range(2):
        throttle.failed("session:a")
    assert throttle.wait_seconds("session:a") == 0  # typos below the limit cost nothing
    throttle.failed("session:a")
    assert throttle.wait_seconds("session:a") == 30
    assert throttle.wait_seconds(["session:b"]) == 0
    assert throttle.wait_seconds(["session:b", "session:a"]) == 30  # any of a client's keys counts
    clock.now = 30
    assert throttle.wait_seconds("session:a") == 0
    throttle.failed("session:a")  # still too many in the window: wait again
    assert throttle.wait_seconds("session:a") == 30


def test_failures_spread_wider_than_the_window_never_lock_and_a_success_forgets_them():
    clock = Clock()
    throttle = Throttle(max_failures=3, window=60, lockout=30, clock=clock)
    for t in (0, 40, 80):
        clock.now = t
        throttle.failed("session:a")
    assert throttle.wait_seconds("session:a") == 0
    throttle.failed("session:b")
    throttle.failed("session:b")
    throttle.succeeded(["session:b"])
    throttle.failed("session:b")
    assert throttle.wait_seconds("session:b") == 0


def test_no_number_of_other_clients_failures_makes_a_fresh_client_wait():
    throttle = Throttle(clock=Clock())
    for i in range(1000):
        throttle.failed([f"session:{i}", f"address:10.0.{i // 250}.{i % 250}"])
    assert throttle.wait_seconds(["session:teammate"]) == 0
    assert throttle.wait_seconds(["session:teammate", "address:192.0.2.1"]) == 0


def test_the_flood_slowdown_is_bounded_grows_with_the_flood_and_fades():
    clock = Clock()
    throttle = Throttle(max_failures=5, window=300, flood_failures=50, max_slowdown=2.0, clock=clock)
    held = [throttle.failed(f"session:{i}") for i in range(1000)]
    assert held[:5] == [0.0] * 5  # a team's typos are answered at once
    assert 0 < held[5] < held[20] < held[48] < 2.0
    assert max(held) == 2.0 and held[-1] == 2.0
    clock.now = 300  # the flood is over
    assert throttle.failed("session:late") == 0.0


def test_the_throttle_forgets_old_keys_so_a_flood_cannot_fill_memory():
    clock = Clock()
    throttle = Throttle(max_keys=100, clock=clock)
    for i in range(5000):
        throttle.failed(f"session:{i}")
    assert len(throttle._failures) == 100
    clock.now = 301
    throttle.failed("session:last")
    assert len(throttle._failures) == 1


def test_without_trusted_proxies_forwarded_for_is_ignored_and_throttling_follows_the_session():
    throttle = Throttle(clock=Clock())
    for i in range(5):  # the guesser rotates X-Forwarded-For on every try
        throttle.failed(client_keys("guesser", "127.0.0.1", {"X-Forwarded-For": f"198.51.100.{i}"}, 0))
    assert throttle.wait_seconds(client_keys("guesser", None, {"X-Forwarded-For": "203.0.113.9"}, 0)) == 60
    # ...and a teammate claiming the same forwarded address is not caught with them.
    assert throttle.wait_seconds(client_keys("teammate", None, {"X-Forwarded-For": "198.51.100.4"}, 0)) == 0


def test_a_direct_connection_is_throttled_by_address_across_sessions():
    throttle = Throttle(clock=Clock())
    for i in range(5):
        throttle.failed(client_keys(f"reload-{i}", "203.0.113.7", {}, 0))
    assert throttle.wait_seconds(client_keys("reload-5", "203.0.113.7", {}, 0)) == 60
    assert throttle.wait_seconds(client_keys("teammate", "198.51.100.2", {}, 0)) == 0


def test_behind_an_undeclared_proxy_the_shared_address_never_locks_out_the_team():
    throttle = Throttle(clock=Clock())
    proxy = "10.0.0.5"  # every visitor arrives from it, e.g. on Community Cloud
    for i in range(60):
        throttle.failed(client_keys(f"guesser-{i}", proxy, {"X-Forwarded-For": f"192.0.2.{i}"}, 0))
    assert throttle.wait_seconds(client_keys("teammate", proxy, {"X-Forwarded-For": "198.51.100.2"}, 0)) == 0
    assert throttle.wait_seconds(client_keys("teammate", proxy, {"X-Real-IP": "198.51.100.2"}, 0)) == 0


def test_with_a_trusted_proxy_its_address_is_throttled_across_sessions():
    throttle = Throttle(clock=Clock())
    for i in range(5):  # new sessions, forged entries rotating left of what the proxy appended
        throttle.failed(client_keys(f"guesser-{i}", "10.0.0.5", {"X-Forwarded-For": f"1.1.1.{i}, 203.0.113.7"}, 1))
    refused = client_keys("guesser-5", "10.0.0.5", {"x-forwarded-for": "9.9.9.9,203.0.113.7"}, 1)
    assert throttle.wait_seconds(refused) == 60
    assert throttle.wait_seconds(client_keys("teammate", "10.0.0.5", {"X-Forwarded-For": "198.51.100.2"}, 1)) == 0


def test_the_client_address_is_the_entry_the_outermost_trusted_proxy_appended():
    assert client_address(None, {"X-Forwarded-For": "6.6.6.6, 203.0.113.7, 10.0.0.2"}, 2) == "203.0.113.7"
    assert client_address(None, {"X-Forwarded-For": "10.0.0.2"}, 2) is None  # reached us around a proxy
    assert client_address(None, {}, 1) is None
    assert client_address("203.0.113.7", {}, 0) == "203.0.113.7"
    assert client_address(None, {}, 0) is None
    # One IPv6 subscriber owns a /64: rotating within it is one client.
    assert client_address("2001:db8:1:2::a", {}, 0) == client_address("2001:db8:1:2:ffff::1", {}, 0)
    assert client_address("2001:db8:1:2::a", {}, 0) != client_address("2001:db8:1:3::a", {}, 0)


def test_trusted_proxies_reads_secrets_then_the_environment_and_fails_safe():
    assert trusted_proxies({}, {}) == 0
    assert trusted_proxies({"COMET_TRUSTED_PROXIES": 2}, {"COMET_TRUSTED_PROXIES": "1"}) == 2
    assert trusted_proxies({"COMET_TRUSTED_PROXIES": " "}, {"COMET_TRUSTED_PROXIES": "1"}) == 1
    # A typo trusts nothing rather than something.
    assert trusted_proxies({}, {"COMET_TRUSTED_PROXIES": "one"}) == 0
    assert trusted_proxies({}, {"COMET_TRUSTED_PROXIES": "-3"}) == 0
    assert trusted_proxies({"COMET_TRUSTED_PROXIES": True}, {"COMET_TRUSTED_PROXIES": "1"}) == 0
