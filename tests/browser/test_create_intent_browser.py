"""What the Create page shows in a real browser (issue #10): a custom size's width and height
appear beside the ratio, and the models chosen to compare stay readable, up to the limit."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from support.apphost import AppServer, wait_until_idle

pytestmark = pytest.mark.e2e
LONG_TITLES = ["FLUX1.1 [pro] Ultra", "FLUX.1 Kontext [pro]", "FLUX.1 Kontext [max]"]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with AppServer(tmp_path_factory.mktemp("intent")) as server:
        yield server


@pytest.fixture
def page(browser, app):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(app.url)
    wait_until_idle(page)
    yield page
    context.close()


def choose(page, label: str, option: str) -> None:
    page.get_by_test_id("stSelectbox").filter(has_text=label).locator("input").click()
    page.get_by_role("option", name=option, exact=True).click()
    wait_until_idle(page)


def compare_box(page):
    return page.get_by_test_id("stMultiSelect").filter(has_text="Compare with")


def add_to_compare(page, title: str) -> None:
    compare_box(page).locator("input").click()
    page.get_by_role("option", name=title, exact=True).click()
    page.keyboard.press("Escape")
    wait_until_idle(page)


def test_custom_shows_width_and_height_without_opening_advanced(page):
    choose(page, "Model", "FLUX.1 [pro]")
    expect(page.get_by_role("spinbutton", name="Width")).to_have_count(0)
    choose(page, "Aspect ratio", "custom")
    expect(page.get_by_role("spinbutton", name="Width")).to_be_visible()
    expect(page.get_by_role("spinbutton", name="Height")).to_be_visible()
    # Advanced is still closed: its own fields are not on screen.
    advanced = page.get_by_test_id("stExpander").filter(has_text="Advanced")
    expect(advanced.get_by_text("Safety tolerance")).not_to_be_visible()


def test_models_to_compare_are_readable_in_full_and_stop_at_three(page):
    for title in LONG_TITLES:
        add_to_compare(page, title)
    box = compare_box(page)
    # (Each chip is also in a hidden template: the last one is the one on screen.)
    frame = box.locator('div[role="group"][data-rac]').last.bounding_box()
    for title in LONG_TITLES:
        chip = box.locator(f'[data-tag][aria-label="{title}"]').last
        expect(chip).to_be_visible()
        shape = chip.bounding_box()
        assert frame["x"] <= shape["x"] and shape["x"] + shape["width"] <= frame["x"] + frame["width"], title
    box.locator("input").click()
    expect(page.get_by_text("You can only select up to 3 options")).to_be_visible()
    expect(page.get_by_role("option", name="FLUX.1 [dev]", exact=True)).to_have_count(0)
    page.keyboard.press("Escape")
    expect(page.get_by_role("button", name="Generate with 4 models")).to_be_visible()
