"""Shared fixtures: a local CometAPI stand-in on a real loopback socket, and clients for it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import streamlit as st
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest, app_test

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


APP = Path(__file__).resolve().parent.parent / "streamlit_app.py"


@pytest.fixture
def app_env(tmp_path, monkeypatch):
    """A cold app with its own data folder and no settings from the developer's environment."""
    for name in ("COMETAPI_KEY", "COMETAPI_BASE_URL", "COMET_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COMET_DATA_DIR", str(tmp_path))
    # Caches outlive an AppTest within one pytest process; clearing them also stops the
    # previous test's tracker and demo stand-in (their on_release).
    st.cache_data.clear()
    st.cache_resource.clear()
    yield tmp_path
    st.cache_resource.clear()


def open_app(page: str | None = None, query: dict | None = None, **secrets) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=30)
    for name, value in secrets.items():
        at.secrets[name] = value
    for name, value in (query or {}).items():
        at.query_params[name] = value
    at.run()
    if page:
        at.switch_page(page).run()
    return at


def sent_body(at: AppTest) -> dict:
    """The request body the Create page shows in its JSON tab (what Generate would send)."""
    for block in at.code:
        if block.language == "json":
            return json.loads(block.value)
    raise AssertionError("no JSON request preview on the page")


# ---- history backends: the store and tracker tests run on SQLite and on PostgreSQL ---------------


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """A new, empty history database on each backend (tests/backends.py)."""
    from backends import fresh_database

    with fresh_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def store(database_url):
    """The history store on a new database of each backend."""
    from comet.store import Store

    history = Store(database_url)
    yield history
    history.close()


@pytest.fixture
def postgres_url(tmp_path):
    """A new, empty PostgreSQL history database, for what only a server can show."""
    from backends import fresh_database

    with fresh_database("postgresql", tmp_path) as url:
        yield url


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


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium per test module (Debian's where it exists)."""
    from playwright.sync_api import sync_playwright

    from apphost import launch_chromium

    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def media(monkeypatch):
    """(manager, storage) of every run's MediaFileManager: where AppTest keeps images and deferred
    downloads, so a test can read what a download button would give."""
    made: list[tuple[MediaFileManager, object]] = []

    class Recording(MediaFileManager):
        def __init__(self, storage, *args, **kwargs):
            super().__init__(storage, *args, **kwargs)
            made.append((self, storage))

    monkeypatch.setattr(app_test, "MediaFileManager", Recording)
    return made
