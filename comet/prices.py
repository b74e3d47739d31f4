"""What a request is estimated to cost, from the catalog's price rules (comet/models.json,
each with its source and date) and the operator's overrides.

Every figure is an estimate: CometAPI resells these models and bills what it bills. The
operator sets real prices in a `[prices]` table of the secrets or in `COMET_PRICES` (JSON), model
name (with or without its owner) -> USD per output image. Estimates err high where the rule is
uncertain (megapixels are rounded up), so a spending limit is never passed by an estimate that
was too low."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import catalog

PER_IMAGE, PER_MEGAPIXEL = "per_image", "per_megapixel"
MAX_PRICE = 100.0  # USD per image: a larger override is a typo, not a price
MEGAPIXEL = 1024 * 1024
_RESOLUTIONS = {"0.5 MP": 0.5, "1 MP": 1.0, "2 MP": 2.0, "4 MP": 4.0}


@dataclass(frozen=True)
class Rule:
    model: str
    kind: str  # PER_IMAGE or PER_MEGAPIXEL
    usd: float
    source: str  # where the figure comes from ("your [prices]" for an override)


@dataclass(frozen=True)
class Estimate:
    usd: float
    basis: str  # how it was reached, for a tooltip: "2 images x $0.003"


def rules(overrides: Mapping[str, float] | None = None) -> dict[str, Rule]:
    """The price rule of every catalog model: the catalog's default unless overridden."""
    found: dict[str, Rule] = {}
    for model_id, model in catalog.MODELS.items():
        price = model.price or {}
        found[model_id] = Rule(model_id, price.get("rule", PER_IMAGE), float(price.get("usd", 0.0)),
                               f"{price.get('source', 'unknown')} ({price.get('date', 'undated')})")
    for name, usd in (overrides or {}).items():
        model_id = resolve(name)
        found[model_id] = Rule(model_id, PER_IMAGE, usd, "your [prices] setting")
    return found


def resolve(name: str) -> str:
    """A model named in [prices]: its full id (`flux-schnell` -> black-forest-labs/flux-schnell)."""
    if name in catalog.MODELS:
        return name
    matches = [model_id for model_id in catalog.MODELS if model_id.split("/", 1)[1] == name]
    if len(matches) != 1:
        raise ValueError(f"[prices] names {name!r}, which is not a model of the catalog.")
    return matches[0]


def parse_overrides(table: Mapping[str, Any] | None, environ_json: str | None) -> dict[str, float]:
    """Prices from the secrets' [prices] table and COMET_PRICES (JSON; the secrets win). Raises
    ValueError with a message naming the bad entry."""
    merged: dict[str, Any] = {}
    if environ_json and environ_json.strip():
        try:
            from_env = json.loads(environ_json)
        except ValueError as exc:
            raise ValueError(f"COMET_PRICES is not valid JSON: {exc}.") from None
        if not isinstance(from_env, dict):
            raise ValueError('COMET_PRICES must be a JSON object, e.g. {"flux-schnell": 0.003}.')
        merged.update(from_env)
    merged.update(dict(table or {}))
    prices: dict[str, float] = {}
    for name, value in merged.items():
        model_id = resolve(str(name))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not 0 <= value <= MAX_PRICE:
            raise ValueError(f"The price of {name} must be a number of USD per image from 0 to {MAX_PRICE:g} "
                             f"(got {value!r}).")
        prices[model_id] = float(value)
    return prices


def estimate(model_id: str, model_input: Mapping[str, Any], price_rules: Mapping[str, Rule]) -> Estimate | None:
    """The estimated cost of one create, or None for a model without a price rule."""
    rule = price_rules.get(model_id)
    if rule is None:
        return None
    images = _images(model_id, model_input)
    if rule.kind == PER_MEGAPIXEL:
        output_mp = max(1, math.ceil(_megapixels(model_input) - 1e-9))
        inputs = _input_images(model_id, model_input)
        usd = rule.usd * (output_mp * images + inputs)
        extra = f" + {inputs} input image{'s' if inputs != 1 else ''} x 1 MP" if inputs else ""
        return Estimate(usd, f"{output_mp} MP x ${rule.usd:g}/MP{extra}")
    return Estimate(rule.usd * images, f"{images} image{'s' if images != 1 else ''} x ${rule.usd:g}")


def total(estimates: list[Estimate | None]) -> float | None:
    """The sum, or None when any part has no price."""
    if any(e is None for e in estimates):
        return None
    return sum(e.usd for e in estimates)  # type: ignore[union-attr]


def usd(value: float | None) -> str:
    """$0.003, $0.04, $1.25: enough digits to tell prices apart, none trailing."""
    if value is None or not math.isfinite(value):
        return "–"
    if value >= 1:
        return f"${value:,.2f}"
    return "$" + f"{value:.4f}".rstrip("0").rstrip(".") if value else "$0"


def _images(model_id: str, model_input: Mapping[str, Any]) -> int:
    count = model_input.get("num_outputs")
    if isinstance(count, int) and not isinstance(count, bool) and 1 <= count <= 16:
        return count
    default = catalog.defaults(model_id).get("num_outputs") if model_id in catalog.MODELS else None
    return default if isinstance(default, int) and default >= 1 else 1


def _megapixels(model_input: Mapping[str, Any]) -> float:
    """Output size for per-megapixel models: custom width x height, else the resolution preset
    (match_input_image, unknown: counted as 1 MP; rounded up by the caller)."""
    if model_input.get("aspect_ratio") == "custom":
        width, height = model_input.get("width"), model_input.get("height")
        if all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 16384 for v in (width, height)):
            return width * height / MEGAPIXEL
    return _RESOLUTIONS.get(str(model_input.get("resolution", "1 MP")), 1.0)


def _input_images(model_id: str, model_input: Mapping[str, Any]) -> int:
    model = catalog.MODELS.get(model_id)
    field = model.image_field if model else None
    value = model_input.get(field) if field else None
    if isinstance(value, list):
        return sum(1 for item in value if item)
    return 1 if value else 0
