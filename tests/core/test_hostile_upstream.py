"""Nothing a hostile upstream sends can stop tracking, break History, bill twice or leak the key.

Every test points the real client, downloader and tracker at tests/support/hostile.py, a server of our
own that answers slowly, oddly or maliciously (the project's stand-in is polite). Each guard is
shown twice: the good case passes, the bad case is refused. What the History page shows of it:
tests/pages/test_hostile_upstream_page.py."""

from __future__ import annotations

import json
import logging
import math
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from comet import errors, fetch
from comet.client import Client, RetryPolicy, Timeouts
from comet.config import Settings
from comet.export import spreadsheet_csv
from comet.fetch import FetchError, fetch_output
from comet.prediction import Prediction
from comet.store import Store
from comet.tracker import NO_OUTPUT_NOTE, Tracker
from support import ROOT, hostile
from support.api import FAST_RETRY, KEY
from support.waiting import wait_until

SCHNELL = "black-forest-labs/flux-schnell"
FAST = {"schedule": ((math.inf, 0.2),), "backoff": (0.2, 1.0), "max_sleep": 0.1}


def pid(n: int | str) -> str:
    return f"hostile{n}".ljust(26, "0")


@pytest.fixture
def upstream():
    with hostile.HostileServer() as server:
        yield server


@pytest.fixture
def client(upstream):
    api = Client(upstream.url, KEY, retry=FAST_RETRY,
                 timeouts=Timeouts(connect=2, read_status=5, read_create=5, total_status=3, total_create=3))
    yield api
    api.close()


@pytest.fixture
def store(tmp_path):
    history = Store.for_settings(Settings.from_sources({"COMETAPI_KEY": KEY}, {"COMET_DATA_DIR": str(tmp_path)}))
    yield history
    history.close()


def run_tracker(client, store, **options):
    return Tracker(client, store, allow_private_downloads=True, **{**FAST, **options}).start()


# ---- 1. bounded work: deadlines and size caps ----------------------------------------------------


def test_a_status_answer_that_trickles_is_cut_off_at_the_call_deadline(upstream, client):
    upstream.status_route(pid(1), hostile.trickle(every=0.5))
    upstream.status_route(pid(2), hostile.answer(hostile.prediction(pid(2))))

    assert client.get(pid(2)).status == "processing"  # good case: a normal answer is read
    started = time.monotonic()
    with pytest.raises(errors.ConnectionFailed, match="within 3 s"):
        client.get(pid(1))
    assert time.monotonic() - started < 5  # 3 s deadline; each read alone never timed out


def test_a_create_that_trickles_is_uncertain_after_its_deadline_and_never_resent(upstream, client):
    upstream.create_route(SCHNELL, hostile.trickle(every=0.5))
    started = time.monotonic()
    with pytest.raises(errors.CreateUncertain, match="may still have been accepted"):
        client.create(SCHNELL, {"prompt": "slow"})
    assert time.monotonic() - started < 5
    assert upstream.count("POST") == 1


@pytest.mark.parametrize("length", [400_000, None], ids=["with-length", "without-length"])
def test_a_download_that_trickles_is_cut_off_at_its_deadline(upstream, length):
    slow = upstream.route("GET", "/slow.png", hostile.trickle("image/png", length=length, every=0.5))
    fine = upstream.route("GET", "/fine.png", hostile.file(hostile.png()))
    origin = upstream.url.removeprefix("http://")

    assert fetch_output(fine, private_origin=origin, deadline=2).content_type == "image/png"
    started = time.monotonic()
    with pytest.raises(FetchError, match="slower than 2 s") as caught:
        fetch_output(slow, private_origin=origin, deadline=2)
    assert caught.value.retryable and time.monotonic() - started < 4


def test_a_huge_status_body_is_refused_while_streaming(upstream):
    upstream.status_route(pid(3), hostile.endless(megabytes=64))
    upstream.status_route(pid(4), hostile.answer(hostile.prediction(pid(4))))
    with Client(upstream.url, KEY, retry=FAST_RETRY, max_answer_bytes=8 * 1024 * 1024) as small:
        assert small.get(pid(4)).id == pid(4)
        with pytest.raises(errors.BadResponse, match="too large"):
            small.get(pid(3))


