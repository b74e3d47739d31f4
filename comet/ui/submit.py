"""Sending: one create call per model, recorded in the history the moment its id is known and
handed to the tracker.

The creates run on a thread of their own, not in the page's script run. A click while a run is
busy starts a new run at once (runner.fastReruns, the default) and the old one finishes in the
background: with the create inside the run, a click during a 6 s create sent (and billed) it
again. Now the session holds the send in flight: the run waits briefly, then a disabled
"Sending…" stands in place of Generate until the answer comes, and no run of the session can
start another send meanwhile. The thread makes no Streamlit call and records each accepted
prediction itself: closing the tab or a rerun cannot drop one."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from comet import errors, redact
from comet.ledger import Refusal
from comet.store import HistoryError
from comet.ui.card import model_title
from comet.ui.context import Connection, current_user
from comet.ui.safe import plain

log = redact.logger("comet.submit")

GROUPS_KEY = "create.groups"  # this session's sends, newest first: each a list of prediction ids
FAILURES_KEY = "create.failures"  # the last send's errors, shown beside the form
LAST_SEND_KEY = "create.last_send"
SENDING_KEY = "create.sending"  # the send in flight, if any
# A second click made while a quick send was settling arrives right after its card; a person
# asking for another run of the same input takes longer than this to click again.
DOUBLE_CLICK_WINDOW = 1.0
# The click's run waits this long for the answer, so a quick create shows its card at once.
SETTLE_SECONDS = 1.0
WATCH_SECONDS = 0.5  # how often a "Sending…" page looks whether the answer came
# Two runs of one session can overlap (see above): claiming and settling a send happen under it.
_LOCK = threading.RLock()


@dataclass(frozen=True)
class Failure:
    model: str
    message: str
    request_id: str | None
    detail: str | None
    uncertain: bool  # it may have been accepted: say so, never resend by ourselves


@dataclass
class _Sending:
    """One send in flight. Its thread fills `ids` and `failures`, then sets `done`; runs read
    them only once `done` is set (the Event orders the writes before the reads)."""

    fingerprint: str
    started: float = field(default_factory=time.monotonic)
    ids: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)


def generate_button(label: str) -> bool:
    """The Generate button, True when clicked. While this session's create is in flight it is
    not drawn at all (a click queued behind the run finds no button to press): a disabled
    "Sending…" stands in its place and redraws the page when the answer comes."""
    sending = _settle()
    # Called unconditionally: it ticks only while sending, and a full rerun stops its timer.
    st.fragment(_sending_state, run_every=WATCH_SECONDS if sending else None)(sending)
    if sending:
        return False
    return st.button(label, type="primary", icon=":material/auto_awesome:", width="stretch")


def send(conn: Connection, outgoing: list[tuple[str, dict[str, Any]]],
         parents: list[tuple[str, int] | None] | None = None) -> None:
    """Create each (model, input) on a background thread, record it, and remember it for this
    session's page. Refused while another send is in flight, and for the same input again
    within DOUBLE_CLICK_WINDOW of the last one. Reruns the page if the answer is slow.
    `parents`: per request, the stored image (prediction id, output idx) it edits, if any."""
    parents = list(parents or [])
    parents += [None] * (len(outgoing) - len(parents))
    fingerprint = json.dumps(outgoing, sort_keys=True, default=str)
    creator = current_user()  # before the claim: nothing between it and the thread may raise
    with _LOCK:
        if _settle():
            return  # one create in flight per session
        last = st.session_state.get(LAST_SEND_KEY)
        if last and last[0] == fingerprint and time.monotonic() - last[1] < DOUBLE_CLICK_WINDOW:
            return  # the same click twice: one request only
        sending = _Sending(fingerprint)
        st.session_state[SENDING_KEY] = sending
    threading.Thread(target=_create_all, args=(conn, outgoing, creator, sending, parents),
                     name="comet-create", daemon=True).start()
    if not sending.done.wait(SETTLE_SECONDS):
        st.rerun()  # draw the page again in its "Sending…" state
    _settle()


def _create_all(conn: Connection, outgoing: list[tuple[str, dict[str, Any]]], creator: str | None,
                sending: _Sending, parents: list[tuple[str, int] | None]) -> None:
    """The thread: no Streamlit call here. Each create's estimated cost is reserved first (and
    refused, with nothing sent, if it would pass a spending limit); the reservation then follows
    the prediction, is released when the create certainly failed, and stays counted when its
    answer was lost (it may have been billed)."""
    try:
        for (model_id, model_input), parent in zip(outgoing, parents, strict=True):
            prediction = None
            try:
                reservation = _reserve(conn, creator, model_id, model_input)
                if isinstance(reservation, Refusal):
                    sending.failures.append(Failure(model_id, reservation.message, None, None, False))
                    continue
                try:
                    prediction = conn.client.create(model_id, model_input)
                except errors.CreateUncertain:
                    _settle_reservation(conn.ledger.unconfirmed, reservation)
                    raise
                except errors.CometError:
                    _settle_reservation(conn.ledger.release, reservation)
                    raise
                # Recorded here, not by the page: the prediction is never lost.
                conn.track(prediction, creator=creator, parent=parent)
                _settle_reservation(conn.ledger.attach, reservation, prediction.id)
            except errors.CometError as exc:
                sending.failures.append(Failure(model_id, exc.message, exc.request_id, exc.detail,
                                                isinstance(exc, errors.CreateUncertain)))
            except Exception:  # a bug must still end as a message, not a page stuck sending
                log.exception("create of %s failed", model_id)
                known = f" It was accepted as {prediction.id}." if prediction else ""
                sending.failures.append(Failure(model_id, "Something went wrong while sending." + known,
                                                None, None, uncertain=prediction is None))
            else:
                sending.ids.append(prediction.id)
    finally:
        sending.done.set()


def _reserve(conn: Connection, creator: str | None, model_id: str, model_input: dict[str, Any]) -> str | Refusal | None:
    """The create's reservation; None when spend cannot be recorded right now and no limit needs
    it (the create goes; its cost is filled in at the next start). With a limit set and the
    history unreachable, nothing is sent: the limit could not be checked."""
    found = conn.estimate(model_id, model_input)
    try:
        return conn.ledger.reserve(creator, model_id, found.usd if found else 0.0, conn.limits)
    except HistoryError as exc:
        if conn.limits.any:
            raise errors.CometError("The spending limit cannot be checked right now (the history is "
                                    "unavailable), so nothing was sent. Try again in a moment.") from exc
        log.warning("spend not recorded for a create of %s: %s", model_id, exc)
        return None


def _settle_reservation(action, reservation: str | None, *args: str) -> None:
    if reservation is None:
        return
    try:
        action(reservation, *args)
    except HistoryError:  # the prediction itself is safe with the tracker; only its cost row waits
        log.warning("could not update spend reservation %s", reservation)


def _settle() -> _Sending | None:
    """Move a finished send's results onto the page, once; the send still in flight, if any."""
    with _LOCK:
        sending = st.session_state.get(SENDING_KEY)
        if sending is None or not sending.done.is_set():
            return sending
        del st.session_state[SENDING_KEY]
        # From now: a click made while the page waited arrives within the window.
        st.session_state[LAST_SEND_KEY] = (sending.fingerprint, time.monotonic())
        st.session_state[FAILURES_KEY] = sending.failures
        if sending.ids:
            st.session_state[GROUPS_KEY] = [sending.ids, *st.session_state.get(GROUPS_KEY, [])][:20]
        return None


def _sending_state(sending: _Sending | None) -> None:
    """The watched send is the one this page drew as in flight (another run may settle it)."""
    if sending is None:
        return
    if sending.done.is_set():
        st.rerun(scope="app")  # the whole page: the card, the failures, Generate back
    st.button("Sending…", type="primary", icon=":material/progress_activity:", width="stretch", disabled=True)
    waited = time.monotonic() - sending.started
    st.caption(f"Waiting for the API to accept the request ({waited:.0f} s). "
               "Generate is back once it answers; nothing is sent twice.")


def show_failures() -> None:
    """The last send's errors beside the form; one that may have been accepted says so."""
    for failure in failures():
        with st.container(border=True):
            text = f"**{plain(model_title(failure.model))}**: {plain(failure.message)}"
            if failure.uncertain:
                st.warning(f"**It may have been accepted (and billed); it was not sent again.** {text}",
                           icon=":material/help:")
            else:
                st.error(text, icon=":material/error:")
            if failure.request_id:
                st.caption(f"Request id: {plain(failure.request_id)}")


def groups() -> list[list[str]]:
    return st.session_state.get(GROUPS_KEY, [])


def failures() -> list[Failure]:
    return st.session_state.get(FAILURES_KEY, [])
