"""Several demo instances started from one checkout share one data folder: one demo history and
one stand-in state file. Each instance runs its own in-process stand-in, and any instance's
tracker may poll any prediction of that history, so each stand-in must answer for the others'
predictions: none may be given up as unknown ("CometAPI no longer knows this prediction").

Here the stand-ins and trackers themselves; two real `streamlit run` processes on one data
folder: tests/browser/test_demo_processes.py."""

from __future__ import annotations

import math
import threading

import pytest

from comet import errors
from comet.client import Client
from comet.sim import Sim
from comet.store import Store
from comet.tracker import Tracker
from support.api import KEY
from support.waiting import wait_until

SCHNELL = "black-forest-labs/flux-schnell"
FAST = {"schedule": ((math.inf, 0.05),), "backoff": (0.05, 0.2), "max_sleep": 0.1}


def settled(store: Store, prediction_id: str, timeout: float = 15.0):
    return wait_until(lambda: (r := store.get(prediction_id)) and r.tracking != "active" and r, timeout)


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