def test_eight_trickling_status_answers_and_eight_trickling_downloads_do_not_starve_a_healthy_prediction(
    upstream, store
):
    """The issue's case: a few stuck upstream calls used to take every poller thread."""
    trickling_file = upstream.route("GET", "/trickle.png", hostile.trickle("image/png", length=500_000, every=1.0))
    healthy, finish_at = pid("ok"), time.time() + 6.0

    def healthy_answer(handler):
        done = time.time() >= finish_at
        return hostile.prediction(healthy, "succeeded" if done else "processing",
                                  output=[upstream.url + "/healthy.png"] if done else None)

    upstream.route("GET", "/healthy.png", hostile.file(hostile.png()))
    upstream.status_route(healthy, hostile.answer(healthy_answer))
    stuck = []
    for n in range(8):
        stuck.append(pid(f"s{n}"))
        upstream.status_route(pid(f"s{n}"), hostile.trickle(every=1.0))
        stuck.append(pid(f"d{n}"))
        upstream.status_route(pid(f"d{n}"), hostile.answer(hostile.prediction(
            pid(f"d{n}"), "succeeded", output=[trickling_file])))
    # Production deadlines (120 s a call): the stuck calls stay stuck for the whole test.
    api = Client(upstream.url, KEY, retry=FAST_RETRY)
    tracker = run_tracker(api, store, schedule=((math.inf, 1.0),))
    try:
        for prediction_id in stuck:
            tracker.track(Prediction(id=prediction_id, model=SCHNELL))
        time.sleep(3.0)  # every hostile call is in flight, holding its thread
        tracker.track(Prediction(id=healthy, model=SCHNELL))
        record = wait_until(lambda: (r := store.get(healthy)) and r.tracking == "done" and r, timeout=25)
        late = time.time() - finish_at
        print(f"healthy prediction stored {late:.1f} s after it finished, with 16 calls stuck")
        assert record.status == "succeeded" and len(record.outputs) == 1
        assert late < 10, f"the healthy prediction reached the store {late:.1f} s after it finished"
        assert all(store.get(i).tracking == "active" for i in stuck)  # still stuck, not lost
    finally:
        tracker.stop(grace=0.5)
        api.close()


# ---- 2. values checked at the boundary --------------------------------------------------------


def test_odd_values_become_unknown_with_a_note_and_the_row_stays_usable(upstream, client, store):
    normal = pid("n")
    upstream.status_route(normal, hostile.answer(hostile.prediction(normal, "processing")))
    odd = pid("odd")
    body = json.dumps(hostile.prediction(
        odd, "processing", created_at="9999-12-31T00:00:00Z", model="x" * 1_000_000,
        error=None, metrics={"predict_time": 1.5})).replace("1.5", "Infinity").encode()
    upstream.status_route(odd, hostile.answer(body))

    good = client.get(normal)
    assert good.problems == () and good.created_at is not None
    bad = client.get(odd)
    assert bad.created_at is None and bad.predict_time is None and bad.model == ""
    assert any("created_at" in p for p in bad.problems) and any("model" in p for p in bad.problems)

    tracker = run_tracker(client, store)
    try:
        tracker.track(Prediction(id=odd, model=SCHNELL))
        record = wait_until(lambda: (r := store.get(odd)) and r.note and r)
        assert "created_at" in record.note and record.created_at.year < 2100
        polls_before = upstream.count("GET", odd)
        time.sleep(3)
        # A lying answer is polled with backoff, not at the 0.2 s schedule (would be ~15).
        assert upstream.count("GET", odd) - polls_before <= 5
    finally:
        tracker.stop()
    assert odd in spreadsheet_csv(store.export_rows())


@pytest.mark.parametrize("output", [{"url": "https://x.example/a.png"}, 42, [7, None]],
                         ids=["dict", "int", "list-of-junk"])
