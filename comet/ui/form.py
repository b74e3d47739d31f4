"""The create form, built from the catalog: one widget per parameter type, never per model.

Widget state lives in st.session_state under `param.<name>`, shared by every model that has the
parameter; `persist_state="session"` keeps it across page switches too. What the user set by hand
is kept apart, under CHOSEN_KEY: only those values carry over to another model or go to the models
compared, and every other field shows the current model's own default (which follows its input
image). So a value is never sent just because another model happened to default to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from comet import catalog
from comet.catalog import Model, Param
from comet.store import Store
from comet.ui import image_input
from comet.ui.image_input import ImageChoice
from comet.ui.request_view import RAW_ON_KEY, RawInput
from comet.ui.safe import plain

MODEL_KEY = "model"
RANDOM_SEED_KEY = "seed.random"
CHOSEN_KEY = "form.chosen"  # {parameter: value} the user set by hand, whatever the model
COMPARE_KEY = "compare.models"
COMPARE_SAVED_KEY = "compare.saved"  # the same choice, kept while the widget is not drawn
COMPARE_MAX = 3  # main model + 3: four requests per click at most
EDIT_MODEL = "black-forest-labs/flux-kontext-pro"  # what "Edit this image" opens, unless the model takes images
IMAGE_TYPES = ("image", "images")
SEED_MAX = 2**32 - 1
# Few choices read best as a segmented control; longer lists as a select box.
SEGMENTED_MAX = 4
# Above this span an integer is typed, not dragged (width/height in pixels).
SLIDER_MAX_SPAN = 100


def key(name: str) -> str:
    return f"param.{name}"


def model_picker() -> Model:
    """The model select box (default flux-schnell) with what the model is good for. A link
    may preselect one with `?model=flux-dev` (or the full `owner/name`)."""
    _apply_model_link()
    if st.session_state.get(MODEL_KEY) not in catalog.MODELS:
        st.session_state[MODEL_KEY] = catalog.DEFAULT_MODEL
    model_id = st.selectbox(
        "Model",
        list(catalog.MODELS),
        format_func=lambda model_id: catalog.MODELS[model_id].title,
        key=MODEL_KEY,
        persist_state="session",
    )
    model = catalog.get_model(model_id)
    images = (
        f"takes up to {model.max_images} input image{'s' if model.max_images > 1 else ''}"
        if model.takes_images
        else "text only"
    )
    st.caption(f"{model.summary} · {images}", help=f"Model id: {model.id}")
    return model


def apply_edit_link(store: Store) -> None:
    """Before the model picker: a new `?edit=` link (Edit this image) puts its image in as the
    input and, unless the chosen model takes images, picks EDIT_MODEL (any model that takes
    images stays selectable). The form is in charge, not the JSON editor."""
    if not image_input.edit_from_link(store):
        return
    chosen = catalog.MODELS.get(st.session_state.get(MODEL_KEY))
    if chosen is None or not chosen.takes_images:
        st.session_state[MODEL_KEY] = EDIT_MODEL
    st.session_state[RAW_ON_KEY] = False


def _apply_model_link() -> None:
    requested = st.query_params.get("model")
    if requested is None:
        return
    wanted = requested if "/" in requested else f"black-forest-labs/{requested}"
    if wanted in catalog.MODELS:
        st.session_state[MODEL_KEY] = wanted
        del st.query_params["model"]  # applied once; the picker is in charge from now on
    else:
        st.warning(
            f"The link asks for a model this dashboard does not know (“{plain(requested, limit=80)}”). "
            f"Pick one of the {len(catalog.MODELS)} FLUX models below.",
            icon=":material/help:",
        )


def compare_picker(model: Model) -> list[str]:
    """"Compare with": up to COMPARE_MAX more models. A widget's state is dropped on a run that
    does not draw it (a visit to History), so the choice is also kept under a plain key and put
    back from there."""
    if COMPARE_KEY not in st.session_state:
        st.session_state[COMPARE_KEY] = st.session_state.get(COMPARE_SAVED_KEY, [])
    # The main model is not an option: one picked as main leaves the comparison.
    current = [m for m in st.session_state[COMPARE_KEY] if m in catalog.MODELS and m != model.id]
    st.session_state[COMPARE_KEY] = current[:COMPARE_MAX]
    others = st.multiselect(
        "Compare with", [m for m in catalog.MODELS if m != model.id], key=COMPARE_KEY,
        max_selections=COMPARE_MAX, format_func=lambda model_id: catalog.MODELS[model_id].title,
        placeholder=f"Optional: up to {COMPARE_MAX} more models, side by side",
        wrap=True,  # in a column the chips would otherwise scroll sideways, clipping the first
        help="Your prompt, images and the settings you changed go to every model that takes them; each "
        "model keeps its own defaults for the rest. Each model's exact request is under Request below.",
    )
    st.session_state[COMPARE_SAVED_KEY] = others
    return others


def form_default(model: Model, param: Param, has_image: bool = False) -> Any:
    """What a field starts from (see catalog.starting_value)."""
    return catalog.starting_value(model, param, has_image)


def _remember(name: str) -> None:
    """on_change of every field: the user set it, so it is theirs. Only these values carry over
    to another model (or to the models compared); the rest follows each model's defaults."""
    st.session_state.setdefault(CHOSEN_KEY, {})[name] = st.session_state.get(key(name))


