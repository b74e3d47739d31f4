"""The tracker finishes every prediction and keeps its images, with no page open, through restarts,
faults and expiring URLs; and it is the only thing that asks CometAPI for a status. With several
trackers on one database (app replicas) each prediction is polled by one of them at a time.

Every test runs on an SQLite file and on PostgreSQL (the `database_url` fixture)."""

from __future__ import annotations

import io
import math
import threading
import time
from itertools import pairwise

import pytest
import requests
from PIL import Image

from comet import errors
from comet.client import Client, RetryPolicy, Timeouts, rejected_key_message
from comet.prediction import Prediction
from comet.sim import Sim
from comet.store import Record, Store
from comet.tracker import Tracker
from support.api import KEY, api_requests
from support.hostile import HostileServer, answer
from support.hostile import prediction as answered
from support.waiting import wait_until

SCHNELL = "black-forest-labs/flux-schnell"
# The production schedule (1 s, then slower; 2 s backoff) scaled down so the suite stays quick.
FAST = {"schedule": ((math.inf, 0.05),), "backoff": (0.05, 0.2), "max_sleep": 0.1}


@pytest.fixture
def tracker(client, store):
    with Tracker(client, store, allow_private_downloads=True, **FAST) as running:
        yield running



def settled(store: Store, prediction_id: str, timeout: float = 10.0) -> Record:
    """The record once tracking has ended (done or gave_up)."""
    return wait_until(lambda: (r := store.get(prediction_id)) and r.tracking != "active" and r, timeout)


def stored_images(store: Store, record: Record) -> list[bytes]:
    return [store.output_bytes(record.id, out.idx)[1] for out in record.outputs]


def test_a_prediction_ends_with_its_images_in_history_while_no_page_is_open(client, store, tracker):
    created = client.create(SCHNELL, {"prompt": "two lanterns", "num_outputs": 2})
    tracker.track(created, creator="ana")

    record = settled(store, created.id)

    assert (record.status, record.tracking, record.creator) == ("succeeded", "done", "ana")
    served = [requests.get(url, timeout=5).content for url in record.output_urls]
    assert len(served) == 2 and stored_images(store, record) == served
    assert [out.content_type for out in record.outputs] == ["image/webp", "image/webp"]


def test_images_are_still_there_after_the_output_urls_expire(sim, client, store, tracker):
    sim.configure(expire=0.5)
    created = client.create(SCHNELL, {"prompt": "a paper boat"})
    tracker.track(created)
    record = settled(store, created.id)

    wait_until(lambda: requests.get(record.output_urls[0], timeout=5).status_code == 404)
    assert client.get(created.id).data_removed

    content_type, data = store.output_bytes(created.id, 0)
    assert content_type == "image/webp" and Image.open(io.BytesIO(data)).size == (512, 512)
    assert store.page()["thumbnail"][0].startswith("data:image/jpeg;base64,")


def test_outputs_that_expired_before_anyone_saved_them_are_reported(sim, client, store):
    sim.configure(expire=0.1)
    created = client.create(SCHNELL, {"prompt": "too late"})
    store.record(created)  # the app stopped before its tracker ever ran
    wait_until(lambda: client.get(created.id).data_removed)

    with Tracker(client, store, allow_private_downloads=True, **FAST):
        record = settled(store, created.id)

    assert (record.status, record.tracking, record.outputs) == ("succeeded", "gave_up", [])
    assert "expired before they could be saved" in record.note


def test_a_restarted_tracker_resumes_and_finishes_what_was_unfinished(sim, client, database_url):
    sim.configure(run_time=1.0)
    path = database_url
    before = Store(path)
    first = Tracker(client, before, allow_private_downloads=True, **FAST).start()
    polled = client.create(SCHNELL, {"prompt": "polled before the restart"})
    first.track(polled)
    wait_until(lambda: before.get(polled.id).last_polled_at)
    first.stop()  # the server restarts: nothing polls any more
    never_polled = client.create(SCHNELL, {"prompt": "recorded while no tracker ran"})
    before.record(never_polled)
    assert set(before.unfinished_ids()) == {polled.id, never_polled.id}
    before.close()

    after = Store(path)
    with Tracker(client, after, allow_private_downloads=True, **FAST):
        records = [settled(after, p.id) for p in (polled, never_polled)]

    assert [(r.status, r.tracking, r.output_count) for r in records] == [("succeeded", "done", 1)] * 2
    assert after.unfinished_count() == 0
    after.close()


