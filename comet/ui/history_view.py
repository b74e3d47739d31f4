"""History page pieces: filters, the paged table, exports, the detail view and "track an id".

The table is paged and filtered in SQL and drawn outside any ticking fragment. A tiny watcher
fragment ticks while predictions are unfinished and reruns the page only when one of them
changes status, so a page of rows is shipped again only when something in it changed."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
import streamlit as st
from PIL import Image
from streamlit.delta_generator import DeltaGenerator

from comet import catalog, errors, export, images, snippets
from comet.prediction import KNOWN_STATUSES, is_valid_id
from comet.store import HistoryFilter, HistoryUnavailable, Record
from comet.store.queries import CHAIN_CHILDREN
from comet.ui import card, form
from comet.ui.batch_view import BATCH_PARAM
from comet.ui.chrome import zip_download
from comet.ui.context import Connection, current_user
from comet.ui.safe import plain
from comet.ui.status import TABLE_COLORS

PAGE_SIZE = 50
CHAIN_PARAM, BATCH_FILTER_PARAM = "chain", "batch_filter"
BATCH_SELECT_KEY = "history.batch"
BATCH_PAGE = "pages/batch.py"
RECENT_BATCHES = 20  # in the Batch filter (a link reaches any batch)
CHAIN_TILE = 96  # px: a chain's thumbnails in the detail view
_BATCH_ID = re.compile(r"[0-9a-f]{32}")
WATCH_SECONDS = 2.0
DETAIL_PARAM = "id"
TABLE_KEY = "history.table"
PAGE_KEY = "history.page"
SHOWN_FILTERS_KEY = "history.shown_filters"
CREATE_PAGE = "pages/create.py"
HISTORY_PAGE = "pages/history.py"
ROW_HEIGHT = 48
# The detail view: parameters are listed with values this long at most (the JSON has them whole),
# at most this many (an input from elsewhere may hold anything); input images as thumbnails this
# wide; a linked image's address shown this long at most.
PARAM_NAME_CHARS, PARAM_VALUE_CHARS, MAX_PARAMS = 60, 300, 40
INPUT_THUMB_WIDTH, MAX_INPUT_IMAGES = 160, 12
URL_CHARS = 2000
_DATA_URI = re.compile(r"data:image/[\w.+-]+;base64,(?P<payload>[A-Za-z0-9+/]*={0,2})")
# Every thumbnail is a square tile, its image letterboxed inside (the grid draws an image at the
# row's height and crops what is wider than the column: a 16:9 one filled it edge to edge). A
# translucent tile reads on the light and the dark theme; rows without an image (running,
# failed) get the bare tile instead of the word "None".
_TILE = "<rect width='128' height='128' rx='12' fill='%238a8aa3' fill-opacity='0.22'/>"
_SVG = "data:image/svg+xml;utf8,<svg xmlns='http://www.w3.org/2000/svg' width='128' height='128'>{}</svg>"
NO_THUMBNAIL = _SVG.format(_TILE)
_THUMBNAIL_URI = re.compile(r"data:image/(?:jpeg|png|webp);base64,[A-Za-z0-9+/]*={0,2}")


@dataclass(frozen=True)
class Filters:
    statuses: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    text: str = ""
    creator: str | None = None
    batch: str | None = None  # ?batch_filter=: the predictions one batch sent
    chain: str | None = None  # ?chain=: the edit chain through one prediction (HistoryFilter.chain)

    def query(self) -> HistoryFilter:
        return HistoryFilter(statuses=self.statuses, models=self.models, text=self.text, creator=self.creator,
                             batch=self.batch, chain=self.chain)


def filters(conn: Connection) -> Filters:
    recent = _recent_batches(conn)
    batch = _linked_batch()
    widths = [2, 3, 2.5, 1.5] + ([2.5] if recent or batch else [])
    status_column, model_column, text_column, mine_column, *batch_column = st.columns(
        widths, vertical_alignment="bottom")
    statuses = status_column.multiselect("Status", KNOWN_STATUSES, key="history.status", placeholder="Any status")
    models = model_column.multiselect("Model", conn.store.models(), key="history.model",
                                      format_func=card.model_title, placeholder="Any model")
    text = text_column.text_input("Prompt contains", key="history.text", placeholder="Search prompts…")
    user = current_user()
    mine = mine_column.toggle("Mine", key="history.mine", disabled=user is None,
                              help="Only predictions you created (needs sign-in; with the app's password, your name).")
    if batch_column:
        with batch_column[0]:
            batch = _batch_filter(recent, batch)
    return Filters(tuple(statuses), tuple(models), text, user if mine and user else None, batch, _chain_filter())


def _recent_batches(conn: Connection) -> dict[str, str]:
    """{batch id: its label} of the newest batches, for the Batch filter."""
    if conn.batches is None:
        return {}
    return {batch.id: batch_label(batch.id, batch.title) for batch in conn.batches.recent(RECENT_BATCHES)}


def batch_label(batch_id: str, title: str | None) -> str:
    """A batch as the table and the filter name it: its title, else its id's start."""
    return card.trimmed(title, 40) if title and title.strip() else f"Batch {batch_id[:8]}"