def test_a_success_with_an_unreadable_output_ends_with_a_note_instead_of_saving_forever(
        upstream, client, store, output):
    odd, normal = pid("out"), pid("fine")
    upstream.status_route(odd, hostile.answer(hostile.prediction(odd, "succeeded", output=output)))
    upstream.route("GET", "/ok.png", hostile.file(hostile.png()))
    ok = hostile.prediction(normal, "succeeded", output=upstream.url + "/ok.png")
    upstream.status_route(normal, hostile.answer(ok))
    tracker = run_tracker(client, store)
    try:
        tracker.track(Prediction(id=odd, model=SCHNELL))
        tracker.track(Prediction(id=normal, model=SCHNELL))
        bad = wait_until(lambda: (r := store.get(odd)) and r.tracking != "active" and r)
        good = wait_until(lambda: (r := store.get(normal)) and r.tracking != "active" and r)
    finally:
        tracker.stop()
    assert (good.tracking, len(good.outputs)) == ("done", 1)
    assert bad.tracking == "gave_up" and NO_OUTPUT_NOTE in bad.note and not bad.outputs


def test_megabyte_strings_are_cut_to_size_before_they_are_stored(upstream, client, store):
    big = pid("big")
    upstream.status_route(big, hostile.answer(hostile.prediction(
        big, "x" * 1_000_000, error="e" * 1_000_000, logs="l" * 1_000_000)))
    prediction = client.get(big)
    assert prediction.status == "unknown" and len(prediction.error) <= 4000 and len(prediction.logs) <= 16_384
    store.record(prediction)
    record = store.get(big)
    assert len(record.status) <= 32 and len(record.error) <= 4000 and len(record.logs_tail) <= 4096


def test_an_answer_with_no_usable_id_is_refused(upstream, client):
    upstream.status_route(pid("noid"), hostile.answer({"id": "../../etc", "status": "succeeded"}))
    with pytest.raises(errors.BadResponse):
        client.get(pid("noid"))


# ---- 3. one create per intent: an unreadable create answer still records the prediction ------------


def test_a_create_answer_too_deep_to_decode_is_still_recorded_by_its_id(upstream, client):
    nested = b"[" * 100_000 + b"]" * 100_000
    deep = b'{"id": "' + pid("deep").encode() + b'", "status": "starting", "x": ' + nested + b"}"
    upstream.create_route(SCHNELL, hostile.answer(deep, status=201))
    prediction = client.create(SCHNELL, {"prompt": "deep"})
    assert prediction.id == pid("deep") and prediction.input == {"prompt": "deep"} and prediction.problems


def test_a_create_answer_without_a_readable_id_says_it_may_have_been_accepted(upstream, client):
    upstream.create_route(SCHNELL, hostile.answer(b"[" * 100_000, status=201))
    with pytest.raises(errors.CreateUncertain, match="may still have been accepted"):
        client.create(SCHNELL, {"prompt": "deep"})
    assert upstream.count("POST") == 1


@pytest.mark.parametrize("status", [200, 201])
def test_a_create_answered_200_or_201_is_a_prediction(upstream, client, status):
    made = hostile.prediction(pid(status), "starting", created_at="0001-01-01T00:00:00+14:00")
    upstream.create_route(SCHNELL, hostile.answer(made, status=status))
    prediction = client.create(SCHNELL, {"prompt": "ok"})
    assert prediction.id == pid(status) and prediction.created_at is None  # an overflowing date is dropped


def test_a_403_is_reported_as_not_allowed_with_its_message(upstream, client):
    not_enabled = {"error": {"message": "model not enabled for this key"}}
    upstream.status_route(pid(403), hostile.answer(not_enabled, status=403))
    upstream.status_route(pid(401), hostile.answer({"error": {"message": "bad key"}}, status=401))
    with pytest.raises(errors.Forbidden, match=r"may not do that \(403\): model not enabled"):
        client.get(pid(403))
    with pytest.raises(errors.AuthError):  # and a 401 is not a 403
        client.get(pid(401))


