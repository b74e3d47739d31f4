"""History page pieces: filters, the paged table, exports, the detail view and "track an id".

The table is paged and filtered in SQL and drawn outside any ticking fragment. A tiny watcher
fragment ticks while predictions are unfinished and reruns the page only when one of them
changes status, so a page of rows is shipped again only when something in it changed."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from comet import errors, export
from comet.prediction import KNOWN_STATUSES, is_valid_id
from comet.store import HistoryUnavailable, Record
from comet.ui import card, form
from comet.ui.context import Connection, current_user
from comet.ui.safe import plain

PAGE_SIZE = 50
WATCH_SECONDS = 2.0
DETAIL_PARAM = "id"
TABLE_KEY = "history.table"
PAGE_KEY = "history.page"
SHOWN_FILTERS_KEY = "history.shown_filters"
CREATE_PAGE = "pages/create.py"
# The table's status labels take the card's badge colours (card.STATUS_STYLE decides which status
# gets which); a table column needs them as CSS colours. An unknown status stays plain.
_BADGE_CSS = {"gray": "#8a8aa3", "blue": "#1c83e1", "green": "#21a354", "red": "#e0403a", "orange": "#e8833a"}
STATUS_COLORS = {status: _BADGE_CSS[color] for status, (color, _icon) in card.STATUS_STYLE.items()}
# Rows without an image (running, failed) get a quiet grey tile instead of the word "None".
NO_THUMBNAIL = (
    "data:image/svg+xml;utf8,<svg xmlns='http://www.w3.org/2000/svg' width='40' height='40'>"
    "<rect width='40' height='40' rx='6' fill='%23d9d7e8'/></svg>"
)


@dataclass(frozen=True)
class Filters:
    statuses: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    text: str = ""
    creator: str | None = None

    def query(self) -> dict:
        return {
            "statuses": list(self.statuses) or None,
            "models": list(self.models) or None,
            "text": self.text.strip() or None,
            "creator": self.creator,
        }


def filters(conn: Connection) -> Filters:
    status_column, model_column, text_column, mine_column = st.columns([2, 3, 2.5, 1.5], vertical_alignment="bottom")
    statuses = status_column.multiselect("Status", KNOWN_STATUSES, key="history.status", placeholder="Any status")
    models = model_column.multiselect("Model", conn.store.models(), key="history.model",
                                      format_func=card.model_title, placeholder="Any model")
    text = text_column.text_input("Prompt contains", key="history.text", placeholder="Search prompts…")
    user = current_user()
    mine = mine_column.toggle("Mine", key="history.mine", disabled=user is None,
                              help="Only predictions you created (needs sign-in).")
    return Filters(tuple(statuses), tuple(models), text, user if mine and user else None)


def watcher(conn: Connection) -> None:
    """Ticks while anything is unfinished; reruns the page when a status changes."""
    snapshot = conn.store.unfinished_statuses()
    st.fragment(_watch, run_every=WATCH_SECONDS if snapshot else None)(conn, snapshot)


def _watch(conn: Connection, before: dict[str, str]) -> None:
    try:
        now = conn.store.unfinished_statuses()
    except HistoryUnavailable:
        st.caption(":material/cloud_off: History unavailable, retrying…")
        return
    if now != before:
        st.rerun()
    if now:
        st.caption(f":material/autorenew: {len(now)} running · this page updates by itself")


def table(conn: Connection, chosen: Filters) -> list[str]:
    """One page of the table; returns the ids of the selected rows."""
    if st.session_state.get(SHOWN_FILTERS_KEY) != chosen:
        # New filters start on their first page (page 3 of other results would skip the newest).
        st.session_state[SHOWN_FILTERS_KEY] = chosen
        st.session_state[PAGE_KEY] = 1
    total = conn.store.count(**chosen.query())
    if total == 0:
        empty = not any(chosen.query().values())
        st.info("No predictions yet. Make one on the Create page." if empty else "Nothing matches these filters.",
                icon=":material/inbox:")
        return []
    pages = (total + PAGE_SIZE - 1) // PAGE_SIZE
    page_number = 1
    if pages > 1:
        page_number = st.number_input(f"Page (of {pages:,})", 1, pages, key=PAGE_KEY, width=160)
    frame = conn.store.page(**chosen.query(), limit=PAGE_SIZE, offset=(page_number - 1) * PAGE_SIZE)
    frame["model"] = frame["model"].map(card.model_title)
    frame["status"] = frame["status"].map(lambda status: [status])  # one coloured label per row
    frame["run_time"] = frame["run_time"].map(lambda value: "" if pd.isna(value) else card.seconds(value))
    frame["creator"] = frame["creator"].fillna("")
    frame["thumbnail"] = frame["thumbnail"].fillna(NO_THUMBNAIL)
    event = st.dataframe(
        frame,
        key=_table_key(frame["id"]),
        hide_index=True,
        on_select="rerun",
        selection_mode="multi-row",
        row_height=48,
        column_order=["thumbnail", "status", "prompt", "model", "created", "run_time", "creator", "id"],
        column_config={
            "thumbnail": st.column_config.ImageColumn("", width=56),
            "status": st.column_config.MultiselectColumn(
                "Status", width=110, options=list(STATUS_COLORS), color=list(STATUS_COLORS.values())),
            "prompt": st.column_config.TextColumn("Prompt", width="large"),
            "model": st.column_config.TextColumn("Model"),
            "created": st.column_config.DatetimeColumn("Created", format="distance"),
            "run_time": st.column_config.TextColumn("Run time", width=80),
            "creator": st.column_config.TextColumn("Creator"),
            "id": st.column_config.TextColumn("Prediction id"),
        },
    )
    st.caption(f"{total:,} prediction{'s' if total != 1 else ''} · newest first · select a row to open it")
    return [frame["id"].iloc[row] for row in event.selection.rows]


def _table_key(ids: pd.Series) -> str:
    """The table's widget key, one per set of rows shown. A selection is a list of row positions:
    once other rows fill those positions (a new prediction on top, another page or filter), the
    old selection would point at predictions nobody picked, open one of them and put it in the
    ZIP. A new key starts the table with no selection instead."""
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
    return f"{TABLE_KEY}.{digest}"


def selection_changed(selected: list[str]) -> bool:
    """True once per change of the table selection (a kept selection must not reopen a closed detail)."""
    changed = selected != st.session_state.get("history.selection", [])
    st.session_state["history.selection"] = selected
    return changed


def exports(conn: Connection, chosen: Filters, selected: list[str]) -> None:
    row = st.container(horizontal=True)
    row.download_button(
        "Export table as CSV", data=lambda: export.spreadsheet_csv(conn.store.export_rows(**chosen.query())),
        file_name="comet-predictions.csv", mime="text/csv", icon=":material/table:", on_click="ignore",
    )
    row.download_button(
        f"Images of {len(selected)} selected as ZIP" if selected else "Select rows to export their images",
        data=lambda: export.images_zip(conn.store, selected), file_name="comet-images.zip", mime="application/zip",
        icon=":material/folder_zip:", on_click="ignore", disabled=not selected,
    )


def detail(conn: Connection, prediction_id: str) -> None:
    """The detail view for ?id=: checked before anything reaches the API or the database."""
    if not is_valid_id(prediction_id):
        st.error(f"“{plain(prediction_id, limit=80)}” is not a valid prediction id: ids are 6–64 letters, "
                 "digits, dashes or underscores.", icon=":material/link_off:")
        _close_button()
        return
    record = conn.store.get(prediction_id)
    if record is None:
        st.warning(f"Prediction {card.shown_id(prediction_id)} is not in this dashboard's history. If it was made "
                   "elsewhere with this key, track it to add it.", icon=":material/search_off:")
        track_form(conn, prediction_id, key="history.track-deep-link")
        _close_button()
        return
    card.live_card(conn, prediction_id, key=f"detail-{prediction_id}", on_reuse=_reuse_on_create_page)
    _facts(record)
    _close_button()


def _facts(record: Record) -> None:
    timings = pd.DataFrame(
        {
            "Created": [record.created_at],
            "Started": [record.started_at],
            "Completed": [record.completed_at],
            "Run time": [card.seconds(record.run_time)],
            "Creator": [record.creator or "–"],
        }
    )
    st.dataframe(timings, hide_index=True)
    with st.expander("Input (exact JSON sent)", icon=":material/data_object:"):
        st.code(export.input_json(record), language="json")
    if record.is_terminal and record.logs_tail:
        with st.expander("Logs", icon=":material/terminal:"):
            st.code(record.logs_tail, language=None)


def _reuse_on_create_page(record: Record) -> None:
    form.reuse(record)
    st.session_state["history.go_create"] = True


def _close_button() -> None:
    if st.button("Back to all predictions", icon=":material/arrow_back:", key="history.close"):
        st.query_params.pop(DETAIL_PARAM, None)
        st.rerun()


def track_form(conn: Connection, prefilled: str = "", *, key: str) -> None:
    """Add a prediction made elsewhere (a script, a teammate) by its id."""
    with st.form(key, border=True, enter_to_submit=True):
        typed = st.text_input("Prediction id", value=prefilled, placeholder="e.g. q4chw5rey9rmt0cww76t4h3ma4")
        submitted = st.form_submit_button("Track this prediction", icon=":material/add_link:")
    if not submitted:
        return
    typed = typed.strip()
    if not is_valid_id(typed):
        st.error(f"“{plain(typed, limit=80)}” is not a valid prediction id.")
        return
    try:
        prediction = conn.client.get(typed)
    except errors.NotFound:
        st.error(f"CometAPI does not know prediction {card.shown_id(typed)} (for this key).")
        return
    except errors.CometError as exc:
        st.error(plain(str(exc)))
        return
    conn.track(prediction, creator=current_user())
    st.query_params[DETAIL_PARAM] = prediction.id
    st.rerun()


def go_to_create_if_asked() -> None:
    if st.session_state.pop("history.go_create", False):
        st.switch_page(CREATE_PAGE)
