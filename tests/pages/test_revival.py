"""A prediction whose tracking stopped (a rejected key, a 404 while the upstream was confused, a
restart that lost a visitor's key) can be revived: tracking its id again, from the Track box or
the card's *Resume tracking* button, puts it back under the tracker with the key in use now, and
it finishes like any other, its images saved. Until then its card says it is not followed: no
progress bar, no Cancel.

Over real sockets to the stand-in; the store tests run on SQLite and PostgreSQL."""

from __future__ import annotations

import math

import pytest

from comet.client import Client
from comet.config import Settings
from comet.sim import Sim
from comet.store import Store
from comet.tracker import NOT_FOUND_NOTE, Tracker
from support.api import KEY, api_requests
from support.apptest import open_app
from support.waiting import rerun_until, wait_until

SCHNELL = "black-forest-labs/flux-schnell"
HISTORY = "pages/history.py"
OWN = "sk-visitor-own-key-9876543210zyxwvu"
FAST = {"schedule": ((math.inf, 0.05),), "backoff": (0.05, 0.2), "max_sleep": 0.1}


def settled(store: Store, prediction_id: str, timeout: float = 15.0):
    return wait_until(lambda: (r := store.get(prediction_id)) and r.tracking != "active" and r, timeout)


# ---- the store: tracking a known id again ---------------------------------------------------------


@pytest.fixture
def store(database_url):
    history = Store(database_url)
    yield history
    history.close()


def test_tracking_a_stopped_prediction_again_makes_it_due_at_once(client, store):
    made = client.create(SCHNELL, {"prompt": "left behind"})
    store.record(made, creator="ana")
    store.claim_due("a-tracker")
    store.give_up(made.id, "CometAPI no longer knows this prediction (404).", owner="a-tracker")

    store.record(client.get(made.id), creator="someone else")  # the Track box, with a fresh answer

    record = store.get(made.id)
    assert (record.tracking, record.note, record.poll_failures, record.lease_owner) == ("active", None, 0, None)
    assert record.creator == "ana", "the first creator is kept"
    assert [r.id for r in store.claim_due("another-tracker")] == [made.id], "due at once"


def test_tracking_a_finished_prediction_again_leaves_it_finished(client, store):
    made = client.create(SCHNELL, {"prompt": "[sim:fail] done already"})
    store.record(made)
    answer = client.wait(made.id, timeout=10)
    store.update(answer)
    assert store.get(made.id).tracking == "done"

    store.record(answer)

    assert store.get(made.id).tracking == "done"
    assert store.claim_due("a-tracker") == []


def test_tracking_a_running_prediction_again_does_not_take_it_from_its_tracker(client, store):
    made = client.create(SCHNELL, {"prompt": "[sim:slow] being polled"})
    store.record(made)
    [claimed] = store.claim_due("the-holder", lease=60)

    store.record(client.get(made.id))

    record = store.get(made.id)
    assert (record.tracking, record.lease_owner) == ("active", "the-holder")
    assert store.claim_due("another-tracker") == []


# ---- the tracker: a revived prediction finishes, polled with the key in use now ------------------


def test_a_prediction_given_up_on_a_rejected_key_finishes_when_tracked_again_with_a_good_one(store):
    """The issue's story: made with a visitor's key, checked after a restart with the server's
    (rejected) key, given up; the visitor enters their key again and tracks the id."""
    with Sim(key=OWN, start_delay=0.05, run_time=0.3) as strict:
        personal = Client(strict.url, OWN, personal=True)
        server = Client(strict.url, "a-server-key-upstream-rejects")
        made = personal.create(SCHNELL, {"prompt": "a lighthouse at dusk"})
        with Tracker(server, store, allow_private_downloads=True, **FAST) as tracker:
            tracker.track(made)
            stopped = settled(store, made.id)
            assert stopped.tracking == "gave_up" and "server's API key" in stopped.note
            strict.clear_requests()

            tracker.track(personal.get(made.id), client=personal)
            record = settled(store, made.id)

        polls = api_requests(strict, "GET", made.id)
    assert (record.status, record.tracking, record.output_count, record.note) == ("succeeded", "done", 1, None)
    assert store.output_bytes(made.id, 0)[0] == "image/webp"
    assert polls and all(r["headers"]["authorization"] == f"Bearer {OWN}" for r in polls)
    personal.close()
    server.close()


def test_tracking_again_with_a_key_that_is_still_rejected_stops_again_and_says_whose_key(store):
    with Sim(key=OWN, start_delay=0.05, run_time=0.3) as strict:
        made = Client(strict.url, OWN).create(SCHNELL, {"prompt": "still locked out"})
        wrong = Client(strict.url, "sk-a-typo-in-the-visitors-key", personal=True)
        store.record(made)
        store.give_up(made.id, "CometAPI no longer knows this prediction (404).")
        with Tracker(None, store, allow_private_downloads=True, **FAST) as tracker:
            tracker.track(made, client=wrong)
            record = settled(store, made.id)
    assert (record.tracking, record.output_count) == ("gave_up", 0)
    assert "your own API key" in record.note and "COMETAPI_KEY" not in record.note


def test_a_prediction_given_up_on_a_404_finishes_once_tracked_where_it_is_known(sim, client, store):
    made = client.create(SCHNELL, {"prompt": "asked at the wrong place"})
    with Sim() as confused, Client(confused.url, KEY) as elsewhere:  # an upstream that lost it
        with Tracker(elsewhere, store, allow_private_downloads=True, **FAST) as tracker:
            tracker.track(made)
            assert settled(store, made.id).note == NOT_FOUND_NOTE
    with Tracker(client, store, allow_private_downloads=True, **FAST) as tracker:
        tracker.track(client.get(made.id))
        record = settled(store, made.id)
    assert (record.status, record.tracking, record.output_count) == ("succeeded", "done", 1)


