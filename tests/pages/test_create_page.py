"""The Create page through AppTest: the form is built from the catalog for every model, bad
input is refused before anything is sent, and a prompt becomes one create call."""

from __future__ import annotations

import json
import time

import pytest

from comet import catalog
from comet.ui.form import form_default
from support.api import KEY, api_requests
from support.apptest import open_app, sent_body

pytestmark = pytest.mark.usefixtures("app_env")


def live(sim, **extra):
    return open_app(COMETAPI_KEY=KEY, COMETAPI_BASE_URL=sim.url, **extra)


def choose_model(at, model_id):
    at.selectbox(key="model").select(model_id).run()
    return at


def generate(at):
    next(b for b in at.button if b.label.startswith("Generate")).click().run()
    return at


def test_the_default_model_is_flux_schnell():
    at = open_app()
    assert at.selectbox(key="model").value == "black-forest-labs/flux-schnell"
    assert not at.exception


@pytest.mark.parametrize("model_id", list(catalog.MODELS))
def test_every_model_gets_a_form_whose_input_is_the_catalogs_defaults(model_id):
    at = choose_model(open_app(), model_id)
    assert not at.exception
    model = catalog.get_model(model_id)
    at.text_area(key="param.prompt").input("a lighthouse in fog").run()
    body = sent_body(at)
    assert list(body) == ["input"]
    built = body["input"]
    assert built["prompt"] == "a lighthouse in fog"
    for param in model.params:
        expected = form_default(model, param)
        skipped = param.type in ("image", "images") or param.only_when or param.deprecated or param.name == "seed"
        if expected is None or skipped:
            assert param.name not in built or param.name == "prompt", param.name
        else:
            assert built[param.name] == expected, param.name
            assert type(built[param.name]) is type(expected) or param.type == "number", param.name
    assert catalog.errors(catalog.validate(model_id, built)) == []


def test_width_and_height_appear_only_for_a_custom_aspect_ratio():
    at = choose_model(open_app(), "black-forest-labs/flux-pro")
    assert "width" not in sent_body(at)["input"]
    at.selectbox(key="param.aspect_ratio").select("custom").run()
    built = sent_body(at)["input"]
    assert built["aspect_ratio"] == "custom" and built["width"] == 1024 and built["height"] == 1024


def test_a_fixed_seed_is_sent_only_when_random_is_off():
    at = open_app()
    assert "seed" not in sent_body(at)["input"]
    at.toggle(key="seed.random").set_value(False).run()
    at.number_input(key="param.seed").set_value(42).run()
    assert sent_body(at)["input"]["seed"] == 42


def test_switching_models_keeps_the_prompt_and_what_still_applies():
    at = open_app()
    at.text_area(key="param.prompt").input("a red fox, watercolour").run()
    at.selectbox(key="param.aspect_ratio").select("16:9").run()
    choose_model(at, "black-forest-labs/flux-1.1-pro-ultra")
    built = sent_body(at)["input"]
    assert built["prompt"] == "a red fox, watercolour"
    assert built["aspect_ratio"] == "16:9"
    assert built["output_format"] == "jpg"  # webp is not a choice there: the model's default instead
    choose_model(at, "black-forest-labs/flux-2-pro")
    assert sent_body(at)["input"]["prompt"] == "a red fox, watercolour"
    assert sent_body(at)["input"]["aspect_ratio"] == "16:9"


def test_an_empty_prompt_is_refused_beside_the_form_and_nothing_is_sent(sim):
    at = generate(live(sim))
    assert not at.exception
    assert any("Prompt is required" in error.value for error in at.error)
    assert api_requests(sim) == []


def test_a_prompt_becomes_one_create_call_with_exactly_the_forms_input(sim):
    at = live(sim)
    at.text_area(key="param.prompt").input("a paper boat at sunrise").run()
    at.slider(key="param.num_outputs").set_value(2).run()
    expected = sent_body(at)
    generate(at)
    assert not at.exception
    posts = api_requests(sim, "POST")
    assert len(posts) == 1
    assert posts[0]["json"] == expected
    assert posts[0]["path"] == "/replicate/v1/models/black-forest-labs/flux-schnell/predictions"
    assert at.text_area(key="param.prompt").value == "a paper boat at sunrise"


def test_the_result_card_shows_the_images_once_they_are_stored(sim):
    at = live(sim)
    at.text_area(key="param.prompt").input("a paper boat").run()
    generate(at)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not at.get("image"):
        time.sleep(0.3)
        at.run()
    assert at.get("image"), "no image appeared"
    assert any(button.label == "Download" for button in at.get("download_button"))


def test_raw_json_is_sent_as_typed_and_syntax_errors_name_line_and_column(sim):
    at = live(sim)
    at.toggle(key="raw.on").set_value(True).run()
    at.text_area(key="raw.text").input('{"input": {"prompt": "a cat",\n  "num_outputs": 2,, }}').run()
    generate(at)
    assert any("line 2, column" in error.value for error in at.error)
    assert api_requests(sim) == []
    body = {"input": {"prompt": "a cat", "num_outputs": 2, "brand_new_option": True}}
    at.text_area(key="raw.text").input(json.dumps(body)).run()
    assert any("brand_new_option" in warning.value.replace("\\", "") for warning in at.warning)
    generate(at)
    assert [r["json"] for r in api_requests(sim, "POST")] == [body]


def test_catalog_problems_in_raw_json_are_listed_and_nothing_is_sent(sim):
    at = live(sim)
    at.toggle(key="raw.on").set_value(True).run()
    at.text_area(key="raw.text").input('{"input": {"prompt": "a", "num_outputs": 9, "output_format": "gif"}}').run()
    generate(at)
    errors_shown = " ".join(error.value for error in at.error)
    assert "between 1 and 4" in errors_shown and "gif" in errors_shown
    assert api_requests(sim) == []


def test_an_api_error_is_shown_with_its_request_id_and_the_form_keeps_everything(sim):
    sim.add_fault(route="create", kind="429", retry_after=30)
    at = live(sim)
    at.text_area(key="param.prompt").input("keep me").run()
    generate(at)
    assert not at.exception
    assert any("Rate limited" in error.value for error in at.error)
    assert at.text_area(key="param.prompt").value == "keep me"
    assert len(api_requests(sim, "POST")) == 1


def test_compare_sends_the_shared_input_to_each_model(sim):
    at = live(sim)
    at.text_area(key="param.prompt").input("a lighthouse").run()
    at.multiselect(key="compare.models").select("black-forest-labs/flux-dev").run()
    generate(at)
    posts = api_requests(sim, "POST")
    assert sorted(r["path"].split("/")[-2] for r in posts) == ["flux-dev", "flux-schnell"]
    assert all(r["json"]["input"]["prompt"] == "a lighthouse" for r in posts)


def test_the_snippets_never_contain_the_key(sim):
    at = live(sim)
    at.text_area(key="param.prompt").input("a").run()
    snippets = [block.value for block in at.code]
    assert any("$COMETAPI_KEY" in s for s in snippets)
    assert any("COMETAPI_KEY" in s and "os.environ" in s for s in snippets)
    assert all(KEY not in s for s in snippets)
