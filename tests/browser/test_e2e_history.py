"""History in a real headless Chromium against `streamlit run`: a prediction made on the Create
page shows up in History, finishes there while the page refreshes by itself, opens from its deep
link, and is still there (image included) after the server restarts with the stand-in gone. The
cards' share links (to History) fit on one line, even four narrow cards side by side. The table
shows the prediction ids with every column in view on a 1360 px laptop, and the detail puts the
prompt first, as text, with images never stretched, on a laptop and on a phone."""

from __future__ import annotations

import math
import re
import time

import pytest
from playwright.sync_api import expect

from comet.client import Client
from comet.config import Settings
from comet.sim import Sim
from comet.store import Store
from comet.tracker import Tracker
from support.apphost import AppServer, wait_until_idle

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


def filled_history(sim: Sim, data_dir, made: list[tuple[str, dict, str | None]]) -> list[str]:
    """(model, input, creator) made and followed to the end in the app's own history file."""
    settings = Settings.from_sources(
        {"COMETAPI_KEY": KEY, "COMETAPI_BASE_URL": sim.url, "COMET_DATA_DIR": str(data_dir)})
    store, client = Store.for_settings(settings), Client(sim.url, KEY)
    try:
        ids = []
        for model, model_input, creator in made:
            prediction = client.create(model, model_input)
            store.record(prediction, creator=creator)
            ids.append(prediction.id)
        with Tracker(client, store, allow_private_downloads=True, schedule=((math.inf, 0.05),),
                     backoff=(0.05, 0.2), max_sleep=0.1):
            deadline = time.monotonic() + 30
            while store.unfinished_count() and time.monotonic() < deadline:
                time.sleep(0.05)
        assert store.unfinished_count() == 0
        return ids
    finally:
        client.close()
        store.close()


def scroller(page) -> dict:
    """The table grid's scroll box: content sizes against the box's own."""
    return page.get_by_test_id("stDataFrame").locator(".dvn-scroller").evaluate(
        "box => ({width: box.scrollWidth, shown: box.clientWidth, height: box.scrollHeight, tall: box.clientHeight})")


def output_image(page):
    """The card's first result image (the History page shows no other image above it)."""
    return page.get_by_test_id("stImage").locator("img").first


@pytest.fixture
def screens(browser):
    """A page of the given size (width, height, phone?); closed after the test."""
    contexts = []

    def open_page(width: int, height: int, phone: bool = False):
        contexts.append(browser.new_context(viewport={"width": width, "height": height}, is_mobile=phone))
        return contexts[-1].new_page()

    yield open_page
    for context in contexts:
        context.close()


def test_the_table_shows_ids_in_full_view_and_the_detail_leads_with_the_prompt(screens, tmp_path):
    data_dir = tmp_path / "data"
    prompts = [f"a harbour at dusk, study {n}" for n in range(12)]
    with Sim(start_delay=0.05, run_time=0.2) as sim:
        ids = filled_history(sim, data_dir, [
            ("black-forest-labs/flux-schnell", {"prompt": prompt, "aspect_ratio": "16:9"},
             "ana.lopez@example.com" if n % 3 == 0 else None)  # a Creator column too: the widest table
            for n, prompt in enumerate(prompts)
        ])
        with AppServer(data_dir, {"COMETAPI_KEY": KEY, "COMETAPI_BASE_URL": sim.url}) as app:
            laptop = screens(1360, 900)
            laptop.goto(f"{app.url}/history")
            wait_until_idle(laptop)
            table = laptop.get_by_test_id("stDataFrame")
            # The grid is drawn on a canvas; its accessible copy holds the cells in view.
            expect(table.locator('[role="gridcell"]', has_text=ids[-1])).to_have_count(1, timeout=15_000)
            expect(table.locator('[role="columnheader"]', has_text="Creator")).to_have_count(1)
            box = scroller(laptop)
            assert box["width"] <= box["shown"], box  # every column in view: no sideways scrolling
            assert box["height"] <= box["tall"], box  # all 12 rows: no scrolling inside the table

            for page, width in ((laptop, 1360), (screens(390, 844, phone=True), 390)):
                page.goto(f"{app.url}/history?id={ids[0]}")
                prompt = page.get_by_test_id("stMarkdownContainer").get_by_text(prompts[0], exact=True)
                expect(prompt).to_be_visible(timeout=15_000)
                image = output_image(page)
                expect(image).to_be_visible(timeout=15_000)
                assert prompt.bounding_box()["y"] < image.bounding_box()["y"]  # the prompt first
                expect(page.get_by_test_id("stCode").filter(has_text=ids[0]).first).to_be_visible()
                size = image.evaluate("img => ({shown: img.clientWidth, natural: img.naturalWidth})")
                assert 0 < size["shown"] <= size["natural"], (width, size)  # never stretched
                main = page.get_by_test_id("stMain").evaluate("m => ({width: m.scrollWidth, shown: m.clientWidth})")
                assert main["width"] <= main["shown"], (width, main)  # nothing cut at the side
                expect(page.get_by_test_id("stException")).to_have_count(0)

            # On a wide screen the image keeps its own size (512 px here) instead of filling its column.
            wide = screens(1920, 1000)
            wide.goto(f"{app.url}/history?id={ids[0]}")
            expect(output_image(wide)).to_be_visible(timeout=15_000)
            size = output_image(wide).evaluate("img => ({shown: img.clientWidth, natural: img.naturalWidth})")
            assert size["shown"] == size["natural"] == 512, size
