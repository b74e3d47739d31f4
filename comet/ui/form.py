"""The create form, built from the catalog: one widget per parameter type, never per model.

Widget state lives in st.session_state under `param.<name>`, shared by every model that has the
parameter, so switching models keeps what still applies (the prompt above all) and resets only
values the new model cannot take. `persist_state="session"` keeps it across page switches too.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from comet import catalog
from comet.catalog import Model, Param
from comet.ui.safe import plain

MODEL_KEY = "model"
PREVIOUS_MODEL_KEY = "form.previous_model"
RANDOM_SEED_KEY = "seed.random"
IMAGE_TYPES = ("image", "images")
MATCH_INPUT = "match_input_image"
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


def form_default(model: Model, param: Param) -> Any:
    """The catalog default, except `match_input_image` (nothing to match until an image is
    given): the form starts text-to-image on the first real ratio instead."""
    if param.default is None and param.only_when and param.minimum is not None and param.maximum is not None:
        return min(max(1024, int(param.minimum)), int(param.maximum))  # width/height for `custom`
    if param.default == MATCH_INPUT and param.choices:
        return next((choice for choice in param.choices if choice != MATCH_INPUT), param.default)
    return param.default


def _fits(model: Model, param: Param, value: Any) -> bool:
    if value is None:
        return form_default(model, param) is None
    problems = catalog.validate(model.id, {"prompt": "x", param.name: value})
    return not any(p.field == param.name and p.severity == catalog.ERROR for p in problems)


def _prepare_state(model: Model) -> None:
    """Before any widget is drawn: give each parameter a value this model accepts. After a model
    switch, values the user set are kept where valid; values still at the previous model's
    default take the new model's (4 steps suit schnell, not dev)."""
    previous = catalog.MODELS.get(st.session_state.get(PREVIOUS_MODEL_KEY, model.id), model)
    st.session_state[PREVIOUS_MODEL_KEY] = model.id
    for param in model.params:
        if param.type in IMAGE_TYPES:
            continue
        state_key = key(param.name)
        if param.name == "prompt":
            st.session_state.setdefault(state_key, "")
        else:
            value = st.session_state.get(state_key)
            before = previous.param(param.name)
            untouched = previous is not model and before is not None and value == form_default(previous, before)
            if state_key not in st.session_state or untouched or not _fits(model, param, value):
                value = form_default(model, param) if param.name != "seed" else 0
            # Written back even when unchanged: a slider whose range differs between models is a
            # new widget, which would otherwise start from its minimum instead of this value.
            st.session_state[state_key] = value
    st.session_state.setdefault(RANDOM_SEED_KEY, True)


def _help(param: Param) -> str:
    return f"{param.help} {param.range_text()}." if param.range_text() else param.help


def _widget(model: Model, param: Param) -> None:
    common = {"key": key(param.name), "help": _help(param), "persist_state": "session"}
    label = param.label + (" (deprecated)" if param.deprecated else "")
    if param.name == "prompt":
        st.text_area(
            "Prompt", height=110, placeholder="Describe the image: subject, style, light, mood…", **common
        )
    elif param.name == "seed":
        random_seed = st.toggle("Random seed", key=RANDOM_SEED_KEY, help="Off: use the seed below to repeat a result.",
                                persist_state="session")
        st.number_input("Seed", min_value=0, max_value=2**32 - 1, step=1, disabled=random_seed, **common)
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


def parameter_form(model: Model) -> None:
    """Essentials first (prompt, ratio, format, outputs), the rest under "Advanced"."""
    _prepare_state(model)
    params = [p for p in model.params if p.type not in IMAGE_TYPES]
    essentials = [p for p in params if p.essential]
    advanced = [p for p in params if not p.essential]
    for param in essentials:
        if _shown(param, _values(model)):
            _widget(model, param)
    with st.expander("Advanced", icon=":material/tune:"):
        for param in advanced:
            if _shown(param, _values(model)):
                _widget(model, param)


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


def load_input(model_id: str, model_input: dict[str, Any]) -> None:
    """Callback for "Use again": put a past prediction's model and input back into the form.
    Image URLs go back into the URL box; inline uploads cannot, and are left out."""
    if model_id not in catalog.MODELS:
        return
    model = catalog.get_model(model_id)
    st.session_state[MODEL_KEY] = model_id
    for param in model.params:
        value = model_input.get(param.name)
        if param.type in IMAGE_TYPES:
            urls = [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str) and v.startswith("https://")]
            st.session_state[f"images.urls.{param.name}"] = "\n".join(urls)
        elif param.name == "seed":
            st.session_state[RANDOM_SEED_KEY] = value is None
            if value is not None:
                st.session_state[key("seed")] = value
        elif value is not None:
            st.session_state[key(param.name)] = value


def reuse(record) -> None:
    """"Use again" on a card: the record's model and input back into the form."""
    load_input(record.model, record.input)