def test_transient_faults_do_not_stop_tracking(sim, store):
    # No retries inside the client, so every fault reaches the tracker itself.
    bare = Client(sim.url, KEY, retry=RetryPolicy(attempts=0), timeouts=Timeouts(connect=2, read_status=5))
    for kind in ("429", "503", "524", "drop", "malformed", "status:queued"):
        sim.add_fault(route="get", kind=kind, retry_after=1 if kind == "429" else None)
    created = bare.create(SCHNELL, {"prompt": "through the storm"})

    with Tracker(bare, store, allow_private_downloads=True, **FAST) as tracker:
        tracker.track(created)
        record = settled(store, created.id)

    assert (record.status, record.tracking, record.output_count) == ("succeeded", "done", 1)
    assert record.note is None, "the last problem is cleared by a good answer"
    polls = api_requests(sim, "GET", created.id)
    assert len(polls) >= 7, "six spoiled answers, then a good one"
    assert polls[1]["time"] - polls[0]["time"] >= 0.95, "Retry-After: 1 was honoured"
    bare.close()


def test_a_failed_download_is_retried_on_a_later_poll(sim, client, store, tracker):
    sim.add_fault(route="file", kind="503", times=2)
    created = client.create(SCHNELL, {"prompt": "a shaky CDN"})
    tracker.track(created)

    record = settled(store, created.id)

    assert (record.tracking, record.output_count) == ("done", 1)
    assert len([r for r in sim.requests if r["path"].startswith("/files/")]) == 3


def test_an_id_cometapi_does_not_know_is_given_up_with_a_note(store, tracker):
    tracker.track(Prediction(id="unknownprediction000000000"))

    record = settled(store, "unknownprediction000000000")

    assert record.tracking == "gave_up" and "CometAPI no longer knows this prediction" in record.note


def test_a_rejected_key_stops_tracking_with_a_note(store):
    with Sim(key="the-right-key", start_delay=0.05, run_time=0.2) as strict:
        created = Client(strict.url, "the-right-key").create(SCHNELL, {"prompt": "a key that changed"})
        wrong_key = Client(strict.url, "a-wrong-key")
        with Tracker(wrong_key, store, allow_private_downloads=True, **FAST) as tracker:
            tracker.track(created)
            record = settled(store, created.id)

    assert record.tracking == "gave_up" and "401" in record.note


def stopped_by_a_refused_key(strict: Sim, store: Store, prompts: list[str]) -> list[str]:
    """Predictions made with the right key, then polled with a wrong one until tracking stopped."""
    right = Client(strict.url, "the-right-key")
    made = [right.create(SCHNELL, {"prompt": prompt}).id for prompt in prompts]
    with Tracker(Client(strict.url, "a-wrong-key"), store, allow_private_downloads=True, **FAST) as wrong:
        for prediction_id in made:
            wrong.track(Prediction(id=prediction_id, model=SCHNELL))
        for prediction_id in made:
            assert settled(store, prediction_id).note.startswith("CometAPI rejected the server's API key")
    return made


