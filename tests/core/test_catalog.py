"""The model catalog: what the form offers for each FLUX model, and what it tells the user."""

import json
from pathlib import Path

import pytest

from comet import catalog
from comet.catalog import ERROR, WARNING, adapt_input, defaults, errors, validate, warnings

ALL = [
    f"black-forest-labs/{name}"
    for name in (
        "flux-schnell", "flux-dev", "flux-pro", "flux-1.1-pro", "flux-1.1-pro-ultra",
        "flux-kontext-pro", "flux-kontext-max", "flux-2-pro", "flux-2-dev", "flux-2-flex",
    )
]  # fmt: skip
SCHNELL, DEV, PRO, PRO11, ULTRA, KONTEXT_PRO, KONTEXT_MAX, FLUX2_PRO, FLUX2_DEV, FLUX2_FLEX = ALL

URL = "https://example.com/cat.png"
SMALL_DATA_URI = "data:image/png;base64,iVBORw0KGgo="
RAW_MODELS = json.loads((Path(catalog.__file__).parent / "models.json").read_text("utf-8"))


def messages(problems, severity=None):
    return [p.message for p in problems if severity in (None, p.severity)]


# --- the catalog offers the ten models ---------------------------------------------------------


def test_the_ten_models_are_offered_in_order_with_the_quickest_first():
    assert list(catalog.MODELS) == ALL
    assert catalog.DEFAULT_MODEL == SCHNELL == ALL[0]
    assert catalog.get_model(SCHNELL).title == "FLUX.1 [schnell]"


def test_an_unknown_model_id_names_the_known_ones():
    with pytest.raises(KeyError, match="Unknown model 'acme/flux-9'.*flux-schnell"):
        catalog.get_model("acme/flux-9")


@pytest.mark.parametrize(
    "model_id, output, image_field, max_images",
    [
        (SCHNELL, "list", None, 0),
        (DEV, "list", "image", 1),
        (PRO, "single", "image_prompt", 1),
        (PRO11, "single", "image_prompt", 1),
        (ULTRA, "single", "image_prompt", 1),
        (KONTEXT_PRO, "single", "input_image", 1),
        (KONTEXT_MAX, "single", "input_image", 1),
        (FLUX2_PRO, "single", "input_images", 8),
        (FLUX2_DEV, "single", "input_images", 4),
        (FLUX2_FLEX, "single", "input_images", 10),
    ],
)
def test_each_model_says_what_its_output_looks_like_and_which_images_it_takes(
    model_id, output, image_field, max_images
):
    model = catalog.get_model(model_id)
    assert (model.output, model.image_field, model.max_images) == (output, image_field, max_images)
    assert model.takes_images == (image_field is not None)
    if image_field:
        field = model.param(image_field)
        assert field.essential
        assert field.type == ("images" if max_images > 1 else "image")
        assert field.max_items == (max_images if max_images > 1 else None)


def test_the_form_gets_labels_help_and_ranges_for_every_field():
    num_outputs = catalog.get_model(SCHNELL).param("num_outputs")
    assert (num_outputs.label, num_outputs.essential) == ("Number of outputs", True)
    assert num_outputs.range_text() == "1–4, default 1"
    output_format = catalog.get_model(SCHNELL).param("output_format")
    assert output_format.range_text() == "one of webp, jpg, png; default webp"
    assert catalog.get_model(SCHNELL).param("go_fast").range_text() == "default on"
    kontext_safety = catalog.get_model(KONTEXT_PRO).param("safety_tolerance")
    assert kontext_safety.range_text() == "0–6, default 2, at most 2 with an input image"
    width = catalog.get_model(PRO).param("width")
    assert dict(width.only_when) == {"aspect_ratio": "custom"}
    assert not width.essential
    assert catalog.get_model(PRO).param("steps").deprecated
    assert catalog.get_model(SCHNELL).param("prompt").range_text() == ""


def test_the_catalog_cannot_be_changed_by_accident():
    model = catalog.get_model(FLUX2_PRO)
    with pytest.raises(TypeError):
        model.param("width").only_when["aspect_ratio"] = "1:1"
    assert hash(model) == hash(catalog.get_model(FLUX2_PRO))
    sent = defaults(FLUX2_PRO)
    sent["input_images"].append(URL)
    assert defaults(FLUX2_PRO)["input_images"] == []


# --- defaults ----------------------------------------------------------------------------------


