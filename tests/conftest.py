"""Shared fixtures: a local CometAPI stand-in on a real loopback socket, and clients for it."""

from __future__ import annotations

import pytest

from comet.client import Client, RetryPolicy, Timeouts
from comet.sim import Sim

# Short waits keep the retry tests quick; the policy's shape (what is retried) is unchanged.
FAST_RETRY = RetryPolicy(attempts=3, backoff=0.05, backoff_max=0.2, jitter=0.0, retry_after_max=5.0)
KEY = "sk-test-0123456789abcdefghij"


@pytest.fixture
def sim():
    with Sim(start_delay=0.05, run_time=0.2) as server:
        yield server


@pytest.fixture
def client(sim):
    api = Client(sim.url, KEY, retry=FAST_RETRY, timeouts=Timeouts(connect=2, read_status=5, read_create=5))
    yield api
    api.close()


def api_requests(sim, method=None, path_part=""):
    """What reached the stand-in's API routes (not its file downloads)."""
    return [
        r
        for r in sim.requests
        if r["path"].startswith("/replicate/")
        and (method is None or r["method"] == method)
        and path_part in r["path"]
    ]
