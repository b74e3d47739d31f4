"""Several demo instances started from one checkout share one data folder: one demo history and
one stand-in state file. Each instance runs its own in-process stand-in, and any instance's
tracker may poll any prediction of that history, so each stand-in must answer for the others'
predictions: none may be given up as unknown ("CometAPI no longer knows this prediction").

First the stand-ins and trackers themselves, then two real `streamlit run` processes."""

from __future__ import annotations

import math
import threading

import pytest
import streamlit as st
from playwright.sync_api import expect

from apphost import AppServer, wait_until_idle
from comet import errors
from comet.client import Client
from comet.config import Settings
from comet.sim import Sim
from comet.store import Store
from comet.tracker import Tracker
from comet.ui import context as app_context
from conftest import KEY, open_app, wait_until

SCHNELL = "black-forest-labs/flux-schnell"
FAST = {"schedule": ((math.inf, 0.05),), "backoff": (0.05, 0.2), "max_sleep": 0.1}


def settled(store: Store, prediction_id: str, timeout: float = 15.0):
    return wait_until(lambda: (r := store.get(prediction_id)) and r.tracking != "active" and r, timeout)


# ---- stand-ins sharing one state file ------------------------------------------------------------


def test_a_prediction_made_by_one_demo_instance_is_finished_by_the_other(tmp_path):
    state = tmp_path / "demo-standin.json"
    store = Store(f"sqlite:///{tmp_path / 'history-demo.sqlite'}")
    with Sim(start_delay=0.05, run_time=0.3, state_file=state) as first, \
            Sim(start_delay=0.05, run_time=0.3, state_file=state) as second:
        made = Client(first.url, KEY).create(SCHNELL, {"prompt": "made by the first instance"})
        store.record(made)  # the first instance stopped before its tracker polled it
        other = Client(second.url, KEY)
        with Tracker(other, store, allow_private_downloads=True, **FAST):
            record = settled(store, made.id)
        polled_second = [r for r in second.requests if made.id in r["path"]]
    assert (record.status, record.tracking, record.output_count) == ("succeeded", "done", 1)
    assert polled_second, "the second instance's stand-in answered for it"
    assert store.output_bytes(made.id, 0)[0] == "image/webp"
    store.close()


def test_a_stand_in_sharing_the_state_still_does_not_know_an_id_nobody_made(tmp_path):
    state = tmp_path / "demo-standin.json"
    with Sim(state_file=state) as first, Sim(state_file=state) as second:
        Client(first.url, KEY).create(SCHNELL, {"prompt": "a real one"})
        with pytest.raises(errors.NotFound):
            Client(second.url, KEY).get("nobodymadethis00000000000")


def test_a_cancel_through_one_stand_in_is_what_the_other_answers(tmp_path):
    state = tmp_path / "demo-standin.json"
    with Sim(state_file=state) as first, Sim(state_file=state) as second:
        made = Client(first.url, KEY).create(SCHNELL, {"prompt": "[sim:slow] stop me"})
        Client(second.url, KEY).cancel(made.id)
        assert Client(first.url, KEY).get(made.id).status == "canceled"


def test_stand_ins_creating_at_once_lose_none_of_each_others_predictions(tmp_path):
    state = tmp_path / "demo-standin.json"
    made: list[str] = []
    with Sim(state_file=state) as first, Sim(state_file=state) as second:
        def create_many(sim: Sim) -> None:
            with Client(sim.url, KEY) as api:
                for n in range(10):
                    made.append(api.create(SCHNELL, {"prompt": f"at once {n}"}).id)

        threads = [threading.Thread(target=create_many, args=(sim,)) for sim in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(made) == 20
    with Sim(state_file=state) as restarted:  # what the file kept
        assert set(restarted.predictions) == set(made)


def test_a_stand_in_with_a_state_file_of_its_own_does_not_answer_for_another(tmp_path):
    """Sharing is by the file: a separate data folder is a separate demo, and its unknown ids
    still get a 404."""
    with Sim(state_file=tmp_path / "a.json") as first, Sim(state_file=tmp_path / "b.json") as second:
        made = Client(first.url, KEY).create(SCHNELL, {"prompt": "only in a"})
        with pytest.raises(errors.NotFound):
            Client(second.url, KEY).get(made.id)


# ---- two `streamlit run` processes on one checkout's data folder ---------------------------------


def demo_history(data_dir) -> Store:
    return Store.for_settings(Settings.from_sources({}, {"COMET_DATA_DIR": str(data_dir)}))


def generate(page, url: str, prompt: str) -> None:
    page.goto(url)
    wait_until_idle(page, timeout=60_000)
    box = page.get_by_role("textbox", name="Prompt")
    box.fill(prompt)
    box.press("Tab")  # Streamlit commits a text area on blur
    wait_until_idle(page, timeout=60_000)
    page.get_by_role("button", name="Generate").click()


@pytest.mark.e2e
def test_two_demo_processes_on_one_data_folder_each_finish_their_predictions(app_env, browser):
    with AppServer(app_env) as first, AppServer(app_env) as second:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        pages = [context.new_page(), context.new_page()]
        for page in pages:
            page.set_default_timeout(60_000)
        generate(pages[0], first.url, "a heron from the first instance")
        generate(pages[1], second.url, "a kite from the second instance")
        for page in pages:  # each shows its own result
            expect(page.get_by_test_id("stImage").first).to_be_visible(timeout=60_000)

        # A third instance (this process, through AppTest) makes one and stops while it runs, as
        # a restarted or stopped instance would: the two servers must finish it between them.
        at = open_app()
        # Its own stand-in (the cached one) runs this one longer, so it is surely unfinished at
        # the stop; the run's end is kept in the shared state, as any run's is.
        app_context._demo_sim(str(app_env / "demo-standin.json")).configure(run_time=8.0)
        at.text_area(key="param.prompt").input("a lantern from a third instance").run()
        next(b for b in at.button if b.label.startswith("Generate")).click().run()
        assert not at.exception
        history = demo_history(app_env)
        [handed_over] = [r for r in (history.get(i) for i in history.unfinished_ids())
                         if r.prompt == "a lantern from a third instance"]
        st.cache_resource.clear()  # its tracker and stand-in stop; the leases are released
        assert handed_over.tracking == "active" and handed_over.status != "succeeded"

        wait_until(lambda: history.unfinished_count() == 0, timeout=60)
        records = [history.get(i) for i in history.page(limit=10)["id"]]
        context.close()
        logs = first.log() + second.log()
    assert sorted(r.prompt for r in records) == [
        "a heron from the first instance", "a kite from the second instance", "a lantern from a third instance"]
    assert [(r.status, r.tracking, r.output_count, r.note) for r in records] == [("succeeded", "done", 1, None)] * 3
    assert "no longer knows" not in logs and "Traceback" not in logs
    history.close()