def _linked_batch() -> str | None:
    wanted = st.query_params.get(BATCH_FILTER_PARAM)
    if wanted is None:
        return None
    if not _BATCH_ID.fullmatch(wanted):
        st.warning(f"“{plain(wanted, limit=80)}” is not a batch id: the batch filter is off.",
                   icon=":material/filter_alt_off:")
        return None
    return wanted


def _batch_filter(recent: dict[str, str], linked: str | None) -> str | None:
    """A select of the newest batches, in step with ?batch_filter= (a link to share)."""
    options: list[str | None] = [None, *recent]
    if linked is not None and linked not in recent:
        options.append(linked)  # an older batch, from a link
    st.session_state[BATCH_SELECT_KEY] = linked  # the address is in charge; the select writes it

    def chosen() -> None:
        picked = st.session_state.get(BATCH_SELECT_KEY)
        if picked:
            st.query_params[BATCH_FILTER_PARAM] = picked
        else:
            st.query_params.pop(BATCH_FILTER_PARAM, None)

    return st.selectbox("Batch", options, key=BATCH_SELECT_KEY, on_change=chosen,
                        format_func=lambda option: "Any batch" if option is None
                        else recent.get(option, f"Batch {option[:8]}"))


def _chain_filter() -> str | None:
    """?chain=<id>, shown as a note with a way back to everything."""
    wanted = st.query_params.get(CHAIN_PARAM)
    if wanted is None:
        return None
    row = st.container(horizontal=True, vertical_alignment="center")
    if not is_valid_id(wanted):
        row.warning(f"“{plain(wanted, limit=80)}” is not a prediction id: the chain filter is off.",
                    icon=":material/filter_alt_off:")
        wanted = None
    else:
        row.caption(f":material/account_tree: Only the edit chain through {card.id_label(wanted)}: its "
                    "ancestors and every edit of it.")
    row.button("Show all predictions" if wanted else "Clear", key="history.clear_chain", icon=":material/close:",
               on_click=lambda: st.query_params.pop(CHAIN_PARAM, None))
    return wanted


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


