"""What leaves the dashboard as files: the history as CSV, stored images as a ZIP, and the
names downloaded images get (from the prompt, safe on every OS).

Neither ever holds the key: the store never has it (rows keep id, model, input, status, timings
and creator only), and these read nothing else."""

from __future__ import annotations

import hashlib
import io
import json
import mimetypes
import re
import unicodedata
import zipfile
from collections.abc import Sequence

import pandas as pd

from .media import MediaUnavailable
from .prediction import is_valid_id
from .store import Record, Store

# A cell starting with one of these runs as a formula where the CSV is opened in a spreadsheet.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# The most a spreadsheet cell holds (Excel, LibreOffice): a longer one (a megabyte of status an
# older release stored) is cut to it, ending in "…", rather than spilling or failing to open.
CELL_CHARS = 32_767
# A downloaded file is named from its prompt: a few words, enough to tell files apart in a folder.
SLUG_CHARS = 40
SHORT_ID_CHARS = 8  # the id's start: unique enough beside the prompt's words, short to read
_SLUG_SCAN_CHARS = 1_000  # the words that can fit come from the prompt's start: read no more


def extension(content_type: str) -> str:
    """The file extension for a stored output's content type (".jpg", not ".jpe", for JPEG)."""
    return {"image/jpeg": ".jpg"}.get(content_type) or mimetypes.guess_extension(content_type) or ".img"


def input_json(record: Record) -> str:
    """The request body that made this prediction, as the API received it."""
    return json.dumps({"input": record.input}, indent=2, ensure_ascii=False)


def spreadsheet_csv(frame: pd.DataFrame) -> str:
    """The rows as CSV. Prompts are anyone's text: one starting with =, +, -, @ (or a tab or
    carriage return) would run as a formula where the file is opened in a spreadsheet, so such
    cells get a leading apostrophe (the usual CSV-injection guard), and a cell longer than a
    spreadsheet holds is cut to CELL_CHARS; nothing else is changed."""
    def neutral(value: object) -> object:
        if not isinstance(value, str):
            return value
        if value.startswith(_FORMULA_STARTS):
            value = "'" + value
        return value if len(value) <= CELL_CHARS else value[: CELL_CHARS - 1] + "…"

    safe = frame.copy()
    for column in safe.columns:
        if safe[column].dtype == object or pd.api.types.is_string_dtype(safe[column]):
            safe[column] = safe[column].map(neutral)
    # CRLF rows (RFC 4180): the csv writer then quotes every cell holding a CR or LF. With bare
    # LF rows a CR stays unquoted, and spreadsheets that break rows at it would read what follows
    # as a new row, whose first cell the guard above never saw.
    return safe.to_csv(index=False, lineterminator="\r\n")


# The upstream's output links stop working an hour after the run: the column's name says so.
UPSTREAM_URLS_COLUMN = "upstream_urls_expire_after_1h"
_TIME_COLUMNS = ("created_at", "started_at", "completed_at")


def history_csv(frame: pd.DataFrame) -> str:
    """The History export (Store.export_rows) as CSV for people: times as ISO 8601 UTC to the
    millisecond (stored as float seconds, they would print as 05:26:20.164999962+00:00), run
    times in seconds to the millisecond, `stored_outputs` naming each stored image as the ZIP
    export does (<id>/<idx>.<ext>, the copy this dashboard keeps), and the upstream links under
    a name that says they expire."""
    table = frame.copy()
    for name in _TIME_COLUMNS:  # %f is microseconds: three digits are cut (NaT stays empty)
        table[name] = table[name].dt.round("ms").dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3] + "Z"
    table["run_time"] = table["run_time"].round(3)
    table["stored_outputs"] = [
        json.dumps([zip_member(prediction_id, idx, content_type) for idx, content_type in stored])
        for prediction_id, stored in zip(table["id"], table["stored_outputs"])
    ]
    table = table.rename(columns={"output_urls": UPSTREAM_URLS_COLUMN})
    # The stored copies beside the output count; the links that expire last.
    ordered = [c for c in table.columns if c not in ("stored_outputs", UPSTREAM_URLS_COLUMN)]
    ordered.insert(ordered.index("output_count") + 1, "stored_outputs")
    return spreadsheet_csv(table[[*ordered, UPSTREAM_URLS_COLUMN]])


def zip_member(prediction_id: str, idx: int, content_type: str) -> str:
    """Where an output sits in the images ZIP (images_zip): its prediction's folder, idx.ext."""
    return f"{folder_name(prediction_id)}/{int(idx)}{extension(content_type)}"


def folder_name(prediction_id: str) -> str:
    """The ZIP folder for a prediction: its id, which is safe as a name when valid; a stored row
    may hold any text (older releases), and "../x" must not climb out where the ZIP is unpacked."""
    if is_valid_id(prediction_id):
        return prediction_id
    return "id-" + hashlib.sha256(str(prediction_id).encode("utf-8", "replace")).hexdigest()[:16]


def slug(text: str, limit: int = SLUG_CHARS) -> str:
    """The prompt's first words as lower-case ASCII letters and digits joined by "-", at most
    `limit` characters and cut between words; "" when nothing usable is left. Accents are
    dropped ("é" -> "e"), everything else (/, .., emoji, \\, :, control characters) separates
    words, so the result is a safe file name part on every OS."""
    folded = unicodedata.normalize("NFKD", str(text)[:_SLUG_SCAN_CHARS]).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", folded.lower())
    shown = ""
    for word in words:
        longer = f"{shown}-{word}" if shown else word
        if len(longer) > limit:
            break
        shown = longer
    return shown or (words[0][:limit] if words else "")  # one very long word: its start


