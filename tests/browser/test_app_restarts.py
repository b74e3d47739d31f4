"""The real app process (`streamlit run`) killed mid-poll or stopped cleanly loses nothing: its
predictions are finished after a restart, or handed over at once to another replica."""

from __future__ import annotations

import signal

import pytest
from playwright.sync_api import expect, sync_playwright

from comet.client import Client
from comet.config import Settings
from comet.sim import Sim
from comet.store import Store
from support.api import KEY
from support.apphost import AppServer, launch_chromium, wait_until_idle
from support.waiting import wait_until


def finished(store: Store, prediction_id: str):
    record = store.get(prediction_id)
    return record if record is not None and record.tracking != "active" else None


@pytest.mark.e2e
def test_killing_the_app_mid_poll_loses_nothing_after_a_restart(tmp_path):
    with Sim(start_delay=0.2, run_time=6.0) as standin, sync_playwright() as playwright:
        env = {"COMETAPI_KEY": KEY, "COMETAPI_BASE_URL": standin.url}
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        app = AppServer(tmp_path, env=env).start()
        try:
            page.goto(app.url)
            wait_until_idle(page)
            box = page.get_by_role("textbox", name="Prompt")
            box.fill("survive a crash")
            box.press("Tab")
            wait_until_idle(page)
            page.get_by_role("button", name="Generate").click()
            expect(page.get_by_text("Generating")).to_be_visible(timeout=20_000)
            app.kill()  # mid-poll, no clean shutdown
            store = Store.for_settings(Settings.from_sources({"COMETAPI_KEY": KEY}, {"COMET_DATA_DIR": str(tmp_path)}))
            [prediction_id] = store.unfinished_ids()
            store.close()
            app = AppServer(tmp_path, env=env).start()  # nobody opens a page: the tracker resumes alone
            store = Store.for_settings(Settings.from_sources({"COMETAPI_KEY": KEY}, {"COMET_DATA_DIR": str(tmp_path)}))
            # No page is opened: the server starts the tracker itself (streamlit_app.py's st.App).
            record = wait_until(lambda: finished(store, prediction_id), timeout=40)
            assert record.status == "succeeded" and record.outputs
            store.close()
            page.goto(f"{app.url}/history?id={prediction_id}")  # and the restarted app shows it
            expect(page.get_by_test_id("stImage").first).to_be_visible(timeout=30_000)
        finally:
            app.stop()
            browser.close()


def test_a_cleanly_stopped_app_hands_its_predictions_over_at_once(tmp_path):
    """A redeploy stops the server with SIGTERM: its tracker releases what it was following, so
    another replica takes over now, not when the lease (60 s) runs out. No page is opened."""
    with Sim(start_delay=0.2, run_time=120.0) as standin:
        settings = Settings.from_sources({"COMETAPI_KEY": KEY}, {"COMET_DATA_DIR": str(tmp_path)})
        store = Store.for_settings(settings)
        with Client(standin.url, KEY) as client:
            store.record(client.create("black-forest-labs/flux-schnell", {"prompt": "a long job"}))
        [prediction_id] = store.unfinished_ids()
        standin.add_fault(route="get", kind="hang", delay=60.0)  # the app's first poll is in flight at the stop
        app = AppServer(tmp_path, env={"COMETAPI_KEY": KEY, "COMETAPI_BASE_URL": standin.url}).start()
        try:
            wait_until(lambda: store.get(prediction_id).lease_owner, timeout=30)  # claimed, no page opened
        finally:
            app.stop()  # SIGTERM, as a redeploy sends it
        assert app.process.returncode != -signal.SIGKILL, "it stopped by itself, within AppServer.stop's 10 s"
        record = store.get(prediction_id)
        assert (record.lease_owner, record.tracking) == (None, "active")
        store.close()
