"""What a request is estimated to cost: the catalog's price rules, the operator's overrides."""

from __future__ import annotations

import pytest

from comet import prices

SCHNELL, FLEX, KONTEXT = ("black-forest-labs/flux-schnell", "black-forest-labs/flux-2-flex",
                          "black-forest-labs/flux-kontext-pro")


def test_every_catalog_model_has_a_price_with_its_source_and_date():
    from comet import catalog

    for model in catalog.MODELS.values():
        assert model.price["rule"] in (prices.PER_IMAGE, prices.PER_MEGAPIXEL), model.id
        assert model.price["usd"] > 0 and model.price["source"] and model.price["date"], model.id


def test_per_image_models_cost_their_price_times_the_images_made():
    rules = prices.rules()
    assert prices.estimate(SCHNELL, {"prompt": "a"}, rules).usd == pytest.approx(0.003)
    four = prices.estimate(SCHNELL, {"prompt": "a", "num_outputs": 4}, rules)
    assert four.usd == pytest.approx(0.012) and four.basis == "4 images x $0.003"


def test_per_megapixel_models_count_output_size_and_input_images():
    rules = prices.rules()
    one = prices.estimate(FLEX, {"prompt": "a"}, rules)
    four = prices.estimate(FLEX, {"prompt": "a", "resolution": "4 MP"}, rules)
    custom = prices.estimate(FLEX, {"prompt": "a", "aspect_ratio": "custom", "width": 1440, "height": 1440}, rules)
    edit = prices.estimate(FLEX, {"prompt": "a", "input_images": ["data:image/png;base64,AA", "https://x/y.png"]},
                           rules)
    assert (one.usd, four.usd) == (pytest.approx(0.05), pytest.approx(0.20))
    assert custom.usd == pytest.approx(0.10)  # 1.98 MP rounds up to 2
    assert edit.usd == pytest.approx(0.15) and "2 input images" in edit.basis


def test_overrides_from_secrets_win_over_the_environment_and_accept_short_names():
    overrides = prices.parse_overrides({"flux-schnell": 0.002}, '{"flux-schnell": 0.009, "flux-kontext-pro": 0.03}')
    rules = prices.rules(overrides)
    assert rules[SCHNELL].usd == 0.002 and rules[KONTEXT].usd == 0.03
    assert rules[SCHNELL].source == "your [prices] setting"
    overridden = prices.estimate(FLEX, {"prompt": "a", "resolution": "4 MP"}, prices.rules({FLEX: 0.07}))
    assert overridden.usd == pytest.approx(0.07)


@pytest.mark.parametrize(
    "table, environ, message",
    [({"flux-nonsense": 0.1}, None, "not a model"), ({"flux-schnell": -1}, None, "from 0 to"),
     ({"flux-schnell": "cheap"}, None, "must be a number"), ({"flux-schnell": float("inf")}, None, "must be a number"),
     (None, "{not json", "not valid JSON"), (None, "[1, 2]", "must be a JSON object"),
     ({"flux-schnell": True}, None, "must be a number")],
)
def test_bad_overrides_are_refused_with_the_entry_named(table, environ, message):
    with pytest.raises(ValueError, match=message):
        prices.parse_overrides(table, environ)


def test_amounts_read_as_money():
    assert [prices.usd(v) for v in (0.003, 0.04, 0.0, 1.25, 1234.5, None)] == \
        ["$0.003", "$0.04", "$0", "$1.25", "$1,234.50", "–"]
