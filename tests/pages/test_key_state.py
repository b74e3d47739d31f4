"""Which key was rejected, and what to do about it; and the sidebar badge, which shows the API as
this connection last found it: live (green), key rejected (red), unreachable (orange).

The client remembers what its latest call found (whoever made it: a page, or the tracker's
polls); a rejected key is the stand-in started with `key=`, an unreachable API a closed port."""

from __future__ import annotations

import math
import socket
import time

import pytest

from comet import errors
from comet.client import OK, REJECTED, UNREACHABLE, Client, Timeouts
from comet.config import Settings
from comet.sim import Sim
from comet.store import Store
from comet.tracker import Tracker
from support.api import FAST_RETRY, KEY
from support.apptest import open_app
from support.waiting import wait_until

SCHNELL = "black-forest-labs/flux-schnell"
OWN = "sk-visitor-own-key-9876543210zyxwvu"
FAST = {"schedule": ((math.inf, 0.05),), "backoff": (0.05, 0.2), "max_sleep": 0.1}


def closed_port_url() -> str:
    """A loopback address nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def unescaped(text: str) -> str:
    return text.replace("\\", "")


# ---- what a rejected key's message says --------------------------------------------------------


def test_a_rejected_server_key_tells_the_operator_and_offers_the_visitor_their_own_key():
    with Sim(key=KEY) as strict, Client(strict.url, "sk-the-servers-stale-key-000", retry=FAST_RETRY) as server:
        with pytest.raises(errors.AuthError) as caught:
            server.create(SCHNELL, {"prompt": "a"})
    message = caught.value.message
    assert "server's API key" in message and "COMETAPI_KEY" in message and "Use your own key" in message
    assert not caught.value.personal


def test_a_rejected_visitor_key_points_at_the_key_they_entered_not_at_the_server():
    with Sim(key=KEY) as strict, Client(strict.url, "sk-a-typo-in-my-own-key-000", personal=True,
                                        retry=FAST_RETRY) as mine:
        with pytest.raises(errors.AuthError) as caught:
            mine.get("q4chw5rey9rmt0cww76t4h3ma4")
    message = caught.value.message
    assert "your own API key" in message and "Use your own key" in message
    assert "COMETAPI_KEY" not in message and "server" not in message
    assert caught.value.personal


def test_the_tracker_note_for_a_rejected_visitor_key_says_whose_key(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'history.sqlite'}")
    with Sim(key=KEY, start_delay=0.05, run_time=0.2) as strict:
        made = Client(strict.url, KEY).create(SCHNELL, {"prompt": "made, then the key was retyped wrong"})
        wrong = Client(strict.url, "sk-a-typo-in-my-own-key-000", personal=True)
        with Tracker(None, store, allow_private_downloads=True, **FAST) as tracker:
            tracker.track(made, client=wrong)
            record = wait_until(lambda: (r := store.get(made.id)).tracking != "active" and r)
    assert record.tracking == "gave_up" and record.note.startswith("CometAPI rejected your own API key (401)")
    store.close()


# ---- what a client remembers of its latest call --------------------------------------------------


def test_a_client_that_has_made_no_call_knows_nothing_yet(sim):
    assert Client(sim.url, KEY).last_outcome is None


def test_an_accepted_key_is_remembered_as_ok_with_when(client):
    before = time.time()
    client.create(SCHNELL, {"prompt": "a"})
    outcome = client.last_outcome
    assert (outcome.state, outcome.status) == (OK, 201)
    assert before <= outcome.at <= time.time()


def test_a_rejected_key_is_remembered_as_rejected():
    with Sim(key=KEY) as strict, Client(strict.url, "sk-wrong-key-000000000000", retry=FAST_RETRY) as wrong:
        with pytest.raises(errors.AuthError):
            wrong.create(SCHNELL, {"prompt": "a"})
        assert (wrong.last_outcome.state, wrong.last_outcome.status) == (REJECTED, 401)
        right = Client(strict.url, KEY)
        right.create(SCHNELL, {"prompt": "a"})
        assert right.last_outcome.state == OK, "each client its own state"


def test_a_closed_port_is_remembered_as_unreachable():
    with Client(closed_port_url(), KEY, retry=FAST_RETRY, timeouts=Timeouts(connect=1)) as api:
        with pytest.raises(errors.ConnectionFailed):
            api.create(SCHNELL, {"prompt": "a"})
        assert (api.last_outcome.state, api.last_outcome.status) == (UNREACHABLE, None)
        with pytest.raises(errors.ConnectionFailed):
            api.get("q4chw5rey9rmt0cww76t4h3ma4")
        assert api.last_outcome.state == UNREACHABLE


def test_a_gateway_that_cannot_reach_the_api_is_unreachable_until_the_api_answers_again(sim, client):
    made = client.create(SCHNELL, {"prompt": "a"})
    sim.add_fault(route="get", kind="524", times=-1)
    with pytest.raises(errors.ServerError):
        client.get(made.id)
    assert (client.last_outcome.state, client.last_outcome.status) == (UNREACHABLE, 524)
    sim.clear_faults()
    client.get(made.id)
    assert client.last_outcome.state == OK


def test_a_refusal_that_is_not_about_the_key_still_counts_as_the_api_answering(sim, client):
    with pytest.raises(errors.NotFound):
        client.get("q4chw5rey9rmt0cww76t4h3ma4")
    assert (client.last_outcome.state, client.last_outcome.status) == (OK, 404)


# ---- the sidebar badge ---------------------------------------------------------------------------


def sidebar(at) -> str:
    """The badge (a markdown directive) and the line under it (a caption)."""
    return unescaped(" ".join(str(m.value) for m in [*at.sidebar.markdown, *at.sidebar.caption]))


def generate(at, prompt: str = "a lighthouse"):
    at.text_area(key="param.prompt").input(prompt).run()
    next(b for b in at.button if b.label.startswith("Generate")).click().run()
    assert not at.exception, at.exception
    return at


def use_own_key(at, key: str):
    at.text_input(key="own.typed").input(key).run()
    next(b for b in at.sidebar.button if b.label == "Use this key").click().run()
    return at


def form_errors(at) -> str:
    return unescaped(" ".join(e.value for e in at.error))


@pytest.mark.usefixtures("app_env")
def test_the_badge_is_green_live_while_the_key_is_accepted(sim):
    at = generate(open_app(COMETAPI_KEY=KEY, COMETAPI_BASE_URL=sim.url)).run()
    assert f":green-badge[:material/cloud_done: Live · {sim.url.split('//')[1]}]" in sidebar(at)
    assert "rejected" not in sidebar(at) and "Unreachable" not in sidebar(at)


@pytest.mark.usefixtures("app_env")
def test_the_badge_turns_red_when_the_server_key_is_rejected_and_says_what_to_do():
    with Sim(key=KEY) as strict:
        at = generate(open_app(COMETAPI_KEY="sk-the-servers-stale-key-000", COMETAPI_BASE_URL=strict.url))
        assert "server's API key" in form_errors(at) and "COMETAPI_KEY" in form_errors(at)
        at.run()
    text = sidebar(at)
    assert ":red-badge[:material/key_off: Key rejected ·" in text
    assert "operator should check `COMETAPI_KEY`" in text and "use your own key" in text
    assert "Live" not in text


@pytest.mark.usefixtures("app_env")
def test_the_badge_turns_red_for_a_rejected_visitor_key_in_that_tab_only():
    with Sim(key=KEY) as strict:
        at = use_own_key(open_app(COMETAPI_KEY=KEY, COMETAPI_BASE_URL=strict.url), "sk-a-typo-in-my-own-key-000")
        generate(at)
        assert "your own API key" in form_errors(at) and "COMETAPI_KEY" not in form_errors(at)
        at.run()
        other_tab = open_app(COMETAPI_KEY=KEY, COMETAPI_BASE_URL=strict.url)
    text = sidebar(at)
    assert ":red-badge[:material/key_off: Key rejected ·" in text and "your key" in text
    assert "check the key you entered under **Use your own key**" in text and "COMETAPI_KEY" not in text
    assert ":green-badge[:material/cloud_done: Live ·" in sidebar(other_tab), "the server's key is fine"


@pytest.mark.usefixtures("app_env")
def test_the_badge_turns_orange_when_the_api_cannot_be_reached():
    at = generate(open_app(COMETAPI_KEY=KEY, COMETAPI_BASE_URL=closed_port_url()))
    assert "Could not connect" in form_errors(at)
    at.run()
    text = sidebar(at)
    assert ":orange-badge[:material/cloud_off: Unreachable ·" in text and "No answer from the API" in text
    assert "Live" not in text


@pytest.mark.usefixtures("app_env")
def test_the_badge_follows_what_the_trackers_polls_find_with_no_call_from_the_page(app_env):
    with Sim(key=KEY, start_delay=0.05, run_time=0.2) as strict:
        settings = Settings.from_sources({"COMETAPI_KEY": "sk-the-servers-stale-key-000",
                                          "COMETAPI_BASE_URL": strict.url})
        store = Store.for_settings(settings)
        with Client(strict.url, KEY) as elsewhere:  # made with the key that still works
            made = elsewhere.create(SCHNELL, {"prompt": "followed by the server"})
        store.record(made)
        at = open_app("pages/history.py", COMETAPI_KEY="sk-the-servers-stale-key-000", COMETAPI_BASE_URL=strict.url)
        wait_until(lambda: store.get(made.id).tracking == "gave_up")  # the app's tracker polled it
        at.run()
        note = store.get(made.id).note
        store.close()
    assert ":red-badge[:material/key_off: Key rejected ·" in sidebar(at)
    assert note.startswith("CometAPI rejected the server's API key (401)")


@pytest.mark.usefixtures("app_env")
def test_tracking_an_id_with_a_rejected_key_says_whose_key(sim):
    with Sim(key=KEY) as strict:
        at = open_app("pages/history.py", COMETAPI_KEY="sk-the-servers-stale-key-000", COMETAPI_BASE_URL=strict.url)
        next(f for f in at.text_input if f.label == "Prediction id").input("q4chw5rey9rmt0cww76t4h3ma4")
        next(b for b in at.button if b.form_id == "history.track").click().run()
    assert "server's API key" in form_errors(at) and "Use your own key" in form_errors(at)


def test_after_the_server_key_is_rotated_the_new_keys_tracker_finishes_what_was_running(app_env):
    from comet.prediction import SUCCEEDED
    from comet.ui import context

    old_key, new_key = "sk-team-key-before-rotation-000001", "sk-team-key-after-rotation-0000002"
    with Sim(key=old_key, start_delay=0.05, run_time=2.0) as sim:
        before = context.shared_connection(Settings.from_sources({"COMETAPI_KEY": old_key,
                                                                  "COMETAPI_BASE_URL": sim.url}))
        made = before.client.create(SCHNELL, {"prompt": "a lighthouse at dusk"})
        before.track(made, creator=None)
        wait_until(lambda: before.store.get(made.id) is not None)
        # The team rotates its key: a new key is made (both work for a while), the app gets it,
        # then the old one is revoked.
        sim.key = None
        after = context.shared_connection(Settings.from_sources({"COMETAPI_KEY": new_key,
                                                                 "COMETAPI_BASE_URL": sim.url}))
        sim.key = new_key
        assert after.tracker is not before.tracker

        record = wait_until(lambda: (r := after.store.get(made.id)) and r.tracking != "active" and r, timeout=20)
        # The old key's tracker, had it kept polling, would have given up with "Invalid token".
        assert (record.status, record.tracking, record.note) == (SUCCEEDED, "done", None)
        assert after.store.output_bytes(made.id, 0) is not None
