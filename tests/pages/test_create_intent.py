"""The Create page sends what the user chose (issue #10): compared models get the user's own
settings and their own defaults, defaults follow the model and its input image, the JSON editor
is in charge while it is on, a custom size shows its width and height, one warning per large
upload, "Use again" can repeat a run's seed, and the comparison survives a visit to History.
Everything is checked where it lands: the bodies that reach the stand-in over a real socket."""

from __future__ import annotations

import io
import json
import os
import time

import pytest
from PIL import Image

from comet import catalog
from comet.images import human_size
from support.api import KEY, api_requests
from support.apptest import open_app, sent_body

pytestmark = pytest.mark.usefixtures("app_env")

SCHNELL, DEV, PRO, PRO11, ULTRA, KONTEXT_PRO, KONTEXT_MAX, FLUX2_PRO, FLUX2_DEV, FLUX2_FLEX = catalog.MODELS


def live(sim):
    return open_app(COMETAPI_KEY=KEY, COMETAPI_BASE_URL=sim.url)


def choose_model(at, model_id):
    at.selectbox(key="model").select(model_id).run()
    return at


def compare_with(at, *model_ids):
    at.multiselect(key="compare.models").set_value(list(model_ids)).run()
    return at


def prompt(at, text):
    at.text_area(key="param.prompt").input(text).run()
    return at


def generate(at):
    next(b for b in at.button if b.label.startswith("Generate")).click().run()
    assert not at.exception
    return at


def previews(at) -> dict[str, dict]:
    """Each model's tab title -> the body its JSON tab shows (one model: no model tabs)."""
    bodies = [json.loads(block.value) for block in at.code if block.language == "json"]
    titles = [tab.label for tab in at.tabs if tab.label not in ("JSON", "curl", "Python")]
    return dict(zip(titles, bodies, strict=True))


def received(sim) -> dict[str, dict]:
    """model name (flux-dev) -> the body the stand-in got for it."""
    return {r["path"].split("/")[-2]: r["json"] for r in api_requests(sim, "POST")}


def png(size=(160, 90), noise=False) -> bytes:
    image = (Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)) if noise
             else Image.new("RGB", size, (200, 120, 40)))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


# --- 1. compare: each model its own defaults, the user's settings to all -----------------------


def test_compare_gives_a_compared_model_its_own_defaults_not_the_main_models(sim):
    at = compare_with(prompt(live(sim), "a lighthouse"), DEV)
    shown_before = previews(at)
    assert shown_before["FLUX.1 [dev]"]["input"]["num_inference_steps"] == 28
    generate(at)
    bodies = received(sim)
    assert bodies["flux-schnell"]["input"]["num_inference_steps"] == 4
    assert bodies["flux-dev"]["input"]["num_inference_steps"] == 28
    assert bodies["flux-dev"]["input"]["guidance"] == 3
    assert list(bodies.values()) == list(shown_before.values())  # the tabs showed exactly this


def test_compare_sends_what_the_user_set_to_every_model_that_takes_it(sim):
    at = prompt(live(sim), "a lighthouse")
    at.slider(key="param.num_inference_steps").set_value(2).run()
    at.selectbox(key="param.aspect_ratio").select("16:9").run()
    at.toggle(key="seed.random").set_value(False).run()
    at.number_input(key="param.seed").set_value(1234).run()
    compare_with(at, DEV)
    generate(at)
    dev = received(sim)["flux-dev"]["input"]
    sent = (dev["num_inference_steps"], dev["aspect_ratio"], dev["seed"], dev["prompt"])
    assert sent == (2, "16:9", 1234, "a lighthouse")


def test_a_setting_a_compared_model_cannot_take_is_left_out_and_said(sim):
    at = prompt(live(sim), "a fox")
    at.slider(key="param.num_outputs").set_value(2).run()
    at.selectbox(key="param.aspect_ratio").select("21:9").run()
    compare_with(at, FLUX2_PRO)
    tab = previews(at)["FLUX.2 [pro]"]["input"]
    assert "num_outputs" not in tab and tab["aspect_ratio"] == "1:1"
    notes = " ".join(caption.value for caption in at.caption).replace("\\", "")
    assert "Number of outputs (num_outputs) is not a parameter of FLUX.2 [pro]" in notes
    assert "Aspect ratio '21:9' is not offered by FLUX.2 [pro]" in notes
    generate(at)
    assert received(sim)["flux-2-pro"] == {"input": tab}
    assert received(sim)["flux-schnell"]["input"]["num_outputs"] == 2