def test_schnell_defaults_are_the_upstream_ones():
    assert defaults(SCHNELL) == {
        "aspect_ratio": "1:1",
        "num_outputs": 1,
        "num_inference_steps": 4,
        "output_format": "webp",
        "output_quality": 80,
        "disable_safety_checker": False,
        "go_fast": True,
        "megapixels": "1",
    }
    assert defaults(FLUX2_FLEX)["prompt_upsampling"] is True
    assert defaults(KONTEXT_MAX)["output_format"] == "png"


@pytest.mark.parametrize("model_id", ALL)
def test_a_prompt_and_the_defaults_make_a_valid_request(model_id):
    problems = validate(model_id, {**defaults(model_id), "prompt": "a lighthouse at dusk"})
    if model_id in (KONTEXT_PRO, KONTEXT_MAX):
        # Kontext defaults to match_input_image: without an image the user is told to pick a ratio.
        assert messages(problems) == [
            "Aspect ratio is match_input_image but there is no input image: "
            "pick an explicit aspect ratio for text-to-image."
        ]
        assert not errors(problems)
        problems = validate(model_id, {**defaults(model_id), "prompt": "a lighthouse", "input_image": URL})
    assert problems == []


# --- what the user is told ---------------------------------------------------------------------


def test_an_unknown_model_is_one_error():
    assert validate("acme/flux-9", {"prompt": "x"}) == [
        catalog.Problem("model", "Unknown model 'acme/flux-9'.", ERROR)
    ]


@pytest.mark.parametrize("bad_input", [None, "a cat", ["prompt", "a cat"]])
def test_an_input_that_is_not_a_set_of_parameters_is_an_error(bad_input):
    [problem] = validate(SCHNELL, bad_input)
    assert problem.severity == ERROR and problem.field == "input"


@pytest.mark.parametrize("prompt", [None, "", "   \n"])
def test_a_missing_or_blank_prompt_is_required(prompt):
    input = {} if prompt is None else {"prompt": prompt}
    assert messages(validate(SCHNELL, input)) == ["Prompt is required."]


def test_a_prompt_must_be_text_of_reasonable_length():
    assert messages(validate(SCHNELL, {"prompt": 42})) == ["Prompt must be text (got 42)."]
    assert validate(SCHNELL, {"prompt": "x" * catalog.PROMPT_MAX_CHARS}) == []
    assert messages(validate(SCHNELL, {"prompt": "x" * 12_345})) == [
        "Prompt is too long: 12,345 characters (at most 10,000)."
    ]


def test_out_of_range_numbers_are_errors():
    assert messages(validate(SCHNELL, {"prompt": "x", "num_outputs": 7})) == [
        "Number of outputs must be between 1 and 4 (got 7)."
    ]
    assert messages(validate(DEV, {"prompt": "x", "guidance": 10.5})) == [
        "Guidance must be between 0 and 10 (got 10.5)."
    ]


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("num_outputs", True, "Number of outputs must be a whole number (got True)."),
        ("num_outputs", 2.0, "Number of outputs must be a whole number (got 2.0)."),
        ("num_outputs", "2", "Number of outputs must be a whole number (got '2')."),
        ("go_fast", "yes", "Go fast must be true or false (got 'yes')."),
        ("megapixels", 1, "Megapixels must be text (got 1)."),
    ],
)
def test_wrong_types_are_errors_and_a_bool_is_not_a_number(field, value, message):
    assert messages(validate(SCHNELL, {"prompt": "x", field: value})) == [message]


def test_a_number_accepts_an_integer_but_not_a_bool_or_nan():
    assert validate(DEV, {"prompt": "x", "guidance": 4}) == []
    assert messages(validate(DEV, {"prompt": "x", "guidance": False})) == [
        "Guidance must be a number (got False)."
    ]
    assert errors(validate(DEV, {"prompt": "x", "guidance": float("nan")}))


def test_a_value_outside_the_choices_is_an_error():
    assert messages(validate(SCHNELL, {"prompt": "x", "output_format": "gif"})) == [
        "Output format must be one of webp, jpg, png (got 'gif')."
    ]
    assert messages(validate(ULTRA, {"prompt": "x", "output_format": "webp"})) == [
        "Output format must be one of jpg, png (got 'webp')."
    ]


def test_a_size_off_the_grid_is_a_rounding_warning():
    problems = validate(PRO, {"prompt": "x", "aspect_ratio": "custom", "width": 1000, "height": 768})
    assert problems == [catalog.Problem("width", "Width 1000 will be rounded to a multiple of 32.", WARNING)]


def test_a_custom_aspect_ratio_needs_width_and_height():
    assert messages(validate(PRO, {"prompt": "x", "aspect_ratio": "custom"})) == [
        "Width and height are required when aspect ratio is custom."
    ]
    assert messages(validate(FLUX2_PRO, {"prompt": "x", "aspect_ratio": "custom", "width": 1024})) == [
        "Height is required when aspect ratio is custom."
    ]


