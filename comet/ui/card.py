"""The prediction card: one component for the Create page's live result and History's detail.

It reads the store only (the tracker is the one that polls CometAPI), so any number of open
cards cost no upstream requests. While the prediction runs, the card is a fragment that redraws
itself every second; when it reaches a final state it reruns the page once so the timer stops.
"""

from __future__ import annotations

import functools
import io
import math
import re
import time
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import streamlit as st
from PIL import Image, ImageOps

from comet import catalog, errors, export, images
from comet.media import MediaUnavailable
from comet.prediction import is_valid_id, seed_of
from comet.prices import usd
from comet.store import HistoryUnavailable, Record
from comet.ui.context import Connection
from comet.ui.image_input import EDIT_PARAM, OUTPUT_PARAM
from comet.ui.safe import badge_label, plain
from comet.ui.status import STATUS_STYLE, style

HISTORY_PAGE = "pages/history.py"
CREATE_PAGE = "pages/create.py"
TICK_SECONDS = 1.0
# Near a run's predicted end a tick waits up to this long for the tracker's next poll (less than
# a tick, so ticks never pile up); LATE_WAIT: how long after the predicted end it still does.
NEWS_WAIT = 0.8
LATE_WAIT = 1.5

UNKNOWN_STATUS_CHARS = 24  # an unknown status is the API's text: shown, but short
MODEL_TITLE_CHARS = 64  # an unknown model is shown by its id, this long at most
ID_LABEL_CHARS = 8  # the share link shows the id's start: a whole id wraps in a narrow card
GALLERY_CAPTION_CHARS = 40  # the gallery's captions: two or three short lines at most
GALLERY_STATUS_CHARS = 12  # the link of a run without image names its status, this long at most
TILE_SIDE = 256  # gallery tiles: one square size, so the grid's rows line up
TILE_BACKGROUND = (240, 242, 246)  # Streamlit's secondary background: the tile of a run without image


def status_badge(status: str) -> None:
    color, icon = style(status)
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


def id_label(prediction_id: str) -> str:
    """The share link's label: the id's first characters and "…", a code span that never wraps
    (the whole id is in the link itself and its tooltip)."""
    if not is_valid_id(prediction_id):
        return plain(prediction_id, limit=ID_LABEL_CHARS)
    if len(prediction_id) <= ID_LABEL_CHARS + 1:
        return f"`{prediction_id}`"
    return f"`{prediction_id[:ID_LABEL_CHARS]}…`"


def failure_line(status: str, error: str) -> str:
    """"**Failed:** <error>" (markdown, error escaped), saying the status once: upstream errors
    often start with it already ("Prediction failed: CUDA out of memory")."""
    title = status.capitalize()
    said_already = re.match(rf"\s*(?:prediction\s+)?{re.escape(status)}(?:\s*:\s*|\s*\.?\s*$)", error, re.IGNORECASE)
    detail = error[said_already.end():] if said_already else error
    # The status is the API's text too (any value, from older rows): escaped like the error.
    shown = plain(title, limit=UNKNOWN_STATUS_CHARS)
    return f"**{shown}:** {plain(detail)}" if detail.strip() else f"**{shown}**"