def _prepare_state(model: Model, has_image: bool) -> None:
    """Before any widget is drawn: each field holds the user's own value where this model takes
    it, else this model's starting value (4 steps suit schnell, not dev; an edit's aspect ratio
    matches its input image). A chosen value the model cannot take is kept for a later model."""
    chosen = st.session_state.setdefault(CHOSEN_KEY, {})
    st.session_state.setdefault(key("prompt"), "")
    for param in model.params:
        if param.type in IMAGE_TYPES or param.name == "prompt":
            continue
        value = chosen.get(param.name)
        # Judged without the image: a cap that only an image brings is shown as an error to fix,
        # not silently undone under the user's hand.
        if param.name == "seed":
            value = value if _is_seed(value) else 0
        elif value is None or catalog.refusal(param, value) is not None:
            value = form_default(model, param, has_image)
        # Written on every run: a slider whose range differs between models is a new widget,
        # which would otherwise start from its minimum instead of this value.
        st.session_state[key(param.name)] = value
    st.session_state.setdefault(RANDOM_SEED_KEY, True)


def _is_seed(value: Any) -> bool:
    """A seed the Seed field can hold (a stored record may hold anything)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= SEED_MAX


def _help(param: Param) -> str:
    return f"{param.help} {param.range_text()}." if param.range_text() else param.help


def _widget(model: Model, param: Param, disabled: bool) -> None:
    common = {"key": key(param.name), "help": _help(param), "persist_state": "session", "disabled": disabled}
    label = param.label + (" (deprecated)" if param.deprecated else "")
    if param.name == "prompt":
        st.text_area(
            "Prompt", height=110, placeholder="Describe the image: subject, style, light, mood…", **common
        )
        return
    common.update(on_change=_remember, args=(param.name,))
    if param.name == "seed":
        random_seed = st.toggle("Random seed", key=RANDOM_SEED_KEY, help="Off: use the seed below to repeat a result.",
                                persist_state="session", disabled=disabled)
        st.number_input("Seed", min_value=0, max_value=SEED_MAX, step=1, **{**common, "disabled": disabled or random_seed})
    elif param.choices:
        if len(param.choices) <= SEGMENTED_MAX:
            st.segmented_control(label, param.choices, required=True, **common)
        else:
            st.selectbox(label, param.choices, **common)
    elif param.type == "boolean":
        st.toggle(label, **common)
    elif param.type == "integer" and param.minimum is not None and param.maximum is not None:
        step = param.multiple_of or 1
        if param.maximum - param.minimum <= SLIDER_MAX_SPAN:
            st.slider(label, int(param.minimum), int(param.maximum), step=step, **common)
        else:
            st.number_input(label, int(param.minimum), int(param.maximum), step=step, **common)
    elif param.type == "number" and param.minimum is not None and param.maximum is not None:
        span = param.maximum - param.minimum
        st.slider(label, float(param.minimum), float(param.maximum), step=0.05 if span <= 2 else 0.1, **common)
    elif param.type == "integer":
        st.number_input(label, step=1, **common)
    elif param.type == "number":
        st.number_input(label, **common)
    else:
        st.text_input(label, **common)


def _shown(param: Param, values: dict[str, Any]) -> bool:
    return not param.only_when or all(values.get(name) == wanted for name, wanted in param.only_when.items())


def parameter_form(model: Model, has_image: bool = False, disabled: bool = False) -> None:
    """Essentials first (prompt, ratio, format, outputs), the rest under "Advanced". A field that
    applies only with another's value (width and height with a custom ratio) appears right under
    that field. `has_image`: an input image is given (defaults follow it); `disabled`: the raw
    JSON is in charge, so the form shows it is not."""
    _prepare_state(model, has_image)
    if disabled:
        st.info("The form is paused: the JSON request below is sent as it is. Turn off **Edit the request "
                "as JSON** to use the form again.", icon=":material/pause_circle:")
    params = [p for p in model.params if p.type not in IMAGE_TYPES]
    essentials = [p for p in params if p.essential and not p.only_when]
    advanced = [p for p in params if not p.essential and not p.only_when]
    for param in essentials:
        _widget_with_dependents(model, param, disabled)
    with st.expander("Advanced", icon=":material/tune:"):
        for param in advanced:
            _widget_with_dependents(model, param, disabled)


def _widget_with_dependents(model: Model, param: Param, disabled: bool) -> None:
    _widget(model, param, disabled)
    values = _values(model)
    dependents = [p for p in model.params if p.only_when and param.name in p.only_when and _shown(p, values)]
    for column, dependent in zip(st.columns(len(dependents)) if dependents else [], dependents):
        with column:
            _widget(model, dependent, disabled)


def _values(model: Model) -> dict[str, Any]:
    return {p.name: st.session_state.get(key(p.name)) for p in model.params}


def built_input(model: Model) -> dict[str, Any]:
    """The `input` object the form describes: set values only, in the catalog's order.

    Deprecated parameters are sent only when changed; the seed only when not random;
    width/height only when their condition (aspect ratio custom) holds."""
    values = _values(model)
    result: dict[str, Any] = {}
    for param in model.params:
        if param.type in IMAGE_TYPES or not _shown(param, values):
            continue
        value = values.get(param.name)
        if param.name == "seed" and st.session_state.get(RANDOM_SEED_KEY, True):
            continue
        if value is None or (param.deprecated and value == param.default):
            continue
        if param.type == "integer" and isinstance(value, float) and value.is_integer():
            value = int(value)
        result[param.name] = value
    return result


def with_images(model: Model, model_input: dict[str, Any], images: list[str]) -> dict[str, Any]:
    """Put the chosen images into the model's own field: a list for `images`, else one URI."""
    if not images or not model.image_field:
        return model_input
    param = model.param(model.image_field)
    value: Any = images if param is not None and param.type == "images" else images[0]
    return {**model_input, model.image_field: value}


