"""Whole flows in a real headless Chromium against `streamlit run streamlit_app.py`."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image
from playwright.sync_api import expect

from comet.sim import Sim
from support.apphost import AppServer, wait_until_idle

pytestmark = pytest.mark.e2e
KEY = "sk-e2e-not-a-real-key-000000000000"
IMAGE_TIMEOUT = 30_000


@pytest.fixture(scope="module")
def demo_app(tmp_path_factory):
    with AppServer(tmp_path_factory.mktemp("demo")) as app:
        yield app


@pytest.fixture(scope="module")
def standin():
    with Sim(start_delay=0.2, run_time=1.0) as server:
        yield server


@pytest.fixture(scope="module")
def live_app(tmp_path_factory, standin):
    env = {"COMETAPI_KEY": KEY, "COMETAPI_BASE_URL": standin.url}
    with AppServer(tmp_path_factory.mktemp("live"), env=env) as app:
        yield app


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    yield page
    context.close()


def open_create(page, app):
    page.goto(app.url)
    wait_until_idle(page)
    expect(page.get_by_role("textbox", name="Prompt")).to_be_visible()


def choose(page, label: str, option: str) -> None:
    page.get_by_test_id("stSelectbox").filter(has_text=label).locator("input").click()
    page.get_by_role("option", name=option, exact=True).click()
    wait_until_idle(page)


def type_prompt(page, text: str) -> None:
    box = page.get_by_role("textbox", name="Prompt")
    box.fill(text)
    box.press("Tab")  # Streamlit commits a text area on blur
    wait_until_idle(page)


def previewed_body(page, prompt: str) -> dict:
    """The JSON the page says it will send, once it shows the typed prompt (the rerun that
    commits a typed text may still be on its way)."""
    page.get_by_text("Request: JSON · curl · Python").click()
    code = page.get_by_test_id("stCode").filter(has_text='"input"').first
    expect(code).to_contain_text(json.dumps(prompt))
    return json.loads(code.inner_text())


def creates(standin) -> list[dict]:
    return [r for r in standin.requests if r["method"] == "POST" and r["path"].endswith("/predictions")]


def test_with_nothing_configured_the_app_opens_in_demo_mode_and_generates(demo_app, page):
    open_create(page, demo_app)
    expect(page.get_by_test_id("stSidebar")).to_contain_text("Demo mode")
    expect(page.get_by_test_id("stMain")).to_contain_text("nothing is sent to CometAPI")
    type_prompt(page, "a paper boat on a calm lake")
    page.get_by_role("button", name="Generate").click()
    expect(page.get_by_test_id("stImage").first).to_be_visible(timeout=IMAGE_TIMEOUT)
    expect(page.get_by_test_id("stException")).to_have_count(0)


def test_the_history_page_has_its_own_address(demo_app, page):
    page.goto(f"{demo_app.url}/history")
    wait_until_idle(page)
    expect(page.get_by_role("heading", name="History")).to_be_visible()
    expect(page.get_by_test_id("stSidebar")).to_contain_text("Demo mode")
    expect(page.get_by_test_id("stException")).to_have_count(0)


def test_a_prompt_becomes_exactly_the_forms_input_and_an_image_on_screen(live_app, standin, page):
    standin.clear_requests()
    open_create(page, live_app)
    expect(page.get_by_test_id("stSidebar")).to_contain_text("Live")
    type_prompt(page, "a lighthouse in fog, oil painting")
    shown = previewed_body(page, "a lighthouse in fog, oil painting")
    page.get_by_role("button", name="Generate").click()
    expect(page.get_by_test_id("stImage").first).to_be_visible(timeout=IMAGE_TIMEOUT)
    sent = creates(standin)
    assert len(sent) == 1
    assert sent[0]["json"] == shown
    assert shown["input"]["prompt"] == "a lighthouse in fog, oil painting"
    assert sent[0]["headers"]["authorization"] == f"Bearer {KEY}"
    assert KEY not in page.content()


def test_an_upload_reaches_the_api_as_a_data_uri(live_app, standin, page, tmp_path):
    picture = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(picture, "PNG")
    path = tmp_path / "red.png"
    path.write_bytes(picture.getvalue())
    standin.clear_requests()
    open_create(page, live_app)
    choose(page, "Model", "FLUX.1 Kontext [pro]")
    page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(path))
    expect(page.get_by_text("64×48")).to_be_visible()  # the thumbnail of what will be sent
    type_prompt(page, "make it blue")
    page.get_by_role("button", name="Generate").click()
    expect(page.get_by_test_id("stImage").nth(1)).to_be_visible(timeout=IMAGE_TIMEOUT)
    sent = creates(standin)
    assert len(sent) == 1 and sent[0]["path"].endswith("/flux-kontext-pro/predictions")
    uri = sent[0]["json"]["input"]["input_image"]
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == picture.getvalue()


def test_compare_shows_both_models_results_side_by_side(live_app, standin, page):
    standin.clear_requests()
    open_create(page, live_app)
    type_prompt(page, "a red fox in snow")
    page.get_by_test_id("stMultiSelect").filter(has_text="Compare with").locator("input").click()
    page.get_by_role("option", name="FLUX.1 [dev]", exact=True).click()
    page.keyboard.press("Escape")
    wait_until_idle(page)
    page.get_by_role("button", name="Generate with 2 models").click()
    expect(page.get_by_test_id("stImage")).to_have_count(2, timeout=IMAGE_TIMEOUT)
    models = sorted(r["path"].split("/")[-2] for r in creates(standin))
    assert models == ["flux-dev", "flux-schnell"]
