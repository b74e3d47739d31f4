"""Images in S3-compatible object storage, against a real server process (moto's standalone
server, credentials enforced; tests/support/s3server.py): upload, read, a missing object, credentials
refused, the setting's checks, and a server restart in the middle of a migration. On SQLite and
PostgreSQL where the history store is involved."""

from __future__ import annotations

import os
import threading

import pytest

from comet.media import MediaError, MediaUnavailable, S3Location, from_setting, parse_s3
from comet.objectstore import S3Media, open_media
from comet.store import MOVE_BATCH, Store
from support.media import bytes_in_database, png, saved
from support.s3server import BUCKET, S3Server


@pytest.fixture(scope="module")
def s3():
    server = S3Server()
    yield server
    server.close()


def bucket(s3: S3Server, prefix: str, **overrides: str) -> S3Media:
    settings = s3.settings(prefix, **overrides)
    return S3Media(parse_s3(settings["COMET_MEDIA_URL"], lambda name: settings.get(name, "")),
                   retry_delays=(0.1,))


def test_an_image_is_uploaded_once_under_the_prefix_and_read_back(s3):
    media = bucket(s3, "upload/")
    key = media.put(png(), "image/png")
    assert media.put(png(), "image/png") == key  # the same bytes are one object
    assert media.get(key) == png()
    assert [name for name in s3.objects() if name.startswith("upload/")] == [f"upload/{key}"]
    # What the bucket holds is the image itself, as another S3 client reads it.
    assert s3.client().get_object(Bucket=BUCKET, Key=f"upload/{key}")["Body"].read() == png()


def test_a_missing_object_reads_as_gone_and_deleting_it_again_is_harmless(s3):
    media = bucket(s3, "missing/")
    key = media.put(png((1, 2, 3)), "image/png")
    media.delete(key)
    assert media.get(key) is None
    media.delete(key)
    assert media.get("0" * 64 + ".png") is None


@pytest.mark.parametrize("wrong", ["AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"])
def test_credentials_the_bucket_refuses_are_named_without_showing_the_secret(s3, wrong):
    good = bucket(s3, "refused/")
    key = good.put(png(), "image/png")  # the good case: the right credentials pass
    value = "AKIAWRONGWRONGWRONG" if wrong == "AWS_ACCESS_KEY_ID" else "not-the-secret-at-all"
    media = bucket(s3, "refused/", **{wrong: value})
    for attempt in (media.check, lambda: media.put(png(), "image/png"), lambda: media.get(key)):
        with pytest.raises(MediaUnavailable, match="refused the credentials") as refused:
            attempt()
        assert s3.credentials.secret_access_key not in str(refused.value)
        assert value not in str(refused.value)


def test_a_bucket_that_does_not_exist_is_named(s3):
    settings = s3.settings("x/", COMET_MEDIA_URL="s3://no-such-bucket-here/x/")
    media = S3Media(parse_s3(settings["COMET_MEDIA_URL"], lambda name: settings.get(name, "")))
    with pytest.raises(MediaUnavailable, match="no-such-bucket-here.* does not exist"):
        media.check()
    bucket(s3, "x/").check()  # the configured one answers