def test_a_server_key_that_works_again_resumes_what_its_refusal_stopped(store):
    with Sim(key="the-right-key", start_delay=0.05, run_time=0.2) as strict:
        made = stopped_by_a_refused_key(strict, store, ["a fern", "a fjord", "a falcon"])
        elsewhere = Client(strict.url, "the-right-key").create(SCHNELL, {"prompt": "gone"})
        store.record(elsewhere)
        store.give_up(elsewhere.id, "CometAPI no longer knows this prediction (404).")  # another reason

        with Tracker(Client(strict.url, "the-right-key"), store, allow_private_downloads=True, **FAST):
            records = [wait_until(lambda pid=pid: (r := store.get(pid)) and r.tracking == "done" and r)
                       for pid in made]  # the operator fixed COMETAPI_KEY: no Resume click needed
            time.sleep(0.5)
            assert store.get(elsewhere.id).tracking == "gave_up"  # stopped for another reason: left alone

    assert all(r.status == "succeeded" and r.note is None and len(r.outputs) == 1 for r in records)


def test_a_server_key_still_refused_costs_one_request_and_resumes_nothing_else(store):
    with Sim(key="the-right-key", start_delay=0.05, run_time=0.2) as strict:
        made = stopped_by_a_refused_key(strict, store, ["a fern", "a fjord", "a falcon"])
        polls_before = len(api_requests(strict, "GET", "/predictions/"))

        with Tracker(Client(strict.url, "another-wrong-key"), store, allow_private_downloads=True, **FAST):
            time.sleep(1.5)
        polls = api_requests(strict, "GET", "/predictions/")[polls_before:]

    newest = max(made, key=lambda pid: (store.get(pid).created_at, pid))  # as the store orders them
    assert [poll["path"].rsplit("/", 1)[-1] for poll in polls] == [newest]  # the probe only
    assert all(store.get(pid).tracking == "gave_up" for pid in made)


def test_only_stops_for_a_refused_key_within_the_window_are_resumed(store):
    refused = rejected_key_message(personal=False)
    old, recent = "stoppedbeforewindow01", "stoppedwithinwindow02"
    store.record(Prediction(id=old, model=SCHNELL))
    store.give_up(old, refused)
    time.sleep(0.01)
    window_start = time.time()
    store.record(Prediction(id=recent, model=SCHNELL))
    store.give_up(recent, refused)

    assert store.resume_stopped("CometAPI rejected the server's API key", since=window_start) == 1
    assert (store.get(old).tracking, store.get(recent).tracking) == ("gave_up", "active")
    assert store.get(recent).next_poll_at.timestamp() <= time.time()  # due at once


@pytest.mark.parametrize(("prompt", "status"), [("[sim:fail] a cat", "failed"), ("[sim:abort] a cat", "aborted")])
def test_a_prediction_that_fails_or_aborts_is_recorded_with_its_error(client, store, tracker, prompt, status):
    created = client.create(SCHNELL, {"prompt": prompt})
    tracker.track(created)

    record = settled(store, created.id)

    assert (record.status, record.tracking, record.outputs) == (status, "done", [])
    assert record.error.startswith("Prediction ") and status in record.error
    assert record.is_terminal


def test_a_prediction_without_a_final_status_is_given_up_at_the_deadline(client, store):
    created = client.create(SCHNELL, {"prompt": "[sim:slow] a very long run"})

    with Tracker(client, store, allow_private_downloads=True, deadline=0.5, **FAST) as tracker:
        tracker.track(created)
        record = settled(store, created.id)

    assert (record.status, record.tracking) == ("processing", "gave_up")
    assert record.note == "Gave up after 0.5 s without a final status."


def test_data_uri_outputs_are_stored(sim, client, store, tracker):
    sim.configure(output_style="data_uri")
    created = client.create(SCHNELL, {"prompt": "inline pixels", "num_outputs": 2})
    tracker.track(created)

    record = settled(store, created.id)

    assert record.output_count == 2 and record.output_urls == ["data:image/webp;base64,..."] * 2
    assert all(Image.open(io.BytesIO(data)).format == "WEBP" for data in stored_images(store, record))


