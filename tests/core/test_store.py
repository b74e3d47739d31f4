"""History keeps every prediction and its images: nothing lost, nothing doubled, quick to page.

Every test here runs twice, on an SQLite file and on PostgreSQL (the `database_url` fixture,
tests/support/backends.py), since the same store code serves both."""

from __future__ import annotations

import base64
import io
import math
import os
import sqlite3
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa
from PIL import Image
from sqlalchemy.exc import IntegrityError

from comet.config import Settings
from comet.fetch import StoredFile
from comet.prediction import Prediction
from comet.store import (
    PAGE_COLUMNS,
    SCHEMA_VERSION,
    HistoryError,
    HistoryFilter,
    Store,
    meta,
    metadata,
    outputs,
    predictions,
)
from comet.store import database_url as resolved_url
from support.api import KEY

SCHNELL, DEV = "black-forest-labs/flux-schnell", "black-forest-labs/flux-dev"
START = datetime(2026, 1, 1, tzinfo=UTC)


def prediction(n: int, *, status="starting", prompt="a cat", model=SCHNELL, **extra) -> Prediction:
    """A prediction as the API would send it, created `n` minutes after START."""
    created = (START + timedelta(minutes=n)).isoformat().replace("+00:00", "Z")
    return Prediction.from_json({"id": pid(n), "model": model, "status": status, "input": {"prompt": prompt},
                                 "created_at": created, **extra})


def pid(n: int) -> str:
    return f"p{n:025d}"


