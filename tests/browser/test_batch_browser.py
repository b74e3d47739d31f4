"""Batches with the real app server: in a browser (demo mode, the stand-in in the app's process),
2 prompts x 2 variations on flux-schnell sent by the server's runner, the contact sheet filling in
by itself (the page's timer, no reload) until every cell shows its image and the progress is
done; and a stored batch sent at server start with no page open."""

from __future__ import annotations

import contextlib
import re

import pytest
from playwright.sync_api import expect

from comet.batch import SENDING, SENT, Batches, BatchSpec, plan
from comet.config import Settings
from comet.sim import Sim
from comet.store import Store
from support.api import KEY, api_requests
from support.apphost import AppServer, wait_until_idle
from support.waiting import wait_until

pytestmark = pytest.mark.e2e
SCHNELL = "black-forest-labs/flux-schnell"


def test_the_contact_sheet_fills_in_as_the_batch_runs(tmp_path, browser):
    with AppServer(tmp_path) as app:
        page = browser.new_page(viewport={"width": 1360, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(f"{app.url}/batch")
        wait_until_idle(page)
        expect(page.get_by_test_id("stMain")).to_contain_text("New batch")
        box = page.get_by_role("textbox", name="Prompts")
        box.fill("a red fox in the snow\na paper boat on a lake")
        box.press("Tab")  # Streamlit commits a text area on blur
        wait_until_idle(page)
        variations = page.get_by_role("spinbutton", name="Variations per prompt")
        variations.fill("2")
        variations.press("Enter")
        expect(page.get_by_test_id("stMain")).to_contain_text("4 predictions")
        wait_until_idle(page)
        page.get_by_role("button", name="Run batch").click()

        expect(page).to_have_url(re.compile(r"[?&]batch=[0-9a-f]{32}"))
        sheet_images = page.get_by_test_id("stMain").get_by_test_id("stImage")
        progress = page.get_by_test_id("stProgress")
        # The stand-in takes a few seconds per image: the sheet is first drawn with cells to come.
        expect(progress).to_contain_text("of 4 done")
        expect(sheet_images).to_have_count(4, timeout=90_000)
        expect(progress).to_contain_text("4 of 4 done · 4 sent · 4 succeeded · 0 failed · 0 pending")
        expect(page.get_by_role("button", name="Cancel batch")).to_have_count(0)  # nothing left to run
        # Each cell links to its prediction in History.
        expect(page.get_by_test_id("stMain").get_by_role("link", name="Open")).to_have_count(4)
        page.close()


@contextlib.contextmanager
def stored_batch(tmp_path, *, create_delay: float = 0.0):
    """A stand-in, the app's settings for it, and a 2 x 2 batch stored in the app's history with
    no cell sent yet: (stand-in, settings, Batches, batch id)."""
    with Sim(start_delay=0.05, run_time=0.2) as sim:
        sim.configure(create_delay=create_delay)
        env = {"COMETAPI_KEY": KEY, "COMETAPI_BASE_URL": sim.url}
        store = Store.for_settings(Settings.from_sources(env, {"COMET_DATA_DIR": str(tmp_path)}))
        try:
            batches = Batches(store)
            spec = BatchSpec(prompts=("a red fox", "a paper boat"), models=(SCHNELL,), variations=2, seed=7)
            yield sim, env, batches, batches.add(plan(spec))
        finally:
            store.close()


def test_a_batch_left_unsent_is_sent_when_the_server_starts_without_anyone_opening_a_page(tmp_path):
    # As after a restart mid-batch: the cells are stored, none sent. The server's lifespan starts
    # the runner with the tracker, so the batch finishes with no browser at all.
    with stored_batch(tmp_path) as (sim, env, batches, batch_id):
        with AppServer(tmp_path, env=env):
            finished = wait_until(lambda: (found := batches.get(batch_id)) and not found.active and found,
                                  timeout=60)
        assert finished.counts == {SENT: 4}
        assert len(api_requests(sim, "POST", "/models/")) == 4


def test_a_cleanly_stopped_server_ends_its_batch_creates_in_flight_and_leaves_no_cell_uncertain(tmp_path):
    # A redeploy (SIGTERM) while four creates are in flight: the runner waits for their answers and
    # writes them before the database closes, so the restarted app has nothing to call uncertain.
    with stored_batch(tmp_path, create_delay=3.0) as (sim, env, batches, batch_id):
        app = AppServer(tmp_path, env=env).start()
        try:
            wait_until(lambda: batches.get(batch_id).counts.get(SENDING, 0) == 4, timeout=30)
        finally:
            app.stop()  # SIGTERM, as a redeploy sends it
        cells = batches.cells(batch_id)
        assert [cell.state for cell in cells] == [SENT] * 4, [(c.state, c.error) for c in cells]
        assert all(cell.prediction_id for cell in cells)
        assert len(api_requests(sim, "POST", "/models/")) == 4
