"""Images out of the database: new outputs go to a folder (content-addressed, atomic), images an
older release kept in the database move there resumably, and History reads either. On SQLite and
PostgreSQL. The detail view's note when retention removed an image: tests/pages/test_detail_view.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from comet.config import Settings
from comet.media import FileMedia, MediaError, MediaUnavailable, from_setting
from comet.store import Store, outputs
from support.media import bytes_in_database, png, saved


def test_new_images_go_to_files_and_read_back_while_the_database_keeps_thumbnails(database_url, tmp_path):
    store = Store(database_url, media=FileMedia(tmp_path / "media"))
    try:
        prediction_id = saved(store, 1)
        assert store.output_bytes(prediction_id, 0) == ("image/png", png())
        assert store.thumbnail(prediction_id, 0) is not None
        assert bytes_in_database(store) == 0
        files = [p for p in (tmp_path / "media").rglob("*") if p.is_file()]
        assert len(files) == 1 and files[0].read_bytes() == png() and files[0].suffix == ".png"
    finally:
        store.close()


def test_images_kept_in_the_database_move_to_files_resumably_and_none_is_lost(database_url, tmp_path):
    old = Store(database_url)  # as an older release: every image inside the database
    ids = [saved(old, n, (n * 40 % 256, 80, 120)) for n in range(5)]
    assert bytes_in_database(old) > 0
    old.close()
    store = Store(database_url, media=FileMedia(tmp_path / "media"))
    try:
        assert store.move_media(limit=2) >= 2  # interrupted after a first batch
        assert all(store.output_bytes(i, 0)[1] for i in ids)  # readable halfway, from either place
        store.move_media()
        assert store.move_media() == 0  # nothing left to move
        assert bytes_in_database(store) == 0
        assert [store.output_bytes(i, 0)[1] for i in ids] == [png((n * 40 % 256, 80, 120)) for n in range(5)]
    finally:
        store.close()


def test_with_db_media_images_stay_in_the_database(database_url):
    store = Store(database_url, media=None)
    try:
        prediction_id = saved(store, 7)
        assert store.move_media() == 0 and bytes_in_database(store) == len(png())
        assert store.output_bytes(prediction_id, 0)[1] == png()
    finally:
        store.close()


def test_a_deleted_media_file_reads_as_missing_not_as_an_error(database_url, tmp_path):
    store = Store(database_url, media=FileMedia(tmp_path / "media"))
    try:
        prediction_id = saved(store, 8)
        for path in (tmp_path / "media").rglob("*.png"):
            path.unlink()
        assert store.output_bytes(prediction_id, 0) is None
        assert store.get(prediction_id).outputs  # the row (and its thumbnail) remain
    finally:
        store.close()


@pytest.mark.parametrize("key", ["../../etc/passwd", "a" * 64 + ".png/../x", "/etc/passwd", "", "A" * 64 + ".png"])
def test_a_key_that_is_not_ours_never_becomes_a_path(tmp_path, key):
    media = FileMedia(tmp_path)
    good = media.put(png(), "image/png")
    assert media.get(good) == png()
    with pytest.raises(MediaError):
        media.get(key)


def test_the_default_follows_where_the_history_lives_and_bad_settings_are_refused(tmp_path):
    assert isinstance(from_setting("", data_dir=tmp_path, database_url=None), FileMedia)
    assert from_setting("", data_dir=tmp_path, database_url="postgresql://db/x") is None  # Cloud: keep in the database
    assert from_setting("db:", data_dir=tmp_path, database_url=None) is None
    assert from_setting("file:/srv/media", data_dir=tmp_path, database_url=None).root == Path("/srv/media")
    for bad in ("s3://bucket/prefix", "ftp://x", "file:relative/path"):
        with pytest.raises(ValueError):
            Settings.from_sources({"COMET_MEDIA_URL": bad}, {"COMET_DATA_DIR": str(tmp_path)})


def test_retention_removes_old_full_images_keeps_thumbnails_and_recent_images(database_url, tmp_path):
    import time

    store = Store(database_url, media=FileMedia(tmp_path / "media"))
    try:
        old, recent = saved(store, 20), saved(store, 21, (10, 200, 10))
        cutoff = time.time() + 1  # both ended before this: then only `old` is made older below
        with store._engine.begin() as conn:
            conn.execute(sa.text("UPDATE predictions SET created_at = created_at - 40 * 86400, "
                                 "completed_at = NULL WHERE id = :id"), {"id": old})
        assert store.prune_media(before=cutoff - 30 * 86400) == 1
        assert store.output_bytes(old, 0) is None and store.thumbnail(old, 0) is not None
        assert store.get(old).outputs[0].pruned_at is not None
        # A ZIP part is sized by what is still stored: the pruned image weighs nothing.
        assert store.stored_sizes([old, recent]) == {recent: store.get(recent).outputs[0].size}
        assert store.output_bytes(recent, 0)[1] == png((10, 200, 10))
        kept = store._output_row(recent, 0, outputs.c.media_key).media_key
        assert [p.name for p in (tmp_path / "media").rglob("*.png")] == [kept]
        assert store.prune_media(before=cutoff - 30 * 86400) == 0  # done once
    finally:
        store.close()


def test_retention_keeps_a_file_another_prediction_still_uses(database_url, tmp_path):
    import time

    store = Store(database_url, media=FileMedia(tmp_path / "media"))
    try:
        old, twin = saved(store, 30), saved(store, 31)  # the same bytes: one file
        with store._engine.begin() as conn:
            conn.execute(sa.text("UPDATE predictions SET created_at = created_at - 40 * 86400, "
                                 "completed_at = NULL WHERE id = :id"), {"id": old})
        assert store.prune_media(before=time.time() - 30 * 86400) == 1
        assert store.output_bytes(twin, 0)[1] == png()  # its file was not deleted with the old one's
    finally:
        store.close()


def test_a_bad_retention_setting_is_refused(tmp_path):
    assert Settings.from_sources({"COMET_MEDIA_RETENTION_DAYS": "30"}, {}).media_retention_days == 30
    with pytest.raises(ValueError, match="COMET_MEDIA_RETENTION_DAYS must be a number of days"):
        Settings.from_sources({"COMET_MEDIA_RETENTION_DAYS": "forever"}, {})


def test_a_media_folder_that_cannot_be_written_keeps_the_image_in_the_database(database_url, tmp_path):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the media folder should be")
    unwritable = FileMedia(blocked / "media")
    with pytest.raises(MediaUnavailable, match="cannot be made"):
        unwritable.check()
    FileMedia(tmp_path / "media").check()  # the good case: a folder it can make
    store = Store(database_url, media=unwritable)
    try:
        prediction_id = saved(store, 90)
        assert bytes_in_database(store) == len(png())  # kept where it could go, not dropped
        assert store.output_bytes(prediction_id, 0) == ("image/png", png())
    finally:
        store.close()
    moved = Store(database_url, media=FileMedia(tmp_path / "media"))
    try:
        assert moved.move_media() == 1 and bytes_in_database(moved) == 0
        assert moved.output_bytes(prediction_id, 0) == ("image/png", png())
    finally:
        moved.close()