def test_three_models_each_get_exactly_their_tab(sim):
    at = compare_with(prompt(live(sim), "a red kite"), DEV, FLUX2_FLEX)
    shown_before = previews(at)
    assert list(shown_before) == ["FLUX.1 [schnell]", "FLUX.1 [dev]", "FLUX.2 [flex]"]
    assert next(b for b in at.button if b.label.startswith("Generate")).label == "Generate with 3 models"
    generate(at)
    assert list(received(sim)) == ["flux-schnell", "flux-dev", "flux-2-flex"]
    assert list(received(sim).values()) == list(shown_before.values())
    assert received(sim)["flux-2-flex"]["input"]["guidance"] == 4.5


def test_four_models_is_the_limit_and_each_gets_its_tab(sim):
    at = prompt(live(sim), "a glass city")
    compare_with(at, DEV, PRO, FLUX2_PRO, ULTRA)  # a fifth request is one too many
    assert at.multiselect(key="compare.models").value == [DEV, PRO, FLUX2_PRO]
    assert at.multiselect(key="compare.models").proto.max_selections == 3
    shown_before = previews(at)
    generate(at)
    assert list(received(sim)) == ["flux-schnell", "flux-dev", "flux-pro", "flux-2-pro"]
    assert list(received(sim).values()) == list(shown_before.values())


def test_a_compared_model_gets_what_its_own_form_would_send(sim):
    at = compare_with(prompt(live(sim), "a quiet harbour"), FLUX2_FLEX)
    in_compare = previews(at)["FLUX.2 [flex]"]
    choose_model(at, FLUX2_FLEX)
    assert sent_body(at) == in_compare


# --- 2. defaults follow the input image ---------------------------------------------------------


def test_a_kontext_edit_keeps_the_input_images_shape(sim):
    at = choose_model(prompt(live(sim), "make it night"), KONTEXT_PRO)
    assert sent_body(at)["input"]["aspect_ratio"] == "1:1"  # text-to-image: nothing to match
    at.file_uploader[0].set_value(("photo.png", png((160, 90)), "image/png")).run()
    assert at.selectbox(key="param.aspect_ratio").value == "match_input_image"
    generate(at)
    assert received(sim)["flux-kontext-pro"]["input"]["aspect_ratio"] == "match_input_image"


def test_an_aspect_ratio_the_user_picked_stays_when_an_image_is_added(sim):
    at = choose_model(prompt(live(sim), "make it night"), KONTEXT_PRO)
    at.selectbox(key="param.aspect_ratio").select("16:9").run()
    at.file_uploader[0].set_value(("photo.png", png((160, 90)), "image/png")).run()
    generate(at)
    assert received(sim)["flux-kontext-pro"]["input"]["aspect_ratio"] == "16:9"


def test_flux2_references_match_the_first_image_and_a_compared_kontext_gets_it_too(sim):
    at = choose_model(prompt(live(sim), "the same cat, in winter"), FLUX2_PRO)
    at.text_area(key="images.urls.input_images").input("https://example.com/cat.png").run()
    compare_with(at, KONTEXT_PRO, SCHNELL)
    generate(at)
    bodies = received(sim)
    assert bodies["flux-2-pro"]["input"]["aspect_ratio"] == "match_input_image"
    assert bodies["flux-kontext-pro"]["input"]["input_image"] == "https://example.com/cat.png"
    assert bodies["flux-kontext-pro"]["input"]["aspect_ratio"] == "match_input_image"
    assert "input_images" not in bodies["flux-schnell"]["input"]
    assert bodies["flux-schnell"]["input"]["aspect_ratio"] == "1:1"


# --- 3. a model switch carries only the user's own choices ---------------------------------------