def test_aborted_with_no_error_text_ends_tracking(upstream, client, store):
    aborted = pid("abort")
    upstream.status_route(aborted, hostile.answer(hostile.prediction(aborted, "aborted", error=None)))
    assert client.get(aborted).is_terminal
    tracker = run_tracker(client, store)
    try:
        tracker.track(Prediction(id=aborted, model=SCHNELL))
        record = wait_until(lambda: (r := store.get(aborted)) and r.tracking != "active" and r)
    finally:
        tracker.stop()
    assert (record.status, record.tracking, record.error) == ("aborted", "done", None)


# ---- 4. the key never leaks, however the upstream echoes it -------------------------------------


@pytest.mark.parametrize("own_key", [False, True], ids=["server-key", "visitor-key"])
def test_an_echoed_key_reaches_no_row_export_log_or_message(upstream, store, tmp_path, caplog, own_key):
    key = "sk-visitor-9876543210zyxwvutsrq" if own_key else KEY
    api = Client(upstream.url, key, retry=FAST_RETRY)
    echoed = pid("echo")
    upstream.status_route(echoed, hostile.echo_key)
    upstream.create_route(SCHNELL, lambda h: hostile.send_json(
        h, 422, {"error": {"message": f"invalid key {h.bearer} (request id: {h.bearer})"}}, {"X-Request-Id": h.bearer}))
    caplog.set_level(logging.DEBUG)
    tracker = Tracker(None if own_key else api, store, allow_private_downloads=True, **FAST).start()
    try:
        tracker.track(Prediction(id=echoed, model=SCHNELL), client=api if own_key else None)
        record = wait_until(lambda: (r := store.get(echoed)) and r.tracking != "active" and r)
        with pytest.raises(errors.InvalidInput) as refused:
            api.create(SCHNELL, {"prompt": "x"})
    finally:
        tracker.stop()
        api.close()
    assert upstream.requests[0]["headers"]["Authorization"] == f"Bearer {key}"  # it was sent, and echoed
    assert record.error == "bad request from ***" and "***" in record.logs_tail
    assert key not in str(refused.value) and key not in (refused.value.detail or "")
    assert refused.value.request_id is None
    assert key not in spreadsheet_csv(store.export_rows())
    assert key not in caplog.text
    store.close()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path


# ---- 6. addresses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address, public",
    [("8.8.8.8", True), ("64:ff9b::808:808", True), ("2002:808:808::1", True), ("2606:4700::1111", True),
     ("127.0.0.1", False), ("64:ff9b::7f00:1", False), ("64:ff9b::a9fe:a9fe", False), ("2002:7f00:1::1", False),
     ("::ffff:10.0.0.1", False), ("169.254.169.254", False), ("fd00::1", False), ("224.0.0.1", False)],
)
def test_only_global_addresses_pass_including_ipv4_inside_ipv6(address, public):
    assert fetch._is_public(address) is public


def test_private_addresses_are_allowed_only_at_the_stand_ins_own_host_and_port(upstream):
    image = upstream.route("GET", "/own.png", hostile.file(hostile.png()))
    origin = upstream.url.removeprefix("http://")
    assert fetch_output(image, private_origin=origin).content_type == "image/png"
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other_origin = f"127.0.0.1:{other.getsockname()[1]}"
    with pytest.raises(FetchError, match="private, local or reserved"):
        fetch_output(image, private_origin=other_origin)  # same host, another port
    with pytest.raises(FetchError, match="private, local or reserved"):
        fetch_output("http://169.254.169.254/latest/meta-data", private_origin=origin)


