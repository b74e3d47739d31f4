"""The history database goes away and comes back (a PostgreSQL restart, dropped connections): the
app says "history unavailable" instead of crashing, the tracker keeps its place, and afterwards
nothing is lost or stored twice. PostgreSQL only: an SQLite file cannot drop a connection."""

from __future__ import annotations

import math
import threading
import time

import pytest
import sqlalchemy as sa

from comet.store import HistoryUnavailable, Store, outputs
from comet.tracker import Tracker
from support.backends import cut_connections, postgres_ctl
from support.waiting import wait_until

SCHNELL = "black-forest-labs/flux-schnell"
FAST = {"schedule": ((math.inf, 0.05),), "backoff": (0.05, 0.2), "max_sleep": 0.1, "lease": 2.0}



def all_settled(store: Store, ids: list[str]):
    def check():
        try:
            records = [store.get(pid) for pid in ids]
        except HistoryUnavailable:
            return None
        return records if all(r and r.tracking != "active" for r in records) else None

    return check


def outputs_per_prediction(url: str) -> dict[str, int]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(outputs.c.prediction_id, sa.func.count()).group_by(outputs.c.prediction_id))
        counted = dict(rows.all())
    engine.dispose()
    return counted


def test_dropped_connections_are_retried_unseen_by_readers_and_the_tracker(sim, client, postgres_url):
    sim.configure(run_time=1.0)
    store = Store(postgres_url)
    stop = threading.Event()
    problems: list[BaseException] = []
    cuts = []

    def cutter() -> None:  # the server drops every connection of the app, again and again
        while not stop.wait(0.25):
            cuts.append(cut_connections(postgres_url))

    def viewer() -> None:  # a browser session on the History page
        while not stop.is_set():
            try:
                store.page(limit=20)
                store.count()
                store.unfinished_statuses()
            except BaseException as exc:
                problems.append(exc)

    with Tracker(client, store, allow_private_downloads=True, **FAST) as tracker:
        threads = [threading.Thread(target=cutter), threading.Thread(target=viewer)]
        for thread in threads:
            thread.start()
        made = [client.create(SCHNELL, {"prompt": f"through dropped connections {n}"}) for n in range(8)]
        for prediction in made:
            tracker.track(prediction)
        records = wait_until(all_settled(store, [p.id for p in made]), timeout=30)
        stop.set()
        for thread in threads:
            thread.join()

    assert sum(cuts) > 0, "connections were really cut"
    assert problems == []
    assert [(r.status, r.tracking, r.output_count) for r in records] == [("succeeded", "done", 1)] * 8
    assert outputs_per_prediction(postgres_url) == {p.id: 1 for p in made}
    store.close()


def test_a_database_restart_shows_history_unavailable_then_everything_finishes(sim, client, postgres_url):
    sim.configure(run_time=1.5)
    store = Store(postgres_url, retry_delays=(0.05, 0.1))
    with Tracker(client, store, allow_private_downloads=True, **FAST) as tracker:
        made = [client.create(SCHNELL, {"prompt": f"before the restart {n}"}) for n in range(5)]
        for prediction in made:
            tracker.track(prediction)
        wait_until(lambda: all(store.get(p.id).last_polled_at for p in made))

        postgres_ctl("stop")
        try:
            assert not store.available()
            with pytest.raises(HistoryUnavailable, match="History is unavailable"):
                store.page(limit=20)
            with pytest.raises(HistoryUnavailable):
                store.get(made[0].id)
            # A prediction made while the history is down is kept by the tracker, not lost.
            during = client.create(SCHNELL, {"prompt": "made during the restart"})
            tracker.track(during)
            assert tracker.unrecorded == [during.id]
            time.sleep(2.0)  # the runs finish upstream meanwhile; the tracker keeps trying
        finally:
            postgres_ctl("start")

        ids = [p.id for p in made] + [during.id]
        records = wait_until(all_settled(store, ids), timeout=30)
        assert tracker.unrecorded == []

    assert store.available()
    assert [(r.status, r.tracking, r.output_count) for r in records] == [("succeeded", "done", 1)] * 6
    assert outputs_per_prediction(postgres_url) == dict.fromkeys(ids, 1), "nothing stored twice"
    store.close()