def trimmed(text: str, limit: int) -> str:
    """One line of at most `limit` characters, cut between words where it can be, ending in "…"
    when cut; a cut never splits a character from its accent or an emoji sequence."""
    line = " ".join(str(text).split())
    if len(line) <= limit:
        return line
    cut = limit
    if " " in line[limit // 2: limit + 1]:  # a space at `limit` itself: the word before it fits
        cut = line.rindex(" ", 0, limit + 1)
    else:
        while cut > 0 and (_joins_previous(line[cut]) or line[cut - 1] == _ZWJ):
            cut -= 1
    return line[:cut].rstrip(" ,;:.-–—") + "…"


_ZWJ = "\u200d"


def _joins_previous(char: str) -> bool:
    """An accent, emoji joiner, variation selector or skin tone: part of the character before."""
    skin_tone = "\U0001f3fb" <= char <= "\U0001f3ff"
    return bool(unicodedata.combining(char)) or char in (_ZWJ, "\ufe0e", "\ufe0f") or skin_tone


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
    if _stopped(record) and not record.is_terminal:  # nothing follows it: no clock runs on
        return f"status unknown since {when(record.last_polled_at or record.recorded_at)}"
    if record.is_terminal:
        shown = seconds(record.run_time)
        return f"ran {shown}" if shown != "–" else "finished"
    since = (datetime.now(UTC) - record.created_at).total_seconds()
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
        record = _latest(conn, prediction_id, was_running)
    except HistoryUnavailable:  # the next tick tries again
        st.caption(":material/cloud_off: History unavailable, retrying…")
        return
    if record is None:
        st.warning(f"Prediction {shown_id(prediction_id)} is not in this dashboard's history.")
        return
    _draw(conn, record, key, on_reuse)
    if was_running and not _live(record):
        st.rerun()  # the result is drawn already; a full rerun redraws the card without its timer


def _latest(conn: Connection, prediction_id: str, was_running: bool) -> Record | None:
    """The stored record; near the end the logs predict, first wait (within this tick) for the
    tracker's polls, so the result shows the moment it is stored rather than up to a tick later.
    Waiting is idle (no extra ticks, reruns or requests), and only this process's tracker knows
    when it polls: elsewhere the card simply ticks."""
    tracker = conn.tracker
    token = tracker.news_token(prediction_id)  # before reading: a write in between is not missed
    record = conn.store.get(prediction_id)
    give_up_at = time.monotonic() + NEWS_WAIT
    while (was_running and record is not None and _live(record)
           and tracker.ends_within(prediction_id, TICK_SECONDS + LATE_WAIT)
           and (left := give_up_at - time.monotonic()) > 0):
        if not tracker.wait_for_news(prediction_id, token, left):
            break
        token = tracker.news_token(prediction_id)
        record = conn.store.get(prediction_id)
    return record


def _draw(conn: Connection, record: Record, key: str, on_reuse) -> None:
    with st.container(border=True):
        _header(record)
        stopped_unfinished = _stopped(record) and not record.is_terminal
        if stopped_unfinished:  # no progress bar and no Cancel: nothing is following it
            st.warning(f"**Stopped checking:** {plain(record.note or 'no reason was recorded.')}",
                       icon=":material/pause_circle:")
        elif not record.is_terminal:
            _progress(conn, record, key)
        elif record.status == "succeeded":
            _images(conn, record, key)
        elif record.error:
            st.error(failure_line(record.status, record.error), icon=":material/error:")
        if record.note and not stopped_unfinished:
            st.caption(plain(record.note))
        if _stopped(record):
            _resume(conn, record, key)
        _actions(record, key, on_reuse)


def _header(record: Record) -> None:
    if _stopped(record) and not record.is_terminal:  # its last known status may be long out of date
        st.badge("Not followed", icon=":material/pause_circle:", color="gray")
    else:
        status_badge(record.status)
    st.markdown(f"**{plain(model_title(record.model))}** · {elapsed(record)}")
    st.page_link(HISTORY_PAGE, label=id_label(record.id), icon=":material/link:", query_params={"id": record.id},
                 help=f"Open in History: a link to share. Prediction {shown_id(record.id)}")


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
            conn.cancel(record.id)
        except errors.CannotCancel:
            st.session_state[refused_key] = "This server cannot cancel predictions: it will run to the end."
        except errors.CometError as exc:
            st.session_state[refused_key] = f"Could not cancel: {plain(str(exc))}"
    # Kept in the session so the answer outlasts the card's next tick.
    if refused := st.session_state.get(refused_key):
        st.warning(refused, icon=":material/block:")


def _stopped(record: Record) -> bool:
    """The tracker stopped following it (gave_up): its stored status is the last one known."""
    return record.tracking == "gave_up"


def when(moment: datetime) -> str:
    """A moment in the viewer's time zone (as the browser reports it), else in UTC."""
    try:
        zone = ZoneInfo(st.context.timezone) if st.context.timezone else None
    except (ValueError, KeyError, ZoneInfoNotFoundError):  # not a zone name we know
        zone = None
    return f"{moment.astimezone(zone):%Y-%m-%d %H:%M}" if zone else f"{moment:%Y-%m-%d %H:%M} UTC"


def _resume(conn: Connection, record: Record, key: str) -> None:
    """Ask CometAPI again with the key in use now (a visitor's own, if they entered one) and,
    if it answers, have the tracker follow the prediction to the end, images saved."""
    problem_key = f"{key}-resume-problem"
    if st.button("Resume tracking", key=f"{key}-resume", icon=":material/play_circle:",
                 help="Check this prediction again with the key in use now, and follow it to the end."):
        try:
            conn.follow(record.id, creator=None)  # the first creator recorded is kept
        except errors.NotFound:
            st.session_state[problem_key] = (
                "CometAPI does not know this prediction for the key in use now. If it was made with "
                "your own key, enter it under **Use your own key** first.")
        except errors.CometError as exc:
            st.session_state[problem_key] = f"Could not resume: {plain(str(exc))}"
        else:
            st.session_state.pop(problem_key, None)
            st.rerun()  # the whole page: the card ticks again while the tracker follows it
    # Kept in the session so the answer outlasts the card's next run.
    if problem := st.session_state.get(problem_key):
        st.warning(problem, icon=":material/block:")


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
        try:
            stored = conn.store.output_bytes(record.id, output.idx)
        except MediaUnavailable as exc:  # the bucket or folder, not the image: it is still there
            with columns[n % len(columns)]:
                if thumbnail := conn.store.thumbnail(record.id, output.idx):
                    st.image(thumbnail[1])
                st.warning(f"The full image cannot be loaded right now: {plain(str(exc))}. "
                           "It is kept; try again in a moment.", icon=":material/cloud_off:")
            continue
        if stored is None:
            if output.pruned_at is not None:  # retention removed the full image: the thumbnail stays
                with columns[n % len(columns)]:
                    if thumbnail := conn.store.thumbnail(record.id, output.idx):
                        st.image(thumbnail[1])
                    st.caption(f"The full image was removed on {output.pruned_at:%Y-%m-%d} (retention); "
                               "this is its thumbnail.")
            continue
        content_type, data = stored
        with columns[n % len(columns)]:
            # At most its natural size (a 512 px image stretched over a wide column blurs); the
            # fullscreen button and Download give it whole.
            st.image(_display(data), width="content")
            row = st.container(horizontal=True, gap="small")
            row.download_button(
                "Download",
                data,
                file_name=export.output_file_name(record.prompt, record.id, output.idx, content_type),
                mime=content_type,
                key=f"{key}-download-{output.idx}",
                icon=":material/download:",
                on_click="ignore",
            )
            # A link, not a button: it works inside this fragment, and the address keeps the edit
            # (a reload opens the same one).
            row.page_link(CREATE_PAGE, label="Edit this image", icon=":material/edit:",
                          query_params={EDIT_PARAM: record.id, OUTPUT_PARAM: str(output.idx)},
                          help="Open Create with this image as the input of a model that edits images; "
                          "the new prediction is recorded as its edit.")
    if len(record.outputs) > 1:
        # Made on click (not on every run of the card): the ZIP holds every image again.
        st.download_button(
            "Download all", lambda: export.outputs_zip(conn.store, record.id),
            file_name=f"{export.base_name(record.prompt, record.id)}.zip", mime="application/zip",
            key=f"{key}-download-all", icon=":material/folder_zip:", on_click="ignore",
            help=f"The {len(record.outputs)} images as one ZIP file",
        )
    seed = seed_of(record.input, record.logs_tail)
    details = [f"run time {seconds(record.run_time)}"]
    if (cost := conn.ledger.costs([record.id]).get(record.id)) is not None:
        details.append(f"estimated {usd(cost)}")
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
    from dataclasses import replace

    seed = seed_of(record.input, record.logs_tail)
    sent_seed = seed is not None and record.input.get("seed") == seed  # then "Use again" repeats it already
    row = st.container(horizontal=True)
    # The callback runs before the next run, when the form's widgets may still be changed.
    again = row.button("Use again", key=f"{key}-reuse", icon=":material/replay:", on_click=on_reuse, args=(record,),
                       help=f"Load this input into the form, seed {seed} included." if sent_seed
                       else "Load this input into the form, with a new random seed.")
    same = False
    if seed is not None and not sent_seed:  # the seed the run drew (from its logs): offered to repeat it
        same = row.button("Same seed", key=f"{key}-reuse-seed", icon=":material/pin:",
                          on_click=on_reuse, args=(replace(record, input={**record.input, "seed": seed}),),
                          help=f"Use again with seed {seed} (random seed off): to repeat this image, or vary it.")
    if again or same:
        st.rerun()  # redraw the whole page (the form lives outside this fragment)


def gallery(conn: Connection, prediction_ids: list[str], columns: int = 6) -> None:
    """Thumbnails of earlier results, each linking to its History detail: rows of equal columns,
    square tiles of one size, a short link, then the prompt's first words."""
    records = [record for record in map(conn.store.get, prediction_ids) if record is not None]
    for start in range(0, len(records), columns):
        # A row of its own per `columns` items: the next row starts level, whatever this one holds.
        for column, record in zip(st.columns(columns), records[start:start + columns]):
            with column:
                st.image(_gallery_tile(conn, record), width="stretch")
                _gallery_link(record)
                st.caption(plain(trimmed(record.prompt, GALLERY_CAPTION_CHARS)) or id_label(record.id))


def _gallery_link(record: Record) -> None:
    """A one-word link, so it fits any column: a page link's label never wraps (Streamlit clips
    it mid-letter instead), and the prompt goes in the caption below, which wraps. It sits right
    under the tile, so the links of a row line up whatever the captions' lengths. A run without
    an image says its status here."""
    if record.status == "succeeded":
        label, icon = "Open", ":material/open_in_new:"
    else:
        label = plain(record.status.capitalize(), limit=GALLERY_STATUS_CHARS)
        icon = style(record.status)[1]
    st.page_link(HISTORY_PAGE, label=label, icon=icon, query_params={"id": record.id},
                 help=f"Open in History: prediction {shown_id(record.id)}")


def _gallery_tile(conn: Connection, record: Record) -> bytes:
    if record.outputs:
        try:
            return _tile(conn.store, record.id, record.outputs[0].idx) or blank_tile()
        except (LookupError, MediaUnavailable):  # not readable now: no tile this run, none cached
            pass
    return blank_tile()


@st.cache_data(max_entries=256, show_spinner=False)
def _tile(_store, prediction_id: str, idx: int) -> bytes | None:
    """The first image, centre-cropped to a TILE_SIDE square JPEG; made once per prediction
    (a stored output never changes). None when it cannot be decoded."""
    stored = _store.output_bytes(prediction_id, idx)
    if stored is None:
        raise LookupError(prediction_id)  # an exception is never cached: the next run tries again
    try:
        with Image.open(io.BytesIO(stored[1])) as image:
            if image.width * image.height > images.MAX_PIXELS:
                return None  # never decoded here (see images.for_display)
            square = ImageOps.fit(image.convert("RGB"), (TILE_SIDE, TILE_SIDE))
    except Exception:  # Pillow reports bad data with many exception types
        return None
    buffer = io.BytesIO()
    square.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


@functools.cache
def blank_tile() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (TILE_SIDE, TILE_SIDE), TILE_BACKGROUND).save(buffer, format="PNG")
    return buffer.getvalue()
