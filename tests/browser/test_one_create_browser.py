"""One intent, one create (issue #9) in a real Chromium against `streamlit run`: clicking
Generate again while a slow create is in flight sends (and bills) it once, and a click queued
behind the sending run is refused while a later, deliberate one sends. The page's states through
AppTest: tests/pages/test_one_create.py."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from comet.ui.submit import DOUBLE_CLICK_WINDOW
from support.api import KEY
from support.apphost import AppServer, wait_until_idle
from support.slow_upstream import CREATE_PATH, SlowUpstream
from support.waiting import wait_until


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


def open_with_prompt(page, app: AppServer, prompt: str):
    page.goto(app.url)
    wait_until_idle(page)
    box = page.get_by_role("textbox", name="Prompt")
    box.fill(prompt)
    box.press("Tab")  # Streamlit commits a text area on blur
    wait_until_idle(page)
    button = page.get_by_role("button", name="Generate")
    box = button.bounding_box()
    return button, (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)


@pytest.mark.e2e
def test_three_clicks_during_a_6_s_create_send_one_post(browser, page, tmp_path):
    with SlowUpstream(delay=6.0) as upstream, \
            AppServer(tmp_path, env={"COMETAPI_KEY": KEY, "COMETAPI_BASE_URL": upstream.url}) as app:
        generate, (x, y) = open_with_prompt(page, app, "a lighthouse in a storm")
        generate.click()
        clicked = time.monotonic()
        for n in (1, 2):  # the impatient user, 1.5 s apart, where Generate was
            time.sleep(clicked + 1.5 * n - time.monotonic())
            page.mouse.click(x, y)
        sending = page.get_by_role("button", name="Sending")
        shown_sending = sending.is_visible() and sending.is_disabled()
        in_flight = upstream.answered == 0
        expect(page.get_by_test_id("stImage").first).to_be_visible(timeout=30_000)
        to_image = time.monotonic() - clicked
        expect(page.get_by_role("button", name="Generate")).to_be_enabled()
        time.sleep(2.0)  # a queued click would have been replayed by now
        assert upstream.post_count() == 1, [round(p["at"] - clicked, 1) for p in upstream.posts]
        assert upstream.posts[0]["path"] == CREATE_PATH
        assert in_flight and shown_sending, "no disabled Sending… while the create was in flight"
        print(f"\nPOSTs: {upstream.post_count()} for 3 clicks; image on screen {to_image:.1f} s after "
              f"the first click (create answers after {upstream.delay:.0f} s)")
        expect(page.get_by_test_id("stException")).to_have_count(0)


@pytest.mark.e2e
def test_a_click_queued_behind_the_sending_run_is_refused_and_a_later_one_sends(browser, page, tmp_path):
    with SlowUpstream(delay=3.0) as upstream, \
            AppServer(tmp_path, env={"COMETAPI_KEY": KEY, "COMETAPI_BASE_URL": upstream.url}) as app:
        generate, (x, y) = open_with_prompt(page, app, "a fox in snow")
        generate.click()
        time.sleep(0.3)
        page.mouse.click(x, y)  # Generate is still enabled: the run that sends is busy waiting
        expect(page.get_by_test_id("stImage").first).to_be_visible(timeout=30_000)
        time.sleep(DOUBLE_CLICK_WINDOW + 1.0)
        assert upstream.post_count() == 1, "the queued click sent again"
        page.get_by_role("button", name="Generate").click()  # asking once more, on purpose
        wait_until(lambda: upstream.post_count() == 2, timeout=10)
        expect(page.get_by_role("button", name="Sending")).to_be_disabled()
        wait_until(lambda: upstream.answered == 2, timeout=10)
        second = list(upstream.predictions)[1]
        card_link = page.locator(f'[data-testid="stPageLink-NavLink"][href$="id={second}"]:visible')
        expect(card_link.first).to_be_visible(timeout=30_000)  # its card
        assert upstream.post_count() == 2
