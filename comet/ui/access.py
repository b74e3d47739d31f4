"""Who may use the app. Checked by the entry script before any page runs.

- An `[auth]` section in secrets: Streamlit's own st.login (OIDC); nobody passes without it.
- Else an `APP_PASSWORD` in secrets (or the environment): a shared password, compared in
  constant time. Wrong attempts make this browser session (and its address, when a trusted proxy
  reports it: COMET_TRUSTED_PROXIES) wait; a right password is never held up by anyone else's.
  A right one keeps this browser signed in for APP_SIGNIN_DAYS: Streamlit pages cannot set a
  cookie, so the page run that checked the password mints a one-minute ticket (comet/signin.py)
  and sends the browser through `_comet/signin`, a route of the server (`routes()`), which swaps
  it for an HttpOnly cookie and comes back to the page and query that were asked for. *Lock*
  goes through `_comet/signout`, which clears it.
- Else open. When such an open app holds a server-side key and is reached from another machine,
  a banner tells the operator that anyone with the link can spend it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import time
from collections.abc import Mapping
from secrets import token_urlsafe
from typing import Any
from urllib.parse import urlencode, urlsplit

import streamlit as st

from comet import signin
from comet.throttle import Throttle, client_keys
from comet.ui.context import read_secrets
from comet.ui.safe import plain

# Once this session is in with the password: the display name it gave ("" for none).
# comet/ui/context.py current_user() reads it under this same name.
PASSED_KEY = "access.passed"
LOCKED_KEY = "access.locked"  # *Lock* pressed: this session ignores the cookie it was opened with
GO_KEY = "access.go"  # a trip through a sign-in route the browser is to make on the next run
SESSION_KEY = "access.session"
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}
COOKIE = "comet_signin"
SIGNIN_ROUTE = "_comet/signin"
SIGNOUT_ROUTE = "_comet/signout"
_TICKETS = signin.Tickets()  # process-wide, like the routes that redeem them


@st.cache_resource(show_spinner=False)
def _throttle() -> Throttle:
    return Throttle()


def read_auth_section() -> Mapping[str, object]:
    """The [auth] section of secrets (st.login's configuration), or {}."""
    try:
        auth = st.secrets.get("auth")
    except Exception:  # no secrets file at all
        return {}
    return auth if isinstance(auth, Mapping) else {}


def _app_password() -> str:
    value = read_secrets().get("APP_PASSWORD") or os.environ.get("APP_PASSWORD") or ""
    return str(value)


def _signin_days() -> float:
    return signin.signin_days(read_secrets(), os.environ)


def trusted_proxies(secrets: Mapping[str, object], environ: Mapping[str, str]) -> int:
    """COMET_TRUSTED_PROXIES: how many proxies in front of the app append to X-Forwarded-For.
    Secrets win over the environment, blank is unset; anything but a whole number >= 0 means 0,
    so a typo can only make the app trust less."""
    for source in (secrets, environ):
        value = source.get("COMET_TRUSTED_PROXIES")
        if value is None or not str(value).strip():
            continue
        if isinstance(value, bool):  # TOML `true` is not a count
            return 0
        try:
            return max(int(str(value).strip()), 0)
        except ValueError:
            return 0
    return 0


def signed_in() -> bool:
    """Whether this visitor may see the pages (True when the app is open to all)."""
    if read_auth_section():
        return bool(st.user.get("is_logged_in"))
    if password := _app_password():
        return _password_passed(password)
    return True


def require_access(page: Any = None) -> None:
    """Stop the run with a sign-in screen unless this visitor may use the app. Called by the entry
    script (after st.navigation, so the requested page and its query stay the browser's; `page`
    is that page) and again by every page (so no page can be reached around it); it draws nothing
    once the visitor is in."""
    auth = read_auth_section()
    if auth:
        _require_login(auth)
    elif password := _app_password():
        _require_password(password, page)


def account_box() -> None:
    """Sidebar: who is signed in, and the way out."""
    if read_auth_section() and st.user.get("is_logged_in"):
        name = st.user.get("email") or st.user.get("name") or "signed in"
        st.caption(f"Signed in as {plain(str(name))}")
        st.button("Sign out", on_click=st.logout, icon=":material/logout:", key="access.logout")
    elif _app_password() and PASSED_KEY in st.session_state:
        if name := st.session_state[PASSED_KEY]:
            st.caption(f"Signed in as {plain(name)}")
        st.button("Lock", on_click=_lock, icon=":material/lock:", key="access.lock",
                  help="Sign this browser out: the app asks for the password again, in every tab "
                       "on its next load.")


def _lock() -> None:
    st.session_state.pop(PASSED_KEY, None)
    st.session_state[LOCKED_KEY] = True
    st.session_state[GO_KEY] = (SIGNOUT_ROUTE, None)


def _require_login(auth: Mapping[str, object]) -> None:
    if st.user.get("is_logged_in"):
        return
    _sign_in_header()
    # Providers are the sub-sections of [auth] ([auth.google], ...); none means a single one.
    providers = [name for name, value in auth.items() if isinstance(value, Mapping)]
    for provider in providers or [None]:
        label = f"Sign in with {provider.capitalize()}" if provider else "Sign in"
        st.button(label, on_click=st.login, args=(provider,) if provider else (), type="primary",
                  icon=":material/login:", key=f"login-{provider}")
    st.stop()


def _password_passed(password: str) -> bool:
    """In by the password typed in this session, or by this browser's signed cookie."""
    if PASSED_KEY in st.session_state:
        return True
    if st.session_state.get(LOCKED_KEY) or not (days := _signin_days()):
        return False
    cookie = st.context.cookies.get(COOKIE)
    if not cookie:
        return False
    found = signin.verify(signin.signing_key(password), cookie, signin.SESSION, max_age=days * signin.DAY)
    if found is None:  # forged, altered, expired, or signed with an earlier password
        return False
    st.session_state[PASSED_KEY] = found.name
    return True


def _require_password(password: str, page: Any) -> None:
    if _password_passed(password):
        _take_pending_trip(page)
        return
    _sign_in_header()
    with st.form("access.password", border=True):
        typed = st.text_input("Password", type="password", autocomplete="current-password")
        typed_name = st.text_input(
            "Your name (optional)", max_chars=signin.NAME_CHARS, autocomplete="nickname",
            help="Recorded as the creator of what you run, so History can show only yours (*Mine*). "
                 "It is a label everyone with the password can choose, not a proof of who you are.")
        submitted = st.form_submit_button("Enter", type="primary", icon=":material/lock_open:")
    if submitted:
        throttle, keys = _throttle(), _client_keys()
        wait = throttle.wait_seconds(keys)
        if wait > 0:
            st.error(f"Too many wrong passwords. Try again in {math.ceil(wait)} s.", icon=":material/timer:")
        elif _same(typed, password):
            throttle.succeeded(keys)
            name = signin.clean_name(typed_name)
            st.session_state[PASSED_KEY] = name
            st.session_state.pop(LOCKED_KEY, None)
            if _signin_days():  # this tab is in now; the trip makes the cookie for the rest
                ticket = signin.issue(signin.signing_key(password), signin.TICKET, name, signin.TICKET_SECONDS)
                st.session_state[GO_KEY] = (SIGNIN_ROUTE, ticket)
            st.rerun()
        else:
            _sleep(throttle.failed(keys))
            st.error("That password is not right.", icon=":material/error:")
    _take_pending_trip(page)
    st.stop()


def _take_pending_trip(page: Any) -> None:
    """Send the browser through a sign-in route, once, and back to this very page and query.

    Done by navigating the app's own document (st.html's script runs in it, not in a frame), to
    an absolute path on this origin; the route answers with a redirect back. If a browser runs no
    script, nothing is lost but the cookie: this tab stays signed in (or locked) as it is."""
    trip = st.session_state.pop(GO_KEY, None)
    if not trip:
        return
    route, ticket = trip
    url_path = _page_url_path(page)
    query = {name: st.query_params.get_all(name) for name in st.query_params}
    params = {"next": signin.next_reference(url_path, query)}
    if ticket:
        params["token"] = ticket
    target = f"{_app_base_path(url_path)}{route}?{urlencode(params)}"
    script = json.dumps(target).replace("<", "\\u003c")
    st.html(f"<script>window.location.replace({script});</script>", unsafe_allow_javascript=True)


def _page_url_path(page: Any) -> str:
    """The url path of the page being shown ("" for the default one)."""
    if page is not None:
        return str(page.url_path or "")
    # Called from a page's own guard, without the page object: the page Streamlit runs, by the
    # same lookup st.context.url makes to put it at the end of the URL.
    from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

    ctx = get_script_run_ctx()
    try:
        info = ctx.pages_manager.get_pages().get(ctx.page_script_hash) or {}
    except Exception:  # an internal that moved: come back to the first page, still signed in
        return ""
    return str(info.get("url_pathname") or "")


def _app_base_path(url_path: str) -> str:
    """The path of the app's root as this browser sees it (behind a proxy that adds a prefix, or
    with server.baseUrlPath), from the page's URL with the page's own part taken off."""
    path = urlsplit(st.context.url or "").path.rstrip("/")
    if url_path and path.endswith("/" + url_path):
        path = path[: -len(url_path) - 1]
    # One leading slash: `//host/` (or `/\host/`) would send the ticket to another site.
    return "/" + (path.lstrip("/\\") + "/").lstrip("/")


# Tests swap this to see the flood slow-down without waiting for it.
_sleep = time.sleep


def _client_keys() -> list[str]:
    # A random token per browser session, kept in its session state (a reload is a new session).
    # Not the runtime's session id: AppTest gives every test session the same one.
    session = st.session_state.get(SESSION_KEY)
    if not session:
        session = st.session_state[SESSION_KEY] = token_urlsafe(16)
    address = st.context.ip_address
    return client_keys(
        session,
        address if isinstance(address, str) else None,  # AppTest's stand-in runtime gives a mock
        st.context.headers,
        trusted_proxies(read_secrets(), os.environ),
    )


def _same(typed: str, expected: str) -> bool:
    # Digests first, so the comparison takes the same time whatever the lengths.
    return hmac.compare_digest(hashlib.sha256(typed.encode()).digest(), hashlib.sha256(expected.encode()).digest())


def _sign_in_header() -> None:
    st.title("Comet FLUX Studio")
    st.caption("This dashboard is private. Sign in to continue.")


def exposed(url: str | None, *, has_server_key: bool, has_auth: bool, has_password: bool) -> bool:
    """An open app holding a key, reached through a name other than this machine's loopback."""
    host = (urlsplit(url or "").hostname or "").lower()
    return has_server_key and not has_auth and not has_password and bool(host) and host not in LOCAL_HOSTS


def open_to_anyone_warning(has_server_key: bool) -> None:
    """Tell the operator when an open app, reached from elsewhere, lets anyone spend the key."""
    if not exposed(st.context.url, has_server_key=has_server_key, has_auth=bool(read_auth_section()),
                   has_password=bool(_app_password())):
        return
    st.warning(
        "**Anyone with this link can spend the CometAPI key this app holds.** To restrict it, add "
        "an `[auth]` section (sign-in with Google, Microsoft, Okta…) or an `APP_PASSWORD` to the "
        "app's secrets.",
        icon=":material/shield:",
    )


# ---- the server's sign-in routes ------------------------------------------------------------------


def routes() -> list:
    """The two routes `st.App(routes=...)` serves beside the pages, under server.baseUrlPath like
    Streamlit's own: `_comet/signin?token=&next=` swaps a ticket for the cookie, `_comet/signout`
    clears it; both then redirect to `next`, a page of this app only."""
    from starlette.routing import Route
    from streamlit import config
    from streamlit.url_util import make_url_path

    base = config.get_option("server.baseUrlPath") or ""
    return [Route(make_url_path(base, SIGNIN_ROUTE), _signin_route, methods=["GET"]),
            Route(make_url_path(base, SIGNOUT_ROUTE), _signout_route, methods=["GET"])]


def _signin_route(request):  # sync: Starlette runs it on a worker thread (scrypt, secrets file)
    response = _back(request)
    password, days = _app_password(), _signin_days()
    if not password or not days or read_auth_section():
        return response
    key = signin.signing_key(password)
    ticket = _TICKETS.redeem(key, request.query_params.get("token"))
    if ticket is not None:
        lifetime = days * signin.DAY
        response.set_cookie(COOKIE, signin.issue(key, signin.SESSION, ticket.name, lifetime),
                            max_age=int(lifetime), **_cookie_attributes(request))
    return response


def _signout_route(request):
    response = _back(request)
    response.delete_cookie(COOKIE, **_cookie_attributes(request))
    return response


def _back(request):
    from starlette.responses import RedirectResponse

    response = RedirectResponse(signin.redirect_target(request.query_params.get("next")), status_code=303)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"  # the ticket stays out of Referer headers
    return response


def _cookie_attributes(request) -> dict[str, Any]:
    # Scoped to the app's root (the route's own folder); Secure whenever the visitor came over
    # https, directly or through a proxy that says so (a forged header only hides the cookie from
    # the forger's own plain-http requests).
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    path = request.url.path
    return {"path": path[: path.rindex("/_comet/") + 1], "httponly": True, "samesite": "lax",
            "secure": request.url.scheme == "https" or forwarded == "https"}
