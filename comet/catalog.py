"""The FLUX models' input parameters, and validation of an input dict against them.

The parameters live in ``models.json`` beside this file (one line per parameter, in the order of
``shared/reference/flux-models.md``) so that a drifting upstream schema is a data edit, not a code
change. Everything a form needs is in the data: the UI builds its widgets from ``MODELS`` and shows
``validate``'s problems beside the fields they name.

Validation is a helpful first pass, never a gate on what upstream accepts: unknown parameters are
warnings and are sent as-is, so a parameter added upstream is usable before the catalog knows it.
A ``None`` value means "not set" (a form sends ``None`` for an empty optional field): it is never a
problem, except for a required parameter, and ``adapt_input`` drops it.

What a model is sent is decided here too: ``starting_value`` (a field's value until the user sets
it, given whether an input image is there) and ``compose`` (a compared model's input: the user's
own choices where the model takes them, its own starting values for the rest, and a note for each
choice left out or changed).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

DEFAULT_MODEL = "black-forest-labs/flux-schnell"
# FLUX reads only ~512 tokens; the cap stops a pasted document, not a long prompt.
PROMPT_MAX_CHARS = 10_000
# Replicate advises data URIs only for files up to this size; bigger ones may be refused. The one
# threshold and wording for every place that flags a large inline image (the upload's warning,
# the downscaling switch, the request's check).
DATA_URI_MAX_BYTES = 256 * 1024
DATA_URI_ADVICE = f"uploads over {DATA_URI_MAX_BYTES // 1024} KB may be refused upstream"

ERROR = "error"
WARNING = "warning"

TYPES = ("string", "integer", "number", "boolean", "image", "images")
MATCH_INPUT_IMAGE = "match_input_image"

_DATA_URI = re.compile(r"data:image/(?:jpeg|png|gif|webp);base64,(?P<payload>\S+)")
_IMAGE_RULE = "an https:// or http:// URL, or a data:image/...;base64 URI of a JPEG, PNG, GIF or WebP"
_TYPE_WORDS = {
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
}


@dataclass(frozen=True)
class Param:
    """One input parameter of a model, as the form shows it and validation checks it.

    ``only_when`` maps other parameters to the values that make this one apply (and then required):
    width and height apply only when the aspect ratio is custom. ``maximum_with_image`` is a lower
    ceiling that holds while the model's image input is set (Kontext's safety tolerance).
    A ``default`` of ``None`` means upstream picks (a random seed, say).
    """

    name: str
    type: str
    label: str
    help: str
    choices: tuple | None = None
    default: Any = None
    minimum: int | float | None = None
    maximum: int | float | None = None
    multiple_of: int | None = None
    required: bool = False
    essential: bool = False
    # A read-only mapping is not hashable, so it stays out of the hash (equality still uses it).
    only_when: Mapping[str, Any] | None = field(default=None, hash=False)
    deprecated: bool = False
    max_items: int | None = None
    maximum_with_image: int | float | None = None

    def range_text(self) -> str:
        """The allowed values in a few words, for help texts: "1–4, default 1"."""
        if self.choices:
            parts, sep = [f"one of {', '.join(map(str, self.choices))}"], "; "
        else:
            parts, sep = [], ", "
            if self.minimum is not None and self.maximum is not None:
                parts.append(f"{self.minimum}–{self.maximum}")
            elif self.minimum is not None:
                parts.append(f"at least {self.minimum}")
            elif self.maximum is not None:
                parts.append(f"at most {self.maximum}")
        if self.multiple_of:
            parts.append(f"multiple of {self.multiple_of}")
        if self.max_items is not None:
            parts.append(f"up to {self.max_items} images")
        if self.default is not None and self.default != ():
            shown = ("on" if self.default else "off") if self.type == "boolean" else self.default
            parts.append(f"default {shown}")
        if self.maximum_with_image is not None:
            parts.append(f"at most {self.maximum_with_image} with an input image")
        return sep.join(parts)


@dataclass(frozen=True)
class Model:
    id: str
    title: str
    summary: str
    output: str  # "list" or "single": the shape of a succeeded prediction's output
    image_field: str | None
    max_images: int
    params: tuple[Param, ...]
    # The default price rule (comet.prices): {"rule": "per_image"|"per_megapixel", "usd", "source", "date"}.
    price: Mapping[str, Any] | None = field(default=None, hash=False, compare=False)

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    @property
    def takes_images(self) -> bool:
        return self.image_field is not None


@dataclass(frozen=True)
class Problem:
    field: str  # the parameter's name ("model" or "input" for the request as a whole)
    message: str
    severity: str  # ERROR blocks the request; WARNING is shown and the request may still go


def _freeze(value: Any) -> Any:
    """JSON lists and objects as tuples and read-only mappings, so the catalog cannot be mutated."""
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    return value


def _load() -> dict[str, Model]:
    raw = json.loads(resources.files(__package__).joinpath("models.json").read_text("utf-8"))
    models = {}
    for m in raw:
        params = tuple(Param(**{k: _freeze(v) for k, v in p.items()}) for p in m.pop("params"))
        models[m["id"]] = Model(**m, params=params)
    return models


MODELS: dict[str, Model] = _load()


def get_model(model_id: str) -> Model:
    try:
        return MODELS[model_id]
    except KeyError:
        raise KeyError(f"Unknown model {model_id!r}; known models: {', '.join(MODELS)}") from None


def defaults(model_id: str) -> dict:
    """The upstream default of every parameter that has one, ready to send as JSON."""
    return {
        p.name: list(p.default) if isinstance(p.default, tuple) else p.default
        for p in get_model(model_id).params
        if p.default is not None
    }


def errors(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == ERROR]


def warnings(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == WARNING]


def validate(model_id: str, input: object) -> list[Problem]:
    """Every problem with ``input`` for the model at once, in words a user understands."""
    model = MODELS.get(model_id)
    if model is None:
        return [Problem("model", f"Unknown model {model_id!r}.", ERROR)]
    if not isinstance(input, dict):
        kind = type(input).__name__
        return [Problem("input", f"The input must be a set of named parameters (got {kind}).", ERROR)]

    given = {k: v for k, v in input.items() if v is not None}
    has_image = _has_image(model, given)
    problems = []
    for p in model.params:
        if p.name in given:
            problems += _value_problems(p, given[p.name], has_image)
        elif p.required:
            problems.append(Problem(p.name, f"{p.label} is required.", ERROR))
    problems += _condition_problems(model, given)
    problems += _match_input_problems(model, given, has_image)
    problems += [
        Problem(k, f"Unknown parameter {k!r} for {model.title}: it will be sent as-is.", WARNING)
        for k in given
        if model.param(k) is None
    ]
    return problems


def shared_params(model_ids: Iterable[str]) -> list[str]:
    """Parameters every model has with the same type, in the first model's order.

    Comparing models does not send one shared input: ``compose`` builds each model its own.
    """
    models = [get_model(m) for m in model_ids]
    if not models:
        return []
    return [
        p.name
        for p in models[0].params
        if all((q := other.param(p.name)) is not None and q.type == p.type for other in models[1:])
    ]


# --- what a model is sent: its own starting values, then the user's choices -------------------

# The aspect ratio follows an input image once one is given: an edit keeps its photo's shape
# (Kontext's own default). Resolution does not: a 12 MP photo would decide the size and the price.
FOLLOWS_INPUT_IMAGE = "aspect_ratio"
CUSTOM_SIZE_START = 1024  # width and height have no upstream default: `custom` starts here


def starting_value(model: Model, param: Param, has_image: bool) -> Any:
    """What a field holds until the user sets it: the model's default, fitted to the situation.

    ``match_input_image`` has nothing to match without an input image, so a model whose default
    it is (Kontext) starts text-to-image on its first real ratio; with an image the aspect ratio
    starts on ``match_input_image`` wherever the model offers it.
    """
    if param.default is None and param.only_when and param.minimum is not None and param.maximum is not None:
        return min(max(CUSTOM_SIZE_START, int(param.minimum)), int(param.maximum))
    if param.choices and MATCH_INPUT_IMAGE in param.choices:
        if has_image and param.name == FOLLOWS_INPUT_IMAGE:
            return MATCH_INPUT_IMAGE
        if not has_image and param.default == MATCH_INPUT_IMAGE:
            return next(choice for choice in param.choices if choice != MATCH_INPUT_IMAGE)
    return list(param.default) if isinstance(param.default, tuple) else param.default


def refusal(param: Param, value: Any, has_image: bool = False) -> Problem | None:
    """Why the parameter cannot take this one (non-None) value, or None when it can."""
    return next(iter(errors(_value_problems(param, value, has_image))), None)


@dataclass(frozen=True)
class Composed:
    """One model's request: its input, and what happened to the user's choices on the way."""

    model: str
    input: dict
    notes: tuple[str, ...] = ()


def compose(model_id: str, chosen: Mapping[str, Any], images: list[str] | tuple[str, ...] = (),
            image_field: str | None = None) -> Composed:
    """The input for a model from what the user chose for another one (comparing models).

    Each chosen value the model takes is sent; everything else is the model's own starting value
    (flux-dev gets its 28 steps, not schnell's 4). A chosen value it cannot take gets its starting
    value instead, a parameter it lacks is left out, images go into its own image field (cut to
    its count): each of these is a note. ``image_field`` names where the images came from.
    """
    model = get_model(model_id)
    notes: list[str] = []
    sent = _fit_images(model, list(images), image_field, notes)
    body: dict[str, Any] = {}
    for p in model.params:
        if p.type in ("image", "images"):
            if p.name == model.image_field and sent:
                body[p.name] = sent if p.type == "images" else sent[0]
            continue
        value = chosen.get(p.name)
        if value is not None and not p.required and (problem := refusal(p, value, bool(sent))):
            refused, value = value, starting_value(model, p, bool(sent))
            instead = f"{_short(value)} is sent instead" if value is not None else "it is not sent"
            if p.choices is not None and _is_type(p.type, refused):  # the long list of choices says little
                notes.append(f"{p.label} {_short(refused)} is not offered by {model.title}: {instead}.")
            else:
                notes.append(f"{problem.message} For {model.title}, {instead}.")
        elif value is None:
            value = starting_value(model, p, bool(sent))
        if value is not None:
            body[p.name] = value
    for p in model.params:  # what the form would not send either
        if p.name not in body:
            continue
        unmet = p.only_when and any(body.get(k, _default(model, k)) != v for k, v in p.only_when.items())
        if unmet or (p.deprecated and body[p.name] == p.default):
            del body[p.name]
    for name in chosen:
        if model.param(name) is None and name != image_field and chosen[name] is not None:
            notes.append(f"{_label_of(name)} is not a parameter of {model.title}: not sent.")
    return Composed(model_id, body, tuple(notes))


def chosen_in(model_id: str, input: Mapping[str, Any]) -> dict[str, Any]:
    """The values of a whole input (a raw JSON body) that were set on purpose, as far as can be
    told: the prompt, the seed, images, unknown keys, and every value other than the one the
    form starts from (a body begun from the form holds all of the model's defaults)."""
    model = get_model(model_id)
    has_image = _has_image(model, input)
    return {
        k: v
        for k, v in input.items()
        if (p := model.param(k)) is None
        or p.required
        or k in ("seed", model.image_field)
        or v != starting_value(model, p, has_image)
    }


def _fit_images(model: Model, images: list[str], source: str | None, notes: list[str]) -> list[str]:
    if not images:
        return []
    if model.image_field is None:
        notes.append(f"{model.title} takes no input image: {'they are' if len(images) > 1 else 'it is'} not sent.")
        return []
    field_ = model.param(model.image_field)
    if len(images) > model.max_images:
        if model.max_images == 1:
            notes.append(f"{model.title} takes one input image: only the first of the {len(images)} is sent.")
        else:
            notes.append(f"{model.title} takes up to {model.max_images} input images: only the first "
                         f"{model.max_images} of the {len(images)} are sent.")
        images = images[: model.max_images]
    if source and source != model.image_field and field_ is not None:
        notes.append(f"Images are sent as {model.image_field}: {field_.help}")
    return images


def _label_of(name: str) -> str:
    """A parameter's label from whichever model has it; unknown ones by their name."""
    found = next((p for m in MODELS.values() if (p := m.param(name)) is not None), None)
    if found is None:
        return repr(name)
    return found.label if found.label.lower().replace(" ", "_") == name else f"{found.label} ({name})"


def adapt_input(model_id: str, input: dict) -> dict:
    """The part of ``input`` that is valid for the model, e.g. after switching the form's model.

    Keeps each known parameter whose value passes the model's checks for that one value (given
    the image input, for Kontext's safety cap), so an aspect ratio the new model lacks is dropped.
    Required values (the prompt) always carry over: they are what the user typed, and ``validate``
    reports them. So do checks between fields (custom size without width).
    """
    model = get_model(model_id)
    has_image = _has_image(model, input)
    return {
        k: v
        for k, v in input.items()
        if v is not None
        and (p := model.param(k)) is not None
        and (p.required or not errors(_value_problems(p, v, has_image)))
    }


# --- checks ----------------------------------------------------------------------------------


def _has_image(model: Model, given: Mapping[str, Any]) -> bool:
    return model.image_field is not None and bool(given.get(model.image_field))


def _value_problems(p: Param, value: Any, has_image: bool) -> list[Problem]:
    """Problems with one set (non-None) value: judged on its own, except for the image cap."""
    if p.type == "image":
        return _image_problems(p.name, p.label, value)
    if p.type == "images":
        return _images_problems(p, value)

    def error(message: str) -> list[Problem]:
        return [Problem(p.name, message, ERROR)]

    got = _short(value)
    if not _is_type(p.type, value):
        return error(f"{p.label} must be {_TYPE_WORDS[p.type]} (got {got}).")
    if p.choices is not None and value not in p.choices:
        return error(f"{p.label} must be one of {', '.join(map(str, p.choices))} (got {got}).")
    if p.name == "prompt":  # the one free-text parameter: blank and oversized are user errors
        if not value.strip():
            return error(f"{p.label} is required.")
        if len(value) > PROMPT_MAX_CHARS:
            return error(f"{p.label} is too long: {len(value):,} characters (at most {PROMPT_MAX_CHARS:,}).")
    low, high = p.minimum, p.maximum
    if (low is not None and value < low) or (high is not None and value > high):
        if low is not None and high is not None:
            return error(f"{p.label} must be between {low} and {high} (got {got}).")
        bound = f"at least {low}" if low is not None else f"at most {high}"
        return error(f"{p.label} must be {bound} (got {got}).")
    if has_image and p.maximum_with_image is not None and value > p.maximum_with_image:
        return error(
            f"{p.label} must be at most {p.maximum_with_image} when an input image is given (got {got})."
        )
    if p.multiple_of and value % p.multiple_of:
        message = f"{p.label} {got} will be rounded to a multiple of {p.multiple_of}."
        return [Problem(p.name, message, WARNING)]
    return []


def _is_type(type_: str, value: Any) -> bool:
    if type_ == "string":
        return isinstance(value, str)
    if type_ == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):  # bool is an int subclass, but True is not a step count
        return False
    if type_ == "integer":
        return isinstance(value, int)
    return isinstance(value, (int, float)) and math.isfinite(value)


def _images_problems(p: Param, value: Any) -> list[Problem]:
    if not isinstance(value, (list, tuple)):
        return [Problem(p.name, f"{p.label} must be a list of images (got {_short(value)}).", ERROR)]
    problems = []
    if p.max_items is not None and len(value) > p.max_items:
        problems.append(Problem(p.name, f"Up to {p.max_items} {p.label.lower()} (got {len(value)}).", ERROR))
    for i, item in enumerate(value, 1):
        problems += _image_problems(p.name, f"{p.label} #{i}", item)
    return problems


def _image_problems(name: str, label: str, value: Any) -> list[Problem]:
    if isinstance(value, str):
        data = _DATA_URI.fullmatch(value)
        if data:
            payload = data["payload"]
            # base64 carries 3 bytes in 4 characters; each "=" at the end pads one byte that is
            # not there (else a file of exactly the limit counted 2 bytes over it)
            size = len(payload) * 3 // 4 - (len(payload) - len(payload.rstrip("=")))
            if size <= DATA_URI_MAX_BYTES:
                return []
            message = f"{label} is a {_size(size)} upload; {DATA_URI_ADVICE}: prefer an https:// URL."
            return [Problem(name, message, WARNING)]
        try:
            url = urlsplit(value)
        except ValueError:  # e.g. a malformed IPv6 host: just not a URL
            url = None
        if url and url.scheme in ("https", "http") and url.netloc:
            return []
    return [Problem(name, f"{label} must be {_IMAGE_RULE} (got {_short(value)}).", ERROR)]


def _condition_problems(model: Model, given: Mapping[str, Any]) -> list[Problem]:
    """Parameters that apply only when others have given values (width/height with custom).

    Parameters sharing a condition are reported together: "Width and height are required when
    aspect ratio is custom."
    """
    groups: dict[tuple, list[Param]] = {}
    for p in model.params:
        if p.only_when:
            groups.setdefault(tuple(p.only_when.items()), []).append(p)
    problems = []
    for condition, params in groups.items():
        met = all(given.get(k, _default(model, k)) == v for k, v in condition)
        # Met: the ones missing; not met: the ones set, which upstream ignores.
        named = [p for p in params if (p.name in given) != met]
        if not named:
            continue
        labels = _join([named[0].label] + [p.label.lower() for p in named[1:]])
        verb = "is" if len(named) == 1 else "are"
        when = " and ".join(f"{model.param(k).label.lower()} is {v}" for k, v in condition)
        if met:
            problems.append(Problem(named[0].name, f"{labels} {verb} required when {when}.", ERROR))
        else:
            problems.append(Problem(named[0].name, f"{labels} {verb} ignored unless {when}.", WARNING))
    return problems


def _match_input_problems(model: Model, given: Mapping[str, Any], has_image: bool) -> list[Problem]:
    """``match_input_image`` (set or by default) has nothing to match without an input image."""
    if has_image:
        return []
    return [
        Problem(
            p.name,
            f"{p.label} is {MATCH_INPUT_IMAGE} but there is no input image: "
            f"pick an explicit {p.label.lower()} for text-to-image.",
            WARNING,
        )
        for p in model.params
        if p.choices and MATCH_INPUT_IMAGE in p.choices and given.get(p.name, p.default) == MATCH_INPUT_IMAGE
    ]


def _default(model: Model, name: str) -> Any:
    p = model.param(name)
    return p.default if p else None


def _size(size: int) -> str:
    """Bytes as images.human_size writes them, so a size reads the same everywhere (images sits
    above the catalog in the layering: it cannot be imported here)."""
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size / 1024 / 1024:.1f} MB"


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _short(value: Any, limit: int = 60) -> str:
    """``repr`` cut short: a rejected value may be a 300 KB data URI."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