def test_a_hanging_status_query_holds_up_neither_the_others_nor_a_second_poll(sim, client, store, tracker):
    sim.add_fault(route="get", kind="hang", delay=1.5)
    stuck = client.create(SCHNELL, {"prompt": "stuck"})
    tracker.track(stuck)
    wait_until(lambda: api_requests(sim, "GET", stuck.id))
    quick = client.create(SCHNELL, {"prompt": "quick"})
    tracker.track(quick)

    assert settled(store, quick.id, timeout=1.2).status == "succeeded"
    assert store.get(stuck.id).tracking == "active"
    assert len(api_requests(sim, "GET", stuck.id)) == 1, "never two polls of one id at once"
    assert settled(store, stuck.id).status == "succeeded"


def test_only_the_tracker_polls_however_many_people_watch(sim, client, store, tracker):
    created = client.create(SCHNELL, {"prompt": "[sim:slow] watched by many"})
    tracker.track(created)
    stop = threading.Event()
    reads = []

    def viewer() -> None:  # a browser session: it reads the history, never the API
        while not stop.is_set():
            store.get(created.id)
            store.page(limit=20)
            reads.append(1)

    started = time.monotonic()
    viewers = [threading.Thread(target=viewer) for _ in range(8)]
    for thread in viewers:
        thread.start()
    # At least 1.5 s and 150 reads (a loaded machine reads slower; the count, not the clock, is
    # what makes the readers many), at most 20 s.
    time.sleep(1.5)
    wait_until(lambda: len(reads) >= 150, timeout=20)
    stop.set()
    for thread in viewers:
        thread.join()
    elapsed = time.monotonic() - started

    polls = len(api_requests(sim, "GET", created.id))
    assert len(reads) >= 150
    assert 5 <= polls <= elapsed / 0.05 + 3, "about one poll per interval, whatever the readers do"


# ---- cancel: asked by a page, recorded by the tracker -----------------------------------------------


def test_a_cancel_ends_a_running_prediction_canceled_even_with_a_poll_under_way(sim, client, store, tracker):
    sim.configure(run_time=30.0)
    created = client.create(SCHNELL, {"prompt": "not this one after all"})
    sim.add_fault(route="get", kind="hang", delay=1.0)  # a poll that answers "processing" late
    tracker.track(created)
    wait_until(lambda: api_requests(sim, "GET", created.id))
    token = tracker.news_token(created.id)

    answer_ = tracker.cancel(created.id)

    assert answer_.status == "canceled" and len(api_requests(sim, "POST", "/cancel")) == 1
    assert (store.get(created.id).status, store.get(created.id).tracking) == ("canceled", "done")
    assert tracker.wait_for_news(created.id, token, 10.0)  # the late poll has finished ...
    record = store.get(created.id)
    assert (record.status, record.tracking) == ("canceled", "done"), "... and did not write over the cancel"


def test_a_cancel_the_server_refuses_changes_nothing_and_the_prediction_runs_to_the_end(sim, client, store):
    sim.configure(cancel_supported=False)
    created = client.create(SCHNELL, {"prompt": "cannot be stopped"})
    store.record(created)
    before = store.get(created.id)
    tracker = Tracker(client, store, allow_private_downloads=True, **FAST)

    with pytest.raises(errors.CannotCancel):
        tracker.cancel(created.id)

    assert store.get(created.id) == before
    with tracker:
        assert settled(store, created.id).status == "succeeded"


def test_a_cancel_answered_with_another_predictions_id_writes_nothing(store):
    mine, theirs = "cancelmine0000000000000000", "canceltheirs00000000000000"
    with HostileServer() as upstream, Client(upstream.url, KEY) as api:
        upstream.route("POST", f"/replicate/v1/predictions/{mine}/cancel", answer(answered(theirs, "canceled")))
        for pid_ in (mine, theirs):
            store.record(Prediction.from_json(answered(pid_, "processing")))
        tracker = Tracker(api, store, allow_private_downloads=True, **FAST)

        with pytest.raises(errors.BadResponse):
            tracker.cancel(mine)

    assert [(store.get(p).status, store.get(p).tracking) for p in (mine, theirs)] == [("processing", "active")] * 2


