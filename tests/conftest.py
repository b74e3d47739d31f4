"""Fixtures every test folder uses: the local CometAPI stand-in on a real loopback socket and a
client for it, a cold app environment, and the history databases. Helpers live in support/."""

from __future__ import annotations

import os
import tempfile

import pytest
import streamlit as st

from comet.client import Client, Timeouts
from comet.sim import Sim
from comet.store import Store
from support.api import FAST_RETRY, KEY
from support.backends import fresh_database


def pytest_configure(config):
    # An app opened without app_env keeps its history in a folder of this run, never in the
    # repository's data/.
    if not os.environ.get("COMET_DATA_DIR"):
        os.environ["COMET_DATA_DIR"] = tempfile.mkdtemp(prefix="comet-tests-")


@pytest.fixture
def sim():
    with Sim(start_delay=0.05, run_time=0.2) as server:
        yield server


@pytest.fixture
def client(sim):
    api = Client(sim.url, KEY, retry=FAST_RETRY, timeouts=Timeouts(connect=2, read_status=5, read_create=5))
    yield api
    api.close()


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


# ---- history backends: the store and tracker tests run on SQLite and on PostgreSQL ---------------


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """A new, empty history database on each backend (support/backends.py)."""
    with fresh_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def store(database_url):
    """The history store on a new database of each backend."""
    history = Store(database_url)
    yield history
    history.close()


@pytest.fixture
def postgres_url(tmp_path):
    """A new, empty PostgreSQL history database, for what only a server can show."""
    with fresh_database("postgresql", tmp_path) as url:
        yield url
