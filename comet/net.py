"""Bounded HTTP: a wall-clock deadline over a whole request, a size cap on its body, and
connections only to addresses that were checked.

Socket timeouts are per read, so a server that sends one byte every few seconds never trips
them: a status answer or a download could hold a thread for ever. Here a call runs inside
`bounded(seconds)`: every socket it opens or reuses is registered with that call's deadline,
and one watchdog thread shuts those sockets down when the deadline passes, which ends any
blocked read at once (headers or body, TLS or not, however slowly bytes arrive).

`bounded(..., check=...)` also decides which addresses a new connection may reach: the host is
resolved once, every address is checked, and the socket connects to a checked address, so a
second DNS answer (rebinding) never gets a say. Sessions get both through `BoundedAdapter`.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_CHUNK = 64 * 1024


class AddressRefused(Exception):
    """A connection was refused before it was made: the host resolves to an address the call's
    check does not allow. Not an OSError, so urllib3 neither wraps nor retries it."""


class TooLarge(Exception):
    """A body grew past its cap (or declared a length over it)."""


class DeadlineExpired(Exception):
    """The call's wall-clock deadline cut it off (however the transfer was going)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no complete answer within {seconds:.0f} s")
        self.seconds = seconds


class Deadline:
    """One call's wall-clock limit and the sockets it has used."""

    def __init__(self, seconds: float, check: Callable[[str, str], None] | None = None) -> None:
        self.seconds = seconds
        self.expires = time.monotonic() + seconds
        self.check = check  # (host, address) -> None, or raises AddressRefused
        self.expired = False
        self._closed = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def remaining(self) -> float:
        return max(self.expires - time.monotonic(), 0.0)

    def watch(self, sock: socket.socket | None) -> None:
        """Register a socket of this call; one registered after expiry is shut at once."""
        if sock is None:
            return
        with self._lock:
            if self.expired:
                _shutdown(sock)
            elif sock not in self._sockets:
                self._sockets.append(sock)

    def fire(self) -> None:
        with self._lock:
            if self._closed:  # the call ended in time; its sockets may serve other calls now
                return
            self.expired = True
            for sock in self._sockets:
                _shutdown(sock)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._sockets.clear()


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread for the whole process: fires deadlines in expiry order."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Deadline]] = []
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, deadline: Deadline) -> None:
        with self._cond:
            heapq.heappush(self._heap, (deadline.expires, next(self._counter), deadline))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="comet-net-deadlines", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                expires, _, deadline = self._heap[0]
                wait = expires - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
            deadline.fire()


_watchdog = _Watchdog()
_local = threading.local()


def current() -> Deadline | None:
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else None


@contextlib.contextmanager
def bounded(seconds: float, check: Callable[[str, str], None] | None = None) -> Iterator[Deadline]:
    """Run the requests made in this block (on sessions with BoundedAdapter) within `seconds`
    of wall-clock time; `check(host, address)` vets every address a new connection would use."""
    deadline = Deadline(seconds, check)
    stack = _local.__dict__.setdefault("stack", [])
    stack.append(deadline)
    _watchdog.add(deadline)
    try:
        yield deadline
    finally:
        stack.pop()
        deadline.close()


def read_capped(response: requests.Response, max_bytes: int) -> bytes:
    """The (decoded) body, refused as soon as it passes `max_bytes`, whatever Content-Length says.
    Needs `stream=True`; the time limit is the surrounding `bounded()` block's: a body without a
    length ends when its connection closes, so one cut off by the deadline looks complete, and
    is refused here instead."""
    length = response.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > max_bytes:
        response.close()
        raise TooLarge(f"{int(length)} bytes declared, more than the {max_bytes} allowed")
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            response.close()
            raise TooLarge(f"more than the {max_bytes} bytes allowed")
        chunks.append(chunk)
    deadline = current()
    if deadline is not None and deadline.expired:
        raise DeadlineExpired(deadline.seconds)
    return b"".join(chunks)


# ---- connections that obey the current call's deadline and address check ----------------------


class _Bounded:
    """Mixin for urllib3 connections: register the socket with the call's deadline whenever the
    connection is used, and open new sockets only to checked addresses."""

    def _new_conn(self) -> socket.socket:  # type: ignore[override]
        deadline = current()
        if deadline is None or deadline.check is None:
            sock = super()._new_conn()  # type: ignore[misc]
        else:
            sock = self._connect_checked(deadline)
        if deadline is not None:
            deadline.watch(sock)
        return sock

    def _connect_checked(self, deadline: Deadline) -> socket.socket:
        host = self._dns_host  # type: ignore[attr-defined]
        try:
            infos = socket.getaddrinfo(host, self.port, type=socket.SOCK_STREAM)  # type: ignore[attr-defined]
        except (socket.gaierror, UnicodeError) as exc:
            raise OSError(f"could not resolve {host}") from exc
        for info in infos:  # every address must pass, not just the one that answers first
            deadline.check(host, info[4][0])
        error: OSError | None = None
        for family, kind, proto, _name, address in infos:
            sock = socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.settimeout(min(self.timeout if isinstance(self.timeout, (int, float)) else 5.0,  # type: ignore[attr-defined]
                                    max(deadline.remaining(), 0.01)))
                sock.connect(address)  # the address that was checked: no second lookup
                return sock
            except OSError as exc:
                sock.close()
                error = exc
        raise error or OSError(f"could not connect to {host}")

    def request(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        deadline = current()
        if deadline is not None:
            deadline.watch(getattr(self, "sock", None))  # a kept-alive socket from the pool
        super().request(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_Bounded, HTTPConnection):
    pass


class _HTTPSConnection(_Bounded, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class BoundedAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections follow `bounded()`; outside such a block it behaves as
    a plain HTTPAdapter."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


def session(adapter: HTTPAdapter | None = None) -> requests.Session:
    """A session with BoundedAdapter mounted that ignores the environment (no netrc credentials
    or proxies: what we attach is all that is sent)."""
    new = requests.Session()
    new.trust_env = False
    adapter = adapter or BoundedAdapter()
    new.mount("http://", adapter)
    new.mount("https://", adapter)
    return new