def test_the_socket_connects_to_the_address_that_was_checked(upstream, monkeypatch):
    """DNS rebinding: the first lookup says public, a second would say private. Only one
    lookup happens, and the connection goes where the check looked."""
    image = hostile.png()
    upstream.route("GET", "/a.png", hostile.file(image))
    port = upstream.server_address[1]
    answers = iter(["127.0.0.2", "127.0.0.1"])  # 127.0.0.2 plays a public CDN below
    real_getaddrinfo, real_is_public = socket.getaddrinfo, fetch._is_public
    lookups = []

    def rebinding(host, *args, **kwargs):
        if host != "rebind.example":
            return real_getaddrinfo(host, *args, **kwargs)
        lookups.append(host)
        return real_getaddrinfo(next(answers), *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    monkeypatch.setattr(fetch, "_is_public", lambda a: a == "127.0.0.2" or real_is_public(a))
    with pytest.raises(FetchError, match="could not|connection failed"):
        # Checked 127.0.0.2 (nobody listens there): it must not fall through to 127.0.0.1.
        fetch_output(f"http://rebind.example:{port}/a.png")
    assert lookups == ["rebind.example"] and upstream.count("GET", "/a.png") == 0
    with pytest.raises(FetchError, match="private, local or reserved"):
        fetch_output(f"http://rebind.example:{port}/a.png")  # now it resolves to 127.0.0.1: refused
    assert upstream.count("GET", "/a.png") == 0


# ---- urllib3 Retry: a custom Retry-After cap survives Retry.new() ---------------------------------


def test_a_long_retry_after_is_not_slept_through_even_on_a_later_retry(upstream):
    replies = iter([(503, {}), (429, {"Retry-After": "4"})])
    upstream.status_route(pid("ra"), lambda h: _reply(h, replies))
    policy = RetryPolicy(attempts=3, backoff=0.05, backoff_max=0.1, jitter=0.0, retry_after_max=1.0)
    with Client(upstream.url, KEY, retry=policy) as api:
        started = time.monotonic()
        with pytest.raises(errors.RateLimited) as caught:
            api.get(pid("ra"))
    assert time.monotonic() - started < 2.5  # not the 4 s the second answer asked for
    assert caught.value.retry_after == 4 and upstream.count("GET", pid("ra")) == 2


def test_a_short_retry_after_is_honoured_and_retried(upstream):
    replies = iter([(429, {"Retry-After": "1"})])
    upstream.status_route(pid("rb"), lambda h: _reply(h, replies, then=hostile.prediction(pid("rb"))))
    policy = RetryPolicy(attempts=3, backoff=0.05, backoff_max=0.1, jitter=0.0, retry_after_max=2.0)
    with Client(upstream.url, KEY, retry=policy) as api:
        started = time.monotonic()
        assert api.get(pid("rb")).id == pid("rb")
    assert 0.9 < time.monotonic() - started < 3 and upstream.count("GET", pid("rb")) == 2


def _reply(handler, replies, then=None):
    status, headers = next(replies, (200, {}))
    hostile.send_json(handler, status, then if status == 200 and then else {"detail": "busy"}, headers)


# ---- memory: image and body bombs --------------------------------------------------------------


def test_bombs_keep_server_memory_bounded(upstream):
    """In a fresh interpreter (so the figure is this call's): a 169-megapixel PNG of a few hundred
    KB and a 300 MB status body each add well under 300 MB to the peak."""
    bomb = hostile.png_bomb()
    upstream.route("GET", "/bomb.png", hostile.file(bomb))
    upstream.route("GET", "/small.png", hostile.file(hostile.png()))
    upstream.status_route(pid("body"), hostile.endless(megabytes=300))
    script = textwrap.dedent(f"""
        import json, resource, sys
        from comet import errors
        from comet.client import Client
        from comet.fetch import FetchError, fetch_output
        from comet.store import make_thumbnail
        def peak():
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        origin = {upstream.url.removeprefix("http://")!r}
        small = fetch_output("{upstream.url}/small.png", private_origin=origin)
        make_thumbnail(small.data)
        start = peak()
        figures = {{}}
        try:
            fetch_output("{upstream.url}/bomb.png", private_origin=origin)
            figures["image"] = "accepted"
        except FetchError as exc:
            figures["image"] = str(exc)
        figures["image_mb"] = peak() - start
        with Client("{upstream.url}", "sk-bomb-test-key-000000") as api:
            try:
                api.get("{pid("body")}")
                figures["body"] = "accepted"
            except errors.CometError as exc:
                figures["body"] = str(exc)
        figures["body_mb"] = peak() - start
        print(json.dumps(figures))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    print("bomb figures:", figures)
    assert "pixels is more than" in figures["image"] and "too large" in figures["body"]
    assert figures["image_mb"] < 300 and figures["body_mb"] < 300