def table(conn: Connection, chosen: Filters, toolbar: DeltaGenerator) -> list[str]:
    """One page of the table, its pager and count in `toolbar` (above it); returns the ids of
    the selected rows."""
    if st.session_state.get(SHOWN_FILTERS_KEY) != chosen:
        # New filters start on their first page (page 3 of other results would skip the newest).
        st.session_state[SHOWN_FILTERS_KEY] = chosen
        st.session_state[PAGE_KEY] = 1
    total = conn.store.count(chosen.query())
    if total == 0:
        empty = chosen.query().matches_all
        st.info("No predictions yet. Make one on the Create page." if empty else "Nothing matches these filters.",
                icon=":material/inbox:")
        return []
    pages = (total + PAGE_SIZE - 1) // PAGE_SIZE
    page_number = 1
    if pages > 1:
        page_number = toolbar.number_input(f"Page (of {pages:,})", 1, pages, key=PAGE_KEY, width=150)
    toolbar.caption(f"{total:,} prediction{'s' if total != 1 else ''} · newest first · select a row to open it")
    frame = conn.store.page(chosen.query(), limit=PAGE_SIZE, offset=(page_number - 1) * PAGE_SIZE)
    frame["model"] = frame["model"].map(card.model_title)
    frame["status"] = frame["status"].map(lambda status: [status])  # one coloured label per row
    frame["run_time"] = frame["run_time"].map(short_seconds)
    costs = conn.ledger.costs(frame["id"])
    frame["cost"] = frame["id"].map(lambda prediction_id: costs.get(prediction_id))
    frame["creator"] = frame["creator"].fillna("")
    frame["thumbnail"] = frame["thumbnail"].map(letterboxed)
    frame["batch"] = _batch_names(conn, frame["batch_id"])
    # Ids first (what people copy into scripts and messages); Creator only where someone signed in
    # and Batch only where a batch sent a row, so that otherwise their room goes to the prompt.
    order = ["thumbnail", "status", "id", "prompt", "model", "created", "run_time", "cost"]
    with_creator = bool(frame["creator"].astype(bool).any())
    if with_creator:
        order.append("creator")
    with_batch = bool(frame["batch"].astype(bool).any())
    if with_batch:
        order.append("batch")
    prompt_width = max(92, 182 - 90 * (with_creator + with_batch))
    event = st.dataframe(
        frame,
        key=_table_key(frame["id"]),
        hide_index=True,
        on_select="rerun",
        selection_mode="multi-row",
        row_height=ROW_HEIGHT,
        height="content",  # the page's rows in full: the page scrolls, not a box inside it
        column_order=order,
        # Widths that fit the 900 px the wide layout leaves at 1360 px beside the sidebar (with the
        # selection boxes' 32 px), measured in the grid's font: 210 px hold 99 % of 26-character
        # ids, 136 the longest model title; the prompt gets the rest (a wider screen shares out more).
        column_config={
            "thumbnail": st.column_config.ImageColumn("", width=ROW_HEIGHT),
            "status": st.column_config.MultiselectColumn(
                "Status", width=92, options=list(TABLE_COLORS), color=list(TABLE_COLORS.values())),
            "id": st.column_config.TextColumn("Prediction id", width=210),
            "prompt": st.column_config.TextColumn("Prompt", width=prompt_width),
            "model": st.column_config.TextColumn("Model", width=112),
            # Exact and short, in the viewer's own time zone ("a few seconds ago" took 120 px).
            "created": st.column_config.DatetimeColumn("Created", format="MMM D, HH:mm", width=96,
                                                       timezone=viewer_timezone()),
            "run_time": st.column_config.TextColumn("Run", width=56, help="Run time"),
            "cost": st.column_config.NumberColumn("Cost", width=60, format="$%.3f",
                                                  help="Estimated from the price list; the bill is CometAPI's."),
            "creator": st.column_config.TextColumn("Creator", width=100),
            "batch": st.column_config.TextColumn("Batch", width=100, help="The batch that sent it"),
        },
    )
    return [frame["id"].iloc[row] for row in event.selection.rows]


def _batch_names(conn: Connection, batch_ids: pd.Series) -> pd.Series:
    """Each row's batch by its title (else its id's start); "" for a row no batch sent."""
    titles: dict[str, str] = {}
    for batch_id in {value for value in batch_ids if isinstance(value, str) and value}:
        found = conn.batches.get(batch_id) if conn.batches is not None else None
        titles[batch_id] = batch_label(batch_id, found.title if found else None)
    return batch_ids.map(lambda value: titles.get(value, "") if isinstance(value, str) else "")


def viewer_timezone() -> str | None:
    """The browser's time zone (an IANA name), or None (UTC) when unknown or not a real zone:
    the browser sends it, so it is checked before anything shows times in it."""
    name = st.context.timezone
    try:
        return name if name and ZoneInfo(name) else None
    except (ValueError, OSError, ZoneInfoNotFoundError):
        return None


def short_seconds(value: object) -> str:
    """A run time that fits the table's narrow column: "4.2 s", "95 s", "17 min"; "" if unknown."""
    shown = card.seconds(value)
    if shown == "–":
        return ""
    seconds = float(value)  # known, finite, not negative: card.seconds said so
    if seconds < 10:
        return shown
    if seconds < 600:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 86_400 else "> 1 day"


def letterboxed(thumbnail: str | None) -> str:
    """A stored thumbnail (a data: URI) centred in the square tile, whatever its shape; the bare
    tile for none. The thumbnail is embedded as it is: the SVG only places it ("meet" fits it
    whole), so nothing is decoded or re-encoded here, and a data: URI loads nothing from elsewhere."""
    if not isinstance(thumbnail, str) or not _THUMBNAIL_URI.fullmatch(thumbnail):
        return NO_THUMBNAIL  # none (or not what the store makes: nothing else goes into the SVG)
    image = f"<image width='128' height='128' preserveAspectRatio='xMidYMid meet' href='{thumbnail}'/>"
    return _SVG.format(_TILE + image)


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


