"""Who may use the app. Checked by the entry script before any page runs.

- An `[auth]` section in secrets: Streamlit's own st.login (OIDC); nobody passes without it.
- Else an `APP_PASSWORD` in secrets (or the environment): a shared password, compared in
  constant time. Wrong attempts make this browser session (and its address, when a trusted proxy
  reports it: COMET_TRUSTED_PROXIES) wait; a right password is never held up by anyone else's.
- Else open. When such an open app holds a server-side key and is reached from another machine,
  a banner tells the operator that anyone with the link can spend it.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import time
from collections.abc import Mapping
from secrets import token_urlsafe
from urllib.parse import urlsplit

import streamlit as st

from comet.throttle import Throttle, client_keys
from comet.ui.context import read_secrets
from comet.ui.safe import plain

PASSED_KEY = "access.passed"
SESSION_KEY = "access.session"
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}


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


def require_access() -> None:
    """Stop the run with a sign-in screen unless this visitor may use the app. Called by the entry
    script (so the sign-in screen shows no navigation) and again by every page (so no page can
    be reached around it); it draws nothing once the visitor is in."""
    auth = read_auth_section()
    if auth:
        _require_login(auth)
    elif password := _app_password():
        _require_password(password)


def account_box() -> None:
    """Sidebar: who is signed in, and the way out."""
    if read_auth_section() and st.user.get("is_logged_in"):
        name = st.user.get("email") or st.user.get("name") or "signed in"
        st.caption(f"Signed in as {plain(str(name))}")
        st.button("Sign out", on_click=st.logout, icon=":material/logout:", key="access.logout")
    elif _app_password() and st.session_state.get(PASSED_KEY):
        st.button("Lock", on_click=st.session_state.pop, args=(PASSED_KEY, None), icon=":material/lock:",
                  key="access.lock", help="Forget the password in this browser tab.")


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


def _require_password(password: str) -> None:
    if st.session_state.get(PASSED_KEY):
        return
    _sign_in_header()
    with st.form("access.password", border=True):
        typed = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Enter", type="primary", icon=":material/lock_open:")
    if submitted:
        throttle, keys = _throttle(), _client_keys()
        wait = throttle.wait_seconds(keys)
        if wait > 0:
            st.error(f"Too many wrong passwords. Try again in {math.ceil(wait)} s.", icon=":material/timer:")
        elif _same(typed, password):
            throttle.succeeded(keys)
            st.session_state[PASSED_KEY] = True
            st.rerun()
        else:
            _sleep(throttle.failed(keys))
            st.error("That password is not right.", icon=":material/error:")
    st.stop()


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
