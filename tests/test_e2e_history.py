"""History in a real headless Chromium against `streamlit run`: a prediction made on the Create
page shows up in History, finishes there while the page refreshes by itself, opens from its deep
link, and is still there (image included) after the server restarts with the stand-in gone."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from apphost import AppServer, wait_until_idle
from comet.sim import Sim

pytestmark = pytest.mark.e2e

KEY = "sk-e2e-0123456789abcdefghij"
PROMPT = "a lighthouse in fog"


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    yield page
    context.close()


def created_id(sim: Sim, timeout: float = 20.0) -> str:
    """The id of the one prediction the stand-in was asked to make."""
    deadline = time.monotonic() + timeout
    while not sim.predictions:
        assert time.monotonic() < deadline, "Generate sent nothing"
        time.sleep(0.05)
    (prediction_id,) = sim.predictions
    return prediction_id


def test_a_prediction_from_create_finishes_in_history_and_outlives_a_restart(page, tmp_path):
    data_dir = tmp_path / "data"
    sim = Sim(start_delay=0.3, run_time=2).start()
    try:
        env = {"COMETAPI_KEY": KEY, "COMETAPI_BASE_URL": sim.url}
        with AppServer(data_dir, env) as app:
            page.goto(app.url)
            wait_until_idle(page)
            prompt = page.get_by_role("textbox", name="Prompt")
            prompt.fill(PROMPT)
            prompt.press("Tab")
            wait_until_idle(page)
            page.get_by_role("button", name="Generate").click()
            prediction_id = created_id(sim)

            # History, opened while the prediction still runs: the row is there at once, and the
            # page follows it to the end by itself (no reload, no click).
            page.goto(f"{app.url}/history")
            main, table = page.get_by_test_id("stMain"), page.get_by_test_id("stDataFrame")
            expect(table).to_contain_text(PROMPT, timeout=15_000)
            expect(main).to_contain_text("this page updates by itself", timeout=5_000)
            expect(table).to_contain_text("succeeded", timeout=20_000)
            expect(main).not_to_contain_text("this page updates by itself", timeout=10_000)
            expect(page.get_by_test_id("stException")).to_have_count(0)

            # The deep link opens the detail with the stored image.
            page.goto(f"{app.url}/history?id={prediction_id}")
            expect(page.get_by_test_id("stImage").first).to_be_visible(timeout=15_000)
            expect(main).to_contain_text(prediction_id)
            expect(page.get_by_role("button", name="Download", exact=True)).to_have_count(1)

        # A new server on the same data folder, with the stand-in gone: the image can only come
        # from the history store. The deep link is the new process's very first request.
        sim.stop()
        with AppServer(data_dir, env) as restarted:
            page.goto(f"{restarted.url}/history?id={prediction_id}")
            expect(page.get_by_test_id("stImage").first).to_be_visible(timeout=15_000)
            expect(page.get_by_test_id("stMain")).to_contain_text("succeeded")
            # ... and it opened inside the app's own navigation, not Streamlit's pages/ fallback
            nav = page.get_by_test_id("stSidebarNav")
            expect(nav).to_contain_text("Create")
            expect(nav).not_to_contain_text("streamlit app")
            expect(page.get_by_test_id("stException")).to_have_count(0)
    finally:
        sim.stop()