def exports(conn: Connection, chosen: Filters, selected: list[str], row: DeltaGenerator) -> None:
    row.download_button(
        "Export table as CSV", data=lambda: export.history_csv(conn.ledger.with_costs(conn.store.export_rows(chosen.query()))),
        file_name="comet-predictions.csv", mime="text/csv", icon=":material/table:", on_click="ignore",
    )
    sizes = conn.store.stored_sizes(selected)
    zip_download(row, f"Images of {len(selected)} selected as ZIP" if selected else "Select rows to export their images",
                 [sizes.get(pid, 0) for pid in selected],
                 lambda part: export.images_zip(conn.store, selected[part.start:part.stop]),
                 file_name="comet-images", key="history.zip", disabled=not selected,
                 part_label=lambda part: f"{len(part)} prediction{'s' if len(part) != 1 else ''}",
                 help="Each selected prediction's stored images and its input as JSON, a folder each.")


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
    _prompt(record)
    # The result beside what made it on a wide screen; stacked (result first) on a phone.
    result, facts = st.columns([3, 2], gap="large")
    with result:
        card.live_card(conn, prediction_id, key=f"detail-{prediction_id}", on_reuse=_reuse_on_create_page)
    with facts:
        _facts(record)
        _batch(conn, record)
    chain(conn, record)
    with st.expander("Input (JSON sent)", icon=":material/data_object:"):
        st.caption("Inline images are shortened here; the download has them whole.")
        st.code(json.dumps({"input": snippets.shorten_data_uris(record.input)}, indent=2, ensure_ascii=False),
                language="json", wrap_lines=True)
        st.download_button("Download input JSON", lambda: export.input_json(record), key="history.input-json",
                           file_name=f"{export.base_name(record.prompt, record.id)}-input.json",
                           mime="application/json", icon=":material/download:", on_click="ignore")
    if record.is_terminal and record.logs_tail:
        with st.expander("Logs", icon=":material/terminal:"):
            st.code(record.logs_tail, language=None)
    _close_button()


def _prompt(record: Record) -> None:
    """What people open a prediction for, first and as text."""
    st.caption("Prompt")
    if record.prompt.strip():
        st.markdown(plain(record.prompt, limit=catalog.PROMPT_MAX_CHARS))
    else:
        st.markdown("*No prompt*")


def _facts(record: Record) -> None:
    """The id (copyable), the parameters and input images sent, and when and by whom."""
    model = catalog.MODELS.get(record.model)
    st.caption("Prediction id")
    st.code(record.id, language=None, width="content")  # its copy button puts the id on the clipboard
    image_fields = input_images(record.input, model)
    if rows := parameters(record.input, model, skip={name for name, _label, _values in image_fields}):
        st.caption("Parameters")
        st.markdown("\n".join(f"- {plain(label)}: **{plain(value)}**" for label, value in rows))
    for _name, label, values in image_fields:
        st.caption(plain(label))
        _input_image_row(values)
    zone = viewer_timezone()
    st.caption("Run")
    st.markdown("\n".join([
        f"- Created: {plain(when(record.created_at, zone))}",
        f"- Started: {plain(when(record.started_at, zone))}",
        f"- Completed: {plain(when(record.completed_at, zone))}",
        f"- Run time: {plain(card.seconds(record.run_time))}",
        f"- Creator: {plain(record.creator or '–', limit=200)}",
    ]))


def _batch(conn: Connection, record: Record) -> None:
    """The batch that sent it: a link to its contact sheet, and its predictions in the table."""
    if not record.batch_id:
        return
    found = conn.batches.get(record.batch_id) if conn.batches is not None and _BATCH_ID.fullmatch(record.batch_id) else None
    st.caption("Batch")
    row = st.container(horizontal=True, vertical_alignment="center")
    label = batch_label(record.batch_id, found.title if found else None)
    if found is not None:
        row.page_link(BATCH_PAGE, label=plain(label), icon=":material/grid_view:",
                      query_params={BATCH_PARAM: record.batch_id}, help="Its contact sheet")
    else:
        row.markdown(f"{plain(label)} (no longer stored)")
    row.button("Show this batch in the table", key="history.show_batch", icon=":material/filter_alt:",
               on_click=_filter_to, args=(BATCH_FILTER_PARAM, record.batch_id))


