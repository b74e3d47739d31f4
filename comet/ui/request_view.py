"""The requests Generate sends, as JSON, curl and Python (one tab per model when comparing); and
a raw-JSON editor that takes over from the form, for parameters the catalog does not know yet."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from comet import snippets
from comet.catalog import Composed
from comet.config import DEFAULT_BASE_URL
from comet.ui.card import model_title
from comet.ui.safe import plain

RAW_ON_KEY = "raw.on"
RAW_TEXT_KEY = "raw.text"


@dataclass
class RawInput:
    model_input: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)


def parse_body(text: str) -> RawInput:
    """`{"input": {...}}` from the editor, or the exact reason (with line and column) it is not."""
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        return RawInput(problems=[f"JSON syntax error at line {exc.lineno}, column {exc.colno}: {exc.msg}."])
    if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
        return RawInput(problems=['The body must be an object with an "input" object: {"input": {"prompt": "…"}}.'])
    extra = sorted(set(body) - {"input"})
    problems = [f"Only \"input\" is sent; remove {', '.join(map(repr, extra))}."] if extra else []
    return RawInput(model_input=body["input"] if not problems else None, problems=problems)


def _start_editing(model_input: dict[str, Any]) -> None:
    if st.session_state.get(RAW_ON_KEY):
        st.session_state[RAW_TEXT_KEY] = json.dumps(snippets.request_body(model_input), indent=2, ensure_ascii=False)


def raw_mode() -> bool:
    """Whether the JSON editor is in charge: known before the form is drawn, so it can pause."""
    return bool(st.session_state.get(RAW_ON_KEY))


def raw_editor(form_input: dict[str, Any]) -> RawInput | None:
    """The "Edit as JSON" switch; None while the form is in charge."""
    on = st.toggle(
        "Edit the request as JSON", key=RAW_ON_KEY, on_change=_start_editing, args=(form_input,),
        help="Send exactly this body; the form is paused meanwhile (turning this off goes back to the form, "
        "without these edits). Unknown parameters are allowed (with a warning), for options the form does not have yet.",
    )
    if not on:
        return None
    if RAW_TEXT_KEY not in st.session_state:
        _start_editing(form_input)
    text = st.text_area("Request body (JSON)", key=RAW_TEXT_KEY, height=260)
    return parse_body(text or "")


def request_preview(bodies: list[Composed], live_base_url: str | None, blocked: str | None = None) -> None:
    """Exactly what Generate sends, one tab per model when comparing, each with what happened to
    the user's settings on the way, and copyable curl / Python (the key only as $COMETAPI_KEY).
    When nothing can be sent, the reason instead of a body."""
    base = live_base_url or DEFAULT_BASE_URL
    with st.expander("Request: JSON · curl · Python", icon=":material/code:"):
        if blocked is not None or not bodies:
            st.error(f"**Nothing will be sent:** {plain(blocked or 'there is no request yet.')}", icon=":material/block:")
            return
        if len(bodies) == 1:
            _one_request(bodies[0], base)
            return
        for tab, body in zip(st.tabs([model_title(body.model) for body in bodies]), bodies, strict=True):
            with tab:
                _one_request(body, base)


def _one_request(body: Composed, base: str) -> None:
    if body.notes:
        st.caption("\n".join(f"- {plain(note)}" for note in body.notes))
    as_json, as_curl, as_python = st.tabs(["JSON", "curl", "Python"])
    with as_json:
        st.code(json.dumps(snippets.request_body(snippets.shorten_data_uris(body.input)), indent=2,
                           ensure_ascii=False), language="json")
    with as_curl:
        st.code(snippets.curl(base, body.model, body.input), language="bash")
    with as_python:
        st.code(snippets.python(base, body.model, body.input), language="python")
