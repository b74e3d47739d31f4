"""HTTP client for CometAPI's Replicate-compatible prediction routes.

The retry policy lives in the session's mounted adapter (urllib3 `Retry`), not in loops around
calls: status GETs are retried with backoff, jitter and `Retry-After`; POSTs (create, cancel) never
are, because a resent create can run, and bill, twice. The key goes out only through `_BearerAuth`,
which refuses any URL outside the configured base, and redirects are never followed.

Every answer is hostile input: each call has a wall-clock deadline covering retries, headers and
body however slowly they trickle (`net.bounded`), the body is read as a stream up to a size cap,
JSON is decoded once (no NaN/Infinity, no recursion blow-up), every registered key is scrubbed
out of it, and only then is it parsed into a checked Prediction or error.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import MaxRetryError, NewConnectionError
from urllib3.util.retry import Retry

from . import errors, net, redact
from .config import API_PREFIX, normalize_base_url
from .prediction import STARTING, Prediction, is_model_id, is_valid_id

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504, 524})
MAX_IDLE_SESSIONS = 8  # per kind; enough for the tracker's workers plus a few page runs
_REQUEST_ID_RE = re.compile(r"\s*\(request id: ([^)\s]+)\)", re.IGNORECASE)
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# An id in an answer we could not otherwise read: enough to record and track the prediction.
_ID_IN_TEXT = re.compile(rb'"id"\s*:\s*"([A-Za-z0-9][A-Za-z0-9_-]{5,63})"')
# A prediction's JSON is small; outputs given as data: URIs make it larger, never this large.
MAX_ANSWER_BYTES = 32 * 1024 * 1024
# What the last call of a Client found, for the sidebar badge: the API answered with the key
# accepted, refused the key (401), or could not be reached (no answer, or a gateway saying the
# origin did not answer).
OK, REJECTED, UNREACHABLE = "ok", "rejected", "unreachable"
_GATEWAY_FAILURES = frozenset({502, 503, 504, 524})


@dataclass(frozen=True)
class Timeouts:
    connect: float = 5.0
    # CometAPI has been seen taking over 45 s to answer a status query.
    read_status: float = 90.0
    read_create: float = 60.0
    # Wall-clock limits for a whole call (retries, headers and body included): a per-read
    # timeout never trips on a body that trickles a byte every few seconds.
    total_status: float = 120.0
    total_create: float = 75.0


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4  # retries after the first try, per status call
    backoff: float = 0.5  # first wait, doubling
    backoff_max: float = 8.0
    jitter: float = 0.5
    # A longer Retry-After is not slept through inside one call: the error carries it instead,
    # so the caller (the tracker) can schedule the next poll without holding a thread.
    retry_after_max: float = 20.0


class _StatusRetry(Retry):
    """urllib3 Retry that gives up (returning the 429/503 response) when Retry-After is too long."""

    def __init__(self, *args: Any, retry_after_cap: float = RetryPolicy.retry_after_max, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_after_cap = retry_after_cap

    def new(self, **kw: Any) -> _StatusRetry:
        # urllib3 makes a new Retry for every attempt from its own parameters: carry the cap over.
        kw.setdefault("retry_after_cap", self.retry_after_cap)
        return super().new(**kw)

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        if response is not None:
            header = response.headers.get("Retry-After")
            if header is not None:
                try:
                    wait = self.parse_retry_after(header)
                except Exception:  # an unreadable header is ignored, as urllib3 would
                    wait = 0.0
                if wait > self.retry_after_cap:
                    raise MaxRetryError(_pool, url, reason=None)
        return super().increment(method, url, response, error, _pool, _stacktrace)


class _BearerAuth(requests.auth.AuthBase):
    """Attaches the key only to requests for the configured origin."""

    def __init__(self, key: str, base_url: str) -> None:
        self._key = key
        self._origin = _origin(base_url)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if _origin(request.url or "") != self._origin:
            raise errors.WrongEndpoint("Refused to send the API key to a host other than the base URL.")
        request.headers["Authorization"] = f"Bearer {self._key}"
        return request


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port


@dataclass(frozen=True)
class Answer:
    """An HTTP answer read within its deadline and size cap: status, headers and body bytes."""

    status_code: int
    headers: requests.structures.CaseInsensitiveDict
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON, secrets scrubbed. NaN/Infinity read as null (they are not JSON and
        would poison every number); nesting too deep to decode is unreadable, not a crash."""
        try:
            return redact.scrub_json(json.loads(self.body, parse_constant=lambda _constant: None))
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"not JSON we can read: {type(exc).__name__}") from None