def test_defaults_left_alone_become_the_new_models_through_any_path(sim):
    at = live(sim)
    for model_id in (DEV, KONTEXT_PRO, FLUX2_FLEX):
        choose_model(at, model_id)
    assert at.slider(key="param.guidance").value == 4.5
    assert sent_body(at)["input"]["guidance"] == 4.5
    choose_model(at, SCHNELL)
    choose_model(at, DEV)
    assert at.slider(key="param.num_inference_steps").value == 28


def test_a_value_the_user_set_carries_through_models_that_lack_it(sim):
    at = choose_model(live(sim), DEV)
    at.slider(key="param.guidance").set_value(6.0).run()
    for model_id in (KONTEXT_PRO, FLUX2_FLEX):
        choose_model(at, model_id)
    assert sent_body(at)["input"]["guidance"] == 6.0
    choose_model(at, PRO)  # 2–5 there: its own default instead
    assert sent_body(at)["input"]["guidance"] == 3


# --- 4. the JSON editor is in charge while it is on ------------------------------------------


def test_while_json_is_on_the_form_is_paused_and_exactly_the_json_is_sent(sim):
    at = prompt(live(sim), "from the form")
    at.toggle(key="raw.on").set_value(True).run()
    assert at.text_area(key="param.prompt").disabled
    assert at.selectbox(key="param.aspect_ratio").disabled
    body = {"input": {"prompt": "from the JSON", "num_outputs": 2}}
    at.text_area(key="raw.text").input(json.dumps(body)).run()
    assert sent_body(at) == body
    generate(at)
    assert [r["json"] for r in api_requests(sim, "POST")] == [body]


def test_invalid_json_shows_no_body_and_generate_says_why(sim):
    at = prompt(live(sim), "from the form")
    at.toggle(key="raw.on").set_value(True).run()
    at.text_area(key="raw.text").input('{"input": {"prompt": "x",}}').run()
    assert not [block for block in at.code if block.language == "json"]
    assert any("Nothing will be sent" in error.value and "line 1, column" in error.value for error in at.error)
    generate(at)
    assert any("Fix these" in error.value and "JSON syntax error" in error.value for error in at.error)
    assert api_requests(sim) == []


def test_json_compare_gives_the_other_model_its_own_defaults(sim):
    at = compare_with(prompt(live(sim), "a kite"), DEV)
    at.toggle(key="raw.on").set_value(True).run()
    started = json.loads(at.text_area(key="raw.text").value)
    assert started["input"]["num_inference_steps"] == 4  # the form's body, defaults included
    started["input"]["prompt"] = "a kite, from JSON"
    at.text_area(key="raw.text").input(json.dumps(started)).run()
    generate(at)
    assert received(sim)["flux-schnell"] == started
    dev = received(sim)["flux-dev"]["input"]
    assert (dev["prompt"], dev["num_inference_steps"]) == ("a kite, from JSON", 28)


# --- 5. a custom size shows its width and height at once -----------------------------------------


def advanced(at):
    return next(expander for expander in at.expander if expander.label == "Advanced")


def test_custom_shows_width_and_height_beside_the_ratio_not_in_advanced():
    at = choose_model(open_app(), PRO)
    assert "param.width" not in [w.key for w in at.number_input]
    at.selectbox(key="param.aspect_ratio").select("custom").run()
    keys = [w.key for w in at.number_input]
    assert "param.width" in keys and "param.height" in keys
    assert not {"param.width", "param.height"} & {w.key for w in advanced(at).number_input}
    at.number_input(key="param.width").set_value(1440).run()
    assert sent_body(at)["input"]["width"] == 1440


# --- 6. one warning per large upload; Use again with the seed; compare kept; chips wrap ----------


def test_a_large_upload_gets_one_warning_with_one_size_format(sim):
    at = choose_model(prompt(live(sim), "edit"), KONTEXT_PRO)
    at.toggle(key="images.shrink").set_value(False).run()
    data = png((600, 600), noise=True)
    at.file_uploader[0].set_value(("noisy.png", data, "image/png")).run()
    compare_with(at, KONTEXT_MAX)  # the same image goes to two models: still one warning
    about_it = [w.value for w in at.warning if "noisy" in w.value or "KB" in w.value or "MB" in w.value]
    assert len(about_it) == 1, about_it
    assert f"noisy.png is {human_size(len(data))}" in about_it[0].replace("\\", "")
    thumbnails = [img.proto.imgs[0].caption for img in at.get("image")]
    assert thumbnails == [f"600×600 · {human_size(len(data))}"]  # the same size, written the same way


