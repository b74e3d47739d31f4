"""Throttling of password attempts, shared by every session of a server process.

Per-session counting would be useless (a reload starts a new session), so failures are counted
per client address and in total: a guesser is slowed down whoever they claim to be."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class Throttle:
    def __init__(
        self,
        *,
        max_failures: int = 5,
        window: float = 300.0,
        lockout: float = 60.0,
        global_max_failures: int = 50,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max = max_failures
        self._global_max = global_max_failures
        self._window = window
        self._lockout = lockout
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}
        self._all: deque[float] = deque()

    def wait_seconds(self, who: str) -> float:
        """How long `who` must wait before the next attempt (0 when they may try now)."""
        with self._lock:
            now = self._clock()
            waits = [self._wait(self._failures.get(who, deque()), self._max, now),
                     self._wait(self._all, self._global_max, now)]
            return max(waits)

    def failed(self, who: str) -> None:
        with self._lock:
            now = self._clock()
            self._failures.setdefault(who, deque()).append(now)
            self._all.append(now)
            self._prune(now)

    def succeeded(self, who: str) -> None:
        with self._lock:
            self._failures.pop(who, None)

    def _wait(self, failures: deque[float], limit: int, now: float) -> float:
        recent = [t for t in failures if now - t < self._window]
        if len(recent) < limit:
            return 0.0
        return max(self._lockout - (now - recent[-1]), 0.0)

    def _prune(self, now: float) -> None:
        for key in [k for k, q in self._failures.items() if q and now - q[-1] >= self._window]:
            del self._failures[key]
        while self._all and now - self._all[0] >= self._window:
            self._all.popleft()