def test_an_unreachable_bucket_is_unavailable_not_a_crash(s3, tmp_path):
    media = bucket(s3, "gone/", AWS_ENDPOINT_URL_S3="http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(MediaUnavailable, match="did not answer"):
        media.put(png(), "image/png")


def test_the_store_keeps_new_images_in_the_bucket_and_only_thumbnails_in_the_database(s3, database_url):
    store = Store(database_url, media=bucket(s3, "store/"))
    try:
        prediction_id = saved(store, 1)
        assert store.output_bytes(prediction_id, 0) == ("image/png", png())
        assert store.thumbnail(prediction_id, 0) is not None
        assert bytes_in_database(store) == 0
        assert any(name.startswith("store/") for name in s3.objects())
    finally:
        store.close()


def test_a_restart_of_the_server_in_the_middle_of_a_migration_loses_no_image(s3, database_url, tmp_path):
    # An older release's database: every image inside it, more than one batch of them. Large,
    # noisy images, so the first batch's uploads are still going when the server is killed.
    old = Store(database_url)
    ids = [noisy_saved(old, n) for n in range(MOVE_BATCH + 5)]
    expected = {i: old.output_bytes(i, 0)[1] for i in ids}
    old.close()
    media = bucket(s3, f"restart-{os.getpid()}-{len(database_url)}/")
    store = Store(database_url, media=media)
    try:
        failed: list[BaseException] = []

        def migrate():
            try:
                store.move_media()
            except BaseException as exc:  # noqa: BLE001 - the test reads it
                failed.append(exc)

        mover = threading.Thread(target=migrate)
        mover.start()
        wait_for_first_upload(s3, media.location.prefix)
        s3.restart()  # killed mid-batch: moto comes back empty
        mover.join(60)
        assert failed and isinstance(failed[0], MediaUnavailable)
        # Nothing was lost: every image still reads, from the database (the batch never committed).
        assert {i: store.output_bytes(i, 0)[1] for i in ids} == expected
        assert store.move_media() == len(ids)  # resumed once the server is back
        assert bytes_in_database(store) == 0
        assert {i: store.output_bytes(i, 0)[1] for i in ids} == expected
    finally:
        store.close()


def test_the_setting_reads_the_bucket_prefix_endpoint_and_credentials():
    read = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret-value",
            "AWS_ENDPOINT_URL_S3": "https://ACCOUNT.r2.cloudflarestorage.com/", "AWS_REGION": "auto"}.get
    location = parse_s3("s3://comet-media/team/images", lambda name: read(name) or "")
    assert (location.bucket, location.prefix, location.endpoint, location.region, location.path_style) == \
        ("comet-media", "team/images/", "https://account.r2.cloudflarestorage.com", "auto", True)
    assert "secret-value" not in repr(location) and "secret-value" not in str(location)
    aws = parse_s3("s3://comet-media", lambda name: {"AWS_ACCESS_KEY_ID": "A", "AWS_SECRET_ACCESS_KEY": "B"}.get(name, ""))
    assert (aws.endpoint, aws.path_style, aws.prefix) == ("https://s3.us-east-1.amazonaws.com", False, "")
    supabase = parse_s3("s3://comet-media", lambda name: {
        "AWS_ACCESS_KEY_ID": "A", "AWS_SECRET_ACCESS_KEY": "B",
        "AWS_ENDPOINT_URL_S3": "https://abcd.supabase.co/storage/v1/s3/"}.get(name, ""))
    assert (supabase.endpoint, supabase.path_style) == ("https://abcd.supabase.co/storage/v1/s3", True)
    chosen = from_setting("s3://comet-media/x", data_dir=None, database_url=None, read=lambda name: read(name) or "")
    assert isinstance(chosen, S3Location) and isinstance(open_media(chosen), S3Media)


@pytest.mark.parametrize(("url", "settings", "message"), [
    ("s3://Bad_Bucket/x", {}, "valid bucket name"),
    ("s3://ok-bucket/../x", {}, "plain folder names"),
    ("s3://ok-bucket/a//b", {}, "plain folder names"),
    ("s3://ok-bucket/x?versionId=1", {}, "valid bucket name"),
    ("s3://ok-bucket/x", {"AWS_ACCESS_KEY_ID": ""}, "AWS_SECRET_ACCESS_KEY must be set"),
    ("s3://ok-bucket/x", {"AWS_ENDPOINT_URL_S3": "https://user:pw@minio.example"}, "no credentials"),
    ("s3://ok-bucket/x", {"AWS_ENDPOINT_URL_S3": "https://minio.example/a/../b"}, "service's address"),
    ("s3://ok-bucket/x", {"AWS_ENDPOINT_URL_S3": "https://minio.example/?x=1"}, "no query"),
    ("s3://ok-bucket/x", {"AWS_ENDPOINT_URL_S3": "ftp://minio.example"}, "service's address"),
    ("s3://ok-bucket/x", {"AWS_REGION": "us east"}, "region name"),
])
def test_a_setting_that_cannot_work_is_refused_with_what_to_fix(url, settings, message):
    values = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret", **settings}
    with pytest.raises(MediaError, match=message):
        parse_s3(url, lambda name: values.get(name, ""))


def noisy_saved(store: Store, n: int) -> str:
    from comet.media import StoredFile
    from comet.prediction import Prediction

    prediction_id = f"s3move{n:04d}".ljust(26, "0")
    store.record(Prediction(id=prediction_id, model="black-forest-labs/flux-schnell", status="succeeded",
                            input={"prompt": "x"}))
    store.save_outputs(prediction_id, [StoredFile("image/png", noise_png(n), "https://x/a.png")])
    return prediction_id


def noise_png(seed: int) -> bytes:
    import io
    import random

    from PIL import Image

    pixels = random.Random(seed).randbytes(512 * 512 * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (512, 512), pixels).save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()


def wait_for_first_upload(s3: S3Server, prefix: str) -> None:
    from support.waiting import wait_until

    wait_until(lambda: any(name.startswith(prefix) for name in s3.objects()), timeout=30, pause=0.005)



