"""History keeps every prediction and its images: nothing lost, nothing doubled, quick to page."""

from __future__ import annotations

import base64
import io
import sqlite3
import threading
from datetime import datetime, timedelta, timezone

import pytest
from PIL import Image
from sqlalchemy.exc import IntegrityError

from comet.config import Settings
from comet.fetch import StoredFile
from comet.prediction import Prediction
from comet.store import PAGE_COLUMNS, Store
from conftest import KEY

SCHNELL, DEV = "black-forest-labs/flux-schnell", "black-forest-labs/flux-dev"
START = datetime(2026, 1, 1, tzinfo=timezone.utc)


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
def db_path(tmp_path):
    return tmp_path / "history.sqlite"


@pytest.fixture
def store(db_path):
    history = Store(f"sqlite:///{db_path}")
    yield history
    history.close()


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
    assert all(store.count(creator=f"user{w}") == 50 for w in range(20))


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

    page = store.page()
    assert list(page.columns) == PAGE_COLUMNS
    assert list(page["id"]) == [pid(5), pid(4), pid(3), pid(2), pid(1)]
    assert page["created"][0] == START + timedelta(minutes=5)
    assert list(store.page(limit=2, offset=2)["id"]) == [pid(3), pid(2)]
    assert list(store.page(statuses=["succeeded", "failed"])["id"]) == [pid(3), pid(2), pid(1)]
    assert list(store.page(models=[DEV])["id"]) == [pid(4), pid(3)]
    assert list(store.page(text="cat")["id"]) == [pid(2), pid(1)], "case-insensitive"
    assert list(store.page(text="100%")["id"]) == [pid(1)], "% is a literal percent sign"
    assert list(store.page(text="snake_case")["id"]) == [pid(3)], "_ is a literal underscore"
    assert list(store.page(creator="ben", statuses=["aborted"])["id"]) == [pid(5)]
    assert store.count(models=[SCHNELL]) == 3 and store.count(text="sign", creator="ana") == 1
    assert store.count(statuses=[]) == 5, "an empty filter means all"
    assert store.models() == [DEV, SCHNELL]
    assert store.page(text="nothing like it").empty


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


def test_reopening_the_file_keeps_the_history_and_its_schema_version(db_path):
    first = Store(f"sqlite:///{db_path}")
    first.record(prediction(1))
    first.close()

    again = Store(f"sqlite:///{db_path}")
    assert again.get(pid(1)).prompt == "a cat" and again.schema_version == 1
    again.close()
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("select value from meta where key = 'schema_version'").fetchone() == ("1",)
        assert conn.execute("pragma journal_mode").fetchone() == ("wal",)
        conn.execute("update meta set value = '2' where key = 'schema_version'")
    with pytest.raises(RuntimeError, match="newer release"):
        Store(f"sqlite:///{db_path}")


def test_demo_and_real_history_live_in_separate_files(tmp_path):
    demo = Store.for_settings(Settings(data_dir=tmp_path / "data"))
    real = Store.for_settings(Settings(api_key=KEY, data_dir=tmp_path / "data"))
    demo.record(prediction(1))

    assert {path.name for path in (tmp_path / "data").glob("*.sqlite")} == {"history-demo.sqlite", "history.sqlite"}
    assert real.count() == 0 and demo.count() == 1
    demo.close()
    real.close()


def test_neither_the_export_nor_the_database_file_holds_the_key(client, store, db_path):
    made = client.create(SCHNELL, {"prompt": "a quiet harbour", "seed": 3})
    store.record(made, creator="ana")
    store.update(client.wait(made.id, timeout=10))

    rows = store.export_rows()
    csv = rows.to_csv(index=False)

    assert list(rows["id"]) == [made.id] and rows["input"][0] == '{"prompt": "a quiet harbour", "seed": 3}'
    assert KEY not in csv and "Bearer" not in csv and "authorization" not in csv.lower()
    files = [db_path, db_path.with_name(db_path.name + "-wal")]
    assert not any(KEY.encode() in path.read_bytes() for path in files if path.exists())


def test_several_processes_opening_a_new_file_at_once_share_one_history(db_path):
    barrier = threading.Barrier(8)
    opened: list[Store] = []

    def open_store() -> None:
        barrier.wait()
        opened.append(Store(f"sqlite:///{db_path}"))

    threads = [threading.Thread(target=open_store) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(opened) == 8
    opened[0].record(prediction(1))
    assert all(history.count() == 1 and history.schema_version == 1 for history in opened)
    for history in opened:
        history.close()
