"""Bad input gets a clear message, nothing is sent, and everything typed is kept."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from comet import catalog
from support.api import KEY, api_requests
from support.apptest import open_app, sent_body

pytestmark = pytest.mark.usefixtures("app_env")


def live(sim, **kwargs):
    return open_app(COMETAPI_KEY=KEY, COMETAPI_BASE_URL=sim.url, **kwargs)


def generate(at):
    next(b for b in at.button if b.label.startswith("Generate")).click().run()
    return at


def shown_errors(at) -> str:
    return " ".join(e.value for e in at.error).replace("\\", "").replace("\u2060", "")


def png(size=(32, 32)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_100_kb_prompt_is_refused_with_the_limit_and_kept(sim):
    at = live(sim)
    huge = "a very long prompt " * 5500
    at.text_area(key="param.prompt").input(huge).run()
    generate(at)
    assert f"{catalog.PROMPT_MAX_CHARS:,}" in shown_errors(at) or str(catalog.PROMPT_MAX_CHARS) in shown_errors(at)
    assert api_requests(sim) == []
    assert at.text_area(key="param.prompt").value == huge


@pytest.mark.parametrize("prompt", ["🦊 a fox in 🌧️ rain", "قارب ورقي على بحيرة هادئة", "שלום עולם",
                                    "混合 text 和 中文"])
def test_emoji_and_right_to_left_prompts_are_sent_exactly(sim, prompt):
    at = live(sim)
    at.text_area(key="param.prompt").input(prompt).run()
    generate(at)
    assert not at.exception
    assert [r["json"]["input"]["prompt"] for r in api_requests(sim, "POST")] == [prompt]


def test_an_out_of_range_number_in_raw_json_is_refused(sim):
    at = live(sim)
    at.toggle(key="raw.on").set_value(True).run()
    at.text_area(key="raw.text").input('{"input": {"prompt": "a", "num_inference_steps": 99}}').run()
    generate(at)
    assert "between 1 and 4" in shown_errors(at)
    assert api_requests(sim) == []
    assert "99" in at.text_area(key="raw.text").value


def test_a_non_image_upload_is_refused_by_its_content_not_its_name(sim):
    at = live(sim)
    at.selectbox(key="model").select("black-forest-labs/flux-kontext-pro").run()
    at.file_uploader[0].set_value(("photo.png", b"%PDF-1.7 not really a picture", "image/png")).run()
    at.text_area(key="param.prompt").input("edit it").run()
    generate(at)
    assert "photo.png is not a readable image" in shown_errors(at)
    assert api_requests(sim) == []


def test_a_30_mb_upload_is_refused_with_the_limit(sim):
    at = live(sim)
    at.selectbox(key="model").select("black-forest-labs/flux-dev").run()
    at.file_uploader[0].set_value(("big.png", b"\x89PNG" + bytes(30 * 1024 * 1024), "image/png")).run()
    at.text_area(key="param.prompt").input("x").run()
    generate(at)
    assert "big.png is 30.0 MB" in shown_errors(at)
    assert api_requests(sim) == []


def test_too_many_images_are_refused(sim):
    at = live(sim)
    at.selectbox(key="model").select("black-forest-labs/flux-2-dev").run()
    urls = "\n".join(f"https://example.com/{n}.png" for n in range(5))
    at.text_area(key="images.urls.input_images").input(urls).run()
    at.text_area(key="param.prompt").input("collage").run()
    generate(at)
    assert "5 are selected" in shown_errors(at) or "Up to 4" in shown_errors(at)
    assert api_requests(sim) == []


def test_a_plain_http_or_script_url_is_refused_as_an_image(sim):
    at = live(sim)
    at.selectbox(key="model").select("black-forest-labs/flux-dev").run()
    at.text_area(key="images.urls.image").input("javascript:alert(1)").run()
    at.text_area(key="param.prompt").input("x").run()
    generate(at)
    assert "must start with https://" in shown_errors(at)
    assert api_requests(sim) == []


def test_a_valid_upload_is_sent_as_a_data_uri_in_the_models_field(sim):
    at = live(sim)
    at.selectbox(key="model").select("black-forest-labs/flux-2-pro").run()
    at.file_uploader[0].set_value([("a.png", png(), "image/png"), ("b.png", png((20, 10)), "image/png")]).run()
    at.text_area(key="param.prompt").input("blend them").run()
    generate(at)
    images = api_requests(sim, "POST")[0]["json"]["input"]["input_images"]
    assert len(images) == 2 and all(uri.startswith("data:image/png;base64,") for uri in images)


def test_an_unknown_model_in_a_link_gets_a_clear_message_and_the_default_form():
    at = open_app(query={"model": "flux-9000<script>"})
    assert not at.exception
    assert any("does not know" in w.value for w in at.warning)
    assert at.selectbox(key="model").value == catalog.DEFAULT_MODEL


def test_a_known_model_in_a_link_is_preselected():
    at = open_app(query={"model": "flux-2-pro"})
    assert at.selectbox(key="model").value == "black-forest-labs/flux-2-pro"
    assert "input_images" not in sent_body(at)["input"]


def test_a_create_that_gets_no_answer_says_it_may_have_been_accepted_and_is_not_resent(sim):
    sim.add_fault(route="create", kind="drop")
    at = live(sim)
    at.text_area(key="param.prompt").input("maybe accepted").run()
    generate(at)
    warned = " ".join(w.value for w in at.warning).replace("\\", "")
    assert "may have been accepted" in warned and "may still have been accepted" in warned
    assert len(api_requests(sim, "POST")) == 1
    assert at.text_area(key="param.prompt").value == "maybe accepted"


def test_a_quick_second_click_does_not_send_twice(sim):
    at = live(sim)
    at.text_area(key="param.prompt").input("once").run()
    generate(at)
    generate(at)
    assert len(api_requests(sim, "POST")) == 1
