"""Throttling of password attempts, shared by every session of a server process.

Wrong attempts slow only the one who makes them: failures are counted per key (a browser
session, and the client's address when it can be trusted), and only a key's own failures make it
wait. Nothing server-wide ever refuses anyone: a flood of wrong passwords from elsewhere only makes
wrong answers slower (bounded), so a teammate's right password always gets in at once."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping


class Throttle:
    def __init__(
        self,
        *,
        max_failures: int = 5,
        window: float = 300.0,
        lockout: float = 60.0,
        flood_failures: int = 50,
        max_slowdown: float = 2.0,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max = max_failures
        self._window = window
        self._lockout = lockout
        self._flood = max(flood_failures, max_failures + 1)
        self._max_slowdown = max_slowdown
        self._max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        # Only the last `max_failures` of a key matter, and keys are kept in order of their last
        # failure, so memory stays bounded however many sessions a flood opens.
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._all: deque[float] = deque(maxlen=self._flood)

    def wait_seconds(self, keys: str | Iterable[str]) -> float:
        """How long this client must wait before its next attempt (0 when it may try now).
        Only its own keys count: other clients' failures never make it wait."""
        with self._lock:
            now = self._clock()
            return max((self._wait(self._failures.get(key), now) for key in _keys(keys)), default=0.0)

    def failed(self, keys: str | Iterable[str]) -> float:
        """Record a wrong password; returns how long to hold back the answer "not right": nothing
        while few are guessing, growing with the server-wide failures up to `max_slowdown`."""
        with self._lock:
            now = self._clock()
            for key in _keys(keys):
                failures = self._failures.pop(key, None) or deque(maxlen=self._max)
                failures.append(now)
                self._failures[key] = failures  # to the end: the most recent failure
            self._all.append(now)
            self._prune(now)
            # The first few wrong passwords server-wide are a team's typos: no slow-down for those.
            surplus = len(self._all) - self._max
            return self._max_slowdown * min(max(surplus, 0) / (self._flood - self._max), 1.0)

    def succeeded(self, keys: str | Iterable[str]) -> None:
        with self._lock:
            for key in _keys(keys):
                self._failures.pop(key, None)

    def _wait(self, failures: deque[float] | None, now: float) -> float:
        if not failures or len(failures) < self._max or now - failures[0] >= self._window:
            return 0.0
        return max(self._lockout - (now - failures[-1]), 0.0)

    def _prune(self, now: float) -> None:
        while self._failures:
            oldest = next(iter(self._failures.values()))
            if now - oldest[-1] < self._window and len(self._failures) <= self._max_keys:
                break
            self._failures.popitem(last=False)
        while self._all and now - self._all[0] >= self._window:
            self._all.popleft()


def _keys(keys: str | Iterable[str]) -> list[str]:
    return [keys] if isinstance(keys, str) else list(keys)


# Headers only a proxy adds. With none of ours in front, their presence means either a client wrote
# them or an unknown proxy stands between: the peer address then names the proxy, not a visitor
# (everyone behind it would share one bucket), so no address is used.
PROXY_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")


def client_keys(
    session: str, ip_address: str | None, headers: Mapping[str, str], trusted_proxies: int
) -> list[str]:
    """The throttle keys of one client: its browser session, and its address when trusted.

    `trusted_proxies` is how many proxies the operator says stand in front of the app, each
    appending the address it saw to X-Forwarded-For."""
    keys = [f"session:{session}"]
    if address := client_address(ip_address, headers, trusted_proxies):
        keys.append(f"address:{address}")
    return keys


def client_address(ip_address: str | None, headers: Mapping[str, str], trusted_proxies: int) -> str | None:
    """The client's address, or None when it cannot be trusted."""
    if trusted_proxies <= 0:
        if any(_header_values(headers, name) for name in PROXY_HEADERS):
            return None
        return _address_key(ip_address) if ip_address else None
    entries = [entry.strip() for value in _header_values(headers, "X-Forwarded-For") for entry in value.split(",")]
    if len(entries) < trusted_proxies:
        return None
    # Our outermost proxy appended the N-th entry from the right; all left of it the client wrote.
    address = entries[-trusted_proxies]
    return _address_key(address) if address else None


def _header_values(headers: Mapping[str, str], name: str) -> list[str]:
    """Every value of a header, in order (a header may be sent more than once)."""
    if hasattr(headers, "get_all"):  # st.context.headers
        return list(headers.get_all(name))
    return [value for key, value in headers.items() if key.lower() == name.lower()]


def _address_key(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return address.strip().lower()
    if ip.version == 6:
        if ip.ipv4_mapped:
            return str(ip.ipv4_mapped)
        # One IPv6 subscriber holds a whole /64: throttle the network, or rotating within it evades.
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
