"""The key the tests talk to the stand-in with, a quick retry policy, and what reached its API."""

from __future__ import annotations

from comet.client import RetryPolicy

# Short waits keep the retry tests quick; the policy's shape (what is retried) is unchanged.
FAST_RETRY = RetryPolicy(attempts=3, backoff=0.05, backoff_max=0.2, jitter=0.0, retry_after_max=5.0)
KEY = "sk-test-0123456789abcdefghij"


def api_requests(sim, method=None, path_part=""):
    """What reached the stand-in's API routes (not its file downloads)."""
    return [
        r
        for r in sim.requests
        if r["path"].startswith("/replicate/")
        and (method is None or r["method"] == method)
        and path_part in r["path"]
    ]
