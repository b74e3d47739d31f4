"""History in a real headless Chromium against `streamlit run`: a prediction made on the Create
page shows up in History, finishes there while the page refreshes by itself, opens from its deep
link, and is still there (image included) after the server restarts with the stand-in gone. The
cards' share links (to History) fit on one line, even four narrow cards side by side."""

from __future__ import annotations

import re
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


def share_links(page):
    """The cards' links to History (the visible ones: a card redrawn in place keeps a hidden copy)."""
    return page.get_by_test_id("stMain").locator('[data-testid="stPageLink-NavLink"][href*="history?id="]:visible')


def lines_of(link) -> int:
    """How many lines the link's label takes: an inline element has one box per line."""
    return link.locator("code").evaluate("code => code.getClientRects().length")


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

            # The deep link opens the detail with the stored image; its share link names the
            # prediction by the id's start and carries the whole id.
            page.goto(f"{app.url}/history?id={prediction_id}")
            expect(page.get_by_test_id("stImage").first).to_be_visible(timeout=15_000)
            expect(share_links(page)).to_have_count(1)
            (link,) = share_links(page).all()
            expect(link).to_have_text(re.compile(f"{prediction_id[:8]}…$"))
            expect(link).to_have_attribute("href", re.compile(f"history\\?id={prediction_id}$"))
            assert lines_of(link) == 1
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


def test_compared_cards_show_their_share_link_on_one_line_and_it_opens_history(page, tmp_path):
    sim = Sim(start_delay=0.2, run_time=0.5).start()
    try:
        env = {"COMETAPI_KEY": KEY, "COMETAPI_BASE_URL": sim.url}
        with AppServer(tmp_path / "data", env) as app:
            page.goto(app.url)
            wait_until_idle(page)
            prompt = page.get_by_role("textbox", name="Prompt")
            prompt.fill(PROMPT)
            prompt.press("Tab")
            wait_until_idle(page)
            compare = page.get_by_role("combobox", name="Compare with")
            for title in ("FLUX.1 [dev]", "FLUX1.1 [pro]", "FLUX.1 [pro]"):  # four cards, two by two
                compare.click()
                page.get_by_role("option", name=title, exact=True).click()
                wait_until_idle(page)
            page.keyboard.press("Escape")
            page.get_by_role("button", name=re.compile("^Generate")).click()

            links = share_links(page)
            expect(links).to_have_count(4, timeout=20_000)
            expect(page.get_by_test_id("stImage")).to_have_count(4, timeout=20_000)  # the cards at full size
            ids = set(sim.predictions)
            for link in links.all():
                assert lines_of(link) == 1, link.inner_text()  # a whole id took two lines here
                full_id = link.get_attribute("href").rsplit("=", 1)[-1]
                assert full_id in ids and link.inner_text().endswith(f"{full_id[:8]}…")

            first = links.first.get_attribute("href").rsplit("=", 1)[-1]
            links.first.click()
            expect(page).to_have_url(re.compile(f"/history\\?id={first}$"), timeout=15_000)
            expect(page.get_by_test_id("stImage").first).to_be_visible(timeout=15_000)
            expect(page.get_by_test_id("stException")).to_have_count(0)
    finally:
        sim.stop()
