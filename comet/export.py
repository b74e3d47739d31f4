"""What leaves the dashboard as files: the history as CSV, and stored images as a ZIP.

Neither ever holds the key: the store never has it (rows keep id, model, input, status, timings
and creator only), and these read nothing else."""

from __future__ import annotations

import hashlib
import io
import json
import mimetypes
import zipfile

import pandas as pd

from .prediction import is_valid_id
from .store import Record, Store

# A cell starting with one of these runs as a formula where the CSV is opened in a spreadsheet.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# The most a spreadsheet cell holds (Excel, LibreOffice): a longer one (a megabyte of status an
# older release stored) is cut to it, ending in "…", rather than spilling or failing to open.
CELL_CHARS = 32_767


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


def folder_name(prediction_id: str) -> str:
    """The ZIP folder for a prediction: its id, which is safe as a name when valid; a stored row
    may hold any text (older releases), and "../x" must not climb out where the ZIP is unpacked."""
    if is_valid_id(prediction_id):
        return prediction_id
    return "id-" + hashlib.sha256(str(prediction_id).encode("utf-8", "replace")).hexdigest()[:16]


def images_zip(store: Store, prediction_ids: list[str]) -> bytes:
    """The stored images of these predictions, plus each one's input as JSON, one folder each."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # images are compressed already
        for prediction_id in prediction_ids:
            record = store.get(prediction_id)
            if record is None:
                continue
            folder = folder_name(record.id)
            archive.writestr(f"{folder}/input.json", input_json(record))
            for output in record.outputs:
                stored = store.output_bytes(record.id, output.idx)
                if stored:
                    archive.writestr(f"{folder}/{output.idx}{extension(stored[0])}", stored[1])
    return buffer.getvalue()
