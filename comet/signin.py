"""Signed passes for the shared password (APP_PASSWORD): what keeps a browser signed in.

Two kinds, told apart inside the signature so one cannot stand in for the other:
- a *ticket*: made by the page run that checked the password, good for one minute and redeemed
  once (per server process), in exchange for
- a *session* pass: the cookie, good for APP_SIGNIN_DAYS; it holds the display name and times,
  never the password.

The signing key is derived from the password alone (scrypt), so every replica that has the same
password accepts the others' passes, and changing the password invalidates every one of them.
scrypt makes each guess at the password from a stolen cookie cost ~50 ms instead of nanoseconds.

No Streamlit here: the page mints tickets, the server's sign-in route redeems them."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import math
import re
import secrets
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

SESSION = "session"
TICKET = "ticket"
TICKET_SECONDS = 60
DAY = 86_400
DEFAULT_DAYS = 7.0
MAX_DAYS = 400.0  # browsers cap a cookie's life at 400 days anyway
NAME_CHARS = 40
_MAX_TOKEN_CHARS = 1024
_SALT = b"comet-flux-studio/signin/v1"
_CLOCK_SKEW = 60  # replicas' clocks may differ a little


@dataclass(frozen=True)
class Pass:
    name: str  # the display name given at sign-in ("" for none)
    issued: int
    expires: int
    nonce: str


@functools.lru_cache(maxsize=4)
def signing_key(password: str) -> bytes:
    """The key passes are signed with: the password stretched (memory-hard, ~50 ms once per
    process), so a cookie is no shortcut to guessing the password."""
    return hashlib.scrypt(password.encode(), salt=_SALT, n=2**14, r=8, p=1, dklen=32)


def issue(key: bytes, kind: str, name: str, lifetime: float, *, now: float | None = None) -> str:
    issued = int(time.time() if now is None else now)
    body = {"k": kind, "n": clean_name(name), "i": issued, "e": issued + int(lifetime),
            "j": secrets.token_urlsafe(12)}
    payload = _b64(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())
    return f"{payload}.{_b64(_mac(key, payload))}"


def verify(key: bytes, token: object, kind: str, *, max_age: float | None = None,
           now: float | None = None) -> Pass | None:
    """The pass a token carries, or None when it is forged, altered, of another kind, expired or
    older than `max_age` (so shortening APP_SIGNIN_DAYS shortens the passes already out)."""
    if not isinstance(token, str) or len(token) > _MAX_TOKEN_CHARS or token.count(".") != 1:
        return None
    payload, mac = token.split(".")
    try:
        if not hmac.compare_digest(_unb64(mac), _mac(key, payload)):
            return None
        body = json.loads(_unb64(payload))
        found = Pass(str(body["n"]), int(body["i"]), int(body["e"]), str(body["j"]))
    except (ValueError, KeyError, TypeError):
        return None
    now = time.time() if now is None else now
    if body.get("k") != kind or now >= found.expires or found.issued > now + _CLOCK_SKEW:
        return None
    if max_age is not None and now - found.issued >= max_age:
        return None
    return found


class Tickets:
    """Redeems each ticket once in this process: a ticket seen in a log or a browser history
    cannot sign in a second browser. Thread-safe; remembers a ticket only until it expires."""

    def __init__(self, *, max_kept: int = 10_000, clock: Callable[[], float] = time.time) -> None:
        self._used: OrderedDict[str, int] = OrderedDict()
        self._max = max_kept
        self._clock = clock
        self._lock = threading.Lock()

    def redeem(self, key: bytes, token: object) -> Pass | None:
        now = self._clock()
        ticket = verify(key, token, TICKET, max_age=TICKET_SECONDS, now=now)
        if ticket is None:
            return None
        with self._lock:
            while self._used and (next(iter(self._used.values())) <= now or len(self._used) >= self._max):
                self._used.popitem(last=False)
            if ticket.nonce in self._used:
                return None
            self._used[ticket.nonce] = ticket.expires
        return ticket


def clean_name(text: object) -> str:
    """A display name as typed, made safe to keep: control and invisible characters dropped,
    runs of space folded, trimmed, at most NAME_CHARS characters."""
    text = unicodedata.normalize("NFC", str(text or ""))
    kept = "".join(" " if unicodedata.category(ch).startswith("Z") or ch.isspace() else ch
                   for ch in text if not unicodedata.category(ch).startswith("C") or ch.isspace())
    return " ".join(kept.split())[:NAME_CHARS].strip()


def signin_days(secrets_: Mapping[str, object], environ: Mapping[str, str]) -> float:
    """APP_SIGNIN_DAYS: how long a browser stays signed in. Secrets win over the environment,
    blank is unset (a week); 0, a negative number or anything not a number means no cookie at all
    (sign-in per tab), so a typo can only make the app remember less."""
    for source in (secrets_, environ):
        value = source.get("APP_SIGNIN_DAYS")
        if value is None or not str(value).strip():
            continue
        if isinstance(value, bool):
            return 0.0
        try:
            days = float(str(value).strip())
        except ValueError:
            return 0.0
        return min(days, MAX_DAYS) if math.isfinite(days) and days > 0 else 0.0
    return DEFAULT_DAYS


_PAGE = re.compile(r"[A-Za-z0-9_-]*")


def next_reference(url_path: str, query: Mapping[str, list[str]]) -> str:
    """Where to come back to after the sign-in route: a page of this app and its query,
    e.g. `history?id=abc`, relative to the app's root."""
    encoded = urlencode([(k, v) for k, values in query.items() for v in values])
    return url_path + (f"?{encoded}" if encoded else "")


def redirect_target(next_ref: object) -> str:
    """The Location the sign-in routes answer with: `next` made into a relative reference that
    can only name a page of this app (`../history?id=abc`, from `<base>/_comet/signin`). Anything
    else, an absolute or scheme-relative URL above all, goes to the app's first page: no open
    redirect."""
    if not isinstance(next_ref, str) or len(next_ref) > 2000:
        return "../"
    path, _, query = next_ref.partition("?")
    if not _PAGE.fullmatch(path):
        return "../"
    encoded = urlencode(parse_qsl(query, keep_blank_values=True))
    return "../" + path + (f"?{encoded}" if encoded else "")


def _mac(key: bytes, payload: str) -> bytes:
    return hmac.new(key, b"comet-signin." + payload.encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
