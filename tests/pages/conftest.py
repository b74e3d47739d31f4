"""Fixtures of the page tests (Streamlit's AppTest, in this process)."""

from __future__ import annotations

import pytest
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import app_test

from comet.store import Store
from support.history import History, app_settings


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


@pytest.fixture
def history(sim, client, app_env):
    """The app's own history (support/history.py), for the page under test to show."""
    store = Store.for_settings(app_settings(sim))
    yield History(sim, client, store)
    store.close()