def test_width_and_height_without_custom_are_ignored_with_a_warning():
    problems = validate(FLUX2_DEV, {"prompt": "x", "aspect_ratio": "16:9", "width": 1024, "height": 768})
    assert problems == [
        catalog.Problem("width", "Width and height are ignored unless aspect ratio is custom.", WARNING)
    ]
    # Not given at all means the default ratio (1:1), which is not custom either.
    assert messages(validate(PRO, {"prompt": "x", "height": 512}), WARNING) == [
        "Height is ignored unless aspect ratio is custom."
    ]


@pytest.mark.parametrize(
    "image", [URL, "http://example.com/a.jpg", SMALL_DATA_URI, "data:image/webp;base64,UklGR="]
)
def test_an_image_is_a_web_url_or_an_image_data_uri(image):
    assert validate(DEV, {"prompt": "x", "image": image}) == []


@pytest.mark.parametrize(
    "image",
    [
        "ftp://a.com/b.png", "cat.png", "https://", "https://[::1",
        "data:text/plain;base64,aGk=", "data:image/png,x", 7,
    ],  # fmt: skip
)
def test_anything_else_is_not_an_image(image):
    [problem] = validate(DEV, {"prompt": "x", "image": image})
    assert problem.severity == ERROR and problem.field == "image"
    assert problem.message.startswith("Source image must be an https:// or http:// URL, or a data:image/")


def test_too_many_input_images_is_an_error():
    assert messages(validate(FLUX2_PRO, {"prompt": "x", "input_images": [URL] * 9})) == [
        "Up to 8 input images (got 9)."
    ]
    assert validate(FLUX2_FLEX, {"prompt": "x", "input_images": [URL] * 10}) == []


def test_each_bad_input_image_is_named_and_a_list_is_required():
    problems = validate(FLUX2_DEV, {"prompt": "x", "input_images": [URL, "nope", SMALL_DATA_URI, "no"]})
    assert [m.split(" must ")[0] for m in messages(problems)] == ["Input images #2", "Input images #4"]
    assert messages(validate(FLUX2_DEV, {"prompt": "x", "input_images": URL})) == [
        f"Input images must be a list of images (got {URL!r})."
    ]


def test_a_large_upload_is_a_warning_and_the_message_does_not_echo_it():
    big = "data:image/png;base64," + "A" * 400_000
    [problem] = validate(KONTEXT_PRO, {"prompt": "x", "input_image": big})
    assert problem.severity == WARNING
    assert problem.message == (
        "Input image is a 293 KB upload; uploads over 256 KB may be refused upstream: prefer an https:// URL."
    )
    [bad] = validate(KONTEXT_PRO, {"prompt": "x", "input_image": "data:image/bmp;base64," + "A" * 400_000})
    assert len(bad.message) < 300


def test_kontext_safety_is_capped_at_2_when_editing_an_image():
    assert validate(KONTEXT_MAX, {"prompt": "x", "aspect_ratio": "1:1", "safety_tolerance": 6}) == []
    assert messages(validate(KONTEXT_MAX, {"prompt": "x", "input_image": URL, "safety_tolerance": 3})) == [
        "Safety tolerance must be at most 2 when an input image is given (got 3)."
    ]


def test_match_input_image_without_an_image_is_a_warning():
    match = {"prompt": "x", "aspect_ratio": "match_input_image", "resolution": "match_input_image"}
    problems = validate(FLUX2_PRO, match)
    assert [(p.field, p.severity) for p in problems] == [("aspect_ratio", WARNING), ("resolution", WARNING)]
    assert validate(FLUX2_PRO, {**match, "input_images": [URL]}) == []


def test_an_unknown_parameter_is_sent_with_a_warning_not_blocked():
    problems = validate(KONTEXT_PRO, {"prompt": "x", "input_image": URL, "input_image_2": URL})
    assert problems == [
        catalog.Problem(
            "input_image_2",
            "Unknown parameter 'input_image_2' for FLUX.1 Kontext [pro]: it will be sent as-is.",
            WARNING,
        )
    ]
    assert not errors(problems)


def test_none_means_not_set():
    unset = {"seed": None, "width": None, "image_prompt": None, "foo": None}
    assert validate(PRO, {"prompt": "x", **unset}) == []


