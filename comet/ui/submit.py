"""Sending: one create call per model, recorded in the history the moment its id is known and
handed to the tracker. No Streamlit call sits between a create and its record, so a rerun that
interrupts the page cannot drop a prediction that was accepted."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import streamlit as st

from comet import errors
from comet.ui.context import Connection, current_user

GROUPS_KEY = "create.groups"  # this session's sends, newest first: each a list of prediction ids
FAILURES_KEY = "create.failures"  # the last send's errors, shown beside the form
LAST_SEND_KEY = "create.last_send"
# A click queued while a create was in flight arrives right after it finishes; a person asking
# for another run of the same input takes longer than this to click again.
DOUBLE_CLICK_WINDOW = 1.0


@dataclass(frozen=True)
class Failure:
    model: str
    message: str
    request_id: str | None
    detail: str | None
    uncertain: bool  # it may have been accepted: say so, never resend by ourselves


def send(conn: Connection, outgoing: list[tuple[str, dict[str, Any]]]) -> None:
    """Create each (model, input), record it, and remember it for this session's page."""
    fingerprint = json.dumps(outgoing, sort_keys=True, default=str)
    last = st.session_state.get(LAST_SEND_KEY)
    if last and last[0] == fingerprint and time.monotonic() - last[1] < DOUBLE_CLICK_WINDOW:
        return  # the same click twice: one request only
    creator = current_user()
    ids: list[str] = []
    failures: list[Failure] = []
    for model_id, model_input in outgoing:
        try:
            prediction = conn.client.create(model_id, model_input)
        except errors.CometError as exc:
            failures.append(Failure(model_id, exc.message, exc.request_id, exc.detail,
                                    isinstance(exc, errors.CreateUncertain)))
            continue
        # Recorded before anything else can interrupt: the prediction is never lost.
        conn.track(prediction, creator=creator)
        ids.append(prediction.id)
    st.session_state[LAST_SEND_KEY] = (fingerprint, time.monotonic())
    st.session_state[FAILURES_KEY] = failures
    if ids:
        st.session_state[GROUPS_KEY] = [ids, *st.session_state.get(GROUPS_KEY, [])][:20]


def groups() -> list[list[str]]:
    return st.session_state.get(GROUPS_KEY, [])


def failures() -> list[Failure]:
    return st.session_state.get(FAILURES_KEY, [])
