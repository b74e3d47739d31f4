"""Waiting for what happens in other threads and processes: the tracker, the stand-in, a page's
timers. Each wait fails with an AssertionError after its timeout instead of hanging."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the core tests wait too, without importing Streamlit
    from streamlit.testing.v1 import AppTest


def wait_until(condition, timeout: float = 20.0, pause: float = 0.05):
    """Poll `condition` until it returns something truthy (returned), or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        if value := condition():
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s")
        time.sleep(pause)


def rerun_until(at: AppTest, condition, timeout: float = 20.0) -> AppTest:
    """What the browser's timers would do: run the page again until `condition(at)` holds."""
    def again():
        at.run()
        assert not at.exception, at.exception
        return condition(at)

    wait_until(again, timeout, pause=0.2)
    return at