def image(size: tuple[int, int] = (512, 320), fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def store(database_url):
    history = Store(database_url)
    yield history
    history.close()


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def sqlite_path(url: str) -> str:
    return sa.make_url(url).database


def test_a_prediction_is_remembered_from_its_id_to_its_saved_images(store):
    store.record(prediction(1, prompt="a lighthouse at dusk"), creator="ana")
    first = store.get(pid(1))
    assert (first.status, first.tracking, first.creator) == ("starting", "active", "ana")
    assert first.prompt == "a lighthouse at dusk" and first.input == {"prompt": "a lighthouse at dusk"}
    assert first.created_at == START + timedelta(minutes=1)
    assert first.next_poll_at is not None and not first.is_terminal

    store.update(prediction(1, status="processing", logs="Using seed: 7\n 50%|█████ | 2/4 [00:01<00:01]\n"))
    assert store.get(pid(1)).progress == 0.5

    done = prediction(1, status="succeeded", output=["https://replicate.delivery/a.png"],
                      started_at="2026-01-01T00:01:02Z", completed_at="2026-01-01T00:01:05Z")
    store.update(done)
    waiting = store.get(pid(1))
    assert waiting.status == "succeeded" and waiting.run_time == 3.0
    assert waiting.tracking == "active", "a success stays tracked until its images are stored"

    store.save_outputs(pid(1), [StoredFile("image/png", image(), "https://replicate.delivery/a.png")])
    saved = store.get(pid(1))
    assert (saved.tracking, saved.output_count, saved.progress) == ("done", 1, 1.0)
    assert saved.output_urls == ["https://replicate.delivery/a.png"]
    assert [(o.idx, o.content_type, o.size) for o in saved.outputs] == [(0, "image/png", len(image()))]
    assert store.output_bytes(pid(1), 0) == ("image/png", image())
    thumb_type, thumb = store.thumbnail(pid(1), 0)
    assert thumb_type == "image/jpeg" and max(Image.open(io.BytesIO(thumb)).size) == 128
    assert store.output_bytes(pid(1), 1) is None and store.get("nosuchprediction") is None


def test_a_thin_later_answer_does_not_erase_what_is_known(store):
    store.record(prediction(1, status="succeeded", output="https://replicate.delivery/a.png", logs="done\n"))
    expired = Prediction.from_json({"id": pid(1), "status": "succeeded", "output": None, "data_removed": True})

    store.update(expired)

    record = store.get(pid(1))
    assert record.output_urls == ["https://replicate.delivery/a.png"] and record.data_removed
    assert (record.model, record.prompt, record.logs_tail) == (SCHNELL, "a cat", "done\n")


@pytest.mark.parametrize("status", ["failed", "canceled", "aborted"])
def test_a_prediction_that_ended_without_images_is_done(store, status):
    store.record(prediction(1))
    store.update(prediction(1, status=status, error="Prediction failed: boom" if status != "canceled" else None))

    record = store.get(pid(1))
    assert (record.status, record.tracking, record.is_terminal) == (status, "done", True)
    assert store.unfinished_count() == 0


def test_recording_the_same_id_twice_keeps_one_row_with_the_latest_answer(store):
    store.record(prediction(1), creator="ana")
    store.record(prediction(1, status="processing"), creator="ben")

    assert store.count() == 1
    record = store.get(pid(1))
    assert record.status == "processing" and record.creator == "ana"


def test_saving_outputs_is_all_or_nothing(store):
    store.record(prediction(1, status="succeeded"))
    good = StoredFile("image/png", image(), "https://replicate.delivery/0.png")
    broken = StoredFile(None, image(), "https://replicate.delivery/1.png")  # NOT NULL fails on the 2nd row

    with pytest.raises(IntegrityError):
        store.save_outputs(pid(1), [good, broken])

    record = store.get(pid(1))
    assert (record.outputs, record.output_count, record.tracking) == ([], 0, "active")
    assert store.output_bytes(pid(1), 0) is None

    store.save_outputs(pid(1), [good, good])
    assert store.get(pid(1)).output_count == 2 and store.get(pid(1)).tracking == "done"


def test_an_image_that_cannot_be_thumbnailed_is_still_kept(store):
    store.record(prediction(1, status="succeeded"))
    store.save_outputs(pid(1), [StoredFile("image/png", b"truncated", "https://replicate.delivery/0.png")])

    assert store.output_bytes(pid(1), 0) == ("image/png", b"truncated")
    assert store.thumbnail(pid(1), 0) is None and store.page()["thumbnail"][0] is None


def test_twenty_threads_recording_at_once_on_one_file_lose_nothing(store):
    barrier = threading.Barrier(20)
    failures: list[BaseException] = []

    def session(worker: int) -> None:
        try:
            barrier.wait()
            for i in range(50):
                store.record(prediction(1000 + worker * 50 + i), creator=f"user{worker}")
                store.record(prediction(1))  # everyone also records one shared id
        except BaseException as exc:  # reported below, with the thread's traceback lost otherwise
            failures.append(exc)

    threads = [threading.Thread(target=session, args=(w,)) for w in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert store.count() == 1001
    assert all(store.count(HistoryFilter(creator=f"user{w}")) == 50 for w in range(20))


def test_the_history_page_filters_and_pages_in_sql_newest_first(store):
    rows = [
        (1, "succeeded", SCHNELL, "a cat in 100% wool", "ana"),
        (2, "failed", SCHNELL, "A CAT on a roof", "ben"),
        (3, "succeeded", DEV, "snake_case sign", "ana"),
        (4, "processing", DEV, "snakecase sign", None),
        (5, "aborted", SCHNELL, "100 percent", "ben"),
    ]
    for n, status, model, prompt, creator in rows:
        store.record(prediction(n, status=status, model=model, prompt=prompt), creator=creator)

    def shown(**chosen) -> list[str]:
        """The ids one filter selects, the same in the page, the count and the export."""
        where = HistoryFilter(**chosen)
        ids = list(store.page(where)["id"])
        assert store.count(where) == len(ids) and list(store.export_rows(where)["id"]) == ids
        return [int(i[1:]) for i in ids]

    page = store.page()
    assert list(page.columns) == PAGE_COLUMNS
    assert list(page["id"]) == [pid(5), pid(4), pid(3), pid(2), pid(1)]
    assert page["created"][0] == START + timedelta(minutes=5)
    assert list(store.page(limit=2, offset=2)["id"]) == [pid(3), pid(2)]
    assert list(store.page(HistoryFilter(models=(SCHNELL,)), limit=2, offset=1)["id"]) == [pid(2), pid(1)]
    assert shown(statuses=("succeeded", "failed")) == [3, 2, 1]
    assert shown(models=(DEV,)) == [4, 3]
    assert shown(models=(DEV, SCHNELL)) == [5, 4, 3, 2, 1]
    assert shown(text="cat") == [2, 1], "case-insensitive"
    assert shown(text="100%") == [1], "% is a literal percent sign"
    assert shown(text="snake_case") == [3], "_ is a literal underscore"
    assert shown(creator="ben") == [5, 2]
    assert shown(text="nothing like it") == []
    # Fields combine with AND.
    assert shown(creator="ben", statuses=("aborted",)) == [5]
    assert shown(text="sign", creator="ana") == [3]
    assert shown(models=(SCHNELL,), statuses=("succeeded", "aborted"), text="100") == [5, 1]
    assert shown(models=(DEV,), creator="ben") == []
    # An empty field means "any": the filter of nothing chosen shows everything.
    assert shown() == shown(statuses=(), models=(), text="  ", creator="") == [5, 4, 3, 2, 1]
    assert store.models() == [DEV, SCHNELL]


def test_a_filter_is_one_value_whatever_shape_its_choices_come_in():
    # A multiselect hands back lists; the page compares filters to know when to go to page 1.
    assert HistoryFilter(statuses=["failed"], models=[DEV]) == HistoryFilter(statuses=("failed",), models=(DEV,))
    assert HistoryFilter(statuses="failed").statuses == ("failed",), "one status, not its letters"
    assert HistoryFilter(text="  cat ").text == "cat" and HistoryFilter(text=" ").text is None
    assert HistoryFilter().matches_all and HistoryFilter(text=" ", creator="").matches_all
    assert not HistoryFilter(creator="ana").matches_all and not HistoryFilter(models=[DEV]).matches_all
    assert len({HistoryFilter(models=[DEV]), HistoryFilter(models=(DEV,))}) == 1


def test_page_rows_carry_a_thumbnail_of_their_first_image(store):
    store.record(prediction(1, status="succeeded"))
    store.record(prediction(2, status="processing"))
    store.save_outputs(pid(1), [StoredFile("image/webp", image(fmt="WEBP"), "https://x/0.webp")])

    page = store.page().set_index("id")

    assert page.loc[pid(2), "thumbnail"] is None and page.loc[pid(2), "outputs"] == 0
    uri = page.loc[pid(1), "thumbnail"]
    assert uri.startswith("data:image/jpeg;base64,") and page.loc[pid(1), "outputs"] == 1
    thumb = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert thumb.format == "JPEG" and thumb.size == (128, 80)


def test_the_poll_queue_holds_what_is_due_and_forgets_what_ended(store):
    for n in (1, 2, 3):
        store.record(prediction(n))
    store.mark_poll_failure(pid(2), "Last check failed: 503", next_poll_at=9e9)
    store.give_up(pid(3), "CometAPI no longer knows this prediction (404).")

    assert [r.id for r in store.due()] == [pid(1)]
    assert store.due(exclude=[pid(1)]) == []
    assert store.next_poll_time(exclude=[pid(1)]) == 9e9
    assert store.unfinished_ids() == [pid(2), pid(1)] and store.unfinished_count() == 2
    assert store.unfinished_statuses() == {pid(2): "starting", pid(1): "starting"}
    failing = store.get(pid(2))
    assert (failing.poll_failures, failing.note) == (1, "Last check failed: 503")
    assert store.get(pid(3)).tracking == "gave_up"

    store.update(prediction(2, status="processing"), next_poll_at=0)
    assert store.get(pid(2)).poll_failures == 0 and store.get(pid(2)).note is None


def test_reopening_the_database_keeps_the_history_and_its_schema_version(database_url):
    first = Store(database_url)
    first.record(prediction(1))
    first.close()

    again = Store(database_url)
    assert again.get(pid(1)).prompt == "a cat" and again.schema_version == SCHEMA_VERSION == 4
    again.close()
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        assert conn.scalar(sa.select(meta.c.value).where(meta.c.key == "schema_version")) == "4"
        if is_sqlite(database_url):
            assert conn.exec_driver_sql("pragma journal_mode").fetchone() == ("wal",)
        conn.execute(sa.update(meta).values(value="5"))
    engine.dispose()
    with pytest.raises(RuntimeError, match="newer release"):
        Store(database_url)


# What schema 1 (the first release) wrote into a new SQLite file, exactly (from sqlite_master).
V1_SQLITE_SCHEMA = """
CREATE TABLE meta ("key" VARCHAR(64) NOT NULL, value TEXT NOT NULL, PRIMARY KEY ("key"));
CREATE TABLE predictions (
    id VARCHAR(64) NOT NULL, model VARCHAR(200) NOT NULL, status VARCHAR(32) NOT NULL,
    input TEXT NOT NULL, prompt TEXT NOT NULL, error TEXT, logs_tail TEXT NOT NULL,
    created_at FLOAT NOT NULL, started_at FLOAT, completed_at FLOAT, run_time FLOAT,
    creator VARCHAR(200), recorded_at FLOAT NOT NULL, updated_at FLOAT NOT NULL,
    last_polled_at FLOAT, next_poll_at FLOAT, poll_failures INTEGER NOT NULL,
    tracking VARCHAR(16) NOT NULL, note TEXT, output_urls TEXT NOT NULL,
    data_removed BOOLEAN NOT NULL, output_count INTEGER NOT NULL, PRIMARY KEY (id)
);
CREATE INDEX ix_predictions_created ON predictions (created_at DESC, id DESC);
CREATE INDEX ix_predictions_creator ON predictions (creator, created_at, id);
CREATE INDEX ix_predictions_model ON predictions (model, created_at, id);
CREATE INDEX ix_predictions_status ON predictions (status, created_at, id);
CREATE INDEX ix_predictions_tracking ON predictions (tracking, next_poll_at);
CREATE TABLE outputs (
    prediction_id VARCHAR(64) NOT NULL, idx INTEGER NOT NULL, content_type VARCHAR(100) NOT NULL,
    size INTEGER NOT NULL, data BLOB NOT NULL, thumbnail BLOB, source_url TEXT NOT NULL,
    PRIMARY KEY (prediction_id, idx),
    FOREIGN KEY(prediction_id) REFERENCES predictions (id) ON DELETE CASCADE
);
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO predictions VALUES ('p0000000000000000000000001', 'black-forest-labs/flux-schnell', 'succeeded',
    '{"prompt": "kept from v1"}', 'kept from v1', NULL, '', 1767225660.0, 1767225661.0, 1767225664.0, 3.0,
    'ana', 1767225660.5, 1767225665.0, 1767225665.0, 1767225665.0, 0, 'done', NULL, '["https://x/0.png"]',
    0, 1);
INSERT INTO predictions VALUES ('p0000000000000000000000002', 'black-forest-labs/flux-dev', 'processing',
    '{"prompt": "still running in v1"}', 'still running in v1', NULL, '', 1767225720.0, NULL, NULL, NULL,
    NULL, 1767225720.5, 1767225721.0, 1767225721.0, 1767225722.0, 0, 'active', NULL, '[]', 0, 0);
INSERT INTO outputs VALUES ('p0000000000000000000000001', 0, 'image/png', 3, X'010203', NULL, 'https://x/0.png');
"""


def test_an_sqlite_file_written_by_the_first_release_is_migrated_and_kept(tmp_path):
    path = tmp_path / "history.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(V1_SQLITE_SCHEMA)

    history = Store(f"sqlite:///{path}")

    assert history.schema_version == 4
    kept = history.get(pid(1))
    assert (kept.prompt, kept.creator, kept.output_count, kept.lease_owner) == ("kept from v1", "ana", 1, None)
    assert history.output_bytes(pid(1), 0) == ("image/png", b"\x01\x02\x03")
    assert [r.id for r in history.claim_due("tracker-a", now=2e9)] == [pid(2)], "the unfinished one resumes"
    history.close()
    with sqlite3.connect(path) as conn:
        columns = {row[1] for row in conn.execute("pragma table_info(predictions)")}
        assert {"lease_owner", "lease_until"} <= columns
        assert conn.execute("select value from meta").fetchall() == [("4",)]


def test_a_version_1_database_on_either_backend_gains_the_lease_columns(database_url):
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:  # schema 1: today's tables without the lease columns
        metadata.create_all(conn)
        conn.exec_driver_sql("ALTER TABLE predictions DROP COLUMN lease_owner")
        conn.exec_driver_sql("ALTER TABLE predictions DROP COLUMN lease_until")
        conn.execute(sa.insert(meta).values(key="schema_version", value="1"))
        conn.execute(sa.insert(predictions).values(
            id=pid(1), model=SCHNELL, status="starting", input="{}", prompt="from v1", logs_tail="",
            created_at=1.0, recorded_at=1.0, updated_at=1.0, next_poll_at=1.0, poll_failures=0,
            tracking="active", output_urls="[]", data_removed=False, output_count=0))
    engine.dispose()

    first, second = Store(database_url), Store(database_url)  # a second open finds nothing to do

    assert first.schema_version == second.schema_version == 4
    assert first.get(pid(1)).prompt == "from v1" and first.get(pid(1)).lease_until is None
    assert [r.lease_owner for r in second.claim_due("tracker-a")] == ["tracker-a"]
    first.close()
    second.close()


def test_demo_and_real_history_live_in_separate_files(tmp_path):
    demo = Store.for_settings(Settings(data_dir=tmp_path / "data"))
    real = Store.for_settings(Settings(api_key=KEY, data_dir=tmp_path / "data"))
    demo.record(prediction(1))

    assert {path.name for path in (tmp_path / "data").glob("*.sqlite")} == {"history-demo.sqlite", "history.sqlite"}
    assert real.count() == 0 and demo.count() == 1
    demo.close()
    real.close()


def test_neither_the_export_nor_the_database_holds_the_key(client, store, database_url):
    made = client.create(SCHNELL, {"prompt": "a quiet harbour", "seed": 3})
    store.record(made, creator="ana")
    store.update(client.wait(made.id, timeout=10))

    rows = store.export_rows()
    csv = rows.to_csv(index=False)

    assert list(rows["id"]) == [made.id] and rows["input"][0] == '{"prompt": "a quiet harbour", "seed": 3}'
    assert KEY not in csv and "Bearer" not in csv and "authorization" not in csv.lower()
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        stored = [repr(tuple(row)) for table in (meta, predictions, outputs) for row in conn.execute(sa.select(table))]
    engine.dispose()
    assert stored and not any(KEY in row for row in stored)
    if is_sqlite(database_url):
        path = sqlite_path(database_url)
        files = [path, path + "-wal"]
        assert not any(KEY.encode() in open(name, "rb").read() for name in files if os.path.exists(name))


def test_several_stores_opening_a_new_database_at_once_share_one_history(database_url):
    barrier = threading.Barrier(8)
    opened: list[Store] = []

    def open_store() -> None:
        barrier.wait()
        opened.append(Store(database_url))

    threads = [threading.Thread(target=open_store) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(opened) == 8
    opened[0].record(prediction(1))
    assert all(history.count() == 1 and history.schema_version == 4 for history in opened)
    for history in opened:
        history.close()


# ---- several trackers on one database: leases ----------------------------------------------------


def test_a_claimed_prediction_is_nobody_elses_until_its_lease_lapses(store):
    store.record(prediction(1))
    now = time.time()

    [claimed] = store.claim_due("tracker-a", now=now, lease=10)

    assert (claimed.id, claimed.lease_owner) == (pid(1), "tracker-a")
    assert claimed.lease_until.timestamp() == pytest.approx(now + 10)
    assert store.claim_due("tracker-b", now=now + 5) == [] and store.due(now + 5) == []
    assert store.next_poll_time(owner="tracker-b") == pytest.approx(now + 10), "b waits for the lease"
    assert store.renew_leases("tracker-a", [pid(1)], until=now + 20) == {pid(1)}
    assert store.claim_due("tracker-b", now=now + 15) == [], "renewed"

    # a stops renewing (it died, or hangs): b takes over once the lease has run out
    [taken] = store.claim_due("tracker-b", now=now + 21, lease=10)
    assert taken.lease_owner == "tracker-b"
    assert store.renew_leases("tracker-a", [pid(1)], until=now + 40) == set()

    # a's late answer is not written over b's; b's is, and frees the prediction
    assert not store.update(prediction(1, status="failed", error="stale"), owner="tracker-a")
    assert not store.mark_poll_failure(pid(1), "stale", next_poll_at=0, owner="tracker-a")
    assert not store.give_up(pid(1), "stale", owner="tracker-a")
    assert store.get(pid(1)).status == "starting" and store.get(pid(1)).tracking == "active"
    assert store.update(prediction(1, status="processing"), next_poll_at=now + 22, owner="tracker-b")
    record = store.get(pid(1))
    assert (record.status, record.lease_owner, record.lease_until) == ("processing", None, None)
    assert [r.id for r in store.claim_due("tracker-a", now=now + 22)] == [pid(1)]


def test_a_cancel_from_the_page_is_not_undone_by_the_poll_that_was_running(store):
    store.record(prediction(1, status="processing"))
    store.claim_due("tracker-a")

    store.update(prediction(1, status="canceled"))  # the Cancel button: no lease needed

    assert not store.update(prediction(1, status="processing"), next_poll_at=0, owner="tracker-a")
    assert (store.get(pid(1)).status, store.get(pid(1)).tracking) == ("canceled", "done")


def test_a_stopping_tracker_hands_its_claims_back_at_once(store):
    for n in (1, 2, 3):
        store.record(prediction(n))
    assert len(store.claim_due("tracker-a", limit=2)) == 2

    assert store.release_leases("tracker-a") == 2

    assert {r.id for r in store.claim_due("tracker-b")} == {pid(1), pid(2), pid(3)}


def test_four_trackers_claiming_at_once_never_get_the_same_prediction(database_url):
    stores = [Store(database_url) for _ in range(4)]  # one per process, as replicas have
    for n in range(80):
        stores[0].record(prediction(n))
    barrier = threading.Barrier(4, timeout=30)  # a thread that failed breaks it, not hangs it
    claimed: dict[int, list[str]] = {}
    failures: list[BaseException] = []

    def tracker(k: int) -> None:
        mine: list[str] = []
        try:
            barrier.wait()
            # A first claim each, all at once; then a second barrier, so a thread the scheduler
            # favours cannot take everything before the others start (the race is the same).
            mine += [record.id for record in stores[k].claim_due(f"tracker-{k}", limit=3, exclude=mine)]
            barrier.wait()
            while batch := stores[k].claim_due(f"tracker-{k}", limit=3, exclude=mine):
                mine += [record.id for record in batch]
        except BaseException as exc:
            failures.append(exc)
        claimed[k] = mine

    threads = [threading.Thread(target=tracker, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    everything = [pid_ for mine in claimed.values() for pid_ in mine]
    assert failures == []
    assert sorted(everything) == sorted(pid(n) for n in range(80)), "each one claimed exactly once"
    assert sum(1 for mine in claimed.values() if mine) >= 2, "the work was shared"
    for k, mine in claimed.items():
        assert {stores[0].get(i).lease_owner for i in mine} <= {f"tracker-{k}"}
    for history in stores:
        history.close()


def test_outputs_are_stored_exactly_once_when_two_trackers_race(database_url):
    first, second = Store(database_url), Store(database_url)
    first.record(prediction(1, status="succeeded"))
    files = {
        "a": [StoredFile("image/png", image((64, 64)), "https://x/0.png")],
        "b": [StoredFile("image/png", image((32, 32)), "https://x/0.png")],
    }
    barrier = threading.Barrier(2)
    stored: dict[str, bool] = {}

    def save(history: Store, who: str) -> None:
        barrier.wait()
        stored[who] = history.save_outputs(pid(1), files[who], owner=f"tracker-{who}")

    threads = [threading.Thread(target=save, args=pair) for pair in ((first, "a"), (second, "b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(stored.values()) == [False, True], "one of them stored, the other found it done"
    winner = "a" if stored["a"] else "b"
    record = first.get(pid(1))
    assert (record.tracking, record.output_count, len(record.outputs)) == ("done", 1, 1)
    assert first.output_bytes(pid(1), 0) == ("image/png", files[winner][0].data)
    assert not first.save_outputs(pid(1), files["a"]), "and again later: still exactly once"
    assert first.get(pid(1)).output_count == 1
    first.close()
    second.close()


# ---- configuration ---------------------------------------------------------------------------------


def test_a_hosted_postgresql_url_is_used_as_the_provider_gives_it():
    for given in ("postgres://ana:pw@db.example.com:5432/history?sslmode=require",
                  "postgresql://ana:pw@db.example.com:5432/history?sslmode=require"):
        url = resolved_url(given)
        assert url.drivername == "postgresql+psycopg"
        assert (url.host, url.database, url.query["sslmode"], url.password) == (
            "db.example.com", "history", "require", "pw")
    assert resolved_url("sqlite:///x.sqlite").drivername == "sqlite"


def test_postgresql_without_its_driver_says_what_to_add(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if psycopg were not installed

    with pytest.raises(HistoryError, match=r"add psycopg\[binary\] to requirements.txt"):
        Store("postgresql://ana:secret@db.example.com/history")


def test_the_database_url_setting_puts_the_history_there(database_url, tmp_path):
    history = Store.for_settings(Settings.from_sources({"COMET_DATABASE_URL": database_url},
                                                       {"COMET_DATA_DIR": str(tmp_path / "data")}))
    history.record(prediction(1))
    history.close()

    again = Store(database_url)
    assert again.count() == 1
    assert not (tmp_path / "data").exists(), "no SQLite file beside it"
    again.close()


# ---- hostile values: rows older releases stored unchecked, answers too big, leaked keys ------------

YEAR_9999 = 253402214400.0  # 9999-12-31T00:00:00Z: beyond what pandas can hold


def insert_unchecked(database_url: str, n: int, **values) -> None:
    """A row as an older release stored an answer: no checks, straight into the table."""
    at = (START + timedelta(minutes=n)).timestamp()
    row = {"id": pid(n), "model": SCHNELL, "status": "succeeded", "input": "{}", "prompt": "", "logs_tail": "",
           "created_at": at, "recorded_at": at, "updated_at": at, "poll_failures": 0, "tracking": "done",
           "output_urls": "[]", "data_removed": False, "output_count": 0, **values}
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(sa.insert(predictions).values(row))
    engine.dispose()


def test_impossible_times_and_run_times_read_as_unknown_and_the_row_still_reads(store, database_url):
    minute = lambda n: (START + timedelta(minutes=n)).timestamp()  # noqa: E731
    insert_unchecked(database_url, 1, created_at=YEAR_9999, run_time=math.inf)
    insert_unchecked(database_url, 2, created_at=-1e12, recorded_at=-1e12, run_time=-5.0)
    insert_unchecked(database_url, 3, created_at=YEAR_9999, recorded_at=math.inf, updated_at=-1e12,
                     run_time=math.nan)
    insert_unchecked(database_url, 4, run_time=2.5)  # an ordinary row

    # A Record always has its three times: the first sane one of created, recorded, updated...
    assert store.get(pid(1)).created_at == datetime.fromtimestamp(minute(1), UTC)
    assert store.get(pid(2)).created_at == datetime.fromtimestamp(minute(2), UTC)  # updated_at
    # ...else 1970-01-01, which reads as "no date" and never moves.
    assert store.get(pid(3)).created_at == store.get(pid(3)).updated_at == datetime(1970, 1, 1, tzinfo=UTC)
    assert [store.get(pid(n)).run_time for n in (1, 2, 3)] == [None, None, None]
    ordinary = store.get(pid(4))
    assert (ordinary.created_at, ordinary.run_time) == (START + timedelta(minutes=4), 2.5)

    # The page and the export hold every row; an unknown time is NaT, an impossible run time NaN.
    page = store.page().set_index("id")
    export = store.export_rows().set_index("id")
    for frame, created in ((page, "created"), (export, "created_at")):
        assert frame[created].isna().to_dict() == {pid(4): False, pid(3): True, pid(2): True, pid(1): True}
        assert frame.loc[pid(4), created] == pd.Timestamp(START + timedelta(minutes=4))
        assert frame["run_time"].to_dict() == pytest.approx({pid(4): 2.5, pid(3): math.nan, pid(2): math.nan,
                                                              pid(1): math.nan}, nan_ok=True)
    assert len(store.export_rows().to_csv(index=False).splitlines()) == 1 + 4


def test_stored_json_that_does_not_parse_reads_as_empty(store, database_url):
    insert_unchecked(database_url, 1, input="{not json", output_urls="oops")
    insert_unchecked(database_url, 2, input="[1, 2]", output_urls='{"a": 1}')  # JSON, of the wrong kind
    insert_unchecked(database_url, 3, input='{"prompt": "a cat"}', output_urls='["https://x.example/0.png", 7]')

    assert [(store.get(pid(n)).input, store.get(pid(n)).output_urls) for n in (1, 2)] == [({}, []), ({}, [])]
    readable = store.get(pid(3))
    assert (readable.input, readable.output_urls) == ({"prompt": "a cat"}, ["https://x.example/0.png"])


def test_huge_stored_text_is_cut_for_every_view_and_ordinary_text_is_kept(store, database_url):
    # PostgreSQL enforces the column widths; SQLite (and older rows there) can hold a megabyte anywhere.
    wide = 1_000_000 if is_sqlite(database_url) else None
    megabyte = "x" * 1_000_000
    insert_unchecked(database_url, 1, status="s" * (wide or 32), model="m" * (wide or 200), error=megabyte,
                     note=megabyte, logs_tail=megabyte, prompt=megabyte, creator="c" * (wide or 200))
    insert_unchecked(database_url, 2, status="failed", error="out of memory", note="gave up", prompt="a cat",
                     creator="ana")

    huge = store.get(pid(1))
    assert len(huge.status) <= 33 and len(huge.model) <= 201 and len(huge.creator) <= 201
    assert len(huge.error) <= 4001 and len(huge.note) <= 4001 and len(huge.logs_tail) <= 4096
    ordinary = store.get(pid(2))
    assert (ordinary.status, ordinary.error, ordinary.note, ordinary.creator) == ("failed", "out of memory",
                                                                                  "gave up", "ana")
    # The History page's frame is shipped on every load: a few hundred characters a cell at most.
    page = store.page().drop(columns="thumbnail").set_index("id")
    assert max(len(str(cell)) for cell in page.loc[pid(1)]) <= 301
    assert list(page.loc[pid(2), ["status", "prompt", "creator"]]) == ["failed", "a cat", "ana"]


def test_an_answer_too_big_for_its_columns_is_stored_cut_rather_than_lost(store):
    # Built directly (as an older, unchecking parser did): PostgreSQL refuses a 33-character status
    # or a NUL, which would have lost the whole answer.
    store.record(Prediction(id=pid(1), model="m" * 1000, status="s" * 1000, error="e" * 1_000_000 + "\x00\ud800",
                            logs="l" * 1_000_000, created_at=datetime(9999, 12, 31, tzinfo=UTC)))
    store.update(Prediction(id=pid(1), model="m" * 1000, status="s" * 1000), note="n" * 1_000_000)
    store.record(prediction(2, status="failed", error="boom"))

    cut = store.get(pid(1))
    assert (len(cut.model), len(cut.status), len(cut.note)) == (200, 32, 4000)
    assert len(cut.error) <= 4000 and "\x00" not in cut.error
    assert abs(cut.created_at - cut.recorded_at) < timedelta(seconds=5)  # year 9999 was not stored
    kept = store.get(pid(2))
    assert (kept.status, kept.error, kept.created_at) == ("failed", "boom", START + timedelta(minutes=2))


def test_a_leaked_key_is_scrubbed_from_every_column_that_held_it_and_nothing_else(store):
    other = "cmt-visitor-key-9f8e7d6c5b4a"
    leaky = prediction(1, status="failed", prompt=f"a cat {KEY}", error=f"401 for Bearer {KEY} (request id: {KEY})",
                       logs=f"auth {KEY}\nand {other}", output=[f"https://replicate.delivery/{KEY}/0.png"])
    store.record(leaky, creator="ana")
    store.update(leaky, note=f"last check said {KEY}")
    store.record(prediction(2, status="succeeded", prompt="a dog", output=["https://replicate.delivery/b/0.png"]))
    store.save_outputs(pid(2), [StoredFile("image/png", image(), f"https://replicate.delivery/{KEY}/0.png")])
    store.record(prediction(3, status="failed", prompt="a bird", error=f"{KEY.upper()} is not it"))
    before = {n: store.get(pid(n)) for n in (2, 3)}

    changed = store.scrub_secrets([KEY, other, "sk-test", "abc"])

    assert changed == 2  # prediction 1, and the stored output of prediction 2
    scrubbed = store.get(pid(1))
    assert KEY not in repr(scrubbed) and other not in repr(scrubbed)
    assert scrubbed.error == "401 for Bearer *** (request id: ***)" and scrubbed.note == "last check said ***"
    assert scrubbed.logs_tail == "auth ***\nand ***" and scrubbed.input == {"prompt": "a cat ***"}
    assert scrubbed.output_urls == ["https://replicate.delivery/***/0.png"] and scrubbed.creator == "ana"
    # Rows without the key are not written at all (an upper-cased look-alike is not the key).
    assert {n: store.get(pid(n)) for n in (2, 3)} == before
    assert store.scrub_secrets([KEY]) == 0  # nothing left to do


def test_a_short_secret_is_never_scrubbed_from_ordinary_text(store):
    store.record(prediction(1, status="failed", prompt="a cat", error="sk-test failed"))

    assert store.scrub_secrets(["sk-test", "cat", ""]) == 0
    assert (store.get(pid(1)).error, store.get(pid(1)).prompt) == ("sk-test failed", "a cat")
