"""The prediction card: one component for the Create page's live result and History's detail.

It reads the store only (the tracker is the one that polls CometAPI), so any number of open
cards cost no upstream requests. While the prediction runs, the card is a fragment that redraws
itself every second; when it reaches a final state it reruns the page once so the timer stops.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timezone

import streamlit as st

from comet import catalog, errors, export, images
from comet.prediction import is_valid_id, seed_of
from comet.store import HistoryUnavailable, Record
from comet.ui.context import Connection
from comet.ui.safe import badge_label, plain

HISTORY_PAGE = "pages/history.py"
TICK_SECONDS = 1.0

# status -> (badge colour, icon)
STATUS_STYLE = {
    "starting": ("gray", ":material/hourglass_top:"),
    "processing": ("blue", ":material/autorenew:"),
    "succeeded": ("green", ":material/check_circle:"),
    "failed": ("red", ":material/error:"),
    "canceled": ("gray", ":material/cancel:"),
    "aborted": ("orange", ":material/block:"),
}


UNKNOWN_STATUS_CHARS = 24  # an unknown status is the API's text: shown, but short
MODEL_TITLE_CHARS = 64  # an unknown model is shown by its id, this long at most


def status_badge(status: str) -> None:
    color, icon = STATUS_STYLE.get(status, ("violet", ":material/help:"))
    # A badge's label is markdown: an unknown status is upstream text, so it is made inert.
    label = status if status in STATUS_STYLE else badge_label(status, limit=UNKNOWN_STATUS_CHARS)
    st.badge(label, icon=icon, color=color)


def model_title(model_id: str) -> str:
    """The catalog's title, else the id itself, trimmed. Plain text: escape it (plain) where
    markdown shows it; widget options and table cells show it as it is."""
    model = catalog.MODELS.get(model_id)
    if model:
        return model.title
    model_id = str(model_id)
    return model_id if len(model_id) <= MODEL_TITLE_CHARS else model_id[:MODEL_TITLE_CHARS] + "…"


def shown_id(prediction_id: str) -> str:
    """An id for markdown: a code span when it is a valid id (letters, digits, - and _ cannot end
    or escape one), else escaped text (a stored row may hold anything)."""
    return f"`{prediction_id}`" if is_valid_id(prediction_id) else plain(prediction_id, limit=80)


def seconds(value: object) -> str:
    """A duration for people; "–" for one that is unknown or impossible (NaN, infinite,
    negative: rows stored by older releases may hold them)."""
    try:
        value = float(value)  # None, text: unknown
    except (TypeError, ValueError):
        return "–"
    if not math.isfinite(value) or value < 0:
        return "–"
    if value < 60:
        return f"{value:.1f} s"
    if value >= 86_400:
        return "over a day"
    minutes, rest = divmod(int(value), 60)
    return f"{minutes} min {rest:02d} s"


def elapsed(record: Record) -> str:
    if record.is_terminal:
        shown = seconds(record.run_time)
        return f"ran {shown}" if shown != "–" else "finished"
    since = (datetime.now(timezone.utc) - record.created_at).total_seconds()
    return f"{seconds(max(since, 0.0))} so far"  # a creation time in the future counts as now


def live_card(conn: Connection, prediction_id: str, *, key: str, on_reuse: Callable[[Record], None] | None = None) -> None:
    """Draw the card; it ticks while the prediction is unfinished. Call it unconditionally."""
    record = conn.store.get(prediction_id)
    # Still "live" until the tracker is done with it: a success ticks on while its images are saved.
    running = record is not None and _live(record)
    st.fragment(_card_body, run_every=TICK_SECONDS if running else None)(conn, prediction_id, key, on_reuse, running)


def _live(record: Record) -> bool:
    # Only the tracker changes a row, so the card ticks while the tracker follows it (which also
    # covers a success whose images are being saved). A row it no longer follows never changes:
    # one an older release left with an unknown status and tracking ended must not tick forever.
    return record.tracking == "active"


def _card_body(conn: Connection, prediction_id: str, key: str, on_reuse, was_running: bool) -> None:
    try:
        record = conn.store.get(prediction_id)
    except HistoryUnavailable:  # the next tick tries again
        st.caption(":material/cloud_off: History unavailable, retrying…")
        return
    if record is None:
        st.warning(f"Prediction {shown_id(prediction_id)} is not in this dashboard's history.")
        return
    if was_running and not _live(record):
        st.rerun()  # a full rerun redraws the card without its timer
    with st.container(border=True):
        _header(record)
        if not record.is_terminal:
            _progress(conn, record, key)
        elif record.status == "succeeded":
            _images(conn, record, key)
        elif record.error:
            # The status is the API's text too (any value, from older rows): escaped like the error.
            status = plain(record.status.capitalize(), limit=UNKNOWN_STATUS_CHARS)
            st.error(f"**{status}:** {plain(record.error)}", icon=":material/error:")
        if record.note:
            st.caption(plain(record.note))
        _actions(record, key, on_reuse)


def _header(record: Record) -> None:
    status_badge(record.status)
    st.markdown(f"**{plain(model_title(record.model))}** · {elapsed(record)}")
    st.page_link(HISTORY_PAGE, label=shown_id(record.id), icon=":material/link:", query_params={"id": record.id},
                 help="Open in History: a link to share")


def _progress(conn: Connection, record: Record, key: str) -> None:
    fraction = record.progress
    label = "Waiting for a worker…" if record.status == "starting" else "Generating…"
    st.progress(fraction or 0.0, text=f"{label} {fraction:.0%}" if fraction is not None else label)
    if record.logs_tail:
        with st.expander("Logs"):
            st.code(record.logs_tail[-3000:], language=None)
    refused_key = f"{key}-cancel-refused"
    if st.button("Cancel", key=f"{key}-cancel", icon=":material/stop_circle:"):
        try:
            conn.store.update(conn.client.cancel(record.id))
        except errors.CannotCancel:
            st.session_state[refused_key] = "This server cannot cancel predictions: it will run to the end."
        except errors.CometError as exc:
            st.session_state[refused_key] = f"Could not cancel: {plain(str(exc))}"
    # Kept in the session so the answer outlasts the card's next tick.
    if refused := st.session_state.get(refused_key):
        st.warning(refused, icon=":material/block:")


def _images(conn: Connection, record: Record, key: str) -> None:
    if not record.outputs:
        if record.data_removed:
            st.warning("The outputs expired upstream before they could be saved.")
        elif record.tracking == "active":
            st.info("Saving the images…", icon=":material/download:")
        else:  # tracking ended without stored images: say so (the note, if any, says why)
            st.warning("No image was saved for this prediction.", icon=":material/image_not_supported:")
        return
    columns = st.columns(min(len(record.outputs), 2))
    for n, output in enumerate(record.outputs):
        stored = conn.store.output_bytes(record.id, output.idx)
        if stored is None:
            continue
        content_type, data = stored
        with columns[n % len(columns)]:
            st.image(_display(data), width="stretch")
            st.download_button(
                "Download",
                data,
                file_name=f"{record.id}-{output.idx}{export.extension(content_type)}",
                mime=content_type,
                key=f"{key}-download-{output.idx}",
                icon=":material/download:",
                on_click="ignore",
            )
    seed = seed_of(record.input, record.logs_tail)
    details = [f"run time {seconds(record.run_time)}"]
    if seed is not None:
        details.insert(0, f"seed {seed}")
    st.caption(" · ".join(details))


@st.cache_data(max_entries=32, show_spinner=False)
def _display(data: bytes) -> bytes:
    """Made once per image, not on every run that shows it (see images.for_display)."""
    return images.for_display(data)


def _actions(record: Record, key: str, on_reuse) -> None:
    if on_reuse is None:
        return
    # The callback runs before the next run, when the form's widgets may still be changed.
    if st.button("Use again", key=f"{key}-reuse", icon=":material/replay:", help="Load this input into the form.",
                 on_click=on_reuse, args=(record,)):
        st.rerun()  # redraw the whole page (the form lives outside this fragment)


def gallery(conn: Connection, prediction_ids: list[str], columns: int = 6) -> None:
    """Thumbnails of earlier results, each linking to its History detail."""
    grid = st.columns(columns)
    for n, prediction_id in enumerate(prediction_ids):
        record = conn.store.get(prediction_id)
        if record is None:
            continue
        with grid[n % columns]:
            thumbnail = conn.store.thumbnail(record.id, 0) if record.outputs else None
            if thumbnail:
                st.image(thumbnail[1], width="stretch")
            else:
                status_badge(record.status)
            st.page_link(HISTORY_PAGE, label=plain(record.prompt, limit=40) or shown_id(record.id),
                         query_params={"id": record.id})
