"""The shared-password sign-in as people meet it, in Chromium against `streamlit run`: a shared
link survives the sign-in, one sign-in serves every tab and reload of the browser until *Lock*,
only a cookie this app signed lets anyone in, the sign-in routes never send a browser elsewhere,
and nothing is fetched from another host (the page icon used to come from a font server)."""

from __future__ import annotations

import time

import pytest
import requests

from comet import signin
from support.apphost import AppServer, wait_until_idle

PASSWORD = "correct horse battery staple"
KEY = signin.signing_key(PASSWORD)
DEEP_LINK = "/history?id=p4nk3y0001"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with AppServer(tmp_path_factory.mktemp("signin"), env={"APP_PASSWORD": PASSWORD}) as app:
        yield app


@pytest.fixture
def context(browser):
    context = browser.new_context()
    context.set_default_timeout(60_000)
    yield context
    context.close()


def drawn(page):
    """Wait for either screen: the sign-in form or the app (whose sidebar offers Lock)."""
    password, lock = page.get_by_role("textbox", name="Password"), page.get_by_role("button", name="Lock")
    password.or_(lock).first.wait_for()
    wait_until_idle(page)
    return password.count() == 1, lock.count() == 1


def sign_in_screen(page) -> bool:
    return drawn(page) == (True, False)


def the_app(page) -> bool:
    return drawn(page) == (False, True)


def sign_in(page, password: str, name: str = "") -> None:
    page.get_by_role("textbox", name="Password").fill(password)
    page.get_by_role("textbox", name="Your name (optional)").fill(name)
    page.get_by_role("button", name="Enter").click()


def the_cookie(context):
    return next((c for c in context.cookies() if c["name"] == "comet_signin"), None)


def test_a_shared_link_survives_the_sign_in_and_the_screen_lists_no_pages(server, context):
    page = context.new_page()
    page.goto(server.url + DEEP_LINK)  # the first visitor of a fresh server, at a deep link
    assert sign_in_screen(page)
    assert page.get_by_role("heading", name="History").count() == 0
    # Before the sign-in the sidebar lists nothing: no page files ("streamlit app / create / history").
    assert page.locator('[data-testid="stSidebarNav"]').count() == 0
    assert "streamlit app" not in page.inner_text("body")

    sign_in(page, "Correct Horse Battery Staple")
    page.get_by_text("That password is not right.").wait_for()
    assert the_cookie(context) is None

    with page.expect_navigation(url=server.url + DEEP_LINK):  # through the sign-in route and back
        sign_in(page, PASSWORD, "Ada")
    page.get_by_role("heading", name="History").wait_for()
    assert the_app(page) and page.url == server.url + DEEP_LINK
    assert page.get_by_text("Signed in as Ada").count() == 1
    assert page.locator('[data-testid="stSidebarNav"]').count() == 1


def test_one_sign_in_serves_every_tab_and_reload_until_lock(server, context, browser):
    first = context.new_page()
    first.goto(server.url)
    assert sign_in_screen(first)
    with first.expect_navigation(url=server.url + "/"):
        sign_in(first, PASSWORD, "Grace")
    assert the_app(first)
    cookie = the_cookie(context)
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["path"] == "/"
    assert PASSWORD not in cookie["value"] and 6.9 * signin.DAY < cookie["expires"] - time.time() <= 7 * signin.DAY

    second = context.new_page()  # a new tab of the same browser: already in
    second.goto(server.url + "/history")
    assert the_app(second) and second.get_by_text("Signed in as Grace").count() == 1
    first.reload()
    assert the_app(first)
    # Another browser (no cookie) is not.
    stranger = browser.new_context()
    try:
        elsewhere = stranger.new_page()
        elsewhere.goto(server.url + "/history")
        assert sign_in_screen(elsewhere)
    finally:
        stranger.close()

    with second.expect_navigation(url=server.url + "/history"):  # through the sign-out route and back
        second.get_by_role("button", name="Lock").click()
    assert the_cookie(context) is None
    second.reload()
    assert sign_in_screen(second)
    first.reload()
    assert sign_in_screen(first)


