"""Faults on the way survive with nothing lost: each status-poll fault of the stand-in, every
output shape, expired files, and a briefly locked database. A killed or stopped app process:
tests/browser/test_app_restarts.py."""

from __future__ import annotations

import math
import sqlite3
import threading
import time

import pytest

from comet.client import Client, Timeouts
from comet.config import Settings
from comet.prediction import Prediction
from comet.sim import Sim
from comet.store import Store
from comet.tracker import Tracker
from support.api import FAST_RETRY, KEY
from support.waiting import wait_until

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
