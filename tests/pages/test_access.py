"""Access control for hosted apps: nobody reaches a page without signing in, when configured."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest

from comet import signin
from comet.throttle import Throttle, client_address, client_keys
from comet.ui import access
from comet.ui.access import exposed, trusted_proxies
from support.apptest import open_app

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


def signed_out(page=None, query=None, **secrets):
    """The sign-in screen of a fresh session, ready for typing. AppTest turns Streamlit's old
    pages-folder mode back on before every run, so from the second run on it runs the page file
    itself, whose page_setup() guard draws the form (as a new widget): settle there first. A real
    server runs the entry script every time (tests/browser/test_signin_browser.py)."""
    return open_app(page, query, **secrets).run()


def enter(at, password, name=""):
    at.text_input[0].input(password)
    if name:
        at.text_input[1].input(name)
    at.button[0].click().run()
    return at


@pytest.mark.parametrize("page", [None, "pages/history.py"])
def test_with_an_app_password_no_page_shows_before_the_password(page):
    at = signed_out(page, APP_PASSWORD="open sesame")
    assert not at.exception
    assert [(t.label, t.value) for t in at.text_input] == [("Password", ""), ("Your name (optional)", "")]
    assert not [t for t in at.text_area if t.label == "Prompt"]
    assert not at.dataframe


def test_a_wrong_password_is_refused_and_the_right_one_lets_you_in():
    at = signed_out(APP_PASSWORD="open sesame")
    enter(at, "open says me")
    assert any("not right" in e.value for e in at.error)
    assert not [t for t in at.text_area if t.label == "Prompt"]
    enter(at, "open sesame")
    assert not at.exception
    assert [t for t in at.text_area if t.label == "Prompt"]


def test_five_wrong_passwords_make_that_session_wait_but_a_teammate_gets_in():
    guesser = signed_out(APP_PASSWORD="open sesame")
    for _ in range(5):
        enter(guesser, "guess")
    enter(guesser, "open sesame")
    assert [e.value for e in guesser.error] == ["Too many wrong passwords. Try again in 60 s."]
    assert not prompt(guesser)
    # Another browser session: the guesser's failures are not its own.
    teammate = enter(signed_out(APP_PASSWORD="open sesame"), "open sesame")
    assert not teammate.exception and prompt(teammate)


def test_a_flood_of_wrong_passwords_never_refuses_or_delays_the_right_one(slowdowns):
    for _ in range(10):  # 50 wrong passwords from 10 sessions (as many reloads)
        at = signed_out(APP_PASSWORD="open sesame")
        for _ in range(5):
            enter(at, "guess")
            assert [e.value for e in at.error] == ["That password is not right."]
    # Wrong answers were held back more as the flood grew, never past the bound.
    assert slowdowns[:5] == [0.0] * 5 and slowdowns == sorted(slowdowns) and slowdowns[-1] == 2.0
    teammate = signed_out(APP_PASSWORD="open sesame")
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

    from support.apptest import APP

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


# ---- the password sign-in that lasts: its tickets, cookies, name and trip through the routes -----
# (in Chromium against `streamlit run`: tests/browser/test_signin_browser.py)

KEY = signin.signing_key("open sesame")
DAY = signin.DAY


def trips(at):
    """Where the page sends the browser next (the script st.html runs), if anywhere."""
    return [html.value for html in at.get("html") if "location.replace" in html.value]


def test_the_right_password_sends_the_browser_for_its_cookie_and_back_to_the_page_and_query():
    at = signed_out("pages/history.py", query={"id": "p-42", "tab": "a b"}, APP_PASSWORD="open sesame")
    enter(at, "open says me")
    assert trips(at) == []  # a wrong password mints nothing
    enter(at, "open sesame", " Ada ")
    assert not at.exception and [t.value for t in at.title] == ["History"]
    trip, = trips(at)
    target = trip_target(at)
    assert (target.scheme, target.netloc, target.path) == ("", "", "/_comet/signin")  # this origin
    sent = parse_qs(target.query)
    assert sent["next"] == ["history?id=p-42&tab=a+b"]  # the page and its query, to come back to
    assert signin.verify(KEY, sent["token"][0], signin.TICKET).name == "Ada"
    assert "open sesame" not in trip
    at.run()
    assert trips(at) == []  # once


def trip_target(at):
    trip, = trips(at)
    return urlsplit(json.loads(trip.split("replace(")[1].split(");")[0]))


@pytest.mark.parametrize("url, base", [
    ("https://team.example/tools/flux/", "/tools/flux/"),  # behind a proxy's prefix
    ("https://team.example//evil.example/", "/evil.example/"),  # never scheme-relative
    ("https://team.example/\\evil.example/", "/evil.example/"),
])
def test_the_trip_stays_on_this_site_under_the_apps_own_path(url, base):
    at = signed_out(APP_PASSWORD="open sesame")
    at.context["url"] = url
    target = trip_target(enter(at, "open sesame"))
    assert (target.scheme, target.netloc, target.path) == ("", "", base + "_comet/signin")


def test_with_app_signin_days_zero_the_sign_in_is_for_this_tab_only():
    at = enter(signed_out(APP_PASSWORD="open sesame", APP_SIGNIN_DAYS="0"), "open sesame")
    assert prompt(at) and trips(at) == []


def test_lock_ends_the_session_and_sends_the_browser_to_clear_its_cookie():
    at = enter(signed_out(APP_PASSWORD="open sesame"), "open sesame")
    at.sidebar.button(key="access.lock").click().run()
    assert not prompt(at) and at.text_input[0].label == "Password"
    trip, = trips(at)
    assert '"/_comet/signout?next=' in trip and "token" not in trip


def mine(at):
    return at.toggle(key="history.mine")


def history_ids(at):
    from comet.ui import history_view

    tables = [frame for frame in at.dataframe if (frame.key or "").startswith(history_view.TABLE_KEY)]
    return set(tables[0].value["id"]) if tables else set()


def made_by(sim, name, prompt_text):
    """A person signs in with a name and generates one prediction on the Create page."""
    from support.api import KEY as API_KEY
    from support.waiting import wait_until

    at = signed_out(APP_PASSWORD="open sesame", COMETAPI_KEY=API_KEY, COMETAPI_BASE_URL=sim.url)
    enter(at, "open sesame", name)
    at.text_area(key="param.prompt").input(prompt_text).run()
    next(b for b in at.button if b.label.startswith("Generate")).click().run()
    assert not at.exception
    wait_until(lambda: any(r["method"] == "POST" for r in sim.requests if prompt_text in str(r.get("json"))))
    return at


def test_a_name_given_with_the_password_becomes_the_creator_and_mine_shows_only_theirs(sim):
    from comet.config import Settings
    from comet.store import HistoryFilter, Store
    from support.api import KEY as API_KEY
    from support.waiting import wait_until

    made_by(sim, "Grace", "a lighthouse")
    ada = made_by(sim, "  Ada\u202e  ", "a paper boat")  # an invisible bidi override is dropped
    ada.switch_page("pages/history.py").run()
    assert not mine(ada).disabled
    everyone = wait_until(lambda: len(history_ids(ada.run())) == 2 and history_ids(ada))
    mine(ada).set_value(True).run()
    only_ada = history_ids(ada)
    assert len(only_ada) == 1 and only_ada < everyone
    ada.toggle(key="history.mine").set_value(False).run()
    assert history_ids(ada) == everyone
    store = Store.for_settings(Settings.from_sources({"COMETAPI_KEY": API_KEY, "COMETAPI_BASE_URL": sim.url}))
    try:  # recorded as typed, less the invisible character
        assert store.count(HistoryFilter(creator="Ada")) == 1 and store.count(HistoryFilter(creator="Grace")) == 1
    finally:
        store.close()
    # The same history seen by someone who gave no name: nothing is theirs to filter to.
    nameless = enter(signed_out("pages/history.py", APP_PASSWORD="open sesame"), "open sesame")
    assert mine(nameless).disabled


def test_a_pass_is_accepted_only_as_signed_by_this_password_of_its_kind_and_in_time():
    cookie = signin.issue(KEY, signin.SESSION, "Ada", 7 * DAY)
    assert signin.verify(KEY, cookie, signin.SESSION, max_age=7 * DAY).name == "Ada"
    payload, mac = cookie.split(".")
    forged = signin._b64(signin._unb64(payload).replace(b'"Ada"', b'"Eve"'))
    assert signin.verify(KEY, f"{forged}.{mac}", signin.SESSION) is None  # altered
    assert signin.verify(KEY, cookie[:-2] + ("AA" if cookie[-2:] != "AA" else "BB"), signin.SESSION) is None
    assert signin.verify(signin.signing_key("a new password"), cookie, signin.SESSION) is None
    assert signin.verify(KEY, cookie, signin.TICKET) is None  # a cookie is no ticket, and back
    assert signin.verify(KEY, signin.issue(KEY, signin.TICKET, "Ada", 60), signin.SESSION) is None
    old = signin.issue(KEY, signin.SESSION, "Ada", 7 * DAY, now=1_000_000)
    assert signin.verify(KEY, old, signin.SESSION, now=1_000_000 + 7 * DAY - 1).name == "Ada"
    assert signin.verify(KEY, old, signin.SESSION, now=1_000_000 + 7 * DAY) is None  # expired
    # A shorter APP_SIGNIN_DAYS shortens the cookies already given out.
    assert signin.verify(KEY, old, signin.SESSION, max_age=DAY, now=1_000_000 + DAY) is None
    for junk in (None, "", "a.b.c", "x" * 5000, "!!.!!", cookie.replace(".", "")):
        assert signin.verify(KEY, junk, signin.SESSION) is None
    assert "open sesame" not in cookie and "open sesame" not in signin._unb64(payload).decode()


def test_a_ticket_signs_in_once_and_only_for_a_minute():
    tickets = signin.Tickets()
    ticket = signin.issue(KEY, signin.TICKET, "Ada", signin.TICKET_SECONDS)
    assert tickets.redeem(KEY, ticket).name == "Ada"
    assert tickets.redeem(KEY, ticket) is None  # replayed
    clock = Clock()
    clock.now = 1_000_000.0
    late = signin.Tickets(clock=clock)
    stale = signin.issue(KEY, signin.TICKET, "Ada", signin.TICKET_SECONDS, now=clock.now)
    clock.now += signin.TICKET_SECONDS
    assert late.redeem(KEY, stale) is None
    assert late.redeem(signin.signing_key("guess"), signin.issue(KEY, signin.TICKET, "Ada", 60)) is None


def test_after_the_sign_in_routes_the_browser_only_goes_back_into_this_app():
    assert signin.redirect_target("history?id=p-42&tab=a+b") == "../history?id=p-42&tab=a+b"
    assert signin.redirect_target("") == "../"
    for away in ("//evil.example/x", "https://evil.example", "/\\evil.example", "\\\\evil.example",
                 "history/../../evil", "javascript:alert(1)", "%2F%2Fevil.example", None, "a" * 3000):
        assert signin.redirect_target(away) == "../", away
    # A query is re-encoded: nothing in it can end the Location header or the URL.
    assert signin.redirect_target("history?id=a\r\nSet-Cookie: x=1") == "../history?id=a%0D%0ASet-Cookie%3A+x%3D1"


def test_a_display_name_is_kept_plain_and_short():
    assert signin.clean_name("  Ada \t Lovelace\n ") == "Ada Lovelace"
    assert signin.clean_name("Ada\u202e\u200b\x00") == "Ada"
    assert signin.clean_name("n" * 100) == "n" * signin.NAME_CHARS
    assert signin.clean_name(None) == ""


def test_app_signin_days_reads_secrets_then_the_environment_and_fails_to_remembering_less():
    assert signin.signin_days({}, {}) == 7
    assert signin.signin_days({"APP_SIGNIN_DAYS": 30}, {"APP_SIGNIN_DAYS": "1"}) == 30
    assert signin.signin_days({"APP_SIGNIN_DAYS": " "}, {"APP_SIGNIN_DAYS": "0.5"}) == 0.5
    assert signin.signin_days({}, {"APP_SIGNIN_DAYS": "10000"}) == signin.MAX_DAYS
    for typo in ("a week", "-1", "0", "nan", "inf", True):
        assert signin.signin_days({"APP_SIGNIN_DAYS": typo}, {}) == 0, typo