# ---- the History page: the stopped card, the Track box and the Resume button ---------------------


def app_store(base_url: str) -> Store:
    """The app's own history file (COMET_DATA_DIR is app_env's folder), as the page opens it."""
    return Store.for_settings(Settings.from_sources({"COMETAPI_KEY": KEY, "COMETAPI_BASE_URL": base_url}))


def stopped_prediction(upstream_client: Client, history: Store, note: str) -> str:
    """A prediction the app recorded while it was starting, then stopped checking."""
    made = upstream_client.create(SCHNELL, {"prompt": "a lighthouse at dusk"})
    history.record(made)
    history.give_up(made.id, note)
    return made.id


def history_page(base_url: str, prediction_id: str | None = None):
    at = open_app(page=HISTORY, query={"id": prediction_id} if prediction_id else None,
                  COMETAPI_KEY=KEY, COMETAPI_BASE_URL=base_url)
    assert not at.exception, at.exception
    return at


def card_text(at) -> str:
    parts = [str(getattr(e, "value", "")) for e in at.main]
    return "\n".join(parts + [b.proto.label for b in at.get("badge")])


def button(at, key: str):
    found = [b for b in at.button if b.key == key]
    return found[0] if found else None


@pytest.fixture
def app_history(sim, app_env):
    history = app_store(sim.url)
    yield history
    history.close()


def test_a_stopped_prediction_is_shown_as_not_followed_without_progress_or_cancel(sim, client, app_history):
    pid = stopped_prediction(client, app_history, "CometAPI no longer knows this prediction (404).")
    at = history_page(sim.url, pid)
    text = card_text(at)
    assert "Not followed" in text and "status unknown since" in text
    assert "so far" not in text
    assert any("Stopped checking" in w.value and "no longer knows" in w.value for w in at.warning)
    assert not at.get("progress")
    assert button(at, f"detail-{pid}-cancel") is None
    assert button(at, f"detail-{pid}-resume") is not None


def test_a_running_prediction_has_progress_and_cancel_but_no_resume(sim, client, app_history):
    made = client.create(SCHNELL, {"prompt": "[sim:slow] still followed"})
    app_history.record(made)
    at = history_page(sim.url, made.id)
    assert button(at, f"detail-{made.id}-cancel") is not None
    assert button(at, f"detail-{made.id}-resume") is None
    assert "Not followed" not in card_text(at)


def test_resume_tracking_finishes_a_stopped_prediction_and_saves_its_image(sim, client, app_history):
    pid = stopped_prediction(client, app_history, "Gave up after 45 min without a final status.")
    at = history_page(sim.url, pid)

    button(at, f"detail-{pid}-resume").click().run()

    assert not at.exception
    assert app_history.get(pid).tracking in ("active", "done")
    rerun_until(at, lambda at: at.get("image"))  # the app's tracker finished it
    record = app_history.get(pid)
    assert (record.status, record.tracking, record.output_count) == ("succeeded", "done", 1)
    assert app_history.output_bytes(pid, 0)[0] == "image/webp"
    assert button(at, f"detail-{pid}-resume") is None


def test_the_track_box_revives_a_stopped_prediction_already_in_the_history(sim, client, app_history):
    pid = stopped_prediction(client, app_history, "CometAPI no longer knows this prediction (404).")
    at = history_page(sim.url)
    next(f for f in at.text_input if f.label == "Prediction id").input(pid)
    next(b for b in at.button if b.form_id == "history.track").click().run()

    assert not at.exception
    rerun_until(at, lambda at: at.get("image"))
    record = app_history.get(pid)
    assert (record.status, record.tracking, record.output_count, record.note) == ("succeeded", "done", 1, None)


def test_resume_with_the_visitors_own_key_after_the_server_key_was_rejected(app_env):
    with Sim(key=OWN, start_delay=0.05, run_time=0.3) as strict:
        history = app_store(strict.url)
        with Client(strict.url, OWN) as personal:
            pid = stopped_prediction(personal, history, "CometAPI rejected the server's API key (401).")
        at = history_page(strict.url, pid)
        # The app's tracker tries the newest prediction its key's refusal stopped once at start
        # (in case the key was fixed); refused again, it is stopped again.
        rerun_until(at, lambda at: button(at, f"detail-{pid}-resume") is not None)

        # Without their key: the server's key is refused, the card says so and nothing changes.
        button(at, f"detail-{pid}-resume").click().run()
        assert any("rejected the server's API key" in w.value for w in at.warning)
        assert history.get(pid).tracking == "gave_up"

        at.text_input(key="own.typed").input(OWN).run()
        next(b for b in at.sidebar.button if b.label == "Use this key").click().run()
        strict.clear_requests()
        button(at, f"detail-{pid}-resume").click().run()
        rerun_until(at, lambda at: at.get("image"))
        polls = api_requests(strict, "GET", pid)
        record = history.get(pid)
        history.close()
    assert (record.status, record.tracking, record.output_count) == ("succeeded", "done", 1)
    assert polls and all(r["headers"]["authorization"] == f"Bearer {OWN}" for r in polls)


def test_resuming_an_id_the_api_does_not_know_says_so_and_changes_nothing(sim, client, app_history):
    with Sim() as elsewhere, Client(elsewhere.url, KEY) as other:
        pid = stopped_prediction(other, app_history, "CometAPI no longer knows this prediction (404).")
    at = history_page(sim.url, pid)
    button(at, f"detail-{pid}-resume").click().run()
    assert any("does not know this prediction" in w.value for w in at.warning)
    assert app_history.get(pid).tracking == "gave_up"