def test_an_image_the_bucket_cannot_take_now_is_kept_in_the_database_and_moved_later(s3, database_url):
    refusing = Store(database_url, media=bucket(s3, "later/", AWS_SECRET_ACCESS_KEY="not-the-secret-at-all"))
    try:
        prediction_id = saved(refusing, 50)
        assert bytes_in_database(refusing) == len(png())  # not dropped: kept where it can be
        assert refusing.output_bytes(prediction_id, 0)[1] == png()
    finally:
        refusing.close()
    store = Store(database_url, media=bucket(s3, "later/"))  # the good case: the bucket takes it
    try:
        assert store.move_media() == 1
        assert bytes_in_database(store) == 0
        assert store.output_bytes(prediction_id, 0)[1] == png()
    finally:
        store.close()


def test_the_app_opens_the_configured_bucket_and_the_store_alone_refuses_to(s3, tmp_path):
    from comet.config import Settings
    from comet.objectstore import media_for

    settings = Settings.from_sources(s3.settings("app/"), {"COMET_DATA_DIR": str(tmp_path)})
    assert isinstance(media_for(settings), S3Media) and media_for(settings).location.prefix == "app/"
    with pytest.raises(MediaError, match="open it with comet.objectstore"):
        Store.for_settings(settings)  # the store never speaks HTTP itself
    Store.for_settings(settings, media=media_for(settings)).close()
    files = Settings.from_sources({}, {"COMET_DATA_DIR": str(tmp_path)})
    assert media_for(files).root == tmp_path / "media"


def test_the_detail_view_shows_an_image_from_the_bucket_and_says_so_when_it_cannot(s3, sim, app_env):
    from comet.config import Settings
    from comet.objectstore import media_for
    from support.api import KEY
    from support.apptest import open_app

    configured = {"COMETAPI_KEY": KEY, "COMETAPI_BASE_URL": sim.url, **s3.settings("detail/")}
    settings = Settings.from_sources(configured)
    store = Store.for_settings(settings, media=media_for(settings))
    prediction_id = saved(store, 60, (30, 160, 90))
    store.close()

    at = open_app("pages/history.py", {"id": prediction_id}, **configured)
    assert not at.exception and not at.warning
    assert len(at.get("image")) >= 1 and any(b.label == "Download" for b in at.get("download_button"))
    at = open_app("pages/history.py", {"id": prediction_id}, **{**configured, "AWS_SECRET_ACCESS_KEY": "wrong-secret-here"})
    assert not at.exception
    warning = " ".join(w.value for w in at.warning)
    assert "cannot be loaded right now" in warning and "refused the credentials" in warning
    assert "wrong-secret-here" not in warning and s3.credentials.secret_access_key not in warning


def test_a_zip_lists_the_images_the_bucket_could_not_give(s3, database_url):
    import io
    import zipfile

    from comet import export

    store = Store(database_url, media=bucket(s3, "zip/"))
    prediction_id = saved(store, 70)
    names = zipfile.ZipFile(io.BytesIO(export.images_zip(store, [prediction_id]))).namelist()
    assert export.MISSING_NOTE not in names and any(name.endswith(".png") for name in names)
    store.close()
    refusing = Store(database_url, media=bucket(s3, "zip/", AWS_SECRET_ACCESS_KEY="not-the-secret-at-all"))
    try:
        archive = zipfile.ZipFile(io.BytesIO(export.images_zip(refusing, [prediction_id])))
        assert export.MISSING_NOTE in archive.namelist()
        assert "refused the credentials" in archive.read(export.MISSING_NOTE).decode()
        assert not any(name.endswith(".png") for name in archive.namelist())
    finally:
        refusing.close()


def test_a_bucket_that_trickles_its_answer_is_cut_off_at_the_deadline(s3):
    import socket
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def trickle():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                for _ in range(60):
                    if stop.is_set():
                        break
                    try:
                        conn.sendall(b"x")
                    except OSError:
                        break
                    time.sleep(0.2)

    threading.Thread(target=trickle, daemon=True).start()
    try:
        port = listener.getsockname()[1]
        settings = s3.settings("slow/", AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{port}")
        slow = S3Media(parse_s3(settings["COMET_MEDIA_URL"], lambda name: settings.get(name, "")),
                       call_seconds=1.0, retry_delays=())
        started = time.monotonic()
        with pytest.raises(MediaUnavailable, match="did not answer"):
            slow.get("0" * 64 + ".png")
        assert time.monotonic() - started < 5  # the deadline, not the 12 s the body would take
    finally:
        stop.set()
        listener.close()


def test_an_object_larger_than_the_cap_is_refused_not_read(s3):
    roomy = bucket(s3, "cap/")
    key = roomy.put(png(), "image/png")
    assert roomy.get(key) == png()  # the good case: under the cap
    capped = S3Media(roomy.location, max_bytes=len(png()) - 1)
    with pytest.raises(MediaUnavailable, match="larger than allowed"):
        capped.get(key)
