"""Faults on the way survive with nothing lost: each status-poll fault of the stand-in, every
output shape, expired files, a killed app, and a briefly locked database."""

from __future__ import annotations

import math
import signal
import sqlite3
import threading
import time

import pytest
from playwright.sync_api import expect, sync_playwright

from apphost import AppServer, launch_chromium, wait_until_idle
from comet.client import Client, Timeouts
from comet.config import Settings
from comet.prediction import Prediction
from comet.sim import Sim
from comet.store import Store
from comet.tracker import Tracker
from conftest import FAST_RETRY, KEY, wait_until

SCHNELL = "black-forest-labs/flux-schnell"
FAST = {"schedule": ((math.inf, 0.05),), "backoff": (0.05, 0.3), "max_sleep": 0.1}



@pytest.fixture
def rig(tmp_path):
    """The stand-in, a client with a short read timeout (a hang must not take 90 s here), the
    app's store on a real SQLite file, and one tracker."""
    with Sim(start_delay=0.05, run_time=0.3) as sim:
        client = Client(sim.url, KEY, retry=FAST_RETRY, timeouts=Timeouts(connect=2, read_status=1, read_create=5))
        store = Store.for_settings(Settings.from_sources({"COMETAPI_KEY": KEY}, {"COMET_DATA_DIR": str(tmp_path)}))
        tracker = Tracker(client, store, allow_private_downloads=True, **FAST).start()
        yield sim, client, store, tracker
        tracker.stop()
        store.close()
        client.close()


def finished(store: Store, prediction_id: str):
    record = store.get(prediction_id)
    return record if record is not None and record.tracking != "active" else None


@pytest.mark.parametrize(
    "kind, times, extra",
    [
        ("429", 2, {"retry_after": 1}),
        ("500", 6, {}),
        ("503", 6, {}),
        ("504", 6, {}),
        ("524", 6, {}),
        ("301", 2, {}),
        ("hang", 1, {"delay": 3}),
        ("drop", 6, {}),
        ("malformed", 3, {}),
        ("status:queued", 3, {}),
    ],
)
def test_a_status_poll_fault_delays_but_never_loses_a_prediction(rig, kind, times, extra):
    sim, client, store, tracker = rig
    prediction = client.create(SCHNELL, {"prompt": f"survive {kind}"})
    sim.add_fault(route="get", kind=kind, times=times, **extra)
    tracker.track(prediction)
    record = wait_until(lambda: finished(store, prediction.id))
    assert record.status == "succeeded" and record.tracking == "done"
    assert len(record.outputs) == 1 and store.output_bytes(prediction.id, 0)[1]


@pytest.mark.parametrize("style, count", [("string", 1), ("list", 1), ("data_uri", 1)])
def test_every_output_shape_is_stored(rig, style, count):
    sim, client, store, tracker = rig
    sim.output_style = style
    prediction = client.create(SCHNELL, {"prompt": f"shape {style}"})
    tracker.track(prediction)
    record = wait_until(lambda: finished(store, prediction.id))
    assert record.status == "succeeded" and len(record.outputs) == count


def test_outputs_that_expired_before_saving_are_reported_not_retried_forever(rig):
    sim, client, store, tracker = rig
    sim.expire = 0.0
    tracker.stop()  # nobody watches while the files expire
    prediction = client.create(SCHNELL, {"prompt": "too late"})
    wait_until(lambda: client.get(prediction.id).data_removed)
    store.record(prediction)
    tracker.start()
    record = wait_until(lambda: finished(store, prediction.id))
    assert record.tracking == "gave_up" and "expired" in (record.note or "")


def test_writes_wait_for_a_briefly_locked_database_instead_of_failing(rig, tmp_path):
    sim, client, store, tracker = rig
    tracker.stop()
    database = next(tmp_path.glob("history*.sqlite"))
    blocker = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN EXCLUSIVE")
    released = threading.Timer(1.0, lambda: blocker.execute("COMMIT"))
    released.start()
    try:
        started = time.monotonic()
        store.record(Prediction.from_json({"id": "lockedwrite00000000000000", "status": "starting"}))
        assert time.monotonic() - started >= 0.9
    finally:
        released.join()
        blocker.close()
    assert store.get("lockedwrite00000000000000") is not None


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