def chosen_input(model: Model, form_input: dict[str, Any]) -> dict[str, Any]:
    """What of the form's input the user set, to send to the models compared: the prompt, the
    seed (random off), the images, and the fields changed by hand; not the model's defaults."""
    chosen = st.session_state.get(CHOSEN_KEY, {})
    always = ("prompt", "seed", model.image_field)
    return {k: v for k, v in form_input.items() if k in always or (k in chosen and chosen[k] == v)}


@dataclass
class Plan:
    """What Generate would send, one body per model (the main one first), and why it must not."""

    bodies: list[catalog.Composed] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # block sending
    warnings: list[str] = field(default_factory=list)
    blocked: str | None = None  # why nothing at all can be sent (invalid JSON)

    @property
    def outgoing(self) -> list[tuple[str, dict[str, Any]]]:
        return [(body.model, body.input) for body in self.bodies]


def plan(model: Model, others: list[str], form_input: dict[str, Any], images: ImageChoice,
         raw: RawInput | None) -> Plan:
    """The main model gets the form's input (or the raw JSON, exactly); each model compared gets
    what the user set, composed with its own defaults (catalog.compose)."""
    if raw is not None and raw.model_input is None:
        return Plan(problems=list(raw.problems), blocked=" ".join(raw.problems))
    if raw is not None:
        main, chosen, problems = raw.model_input, catalog.chosen_in(model.id, raw.model_input), []
    else:
        main, chosen, problems = form_input, chosen_input(model, form_input), list(images.problems)
    given = chosen.get(model.image_field) if model.image_field else None
    pictures = given if isinstance(given, list) else [given] if given else []
    bodies = [catalog.Composed(model.id, main)]
    bodies += [catalog.compose(other, chosen, pictures, model.image_field) for other in others]
    result = Plan(bodies, problems)
    for body in bodies:
        prefix = f"{catalog.MODELS[body.model].title}: " if others else ""
        found = catalog.validate(body.model, body.input)
        result.problems += [prefix + p.message for p in catalog.errors(found)]
        # A large upload is flagged once, beside it (image_input): not again for every model.
        beside = catalog.MODELS[body.model].image_field if raw is None else None
        result.warnings += [prefix + p.message for p in catalog.warnings(found) if p.field != beside]
    return result


def load_input(model_id: str, model_input: dict[str, Any]) -> None:
    """Callback for "Use again": put a past prediction's model and input back into the form.
    Image URLs go back into the URL box; inline uploads cannot, and are left out. Values other
    than the form's starting ones become the user's choices again; the JSON editor is closed so
    the form is in charge."""
    if model_id not in catalog.MODELS:
        return
    model = catalog.get_model(model_id)
    st.session_state[MODEL_KEY] = model_id
    st.session_state[RAW_ON_KEY] = False
    has_image = False
    for param in model.params:
        if param.type in IMAGE_TYPES:
            value = model_input.get(param.name)
            urls = [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str) and v.startswith("https://")]
            st.session_state[f"images.urls.{param.name}"] = "\n".join(urls)
            has_image = has_image or bool(urls)
    chosen: dict[str, Any] = {}
    for param in model.params:
        value = model_input.get(param.name)
        if param.type in IMAGE_TYPES or value is None:
            continue
        if param.name == "prompt":
            st.session_state[key("prompt")] = value
        elif param.name == "seed":
            if _is_seed(value):
                chosen["seed"] = value
        elif value != form_default(model, param, has_image):
            chosen[param.name] = value
    st.session_state[RANDOM_SEED_KEY] = "seed" not in chosen
    st.session_state[CHOSEN_KEY] = chosen


def reuse(record) -> None:
    """"Use again" on a card: the record's model and input back into the form."""
    load_input(record.model, record.input)