def forged(cookie: str, name: str) -> str:
    payload, mac = cookie.split(".")
    body = signin._unb64(payload).replace(b'"n":"Ada"', f'"n":"{name}"'.encode())
    return f"{signin._b64(body)}.{mac}"


def opened_with(browser, server, value: str):
    context = browser.new_context()
    context.add_cookies([{"name": "comet_signin", "value": value, "url": server.url}])
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(server.url + DEEP_LINK)
    wait_until_idle(page)
    return context, page


def test_only_a_cookie_this_app_signed_and_still_valid_lets_a_browser_in(server, browser):
    valid = signin.issue(KEY, signin.SESSION, "Ada", signin.DAY)
    context, page = opened_with(browser, server, valid)
    try:
        assert the_app(page) and page.get_by_text("Signed in as Ada").count() == 1
    finally:
        context.close()
    refused = {
        "tampered": forged(valid, "Eve"),
        "expired": signin.issue(KEY, signin.SESSION, "Ada", 7 * signin.DAY, now=time.time() - 7 * signin.DAY - 1),
        "signed with another password": signin.issue(signin.signing_key("hunter2"), signin.SESSION, "Ada", signin.DAY),
        "a ticket, not a cookie": signin.issue(KEY, signin.TICKET, "Ada", 60),
    }
    for why, value in refused.items():
        context, page = opened_with(browser, server, value)
        try:
            assert sign_in_screen(page), why
            assert page.get_by_text("Signed in as").count() == 0, why
        finally:
            context.close()


def test_the_sign_in_route_swaps_a_ticket_for_a_cookie_once_and_stays_in_the_app(server):
    ticket = signin.issue(KEY, signin.TICKET, "Ada", signin.TICKET_SECONDS)
    route = f"{server.url}/_comet/signin"
    answer = requests.get(route, params={"token": ticket, "next": "history?id=p-1"}, allow_redirects=False,
                          headers={"X-Forwarded-Proto": "https"}, timeout=10)
    assert answer.status_code == 303 and answer.headers["Location"] == "../history?id=p-1"
    set_cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=lax" in set_cookie and "Secure" in set_cookie
    assert answer.headers["Cache-Control"] == "no-store" and PASSWORD not in set_cookie
    made = signin.verify(KEY, answer.cookies["comet_signin"], signin.SESSION)
    assert made.name == "Ada" and made.expires - made.issued == 7 * signin.DAY

    again = requests.get(route, params={"token": ticket, "next": "history"}, allow_redirects=False, timeout=10)
    assert again.status_code == 303 and "Set-Cookie" not in again.headers  # a ticket works once
    guessed = signin.issue(signin.signing_key("guess"), signin.TICKET, "Eve", 60)
    refused = requests.get(route, params={"token": guessed}, allow_redirects=False, timeout=10)
    assert "Set-Cookie" not in refused.headers

    for away in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        answer = requests.get(route, params={"next": away}, allow_redirects=False, timeout=10)
        assert answer.headers["Location"] == "../", away
    out = requests.get(f"{server.url}/_comet/signout", params={"next": "history"}, allow_redirects=False, timeout=10)
    assert out.headers["Location"] == "../history"
    assert out.headers["Set-Cookie"].startswith('comet_signin="";') and "Max-Age=0" in out.headers["Set-Cookie"]


def test_no_request_leaves_for_another_host(server, context):
    page = context.new_page()
    elsewhere: list[str] = []
    page.on("request", lambda request: request.url.startswith(server.url) or elsewhere.append(request.url))
    page.goto(server.url + DEEP_LINK)
    assert sign_in_screen(page)
    with page.expect_navigation(url=server.url + DEEP_LINK):
        sign_in(page, PASSWORD, "Ada")
    assert the_app(page)
    page.get_by_role("link", name="Create").click()
    page.get_by_role("textbox", name="Prompt").wait_for()
    wait_until_idle(page)
    assert elsewhere == []
