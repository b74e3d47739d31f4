"""Batch page pieces: the form that plans a batch (prompts or a CSV, variations, models, up to
two swept parameters) and shows what it would send before anything is sent; the contact sheet
of a batch, filling in live while its cells are sent and run; and the recent batches.

The page never sends a prediction itself: `Run batch` stores the batch and the server's runner
(comet.batch.BatchRunner, one per process, with the server's key) sends its cells, so closing
the tab loses nothing. The sheet reads the database only (the runner and the tracker write it)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import streamlit as st

from comet import batch as core
from comet import catalog, export, prices, sheet
from comet.prediction import CANCELED as STATUS_CANCELED
from comet.prediction import SUCCEEDED, TERMINAL
from comet.store import HistoryError, HistoryUnavailable
from comet.ui import card
from comet.ui.chrome import problem_list, zip_download
from comet.ui.context import Connection, current_user, settings
from comet.ui.safe import plain
from comet.ui.status import style

BATCH_PARAM = "batch"
BATCH_PAGE = "pages/batch.py"
HISTORY_PAGE = "pages/history.py"
TICK_SECONDS = 2.0
RECENT = 20
SEED_KEY = "batch.seed"
NOTICE_KEY = "batch.notice"
CONFIRM_KEY = "batch.confirm_unknown"  # the batch whose uncertain cells the user asked to send again
ERROR_CHARS = 160  # a failed cell's message in the grid (the History detail has it whole)
_BATCH_ID = re.compile(r"[0-9a-f]{32}")
NOT_SWEPT = ("prompt", "seed")  # the rows and the variations already


# ---- the form -------------------------------------------------------------------------------


def new_batch(conn: Connection) -> None:
    """The form, what it would send, and `Run batch` (not for a personal key: the runner sends
    with the server's key)."""
    if conn.batch_runner is None:
        st.info("**Batches run on the server with the app's key**, so they are not available while "
                "you use your own key. Forget your key in the sidebar to run a batch, or make "
                "images one at a time on the Create page.", icon=":material/key:")
        return
    models = st.multiselect("Models", list(catalog.MODELS), default=[catalog.DEFAULT_MODEL], key="batch.models",
                            format_func=card.model_title,
                            help="Each prompt runs on every model chosen; each model gets your settings where "
                                 "it takes them and its own defaults for the rest.")
    prompts_column, csv_column = st.columns([3, 2])
    text = prompts_column.text_area("Prompts", key="batch.prompts", height=150,
                                    placeholder="One prompt per line",
                                    help="One prompt per line; each is a row of the contact sheet.")
    uploaded = csv_column.file_uploader(
        "Or a CSV of inputs", type=["csv"], key="batch.csv",
        help="A header line naming the columns: a prompt column, and any other inputs of the chosen models "
             "(guidance, aspect_ratio, seed, …). One row of the sheet per line.")
    problems: list[str] = []
    if uploaded is not None:
        rows, csv_problems = core.rows_from_csv(uploaded.getvalue(), models)
        problems += csv_problems
        prompts: tuple = tuple(rows)
        csv_column.caption(f"{len(rows):,} row{'s' if len(rows) != 1 else ''} from {plain(uploaded.name, 80)}; "
                           "the Prompts box is not used while a CSV is chosen.")
    else:
        prompts = tuple(core.prompts_from_text(text))
    variations_column, title_column = st.columns([1, 3])
    variations = variations_column.number_input(
        "Variations per prompt", min_value=1, value=1, step=1, key="batch.variations",
        help="Each variation has its own fixed seed (recorded with the cell), so any image can be made again.")
    title = title_column.text_input("Title", key="batch.title", max_chars=200, placeholder="Optional")
    axes = _axes(models)
    seed = st.session_state.setdefault(SEED_KEY, core.random_seed())
    spec = core.BatchSpec(prompts=prompts, models=tuple(models), variations=int(variations), axes=axes,
                          seed=seed, title=title)
    batch_plan = core.plan(spec, max_cells=settings().batch_max, estimate=conn.estimate)
    problems += batch_plan.problems
    empty = not prompts and uploaded is None
    ready = batch_plan.ok and not problems
    if batch_plan.count and not empty:
        line = f":material/grid_view: **{batch_plan.count:,} prediction{'s' if batch_plan.count != 1 else ''}**"
        if batch_plan.ok:  # a refused plan has no estimate
            line += (f" · estimated {prices.usd(batch_plan.estimated_usd)}" if batch_plan.estimated_usd is not None
                     else " · estimated cost unknown (a model has no price in the list)")
        st.markdown(line)
    if empty:
        st.caption("Type one prompt per line (or choose a CSV) to see what the batch would send.")
    elif problems:
        problem_list("Fix these first; nothing was sent:", list(dict.fromkeys(problems)), error=True)
    for note in batch_plan.notes:
        st.caption(f":material/info: {plain(note)}")
    if ready and batch_plan.first_seed is not None:
        st.caption(f"Seeds start at {batch_plan.first_seed}; variation n of a prompt uses the first seed + n.")
    if st.button("Run batch", type="primary", icon=":material/play_arrow:", disabled=not ready, key="batch.run"):
        if ready:  # a click is only acted on with the plan as it is now
            _submit(conn, batch_plan, title)


def _axes(models: list[str]) -> tuple[core.Axis, ...]:
    """Up to two swept parameters, each only among those every chosen model takes."""
    names = [name for name in catalog.shared_params(models) if name not in NOT_SWEPT
             and catalog.MODELS[models[0]].param(name).type not in ("image", "images")] if models else []
    options = [None, *names]
    label = lambda name: "None" if name is None else catalog.MODELS[models[0]].param(name).label  # noqa: E731
    axes: list[core.Axis] = []
    first, second = st.columns(2)
    for column, n, title in ((first, 1, "Sweep (columns)"), (second, 2, "Second sweep (rows)")):
        key = f"batch.axis{n}"
        if st.session_state.get(key) not in options:  # the models changed: the parameter may be gone
            st.session_state[key] = None
        if n == 2 and not axes:
            break
        with column:
            param = st.selectbox(title, options, key=key, format_func=label,
                                 help="A parameter to vary: one column (or row) of the sheet per value.")
            if param is None:
                continue
            raw = st.text_input(f"Values of {label(param)}", key=f"batch.values{n}", placeholder="e.g. 2, 3.5, 5",
                                help=f"Comma-separated. {catalog.MODELS[models[0]].param(param).range_text()}.")
            axes.append(core.Axis(param, tuple(v.strip() for v in raw.split(",") if v.strip())))
    return tuple(axes)


def _submit(conn: Connection, batch_plan: core.BatchPlan, title: str) -> None:
    try:
        batch_id = conn.batch_runner.submit(batch_plan, creator=current_user(), title=title)
    except (HistoryError, ValueError) as exc:
        message = exc.message if isinstance(exc, HistoryError) else str(exc)
        st.error(f"Not sent: {plain(message)}", icon=":material/error:")
        return
    st.session_state[SEED_KEY] = core.random_seed()  # the next batch gets new images
    st.query_params[BATCH_PARAM] = batch_id  # a link to share, and where the sheet is drawn
    st.rerun()


# ---- the contact sheet ----------------------------------------------------------------------


@dataclass(frozen=True)
class Tally:
    total: int
    sent: int
    succeeded: int
    failed: int  # not sent (refused, failed) or failed upstream
    unknown: int  # uncertain: may have been created (and billed), so not sent again by itself
    canceled: int
    pending: int  # not sent yet (pending or being sent)
    running: int  # sent, not ended

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.canceled + self.unknown


def tally(cells: list[core.Cell]) -> Tally:
    sent = [c for c in cells if c.state == core.SENT]
    status = [c.prediction_status for c in sent]
    return Tally(
        total=len(cells), sent=len(sent), succeeded=status.count(SUCCEEDED),
        failed=sum(c.state in (core.FAILED, core.REFUSED) for c in cells)
        + sum(s in TERMINAL and s not in (SUCCEEDED, STATUS_CANCELED) for s in status),
        unknown=sum(c.state == core.UNCERTAIN for c in cells),
        canceled=sum(c.state == core.CANCELED for c in cells) + status.count(STATUS_CANCELED),
        pending=sum(c.state in core.UNSENT for c in cells),
        running=sum(s not in TERMINAL for s in status))


def contact_sheet(conn: Connection, batch_id: str) -> None:
    """The batch of ?batch=: its header, Cancel and downloads, and the grid (live while it runs)."""
    if not _BATCH_ID.fullmatch(batch_id or ""):
        st.warning("This link does not name a batch.", icon=":material/link_off:")
        return
    found = conn.batches.get(batch_id)
    if found is None:
        st.warning("No batch with this id in this dashboard's history.", icon=":material/search_off:")
        return
    cells = conn.batches.cells(batch_id)
    live = _live(conn, found, cells)
    heading = found.title or (cells[0].row_label if cells else "Batch")
    st.subheader(plain(heading, 120))
    color, icon = _batch_style(found.state, live)
    who = f" · by {plain(found.creator, 80)}" if found.creator else ""
    cost = f" · estimated {prices.usd(found.estimated_usd)}" if found.estimated_usd is not None else ""
    with st.container(horizontal=True, vertical_alignment="center"):
        st.badge("running" if live and found.state == core.RUNNING else found.state, icon=icon, color=color)
        st.caption(f"{found.total:,} predictions · started {card.when(found.created_at)}{who}{cost}")
    if found.stop_note:
        st.warning(f"**Stopped:** {plain(found.stop_note)}", icon=":material/savings:")
    if notice := st.session_state.pop(NOTICE_KEY, None):
        text, icon = notice
        st.info(text, icon=icon)
    with st.container(horizontal=True):
        if live and conn.batch_runner is not None:
            if st.button("Cancel batch", icon=":material/stop_circle:", key="batch.cancel",
                         help="What has not been sent is never sent; running predictions are asked to stop."):
                _cancel(conn, batch_id)
        if not live and found.state != core.CANCELED and conn.batch_runner is not None:
            _send_again_buttons(conn, batch_id, cells)
        st.download_button("Download sheet (PNG)", data=lambda: sheet_png(conn, batch_id),
                           file_name=f"batch-{batch_id[:8]}.png", mime="image/png", icon=":material/grid_on:",
                           on_click="ignore", key="batch.png")
        _zip_buttons(conn, batch_id, cells)
        st.page_link(HISTORY_PAGE, label="Show in History", icon=":material/history:",
                     query_params={"batch_filter": batch_id}, help="This batch's predictions in the History table")
    if not live and found.state != core.CANCELED and conn.batch_runner is not None:
        _confirm_unknown(conn, batch_id, cells)
    st.fragment(_sheet_body, run_every=TICK_SECONDS if live else None)(conn, batch_id, live)


def _zip_buttons(conn: Connection, batch_id: str, cells: list[core.Cell]) -> None:
    stored = conn.store.stored_sizes([cell.prediction_id for cell in cells if cell.prediction_id])

    def build(part: range) -> bytes:  # the cells as they are at the click (the sheet may be live)
        return export.batch_zip(conn.store, [cell for cell in conn.batches.cells(batch_id) if cell.idx in part])

    zip_download(st, "Download all (ZIP)", [stored.get(cell.prediction_id, 0) for cell in cells], build,
                 file_name=f"batch-{batch_id[:8]}", key="batch.zip",
                 part_label=lambda part: f"cells {part.start + 1}–{part.stop}",
                 help="Every stored image, and cells.csv with each cell's exact input.")


def _cancel(conn: Connection, batch_id: str) -> None:
    try:
        result = conn.batch_runner.cancel(batch_id)
    except HistoryError as exc:
        st.error(f"Could not cancel: {plain(exc.message)}", icon=":material/error:")
        return
    parts = [f"{result.unsent:,} not yet sent will not be sent"]
    if result.asked:
        parts.append(f"{result.asked:,} running asked to stop")
    text = "**Batch canceled:** " + "; ".join(parts) + "."
    if result.problems:
        text += "  \n" + "  \n".join(plain(problem, 300) for problem in result.problems)
    st.session_state[NOTICE_KEY] = (text, ":material/cancel:")
    st.rerun()


def _send_again_buttons(conn: Connection, batch_id: str, cells: list[core.Cell]) -> None:
    """Once a batch has finished: send its unsent cells again (a spending limit since raised, a
    refusal since fixed), and, after a warning, the uncertain ones."""
    unsent = sum(cell.state in (core.FAILED, core.REFUSED) for cell in cells)
    unknown = sum(cell.state == core.UNCERTAIN for cell in cells)
    if unsent and st.button(f"Send {unsent:,} not sent again", icon=":material/replay:", key="batch.again",
                            help="The cells that failed to send or that a spending limit refused, once more "
                                 "with the same inputs and seeds. Each counts against the spending limit again."):
        _send_again(conn, batch_id, uncertain=False)
    if unknown and st.button(f"Send {unknown:,} unknown again…", icon=":material/help:", key="batch.again_unknown",
                             help="Cells whose create got no clear answer: they may exist (and be billed) already."):
        st.session_state[CONFIRM_KEY] = batch_id  # the warning below the buttons asks first


def _confirm_unknown(conn: Connection, batch_id: str, cells: list[core.Cell]) -> None:
    """The warning before uncertain cells are sent again: inline rather than a dialog, whose
    buttons a rerun of the page would lose."""
    count = sum(cell.state == core.UNCERTAIN for cell in cells)
    if st.session_state.get(CONFIRM_KEY) != batch_id or not count:
        return
    with st.container(border=True):
        they, them = ("they", "them") if count != 1 else ("it", "it")
        st.warning(f"The create of {count:,} cell{'s' if count != 1 else ''} got no clear answer, so {they} may "
                   f"have been made, **and billed**, already. Look for {them} in your CometAPI dashboard first: "
                   f"sending again may make and bill {them} twice.", icon=":material/warning:")
        with st.container(horizontal=True):
            if st.button("Send them again", icon=":material/replay:", type="primary", key="batch.again_unknown_confirm"):
                st.session_state.pop(CONFIRM_KEY, None)
                _send_again(conn, batch_id, uncertain=True)
            if st.button("Keep them as they are", key="batch.again_unknown_keep"):
                st.session_state.pop(CONFIRM_KEY, None)
                st.rerun()


def _send_again(conn: Connection, batch_id: str, *, uncertain: bool) -> None:
    try:
        count = conn.batch_runner.send_again(batch_id, uncertain=uncertain)
    except HistoryError as exc:
        st.error(f"Could not send again: {plain(exc.message)}", icon=":material/error:")
        return
    text = (f"**Sending {count:,} cell{'s' if count != 1 else ''} again.**" if count
            else "Nothing was sent again: the batch is running again already.")
    st.session_state[NOTICE_KEY] = (text, ":material/replay:")
    st.rerun()


def _live(conn: Connection, found: core.Batch, cells: list[core.Cell]) -> bool:
    """Something on the sheet may still change: cells to send, predictions running, or a
    success whose image the tracker is still saving."""
    if found.active:
        return True
    for cell in cells:
        if cell.state != core.SENT:
            continue
        if cell.prediction_status not in TERMINAL:
            return True
        if cell.prediction_status == SUCCEEDED and _thumbnail(conn, cell.prediction_id) is None:
            record = conn.store.get(cell.prediction_id)
            if record is not None and record.tracking == "active":
                return True
    return False


def _sheet_body(conn: Connection, batch_id: str, was_live: bool) -> None:
    try:
        found = conn.batches.get(batch_id)
        cells = conn.batches.cells(batch_id)
    except HistoryUnavailable:  # the next tick tries again
        st.caption(":material/cloud_off: History unavailable, retrying…")
        return
    if found is None:
        return
    counts = tally(cells)
    parts = [f"{counts.done:,} of {counts.total:,} done", f"{counts.sent:,} sent", f"{counts.succeeded:,} succeeded",
             f"{counts.failed:,} failed", f"{counts.pending:,} pending"]
    if counts.canceled:
        parts.append(f"{counts.canceled:,} canceled")
    if counts.unknown:
        parts.append(f"{counts.unknown:,} unknown")
    st.progress(counts.done / counts.total if counts.total else 1.0, text=" · ".join(parts))
    _grid(conn, cells)
    if was_live and not _live(conn, found, cells):
        st.rerun()  # a full rerun draws the sheet without its timer (and without Cancel)


def _grid(conn: Connection, cells: list[core.Cell]) -> None:
    rows = {cell.row: cell.row_label for cell in cells}
    columns = {cell.col: cell.col_label for cell in cells}
    by_place = {(cell.row, cell.col): cell for cell in cells}
    widths = [1.4] + [1] * len(columns)
    header = st.columns(widths, vertical_alignment="bottom")
    for place, col in zip(header[1:], sorted(columns), strict=True):
        place.markdown(f"**{plain(columns[col], 120)}**")
    for row in sorted(rows):
        line = st.columns(widths)
        line[0].markdown(plain(rows[row], 300))
        for place, col in zip(line[1:], sorted(columns), strict=True):
            if (cell := by_place.get((row, col))) is not None:
                with place:
                    _cell(conn, cell)


def _cell(conn: Connection, cell: core.Cell) -> None:
    if cell.state == core.SENT and cell.prediction_id:
        status = cell.prediction_status
        if status == SUCCEEDED and (thumbnail := _thumbnail(conn, cell.prediction_id)) is not None:
            st.image(thumbnail, width="stretch")
        elif status == SUCCEEDED:
            st.caption(":material/downloading: Saving the image…")
        elif status in TERMINAL:
            record = conn.store.get(cell.prediction_id)
            error = record.error if record and record.error else ""
            st.caption(f"{style(status)[1]} {plain(status.capitalize(), 24)}"
                       + (f": {plain(card.trimmed(error, ERROR_CHARS))}" if error else ""))
        else:
            shown = status or "sent"
            st.caption(f"{style(shown)[1]} {plain(shown.capitalize(), 24)}…")
        st.page_link(HISTORY_PAGE, label="Open", icon=":material/open_in_new:",
                     query_params={"id": cell.prediction_id},
                     help=f"Open in History: prediction {card.shown_id(cell.prediction_id)}")
        return
    label, icon = _CELL_STATES.get(cell.state, (cell.state, ":material/help:"))
    line = f"{icon} {plain(label, 24)}"
    if cell.error and cell.state != core.CANCELED:
        line += f": {plain(card.trimmed(cell.error, ERROR_CHARS))}"
    st.caption(line)


_CELL_STATES = {
    core.PENDING: ("Pending", ":material/schedule:"),
    core.SENDING: ("Sending…", ":material/upload:"),
    core.FAILED: ("Failed", ":material/error:"),
    core.REFUSED: ("Not sent", ":material/block:"),
    core.CANCELED: ("Canceled", ":material/cancel:"),
    core.UNCERTAIN: ("Unknown", ":material/help:"),  # may have been created: the note says why
}


def _batch_style(state: str, live: bool) -> tuple[str, str]:
    if state == core.CANCELED:
        return "gray", ":material/cancel:"
    if live:
        return "blue", ":material/autorenew:"
    return "green", ":material/check_circle:"


def _thumbnail(conn: Connection, prediction_id: str) -> bytes | None:
    try:
        return _stored_thumbnail(conn.store, prediction_id)
    except LookupError:
        return None


@st.cache_data(max_entries=2000, show_spinner=False)
def _stored_thumbnail(_store, prediction_id: str) -> bytes:
    """A result's thumbnail (kept in the database); cached, since a stored one never changes."""
    found = _store.thumbnail(prediction_id, 0)
    if found is None:
        raise LookupError(prediction_id)  # never cached: the next tick looks again
    return found[1]


def sheet_png(conn: Connection, batch_id: str) -> bytes:
    """The sheet as one image: each cell's thumbnail, or its state where it has none."""
    found = conn.batches.get(batch_id)
    cells = conn.batches.cells(batch_id)
    rows = {cell.row: cell.row_label for cell in cells}
    columns = {cell.col: cell.col_label for cell in cells}
    tiles = {}
    for cell in cells:
        image = _thumbnail(conn, cell.prediction_id) if cell.prediction_status == SUCCEEDED else None
        text = cell.prediction_status or _CELL_STATES.get(cell.state, (cell.state, ""))[0]
        tiles[(cell.row, cell.col)] = sheet.Tile(image=image, text=str(text).capitalize())
    title = found.title if found and found.title else ""
    return sheet.png([rows[r] for r in sorted(rows)], [columns[c] for c in sorted(columns)], tiles, title=title)


# ---- recent batches -------------------------------------------------------------------------


def recent(conn: Connection) -> None:
    found = conn.batches.recent(RECENT)
    if not found:
        st.caption("No batches yet.")
        return
    for item in found:
        name = item.title or _first_prompt(item)
        state = "running" if item.active else item.state
        st.page_link(BATCH_PAGE, label=plain(f"{name} · {item.total:,} predictions · {state}", 200),
                     icon=_batch_style(item.state, item.active)[1], query_params={BATCH_PARAM: item.id},
                     help=f"Started {card.when(item.created_at)}; {item.counts.get(core.SENT, 0):,} sent")


def _first_prompt(item: core.Batch) -> str:
    prompts = item.spec.get("prompts") or []
    first = prompts[0] if prompts else ""
    if isinstance(first, dict):
        first = first.get("prompt", "")
    return card.trimmed(str(first), 60) or "Batch"