@dataclass(frozen=True)
class Outcome:
    """What a Client's latest call found: OK, REJECTED or UNREACHABLE, at `at` (epoch seconds),
    with the HTTP status when there was an answer."""

    state: str
    at: float
    status: int | None = None


class Client:
    """create / get / cancel over pooled sessions (one per thread: requests.Session is not
    guaranteed thread-safe, and the tracker and page sessions share one Client).

    `personal`: the key is a visitor's own (Use your own key), not the server's COMETAPI_KEY;
    it only changes what a rejected key's message tells the user to do."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeouts: Timeouts = Timeouts(),
        retry: RetryPolicy = RetryPolicy(),
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        personal: bool = False,
    ) -> None:
        if not api_key:
            raise ValueError("An API key is required.")
        self.base_url = normalize_base_url(base_url)
        self.personal = personal
        self.timeouts = timeouts
        self.retry = retry
        self.max_answer_bytes = max_answer_bytes
        self._auth = _BearerAuth(api_key, self.base_url)
        redact.register(api_key)  # scrubbed from every answer, whichever client gets it
        # Idle sessions by kind, reused by whichever thread asks next: Streamlit runs each script
        # run on a new thread, so one session per thread would pile up, and never reuse a
        # connection. A session is used by one thread at a time (requests.Session is not
        # guaranteed thread-safe).
        self._idle: dict[bool, list[requests.Session]] = {True: [], False: []}
        self._lock = threading.Lock()
        self._outcome: Outcome | None = None  # None until a call has been made

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:  # never the key
        return f"Client(base_url={self.base_url!r})"

    @property
    def last_outcome(self) -> Outcome | None:
        """What the latest finished call (from any thread: a page, the tracker) found, or None
        before the first one."""
        with self._lock:
            return self._outcome

    def _note_outcome(self, state: str, status: int | None = None) -> None:
        with self._lock:
            self._outcome = Outcome(state, time.time(), status)

    # ---- public calls -------------------------------------------------------------------

    def create(self, model: str, model_input: dict[str, Any]) -> Prediction:
        """One POST, never retried. Raises CreateUncertain when it may have been accepted and no
        id can be read from the answer; with an id, the prediction is returned (and so recorded)
        even when the rest of the answer is unreadable."""
        if not is_model_id(model):
            raise errors.InvalidInput(f"Not a model id of the form owner/name: {model!r}.")
        if not isinstance(model_input, dict):
            raise errors.InvalidInput("The input must be a JSON object.")
        url = f"{self.base_url}{API_PREFIX}/models/{model}/predictions"
        total = self.timeouts.total_create
        try:
            answer = self._send("POST", url, retrying=False, read_timeout=self.timeouts.read_create,
                                total=total, json={"input": model_input})
        except net.TooLarge as exc:
            raise self._uncertain(f"the answer was too large: {exc}") from exc
        except requests.ConnectTimeout as exc:  # never reached the server: nothing was created
            raise errors.ConnectionFailed(f"Could not connect to {self._host()} (timed out).") from exc
        except requests.ConnectionError as exc:
            if _never_connected(exc):
                raise errors.ConnectionFailed(f"Could not connect to {self._host()}.") from exc
            raise self._uncertain("the connection dropped before an answer came") from exc
        except (requests.Timeout, net.DeadlineExpired) as exc:
            raise self._uncertain(f"no complete answer within {_limit(exc, self.timeouts.read_create)}") from exc
        prediction = self._prediction(answer, creating=True, model=model)
        # What was sent is what we keep, not the server's echo of it.
        return replace(prediction, input=model_input, model=prediction.model or model)

    def get(self, prediction_id: str) -> Prediction:
        """The prediction as it is now; retried on 429/5xx/524 and connection errors."""
        url = self._prediction_url(prediction_id)
        try:
            answer = self._send("GET", url, retrying=True, read_timeout=self.timeouts.read_status,
                                total=self.timeouts.total_status)
        except net.TooLarge as exc:
            raise errors.BadResponse(f"{self._host()} sent a status answer that is too large ({exc}).") from exc
        except (requests.Timeout, net.DeadlineExpired) as exc:
            raise errors.ConnectionFailed(
                f"{self._host()} did not answer the status query within "
                f"{_limit(exc, self.timeouts.read_status)}."
            ) from exc
        except requests.RequestException as exc:
            raise errors.ConnectionFailed(f"Could not reach {self._host()} to check the prediction.") from exc
        return self._prediction(answer, creating=False)

    def cancel(self, prediction_id: str) -> Prediction:
        """Ask the server to cancel. CometAPI documents no cancel route: a 404/405 or an HTML
        answer becomes CannotCancel, so the UI can say "this server cannot cancel"."""
        url = self._prediction_url(prediction_id) + "/cancel"
        try:
            answer = self._send("POST", url, retrying=False, read_timeout=self.timeouts.read_create,
                                total=self.timeouts.total_create)
        except (requests.RequestException, net.TooLarge, net.DeadlineExpired) as exc:
            raise errors.ConnectionFailed(f"Could not reach {self._host()} to cancel.") from exc
        if answer.status_code in (404, 405) or (300 <= answer.status_code < 400) or _is_html(answer):
            raise errors.CannotCancel(
                "This server cannot cancel predictions.",
                status=answer.status_code,
                request_id=_request_id(answer, ""),
            )
        return self._prediction(answer, creating=False)

    def wait(self, prediction_id: str, *, timeout: float = 1800.0, interval: float = 0.5) -> Prediction:
        """Poll until terminal (aborted included), at most `timeout` seconds (Replicate stops runs
        at 30 min). The interval grows by half each poll up to 5 s; Retry-After hints are kept."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                prediction = self.get(prediction_id)
                if prediction.is_terminal:
                    return prediction
                pause = interval
            except (errors.RateLimited, errors.ServerError, errors.ConnectionFailed, errors.BadResponse) as exc:
                pause = max(interval, exc.retry_after or 0.0)
            if time.monotonic() + pause > deadline:
                raise errors.CometError(f"Prediction {prediction_id} did not finish within {timeout:.0f} s.")
            time.sleep(pause)
            interval = min(interval * 1.5, 5.0)

    def close(self) -> None:
        with self._lock:
            for sessions in self._idle.values():
                for session in sessions:
                    session.close()
                sessions.clear()

    # ---- internals ----------------------------------------------------------------------

    def _prediction_url(self, prediction_id: str) -> str:
        if not is_valid_id(prediction_id):
            raise errors.InvalidId(f"{_short(prediction_id)} is not a valid prediction id.")
        return f"{self.base_url}{API_PREFIX}/predictions/{prediction_id}"

    def _send(self, method: str, url: str, *, retrying: bool, read_timeout: float, total: float,
              **kwargs: Any) -> Answer:
        """One request on an idle pooled session (a new one if none is idle), all of it (retries,
        headers, body) within `total` seconds and the body within the size cap. Raises
        net.DeadlineExpired when the deadline cut it off, net.TooLarge for an oversized body."""
        with self._lock:
            idle = self._idle[retrying]
            session = idle.pop() if idle else None
        if session is None:
            session = self._new_session(retrying)
        reusable = False
        with net.bounded(total) as deadline:
            try:
                response = session.request(method, url, auth=self._auth, timeout=(self.timeouts.connect, read_timeout),
                                           allow_redirects=False, stream=True, **kwargs)
                with response:
                    body = net.read_capped(response, self.max_answer_bytes)
                reusable = True
                answer = Answer(response.status_code, response.headers, body)
                self._note_answer(answer)
                return answer
            except requests.RequestException as exc:
                self._note_outcome(UNREACHABLE)
                if deadline.expired:
                    raise net.DeadlineExpired(deadline.seconds) from exc
                raise
            finally:
                self._put_back(session, retrying, reusable)

    def _note_answer(self, answer: Answer) -> None:
        status = answer.status_code
        if status == 401:
            self._note_outcome(REJECTED, status)
        elif status in _GATEWAY_FAILURES or 300 <= status < 400 or _is_html(answer):
            # No API answered: a gateway whose origin is down, or a web page at a wrong base URL.
            self._note_outcome(UNREACHABLE, status)
        else:  # the API itself answered and took the key (a 403, 404 or 422 says so too)
            self._note_outcome(OK, status)

    def _put_back(self, session: requests.Session, retrying: bool, reusable: bool) -> None:
        """A session whose call was cut off may hold a half-read connection: closed, not kept."""
        if reusable:
            with self._lock:
                if len(self._idle[retrying]) < MAX_IDLE_SESSIONS:
                    self._idle[retrying].append(session)
                    return
        session.close()

    def _new_session(self, retrying: bool) -> requests.Session:
        retry = _StatusRetry(
            total=self.retry.attempts if retrying else 0,
            connect=self.retry.attempts if retrying else 0,
            read=min(2, self.retry.attempts) if retrying else 0,  # slow answers: 3 tries at most
            redirect=0,
            status=self.retry.attempts if retrying else 0,
            other=0,
            allowed_methods=frozenset({"GET"}),
            status_forcelist=RETRY_STATUSES,
            backoff_factor=self.retry.backoff,
            backoff_max=self.retry.backoff_max,
            backoff_jitter=self.retry.jitter,
            respect_retry_after_header=True,
            raise_on_status=False,
            raise_on_redirect=False,
            retry_after_cap=self.retry.retry_after_max,
        )
        # No netrc or proxy-auth from the environment: the key we attach is the only credential.
        return net.session(net.BoundedAdapter(max_retries=retry, pool_connections=1, pool_maxsize=1))

    def _host(self) -> str:
        return urlsplit(self.base_url).netloc

    def _uncertain(self, why: str, **kwargs: Any) -> errors.CreateUncertain:
        return errors.CreateUncertain(
            f"CometAPI did not confirm the request ({why}). It may still have been accepted and "
            "billed: check your CometAPI usage before sending it again.",
            **kwargs,
        )

    def _prediction(self, answer: Answer, *, creating: bool, model: str = "") -> Prediction:
        if 200 <= answer.status_code < 300 and not _is_html(answer):
            try:
                return Prediction.from_json(answer.json())
            except ValueError as exc:
                request_id = _request_id(answer, "")
                if creating:  # it may well have been created: keep it if its id can be read
                    found = _ID_IN_TEXT.search(answer.body[:65536])
                    if found:
                        return Prediction(id=found.group(1).decode(), model=model, status=STARTING,
                                          problems=("an answer to the create that could not be read",))
                    raise self._uncertain("the answer could not be read", status=answer.status_code,
                                          request_id=request_id) from exc
                raise errors.BadResponse(
                    "CometAPI answered, but not with a prediction we can read.",
                    status=answer.status_code,
                    request_id=request_id,
                    detail=redact.scrub(answer.text[:500]),
                ) from exc
        raise self._error(answer, creating=creating)

    def _error(self, answer: Answer, *, creating: bool) -> errors.CometError:
        status = answer.status_code
        message, code, retry_after = _parse_error_body(answer)
        message = redact.scrub(message)[:1000]
        request_id = _request_id(answer, message)
        message = _REQUEST_ID_RE.sub("", message).strip()
        kwargs = {"status": status, "request_id": request_id, "detail": message or None}
        said = f": {message}" if message else "."

        if 300 <= status < 400 or (_is_html(answer) and status not in (502, 503, 504, 524)):
            return errors.WrongEndpoint(
                f"The server answered with a web page ({status}), not the API: check the base URL "
                f"({self.base_url}).",
                **kwargs,
            )
        if status == 524 or (status in (502, 503, 504) and creating):
            if creating:
                return self._uncertain(f"gateway error {status}", **kwargs)
            return errors.ServerError(
                "Gateway timeout (524): CometAPI's provider did not answer within about 100 s.", **kwargs
            )
        if status == 401:
            return errors.AuthError(rejected_key_message(personal=self.personal), personal=self.personal, **kwargs)
        if status == 403:
            return errors.Forbidden(f"This key may not do that (403){said}", **kwargs)
        if status == 404:
            return errors.NotFound(f"Not found (404){said}", **kwargs)
        if status == 429:
            wait = f" Try again in {retry_after:.0f} s." if retry_after else " Try again shortly."
            return errors.RateLimited(f"Rate limited by CometAPI (429).{wait}", retry_after=retry_after, **kwargs)
        if status in (400, 422) or (status == 500 and code == "invalid_request"):
            return errors.InvalidInput(f"CometAPI refused the request ({status}){said}", **kwargs)
        if status >= 500:
            if creating:
                return self._uncertain(f"server error {status}", **kwargs)
            return errors.ServerError(f"CometAPI had a server error ({status}){said}", **kwargs)
        return errors.CometError(f"Unexpected answer from CometAPI ({status}){said}", **kwargs)


