"""Load: 20 browser sessions creating and watching predictions at once against the stand-in, for
a bounded time. Every create is recorded exactly once, every prediction ends, nothing raises.
The figures are printed (run with -s to see them; the README quotes them)."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

from comet.config import Settings
from comet.sim import Sim
from comet.store import Store, predictions
from support.apphost import AppServer, generate_in_each, launch_chromium

SESSIONS = 20
DEADLINE = 420.0
KEY = "sk-load-test-key-0000000000000000"

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(540)]


def test_twenty_sessions_create_and_watch_at_once(tmp_path):
    with Sim(start_delay=0.3, run_time=3.0) as standin, sync_playwright() as playwright:
        env = {"COMETAPI_KEY": KEY, "COMETAPI_BASE_URL": standin.url}
        with AppServer(tmp_path, env=env) as app:
            browser = launch_chromium(playwright)
            pages = [browser.new_context(viewport={"width": 1280, "height": 900}).new_page() for _ in range(SESSIONS)]
            started = time.monotonic()
            generate_in_each(pages, app.url, [f"load test prompt {n}" for n in range(SESSIONS)], timeout=90_000)
            finished, stuck = 0, []
            for n, page in enumerate(pages):  # every session watches its own card until the image shows
                remaining = max(DEADLINE - (time.monotonic() - started), 1) * 1000
                try:
                    page.get_by_test_id("stImage").first.wait_for(timeout=remaining)
                    finished += 1
                except PlaywrightTimeout:  # say what that session shows instead
                    stuck.append(f"session {n}: {page.get_by_test_id('stMain').inner_text()[:600]!r}")
            elapsed = time.monotonic() - started
            exceptions = sum(page.get_by_test_id("stException").count() for page in pages)
            browser.close()
        creates = [r for r in standin.requests if r["method"] == "POST"]
        status_gets = [r for r in standin.requests if r["method"] == "GET" and r["path"].startswith("/replicate/")]

    store = Store.for_settings(Settings.from_sources({"COMETAPI_KEY": KEY}, {"COMET_DATA_DIR": str(tmp_path)}))
    with store._engine.connect() as conn:  # noqa: SLF001 (the test reads the raw rows)
        rows = conn.execute(sa.select(predictions.c.id, predictions.c.status, predictions.c.prompt)).all()
    store.close()
    print(
        f"\nload: {SESSIONS} browser sessions, {len(creates)} creates, {len(rows)} recorded, "
        f"{sum(r.status == 'succeeded' for r in rows)} succeeded, {len(status_gets)} upstream status requests, "
        f"{exceptions} exceptions on screen, {elapsed:.0f} s"
    )
    assert exceptions == 0
    assert finished == SESSIONS, "\n".join(stuck)
    assert len(creates) == SESSIONS
    assert sorted(r.prompt for r in rows) == sorted(f"load test prompt {n}" for n in range(SESSIONS))
    assert len({r.id for r in rows}) == SESSIONS
    assert all(r.status == "succeeded" for r in rows)