def chain(conn: Connection, record: Record) -> None:
    """Where this prediction sits in an edit chain: its ancestors (oldest first), itself (marked)
    and its edits, as thumbnails linking to their details; nothing when it is in no chain."""
    lineage = conn.store.lineage(record.id)
    if record.parent_id is None and not lineage.children:
        return
    st.caption("Chain")
    # Each ancestor shows the image the next one edited; itself and its edits their first image.
    edited = [link.parent_output for link in lineage.ancestors[1:]] + [record.parent_output]
    row = st.container(horizontal=True, gap="small")
    for n, (link, idx) in enumerate(zip(lineage.ancestors, edited)):  # none: the parent is not stored
        role = "parent" if n == len(lineage.ancestors) - 1 else "earlier"
        if link.parent_id is None:  # where the chain starts
            role = "original" if role == "earlier" else "parent, original"
        _chain_tile(conn, row, link.id, idx, role, link.status)
    first = record.outputs[0].idx if record.outputs else None
    _chain_tile(conn, row, record.id, first, "this one", record.status, current=True)
    for link in lineage.children:
        _chain_tile(conn, row, link.id, link.outputs[0] if link.outputs else None, "edit", link.status)
    notes = []
    if record.parent_id is not None and not lineage.ancestors:
        notes.append(f"Edited from {card.shown_id(record.parent_id)}, which is not in this history.")
    if lineage.cut:
        notes.append("Earlier generations are not shown here.")
    if len(lineage.children) >= CHAIN_CHILDREN:
        notes.append(f"The first {CHAIN_CHILDREN} edits are shown; the table lists them all.")
    if notes:
        st.caption(" ".join(notes))
    st.button("Show this chain in the table", key="history.show_chain", icon=":material/account_tree:",
              on_click=_filter_to, args=(CHAIN_PARAM, record.id),
              help="Only this prediction, the images it came from and every edit of it")


def _chain_tile(conn: Connection, row: DeltaGenerator, prediction_id: str, idx: int | None, role: str,
                status: str, current: bool = False) -> None:
    tile = row.container(width=CHAIN_TILE + 24, gap=None)
    thumbnail = conn.store.thumbnail(prediction_id, idx) if idx is not None else None
    tile.image(thumbnail[1] if thumbnail else card.blank_tile(), width=CHAIN_TILE)
    if current:
        tile.markdown(f"**{card.id_label(prediction_id)}**")  # itself: bold, and no link to where we are
    else:
        tile.page_link(HISTORY_PAGE, label=card.id_label(prediction_id), query_params={DETAIL_PARAM: prediction_id},
                       help=f"Open this {role} in History")
    words = role if status == "succeeded" else f"{role} · {card.trimmed(status, 12)}"
    tile.caption(plain(words))


def _filter_to(param: str, value: str) -> None:
    """Callback: filter the table (the address says how, for a link to share)."""
    st.query_params[param] = value


def parameters(model_input: dict, model: catalog.Model | None, *, skip: set[str]) -> list[tuple[str, str]]:
    """(label, value) of each parameter sent but the prompt and the images: the catalog's label
    and order where it knows the parameter, then the others by their own names."""
    known = [p for p in model.params if p.name in model_input] if model else []
    labelled = [(p.label, p.name) for p in known]
    labelled += [(card.trimmed(name, PARAM_NAME_CHARS), name) for name in model_input
                 if model is None or model.param(name) is None]
    shown = [(label, value_text(model_input[name])) for label, name in labelled
             if name not in skip and name != "prompt" and model_input[name] is not None]
    if len(shown) > MAX_PARAMS:  # an input from elsewhere may hold anything: the JSON has the rest
        shown = shown[:MAX_PARAMS] + [("…", f"{len(shown) - MAX_PARAMS} more in the JSON below")]
    return shown


def value_text(value: object, depth: int = 0) -> str:
    """A parameter's value in a few words: on/off, lists joined, inline images shortened; no
    more is read than can be shown (a stored input may hold anything, nested any deep)."""
    if isinstance(value, (list, dict)) and depth >= 3:
        text = "…"
    elif isinstance(value, bool):
        text = "on" if value else "off"
    elif isinstance(value, list):
        text = ", ".join(value_text(item, depth + 1) for item in value[:MAX_PARAMS]) or "none"
    elif isinstance(value, dict):
        text = "{" + ", ".join(f"{card.trimmed(key, PARAM_NAME_CHARS)}: {value_text(item, depth + 1)}"
                               for key, item in list(value.items())[:MAX_PARAMS]) + "}"
    elif isinstance(value, str):
        text = snippets.shorten_data_uris(value)
    else:
        text = str(value)
    return card.trimmed(text[:PARAM_VALUE_CHARS * 4], PARAM_VALUE_CHARS)