def test_a_small_upload_gets_no_size_warning(sim):
    at = choose_model(prompt(live(sim), "edit"), KONTEXT_PRO)
    at.file_uploader[0].set_value(("small.png", png(), "image/png")).run()
    assert not [w.value for w in at.warning if "KB" in w.value or "MB" in w.value]


def finished_card(at, pid, timeout=20) -> list[str]:
    """The card's "Use again" buttons' keys, once its image is on screen."""
    deadline = time.monotonic() + timeout
    while not at.get("image") and time.monotonic() < deadline:
        time.sleep(0.3)
        at.run()
    return [b.key for b in at.button if (b.key or "").startswith(f"latest-{pid}-reuse")]


def drawn_seed(at) -> int:
    """The seed the card says the run used ("seed 123 · run time 1.0 s")."""
    [caption] = [c.value for c in at.caption if c.value.startswith("seed ")]
    return int(caption.split()[1])


def test_use_again_with_seed_repeats_the_seed_the_run_drew(sim):
    at = generate(prompt(live(sim), "a paper crane"))
    [first] = api_requests(sim, "POST")
    pid = at.session_state["create.groups"][0][0]
    assert finished_card(at, pid) == [f"latest-{pid}-reuse", f"latest-{pid}-reuse-seed"]
    seed = drawn_seed(at)
    assert "seed" not in first["json"]["input"]  # random: the run drew it (its logs say which)
    assert str(seed) in at.button(key=f"latest-{pid}-reuse-seed").help
    at.button(key=f"latest-{pid}-reuse-seed").click().run()
    assert at.toggle(key="seed.random").value is False
    assert at.number_input(key="param.seed").value == seed
    time.sleep(1.1)  # past the double-click window
    generate(at)
    assert api_requests(sim, "POST")[-1]["json"]["input"]["seed"] == seed


def test_use_again_alone_keeps_the_seed_random(sim):
    at = generate(prompt(live(sim), "a paper crane"))
    pid = at.session_state["create.groups"][0][0]
    assert finished_card(at, pid)
    at.button(key=f"latest-{pid}-reuse").click().run()
    assert at.toggle(key="seed.random").value is True
    time.sleep(1.1)
    generate(at)
    assert "seed" not in api_requests(sim, "POST")[-1]["json"]["input"]


def test_a_run_with_a_fixed_seed_is_used_again_with_it(sim):
    at = prompt(live(sim), "a paper crane")
    at.toggle(key="seed.random").set_value(False).run()
    at.number_input(key="param.seed").set_value(99).run()
    generate(at)
    pid = at.session_state["create.groups"][0][0]
    assert finished_card(at, pid) == [f"latest-{pid}-reuse"]  # "Use again" already repeats it
    at.toggle(key="seed.random").set_value(True).run()
    at.button(key=f"latest-{pid}-reuse").click().run()
    assert (at.toggle(key="seed.random").value, at.number_input(key="param.seed").value) == (False, 99)


def test_the_comparison_is_kept_after_a_visit_to_history():
    at = compare_with(open_app(), DEV, FLUX2_PRO)
    at.switch_page("pages/history.py").run()
    at.switch_page("pages/create.py").run()
    assert at.multiselect(key="compare.models").value == [DEV, FLUX2_PRO]


def test_a_compared_model_picked_as_the_main_one_leaves_the_comparison():
    at = compare_with(open_app(), DEV, FLUX2_PRO)
    choose_model(at, DEV)
    assert not at.exception
    assert at.multiselect(key="compare.models").value == [FLUX2_PRO]
    at.switch_page("pages/history.py").run()
    at.switch_page("pages/create.py").run()
    assert at.multiselect(key="compare.models").value == [FLUX2_PRO]
