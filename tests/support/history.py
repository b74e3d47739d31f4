"""The History page's tests' shared pieces: the app's own history, filled for real (create calls
to the stand-in, followed to the end by a Tracker), and ways to read the page."""

from __future__ import annotations

import math
import time

from comet.config import Settings
from comet.prediction import TERMINAL
from comet.store import Store
from comet.tracker import Tracker
from comet.ui import history_view as view
from support.api import KEY
from support.apptest import open_app
from support.waiting import wait_until

SCHNELL, DEV = "black-forest-labs/flux-schnell", "black-forest-labs/flux-dev"
HISTORY = "pages/history.py"
# The tracker's production schedule, scaled down so filling the history takes a moment.
FAST = {"schedule": ((math.inf, 0.05),), "backoff": (0.05, 0.2), "max_sleep": 0.1}


class History:
    """The app's own history file (same settings as the page under test), filled for real."""

    def __init__(self, sim, client, store: Store) -> None:
        self.sim = sim
        self.client = client
        self.store = store

    def add(self, *prompts: str, model: str = SCHNELL, settle: bool = True, **extra) -> list[str]:
        """One create call per prompt, oldest first; followed to its end unless `settle=False`."""
        ids = []
        for prompt in prompts:
            prediction = self.client.create(model, {"prompt": prompt, **extra})
            self.store.record(prediction)
            ids.append(prediction.id)
            time.sleep(0.003)  # created_at has millisecond precision: keep "newest first" strict
        if settle:
            self.settle(ids)
        return ids

    def settle(self, ids: list[str]) -> None:
        # Let the stand-in finish them first (asking it directly, not over its API), so the
        # tracker needs one poll per prediction.
        wait_until(lambda: all(self.sim.get_prediction(pid)["status"] in TERMINAL for pid in ids))
        with Tracker(self.client, self.store, allow_private_downloads=True, **FAST):
            wait_until(lambda: self.store.unfinished_count() == 0)


def app_settings(sim) -> Settings:
    """What the page under test reads (COMET_DATA_DIR is app_env's tmp folder)."""
    return Settings.from_sources({"COMETAPI_KEY": KEY, "COMETAPI_BASE_URL": sim.url})


def history_page(sim, prediction_id: str | None = None):
    query = {"id": prediction_id} if prediction_id is not None else None
    at = open_app(page=HISTORY, query=query, COMETAPI_KEY=KEY, COMETAPI_BASE_URL=sim.url)
    assert not at.exception, at.exception
    return at


def table_element(at):
    found = [frame for frame in at.dataframe if (frame.key or "").startswith(view.TABLE_KEY)]
    return found[0] if found else None


def download(at, media, label_start: str) -> bytes:
    """What a click on this download button hands the browser: the server runs the deferred
    data callable (`execute_deferred`, as for the browser's request) and serves the file."""
    button = next(b for b in at.get("download_button") if b.label.startswith(label_start))
    assert button.proto.HasField("deferred_file_id"), "expected the file to be made on click"
    manager, storage = media[-1]
    url = manager.execute_deferred(button.proto.deferred_file_id)
    return storage.get_file(url.rsplit("/", 1)[-1]).content