def test_a_cancel_uses_the_key_that_made_the_prediction_and_without_one_asks_nothing(database_url):
    history = Store(database_url)
    with Sim(key="a-visitors-own-key", start_delay=0.05, run_time=30.0) as strict:
        personal = Client(strict.url, "a-visitors-own-key")
        made, other = (personal.create(SCHNELL, {"prompt": f"my own key {n}"}) for n in range(2))
        tracker = Tracker(None, history, allow_private_downloads=True, **FAST)  # no server key
        tracker.track(made, client=personal)
        history.record(other)  # made with a key this process no longer holds

        assert tracker.cancel(made.id).status == "canceled"
        with pytest.raises(errors.AuthError, match="own key"):
            tracker.cancel(other.id)

        cancels = api_requests(strict, "POST", "/cancel")
        assert [r["path"].split("/")[-2] for r in cancels] == [made.id]
        assert history.get(made.id).status == "canceled" and history.get(other.id).status == "starting"
        personal.close()
    history.close()


# ---- several trackers on one database ------------------------------------------------------------


class LoggedTracker(Tracker):
    """A tracker that notes when each of its polls starts and ends (on the shared list `log`)."""

    def __init__(self, *args, log: list, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._log = log

    def _poll(self, record: Record) -> None:
        self._log.append((record.id, self.owner, "start", time.monotonic()))
        try:
            time.sleep(0.02)  # a slower poll makes an overlap, if there were one, easy to see
            super()._poll(record)
        finally:
            self._log.append((record.id, self.owner, "end", time.monotonic()))


def overlapping_polls(log: list) -> list[str]:
    """Ids polled by two trackers at overlapping times."""
    spans: dict[str, list[tuple[float, float, str]]] = {}
    open_: dict[tuple[str, str], float] = {}
    for pid_, owner, event, moment in sorted(log, key=lambda entry: entry[3]):
        if event == "start":
            open_[(pid_, owner)] = moment
        else:
            spans.setdefault(pid_, []).append((open_.pop((pid_, owner)), moment, owner))
    clashes = []
    for pid_, polls in spans.items():
        polls.sort()
        clashes += [pid_ for (_, end, _), (start, _, _) in pairwise(polls) if start < end]
    return clashes


def test_two_trackers_on_one_database_share_the_work_and_never_poll_one_id_together(sim, client, database_url):
    sim.configure(run_time=0.6)
    stores = [Store(database_url), Store(database_url)]  # two app processes, each with its own
    log: list = []
    made = [client.create(SCHNELL, {"prompt": f"shared work {n}"}) for n in range(16)]
    for prediction in made:
        stores[0].record(prediction)

    trackers = [LoggedTracker(client, history, allow_private_downloads=True, workers=3, log=log, **FAST)
                for history in stores]
    for tracker in trackers:
        tracker.start()
    records = [settled(stores[0], p.id, timeout=20) for p in made]
    for tracker in trackers:
        tracker.stop()

    assert [(r.status, r.tracking, r.output_count, r.lease_owner) for r in records] == [
        ("succeeded", "done", 1, None)] * 16
    assert {owner for _, owner, _, _ in log} == {t.owner for t in trackers}, "both took part"
    assert overlapping_polls(log) == []
    downloads = [r["path"].split("/")[2] for r in sim.requests if r["path"].startswith("/files/")]
    assert sorted(downloads) == sorted(p.id for p in made), "each output downloaded once"
    for history in stores:
        history.close()


def test_the_predictions_of_a_tracker_that_died_are_taken_over_when_its_lease_runs_out(sim, client, store):
    created = client.create(SCHNELL, {"prompt": "left behind"})
    store.record(created)
    [claimed] = store.claim_due("replica-that-died", lease=0.8)  # then the process was killed
    lapsed = claimed.lease_until.timestamp()

    with Tracker(client, store, allow_private_downloads=True, lease=5, **FAST) as tracker:
        record = settled(store, created.id)

    assert (record.status, record.tracking, record.output_count) == ("succeeded", "done", 1)
    polls = api_requests(sim, "GET", created.id)
    assert polls and polls[0]["time"] >= lapsed, "not before the dead tracker's lease ran out"
    assert tracker.owner != "replica-that-died"


def test_a_stopped_tracker_releases_what_it_held(sim, client, store):
    created = client.create(SCHNELL, {"prompt": "[sim:slow] handed over"})
    tracker = Tracker(client, store, allow_private_downloads=True, lease=60, **FAST).start()
    tracker.track(created)
    wait_until(lambda: store.get(created.id).last_polled_at)

    tracker.stop()

    assert store.get(created.id).lease_owner is None
    next_poll = store.get(created.id).next_poll_at.timestamp() + 0.001  # datetimes keep microseconds
    assert [r.id for r in store.claim_due("the-next-replica", now=next_poll)] == [created.id], "no 60 s wait"


def test_stopping_does_not_wait_for_a_hanging_poll_and_its_late_answer_is_not_written(sim, client, store):
    created = client.create(SCHNELL, {"prompt": "asked just before a shutdown"})
    tracker = Tracker(client, store, allow_private_downloads=True, lease=60, **FAST).start()
    sim.add_fault(route="get", kind="hang", delay=2.0)
    tracker.track(created)
    wait_until(lambda: api_requests(sim, "GET", created.id))

    started = time.monotonic()
    tracker.stop(grace=0.2)
    assert time.monotonic() - started < 1.5, "a shutdown is not held up by an upstream that hangs"
    assert store.get(created.id).lease_owner is None, "handed over at once"

    time.sleep(2.5)  # the hanging answer arrives after the stop
    record = store.get(created.id)
    assert (record.status, record.last_polled_at) == ("starting", None), "a stopped tracker writes nothing"
    with Tracker(client, store, allow_private_downloads=True, **FAST):  # the next one finishes it
        assert settled(store, created.id).status == "succeeded"


def test_a_prediction_made_with_a_personal_key_is_polled_only_by_the_replica_holding_that_key(database_url):
    with Sim(key="a-visitors-own-key", start_delay=0.05, run_time=1.0) as strict:
        personal = Client(strict.url, "a-visitors-own-key")
        created = personal.create(SCHNELL, {"prompt": "made with my own key"})
        stores = [Store(database_url), Store(database_url)]
        # Two replicas without a server key: only the one given the personal client can poll it.
        holder, other = (Tracker(None, history, allow_private_downloads=True, **FAST) for history in stores)
        with holder, other:
            holder.track(created, client=personal)
            record = settled(stores[0], created.id)
        polls = api_requests(strict, "GET", created.id)

    assert (record.status, record.tracking, record.output_count, record.note) == ("succeeded", "done", 1, None)
    assert polls and all(r["headers"].get("authorization") == "Bearer a-visitors-own-key" for r in polls)
    for history in stores:
        history.close()
    personal.close()


def test_a_run_is_polled_just_after_the_end_its_logs_predict(store):
    """With the production 1 s schedule a 2.3 s run was noticed up to a second late; the tqdm
    rate in its logs says when it ends, so the tracker asks right then, with no extra polls."""
    with Sim(start_delay=0.3, run_time=2.3) as sim, Client(sim.url, KEY) as api:
        with Tracker(api, store, allow_private_downloads=True, schedule=((math.inf, 1.0),), max_sleep=0.1) as tracker:
            created = api.create(SCHNELL, {"prompt": "on time"})
            started = time.time()
            tracker.track(created)
            wait_until(lambda: tracker.ends_within(created.id, 5.0), timeout=5)  # it read the logs
            token = tracker.news_token(created.id)
            assert tracker.wait_for_news(created.id, token, 5.0)  # a page waiting is woken by a poll
            record = settled(store, created.id)
        ended = sim.predictions[created.id]["completed"]
        gets = len(api_requests(sim, "GET"))
    late = record.updated_at.timestamp() - ended
    assert 0 <= late < 0.5, f"stored {late:.2f} s after the run ended"
    assert gets <= math.ceil(ended - started) + 2  # about the schedule's count, not more