def test_every_problem_is_reported_at_once():
    typed = {"prompt": " ", "aspect_ratio": "custom", "width": 2000, "guidance": 9, "output_format": "gif"}
    problems = validate(PRO, {**typed, "n": 0})
    assert messages(errors(problems)) == [
        "Prompt is required.",
        "Width must be between 256 and 1440 (got 2000).",
        "Guidance must be between 2 and 5 (got 9).",
        "Output format must be one of webp, jpg, png (got 'gif').",
        "Height is required when aspect ratio is custom.",
    ]
    assert messages(warnings(problems)) == ["Unknown parameter 'n' for FLUX.1 [pro]: it will be sent as-is."]


# --- comparing and switching models ------------------------------------------------------------


def test_shared_params_are_what_one_input_can_send_to_several_models():
    assert catalog.shared_params([SCHNELL, DEV]) == [
        "prompt", "aspect_ratio", "num_outputs", "num_inference_steps", "seed",
        "output_format", "output_quality", "disable_safety_checker", "go_fast", "megapixels",
    ]  # fmt: skip
    assert catalog.shared_params([SCHNELL, FLUX2_PRO]) == [
        "prompt", "aspect_ratio", "seed", "output_format", "output_quality"
    ]
    assert catalog.shared_params([SCHNELL]) == [p.name for p in catalog.get_model(SCHNELL).params]
    assert catalog.shared_params([]) == []
    # Same name, different type: Kontext's one input image is not FLUX.2's list of images.
    assert "input_image" not in catalog.shared_params([KONTEXT_PRO, FLUX2_PRO])


def test_switching_models_keeps_the_prompt_and_drops_what_the_new_model_cannot_take():
    typed = {
        "prompt": "a red fox",
        "aspect_ratio": "21:9",
        "num_outputs": 3,
        "output_format": "png",
        "seed": 7,
        "go_fast": None,
        "foo": 1,
    }
    assert adapt_input(FLUX2_PRO, typed) == {"prompt": "a red fox", "output_format": "png", "seed": 7}
    assert adapt_input(DEV, typed) == {k: v for k, v in typed.items() if k not in ("go_fast", "foo")}
    assert adapt_input(ULTRA, {"prompt": "x", "output_format": "webp"}) == {"prompt": "x"}
    too_safe = {"prompt": "x", "input_image": URL, "safety_tolerance": 5}
    assert adapt_input(KONTEXT_PRO, too_safe) == {"prompt": "x", "input_image": URL}
    # What the user typed survives even when it is invalid everywhere; validate says why.
    long_prompt = {"prompt": "x" * 12_345, "seed": 1}
    assert adapt_input(FLUX2_DEV, long_prompt) == long_prompt


def test_a_compared_model_gets_the_users_choices_and_its_own_defaults():
    composed = catalog.compose(DEV, {"prompt": "a fox", "aspect_ratio": "16:9", "seed": 7})
    assert composed.input == {**catalog.defaults(DEV), "prompt": "a fox", "aspect_ratio": "16:9", "seed": 7}
    assert composed.input["num_inference_steps"] == 28  # dev's own, not schnell's 4
    assert composed.notes == ()


def test_a_choice_a_compared_model_cannot_take_falls_back_and_is_noted():
    composed = catalog.compose(PRO, {"prompt": "a fox", "guidance": 9, "num_outputs": 2, "aspect_ratio": "21:9"})
    assert (composed.input["guidance"], composed.input["aspect_ratio"]) == (3, "1:1")
    assert "num_outputs" not in composed.input
    assert composed.notes == (
        "Aspect ratio '21:9' is not offered by FLUX.1 [pro]: '1:1' is sent instead.",
        "Guidance must be between 2 and 5 (got 9). For FLUX.1 [pro], 3 is sent instead.",
        "Number of outputs (num_outputs) is not a parameter of FLUX.1 [pro]: not sent.",
    )
    assert errors(validate(PRO, composed.input)) == []


def test_images_go_into_each_models_own_field_cut_to_its_count():
    three = [URL, URL + "?2", URL + "?3"]
    kontext = catalog.compose(KONTEXT_PRO, {"prompt": "x"}, three, "input_images")
    assert kontext.input["input_image"] == URL and kontext.input["aspect_ratio"] == "match_input_image"
    assert "only the first of the 3 is sent" in kontext.notes[0]
    assert catalog.compose(FLUX2_DEV, {"prompt": "x"}, three, "input_image").input["input_images"] == three


def test_a_text_only_model_gets_no_image_and_says_so():
    schnell = catalog.compose(SCHNELL, {"prompt": "x"}, [URL], "input_image")
    assert "input_image" not in schnell.input and schnell.input["aspect_ratio"] == "1:1"
    assert schnell.notes == ("FLUX.1 [schnell] takes no input image: it is not sent.",)