def base_name(prompt: str, prediction_id: str) -> str:
    """A prediction's files' common name: prompt words plus the id's start; the (safe) id alone
    when the prompt has no usable characters."""
    words = slug(prompt)
    if not words:
        return folder_name(prediction_id)
    short = prediction_id[:SHORT_ID_CHARS] if is_valid_id(prediction_id) else folder_name(prediction_id)
    return f"{words}-{short}"


def output_file_name(prompt: str, prediction_id: str, idx: int, content_type: str) -> str:
    """e.g. "red-fox-in-snow-q4chw5re-0.webp": no path separators or reserved characters, never
    starting with "-" or ".", at most about 100 characters."""
    return f"{base_name(prompt, prediction_id)}-{int(idx)}{extension(content_type)}"


def outputs_zip(store: Store, prediction_id: str) -> bytes:
    """One prediction's stored images, named as their single downloads are ("Download all")."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # images are compressed already
        record = store.get(prediction_id)
        missing: list[str] = []
        for output in record.outputs if record else []:
            stored = _readable(store, record.id, output.idx, missing)
            if stored:
                archive.writestr(output_file_name(record.prompt, record.id, output.idx, stored[0]), stored[1])
        _note_missing(archive, missing)
    return buffer.getvalue()


def images_zip(store: Store, prediction_ids: list[str]) -> bytes:
    """The stored images of these predictions, plus each one's input as JSON, one folder each."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # images are compressed already
        missing: list[str] = []
        for prediction_id in prediction_ids:
            record = store.get(prediction_id)
            if record is None:
                continue
            folder = folder_name(record.id)
            archive.writestr(f"{folder}/input.json", input_json(record))
            for output in record.outputs:
                stored = _readable(store, record.id, output.idx, missing)
                if stored:
                    archive.writestr(zip_member(record.id, output.idx, stored[0]), stored[1])
        _note_missing(archive, missing)
    return buffer.getvalue()


MISSING_NOTE = "MISSING.txt"


def _readable(store: Store, prediction_id: str, idx: int, missing: list[str]) -> tuple[str, bytes] | None:
    """An image for a ZIP; one the media store cannot give right now is listed, not fatal."""
    try:
        return store.output_bytes(prediction_id, idx)
    except MediaUnavailable as exc:
        missing.append(f"{prediction_id} image {idx + 1}: {exc}")
        return None


def _note_missing(archive: zipfile.ZipFile, missing: list[str]) -> None:
    if missing:
        archive.writestr(MISSING_NOTE, "These images could not be read from the media store just now "
                         "(they are kept; download again later):\n" + "\n".join(missing) + "\n")


BATCH_CELLS_CSV = "cells.csv"
# A ZIP is built in the server's memory when its button is clicked (Streamlit serves bytes): a
# 200-cell batch of multi-image PNGs could pass a gigabyte, beyond a hosted app's memory. Larger
# batches download in parts of about this size.
ZIP_PART_BYTES = 256 * 2**20


def zip_parts(sizes: Sequence[int], limit: int | None = None) -> list[range]:
    """Consecutive runs of positions whose `sizes` add up to at most `limit` (ZIP_PART_BYTES)
    each; an item larger than the limit is a part of its own. One part (or none) for a small
    batch."""
    limit = ZIP_PART_BYTES if limit is None else limit
    parts: list[range] = []
    start, total = 0, 0
    for position, size in enumerate(sizes):
        if position > start and total + size > limit:
            parts.append(range(start, position))
            start, total = position, 0
        total += max(size, 0)
    if start < len(sizes):
        parts.append(range(start, len(sizes)))
    return parts


def batch_zip(store: Store, cells: list) -> bytes:
    """A batch's stored images (one folder per prediction, as images_zip) and cells.csv: each
    cell's place in the sheet, its state, its prediction, and exactly the input it sent (so any
    cell can be made again). `cells`: comet.batch.Cell, in order."""
    buffer = io.BytesIO()
    rows = []
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # images are compressed already
        missing: list[str] = []
        for cell in cells:
            stored_names: list[str] = []
            record = store.get(cell.prediction_id) if cell.prediction_id else None
            for output in record.outputs if record else []:
                stored = _readable(store, record.id, output.idx, missing)
                if stored:
                    name = zip_member(record.id, output.idx, stored[0])
                    archive.writestr(name, stored[1])
                    stored_names.append(name)
            rows.append({
                "row": cell.row, "column": cell.col, "row_label": cell.row_label, "column_label": cell.col_label,
                "model": cell.model, "seed": "" if cell.seed is None else cell.seed,
                "sweep": json.dumps(cell.sweep, ensure_ascii=False),
                "state": cell.state, "prediction_id": cell.prediction_id or "",
                "status": record.status if record else (cell.prediction_status or ""),
                "error": cell.error or (record.error if record and record.error else ""),
                "stored_outputs": json.dumps(stored_names),
                "input": json.dumps(cell.input, ensure_ascii=False),
            })
        columns = ["row", "column", "row_label", "column_label", "model", "seed", "sweep", "state",
                   "prediction_id", "status", "error", "stored_outputs", "input"]
        archive.writestr(BATCH_CELLS_CSV, spreadsheet_csv(pd.DataFrame(rows, columns=columns)))
        _note_missing(archive, missing)
    return buffer.getvalue()