def input_images(model_input: dict, model: catalog.Model | None) -> list[tuple[str, str, list[str]]]:
    """(name, label, values) of the input's image parameters: those the catalog types as images,
    and any other whose values are all inline images (a model or parameter it does not know)."""
    found = []
    typed = {p.name: p.label for p in model.params if p.type in ("image", "images")} if model else {}
    for name, value in model_input.items():
        items = value if isinstance(value, list) else [value]
        if name in typed:
            values = [item for item in items if isinstance(item, str) and item.strip()]
            if values:
                found.append((name, typed[name], values[:MAX_INPUT_IMAGES]))
        elif ((model is None or model.param(name) is None) and items
              and all(isinstance(item, str) and item.startswith("data:image/") for item in items)):
            found.append((name, card.trimmed(name, PARAM_NAME_CHARS), items[:MAX_INPUT_IMAGES]))
    return found


def _input_image_row(values: list[str]) -> None:
    """Inline images as thumbnails, side by side; links as inert text. A link is never fetched
    (not by the server, and never put in an <img>: History must not make browsers call hosts
    someone typed or an upstream answer named)."""
    row = st.container(horizontal=True, gap="small")
    for value in values:
        if value.startswith("data:"):
            shown = inline_thumbnail(value)
            if shown:
                row.image(shown[0], caption=shown[1], width="content")  # a small one is not blown up
            else:
                row.caption(f"{plain(snippets.shorten_data_uris(value), limit=120)} · not a readable image")
    for value in values:
        if not value.startswith("data:"):
            st.code(value[:URL_CHARS], language=None, wrap_lines=True)
            st.caption("A linked image: not loaded here.")


@st.cache_data(max_entries=64, show_spinner=False)
def inline_thumbnail(uri: str) -> tuple[bytes, str] | None:
    """A data: URI's image as a small PNG (JPEG for photos without transparency) and a caption
    ("PNG · 300×200 · 2 KB"); None unless it holds a JPEG, PNG, GIF or WebP that images.read_image
    accepts (the same size and pixel limits as an upload)."""
    match = _DATA_URI.fullmatch(uri)
    if not match or len(match["payload"]) > images.UPLOAD_MAX_BYTES * 4 // 3 + 4:
        return None
    try:
        data = base64.b64decode(match["payload"], validate=True)
        picture = images.read_image("input image", data)
        with Image.open(io.BytesIO(data)) as image:
            image.seek(0)  # a GIF's first frame
            image.thumbnail((INPUT_THUMB_WIDTH, INPUT_THUMB_WIDTH))
            alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
            small = image.convert("RGBA" if alpha else "RGB")
    except Exception:  # bad base64 (binascii.Error), not an image (ImageProblem), Pillow's many errors
        return None
    buffer = io.BytesIO()
    small.save(buffer, format="PNG" if alpha else "JPEG", quality=85)
    kind = picture.mime.removeprefix("image/").upper()
    return buffer.getvalue(), f"{kind} · {picture.width}×{picture.height} · {images.human_size(picture.size)}"


def when(moment: datetime | None, zone: str | None) -> str:
    """A stored time to the second, in the viewer's time zone (UTC when it is unknown)."""
    if moment is None:
        return "–"
    local = moment.astimezone(ZoneInfo(zone)) if zone else moment.astimezone(UTC)
    return local.strftime("%Y-%m-%d %H:%M:%S ") + (local.tzname() or "UTC")


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
        # Also revives one already in the history whose tracking stopped, polled from now on
        # with the key in use (a visitor's own key, if they entered one).
        prediction = conn.follow(typed, creator=current_user())
    except errors.NotFound:
        st.error(f"CometAPI does not know prediction {card.shown_id(typed)} (for the key in use now).")
        return
    except errors.CometError as exc:
        st.error(plain(str(exc)))
        return
    st.query_params[DETAIL_PARAM] = prediction.id
    st.rerun()


def go_to_create_if_asked() -> None:
    if st.session_state.pop("history.go_create", False):
        st.switch_page(CREATE_PAGE)