def test_the_aspect_ratio_starts_on_match_input_image_only_with_an_image():
    for model_id, without in ((KONTEXT_PRO, "1:1"), (FLUX2_PRO, "1:1")):
        model = catalog.get_model(model_id)
        ratio = model.param("aspect_ratio")
        assert catalog.starting_value(model, ratio, has_image=True) == "match_input_image"
        assert catalog.starting_value(model, ratio, has_image=False) == without
    flux2 = catalog.get_model(FLUX2_PRO)  # resolution keeps 1 MP: a big photo must not set the size
    assert catalog.starting_value(flux2, flux2.param("resolution"), has_image=True) == "1 MP"


def test_a_raw_body_begun_from_the_form_tells_the_users_values_from_defaults():
    body = {**catalog.defaults(SCHNELL), "prompt": "x", "num_outputs": 2, "seed": 1, "brand_new": True}
    assert catalog.chosen_in(SCHNELL, body) == {"prompt": "x", "num_outputs": 2, "seed": 1, "brand_new": True}
    assert catalog.chosen_in(SCHNELL, {**catalog.defaults(SCHNELL), "prompt": "x"}) == {"prompt": "x"}


def test_an_upload_size_is_written_as_everywhere_else():
    from comet.images import human_size

    payload = "A" * 4_800_000  # 3.6 MB decoded
    [problem] = validate(KONTEXT_PRO, {"prompt": "x", "input_image": "data:image/png;base64," + payload})
    assert f"is a {human_size(3_600_000)} upload" in problem.message and human_size(3_600_000) == "3.4 MB"


# --- the JSON file is the single source --------------------------------------------------------

PARAM_KEYS = {
    "name", "type", "label", "help", "choices", "default", "minimum", "maximum", "multiple_of",
    "required", "essential", "only_when", "deprecated", "max_items", "maximum_with_image",
}  # fmt: skip
JSON_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "images": list}
ESSENTIAL = {"prompt", "aspect_ratio", "output_format", "num_outputs"}
PARAM_CASES = [(m["id"], p) for m in RAW_MODELS for p in m["params"]]


def test_the_catalog_is_exactly_the_json_file():
    assert [m["id"] for m in RAW_MODELS] == list(catalog.MODELS)
    for raw in RAW_MODELS:
        model = catalog.get_model(raw["id"])
        assert [p["name"] for p in raw["params"]] == [p.name for p in model.params]
        assert raw["title"] and raw["summary"] and "\n" not in raw["summary"]


@pytest.mark.parametrize("raw", RAW_MODELS, ids=lambda m: m["id"])
def test_each_model_has_one_prompt_and_its_image_field_in_the_json(raw):
    names = [p["name"] for p in raw["params"]]
    assert len(names) == len(set(names))
    assert [p["name"] for p in raw["params"] if p.get("required")] == ["prompt"]
    image_params = [p["name"] for p in raw["params"] if p["type"] in ("image", "images")]
    assert image_params == ([raw["image_field"]] if raw["image_field"] else [])
    essential = ESSENTIAL | {raw["image_field"]}
    assert {p["name"] for p in raw["params"] if p.get("essential")} == essential & set(names)


@pytest.mark.parametrize("model_id, raw", PARAM_CASES, ids=[f"{m}:{p['name']}" for m, p in PARAM_CASES])
def test_each_param_in_the_json_is_well_formed(model_id, raw):
    assert set(raw) <= PARAM_KEYS
    assert raw["type"] in catalog.TYPES
    assert raw["label"] and raw["help"].endswith(".")
    assert "seed" != raw["name"] or "default" not in raw
    if "choices" in raw:
        assert raw["choices"] and len(raw["choices"]) == len(set(raw["choices"]))
    if "minimum" in raw and "maximum" in raw:
        assert raw["minimum"] < raw["maximum"]
    if raw["type"] == "images":
        assert raw["max_items"] >= 1
    for other, value in raw.get("only_when", {}).items():
        assert value in catalog.get_model(model_id).param(other).choices
    if "default" in raw:
        default = raw["default"]
        assert isinstance(default, JSON_TYPES[raw["type"]])
        assert raw["type"] == "boolean" or not isinstance(default, bool)
        assert default in raw.get("choices", [default])
        if raw["type"] in ("integer", "number"):
            assert raw.get("minimum", default) <= default <= raw.get("maximum", default)
            assert default <= raw.get("maximum_with_image", default)
            if "multiple_of" in raw:
                assert default % raw["multiple_of"] == 0