# How a stop caused by the server's key begins (the tracker resumes those once a key works).
SERVER_KEY_REJECTED = "CometAPI rejected the server's API key"


def rejected_key_message(*, personal: bool) -> str:
    """Which key CometAPI refused, and what whoever reads it can do about it."""
    if personal:
        return ("CometAPI rejected your own API key (401). Check the key you entered under "
                "Use your own key in the sidebar.")
    return (f"{SERVER_KEY_REJECTED} (401). The app's operator should check "
            "COMETAPI_KEY; meanwhile you can use your own key (sidebar: Use your own key).")


def _limit(exc: Exception, read_timeout: float) -> str:
    seconds = exc.seconds if isinstance(exc, net.DeadlineExpired) else read_timeout
    return f"{seconds:.0f} s"


def _never_connected(exc: requests.ConnectionError) -> bool:
    """True when the request cannot have reached the server (refused, DNS), so nothing was created."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, NewConnectionError)  # also covers name resolution failures


def _is_html(answer: Answer) -> bool:
    content_type = answer.headers.get("Content-Type", "").lower()
    if "html" in content_type:
        return True
    return answer.body[:100].lstrip().lower().startswith((b"<!doctype html", b"<html"))


def _parse_error_body(answer: Answer) -> tuple[str, str, float | None]:
    """(message, code, retry_after) from a CometAPI envelope, problem details or bare detail."""
    retry_after: float | None = None
    header = answer.headers.get("Retry-After", "").strip()
    if header.isdigit() and len(header) <= 6:
        retry_after = float(header)
    if _is_html(answer):
        return "", "", retry_after
    try:
        body = answer.json()
    except ValueError:
        return answer.text.strip()[:300], "", retry_after
    if not isinstance(body, dict):
        return str(body)[:300], "", retry_after
    envelope = body.get("error")
    if isinstance(envelope, dict):
        return _short_text(envelope.get("message")), _short_text(envelope.get("code"), 64), retry_after
    if isinstance(envelope, str):
        return _short_text(envelope), "", retry_after
    title, detail = _short_text(body.get("title")), _short_text(body.get("detail"))
    parts = [p for p in (title, detail) if p]
    if title and detail and detail.startswith(title):
        parts = [detail]
    return " - ".join(parts), _short_text(body.get("code"), 64), retry_after


def _short_text(value: object, limit: int = 1000) -> str:
    if value in (None, ""):
        return ""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:limit]


def _request_id(answer: Answer, message: str) -> str | None:
    """CometAPI's request id from a header or the message, if it looks like one (never a key)."""
    candidates = [answer.headers.get(h, "") for h in ("X-Request-Id", "X-Comet-Request-Id", "Request-Id")]
    match = _REQUEST_ID_RE.search(message or "")
    candidates.append(match.group(1) if match else "")
    for candidate in candidates:
        candidate = redact.scrub(candidate.strip())
        if candidate and _SAFE_REQUEST_ID.fullmatch(candidate):
            return candidate
    return None


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
