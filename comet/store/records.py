"""Records: one prediction's row, typed, and the writes that keep it up to date.

Writes that take `owner` are the tracker's: they apply only while that owner still holds the
prediction's lease (and it is still tracked), release it, and return whether they applied.
Nothing here ever sees the API key: the stored input is the model input only.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from ..images import THUMBNAIL_TYPE, make_thumbnail
from ..media import MediaStore, MediaUnavailable, StoredFile, source_label
from ..prediction import STARTING, SUCCEEDED, TERMINAL, Prediction, is_valid_id, progress_from_logs
from . import values as v
from .db import Database
from .schema import (
    ACTIVE,
    BATCH_ID_CHARS,
    CREATOR_CHARS,
    DONE,
    GAVE_UP,
    LOGS_TAIL_CHARS,
    MODEL_CHARS,
    STATUS_CHARS,
    TEXT_CHARS,
    outputs,
    predictions,
)

# Where a row's own times are all unknown, Records say 1970-01-01: stable (the row does not move
# between reads), plainly "no date" to a reader, and old enough that the tracker gives up on it
# rather than polling a prediction that looks newly made on every read (as "now" would).
UNKNOWN_TIME = datetime.fromtimestamp(0, UTC)
_log = logging.getLogger("comet.store")
_TIME_COLUMNS = ("created_at", "started_at", "completed_at", "recorded_at", "updated_at",
                 "last_polled_at", "next_poll_at", "lease_until")


@dataclass(frozen=True)
class OutputInfo:
    idx: int
    content_type: str
    size: int
    pruned_at: datetime | None = None  # the full image was removed by retention (thumbnail kept)


@dataclass(frozen=True)
class Record:
    """One row of history, typed: every column of `predictions` plus the stored outputs."""

    id: str
    model: str
    status: str
    input: dict[str, Any]
    prompt: str
    error: str | None
    logs_tail: str
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    run_time: float | None
    creator: str | None
    recorded_at: datetime
    updated_at: datetime
    last_polled_at: datetime | None
    next_poll_at: datetime | None
    poll_failures: int
    tracking: str
    note: str | None
    output_urls: list[str]
    data_removed: bool
    output_count: int
    lease_owner: str | None
    lease_until: datetime | None
    parent_id: str | None  # the prediction whose output this one edited
    parent_output: int | None  # that output's idx
    batch_id: str | None  # the batch that sent it
    outputs: list[OutputInfo]

    @property
    def is_terminal(self) -> bool:
        # Same rule as Prediction.is_terminal: `aborted` counts, and so does an error.
        return self.status in TERMINAL or self.error is not None

    @property
    def progress(self) -> float | None:
        return 1.0 if self.status == SUCCEEDED else progress_from_logs(self.logs_tail)


class Records(Database):
    """Recording predictions as the API describes them, and reading one back."""

    media: MediaStore | None  # where new output images go (None: inside the database)

    def record(self, prediction: Prediction, *, creator: str | None = None,
               parent: tuple[str, int] | None = None, batch_id: str | None = None) -> None:
        """Remember a prediction the moment its id is known. A known id is updated instead, and
        if its tracking had stopped (gave_up) it is tracked again: asking to track an id is how
        a user revives one (its creator stays the first one recorded).

        `parent`: (prediction id, output idx) of the stored image this one edited; `batch_id`: the
        batch that sent it. Both are kept as first recorded: a later record or update of the same
        id fills them only where none was known. A prediction is never its own parent."""
        now = time.time()
        values = prediction_values(prediction)
        values.setdefault("created_at", now)  # the API normally sends it; ordering needs one
        lineage = lineage_values(prediction.id, parent, batch_id)
        row = {"id": prediction.id, "creator": v.storable(creator, CREATOR_CHARS), "recorded_at": now,
               "updated_at": now, "next_poll_at": now, **values, **lineage}
        try:
            self._write(lambda conn: conn.execute(sa.insert(predictions).values(row)))
        except IntegrityError:
            self.update(prediction, revive=True)
            if lineage:
                self._fill_lineage(prediction.id, lineage)

    def _fill_lineage(self, prediction_id: str, lineage: dict[str, Any]) -> None:
        """Parent and batch where the row has none yet (what was recorded first stays)."""
        p = predictions.c
        values: dict[str, Any] = {}
        if "parent_id" in lineage:
            unset = p.parent_id.is_(None)
            values["parent_id"] = sa.case((unset, lineage["parent_id"]), else_=p.parent_id)
            values["parent_output"] = sa.case((unset, lineage["parent_output"]), else_=p.parent_output)
        if "batch_id" in lineage:
            values["batch_id"] = sa.func.coalesce(p.batch_id, lineage["batch_id"])
        self._write(lambda conn: conn.execute(
            sa.update(predictions).where(p.id == prediction_id).values(values)))

    def update(
        self,
        prediction: Prediction,
        *,
        next_poll_at: float | None = None,
        note: str | None = None,
        owner: str | None = None,
        keep_lease: bool = False,
        revive: bool = False,
    ) -> bool:
        """Store what a fresh answer says. A note means this poll had a problem: it is shown to
        the user and counts as a failure (for backoff); no note clears the last problem.

        Tracking ends ("done") on a final status, except a success whose outputs are not stored
        yet: that stays active until save_outputs (or give_up). `revive` puts a prediction whose
        tracking stopped (gave_up) back under the trackers, due at once and unleased; one that
        is done stays done."""
        p = predictions.c
        now = time.time()
        values: dict[str, Any] = {
            **prediction_values(prediction),
            "updated_at": now,
            "last_polled_at": now,
            "note": v.storable(note, TEXT_CHARS),
            "poll_failures": 0 if note is None else p.poll_failures + 1,
        }
        if next_poll_at is not None:
            values["next_poll_at"] = next_poll_at
        tracking: sa.ColumnElement = p.tracking
        if revive:
            stopped = p.tracking == GAVE_UP
            tracking = sa.case((stopped, ACTIVE), else_=p.tracking)
            values["next_poll_at"] = sa.case((stopped, now), else_=values.get("next_poll_at", p.next_poll_at))
            # A stopped row holds no live claim (give_up releases it): clear any leftover.
            values["lease_owner"] = sa.case((stopped, None), else_=p.lease_owner)
            values["lease_until"] = sa.case((stopped, None), else_=p.lease_until)
        if prediction.status == SUCCEEDED:
            values["tracking"] = sa.case((p.output_count > 0, DONE), else_=tracking)
        elif prediction.is_terminal:
            values["tracking"] = DONE
        elif revive:
            values["tracking"] = tracking
        return self._change(prediction.id, values, owner, keep_lease)

    def save_outputs(
        self,
        prediction_id: str,
        files: list[StoredFile],
        *,
        latest: Prediction | None = None,
        owner: str | None = None,
    ) -> bool:
        """Store every output file with its thumbnail and end tracking, all in one transaction,
        with `latest` (the answer that listed the files) if given. Exactly once: if outputs are
        already stored (another tracker got there first) they are kept and these are dropped.
        Returns whether these files were stored. Not fenced by `owner`: storing the same outputs
        is right whoever downloaded them; a lease held by `owner` is released."""
        rows = [
            {"prediction_id": prediction_id, "idx": idx, "content_type": file.content_type,
             "size": len(file.data), "thumbnail": make_thumbnail(file.data),
             "source_url": source_label(file.source_url), **self._placed(file.data, file.content_type)}
            for idx, file in enumerate(files)
        ]  # thumbnails and media files are made before the transaction: the write lock is held briefly
        p, o = predictions.c, outputs.c

        def work(conn: sa.Connection) -> bool:
            # Lock the prediction's row (PostgreSQL; SQLite's write lock already serialises), so
            # two savers of one prediction take turns and the second sees the first's outputs.
            found = conn.execute(sa.select(p.id).where(p.id == prediction_id).with_for_update()).first()
            if found is None:
                return False
            stored = conn.scalar(sa.select(sa.func.count()).select_from(outputs)
                                 .where(o.prediction_id == prediction_id))
            now = time.time()
            values: dict[str, Any] = {"tracking": DONE, "note": None, "updated_at": now}
            if latest is not None:
                values |= {**prediction_values(latest), "last_polled_at": now, "poll_failures": 0}
            if owner is not None:
                values |= released(owner)
            if not stored:
                values["output_count"] = len(rows)
            conn.execute(sa.update(predictions).where(p.id == prediction_id).values(values))
            if not stored and rows:
                conn.execute(sa.insert(outputs), rows)
            return not stored

        return self._write(work)

    def mark_poll_failure(
        self, prediction_id: str, note: str, next_poll_at: float, *, owner: str | None = None,
        keep_lease: bool = False,
    ) -> bool:
        return self._change(prediction_id, {
            "note": v.storable(note, TEXT_CHARS), "next_poll_at": next_poll_at, "last_polled_at": time.time(),
            "poll_failures": predictions.c.poll_failures + 1, "updated_at": time.time()}, owner, keep_lease)

    def give_up(
        self, prediction_id: str, note: str, *, latest: Prediction | None = None, owner: str | None = None
    ) -> bool:
        """Stop tracking and say why, keeping `latest` (the last answer) if there is one."""
        now = time.time()
        values: dict[str, Any] = {"tracking": GAVE_UP, "note": v.storable(note, TEXT_CHARS), "updated_at": now}
        if latest is not None:
            values = {**prediction_values(latest), "last_polled_at": now, "poll_failures": 0, **values}
        return self._change(prediction_id, values, owner)

    def get(self, prediction_id: str) -> Record | None:
        found = self._read(lambda conn: read_records(
            conn, sa.select(predictions).where(predictions.c.id == prediction_id)))
        return found[0] if found else None

    def output_bytes(self, prediction_id: str, idx: int) -> tuple[str, bytes] | None:
        """The stored image, from the database or the media store; None if it is not there (a
        media file that was deleted, or a store configured without the folder it went to).
        MediaUnavailable when the media store cannot be read just now."""
        o = outputs.c
        row = self._output_row(prediction_id, idx, o.content_type, o.data, o.media_key, o.pruned_at)
        if row is None or row.pruned_at is not None:
            return None
        if row.media_key is None:
            return row.content_type, row.data
        data = self.media.get(row.media_key) if self.media is not None else None
        return (row.content_type, data) if data is not None else None

    def thumbnail(self, prediction_id: str, idx: int) -> tuple[str, bytes] | None:
        row = self._output_row(prediction_id, idx, outputs.c.thumbnail)
        return (THUMBNAIL_TYPE, row.thumbnail) if row and row.thumbnail else None

    def _placed(self, data: bytes, content_type: str) -> dict[str, Any]:
        """The columns that keep an image: its bytes, or its media key (and no bytes). When the
        media store cannot take it just now (a full disk, a bucket that does not answer), the
        image is kept in the database instead, never dropped; move_media takes it out later."""
        if self.media is None:
            return {"data": data, "media_key": None}
        try:
            return {"data": b"", "media_key": self.media.put(data, content_type)}
        except MediaUnavailable as exc:
            _log.warning("image kept in the database for now: %s", exc)
            return {"data": data, "media_key": None}

    def _change(
        self, prediction_id: str, values: dict[str, Any], owner: str | None, keep_lease: bool = False
    ) -> bool:
        """Update one prediction; with `owner`, only while that owner holds its lease and it is
        still tracked (a cancel through the tracker may have ended it meanwhile), releasing the lease
        in the same statement unless `keep_lease`. Returns whether a row was changed."""
        p = predictions.c
        query = sa.update(predictions).where(p.id == prediction_id)
        if owner is not None:
            query = query.where(p.lease_owner == owner, p.tracking == ACTIVE)
            if not keep_lease:
                values = {**values, **released(owner)}
        return self._write(lambda conn: conn.execute(query.values(values)).rowcount > 0)

    def _output_row(self, prediction_id: str, idx: int, *columns: sa.ColumnElement) -> sa.Row | None:
        o = outputs.c
        query = sa.select(*columns).where(o.prediction_id == prediction_id, o.idx == idx)
        return self._read(lambda conn: conn.execute(query).first())


def read_records(conn: sa.Connection, query: sa.Select) -> list[Record]:
    """The rows `query` selects from `predictions`, as Records with their outputs listed."""
    rows = conn.execute(query).all()
    infos: dict[str, list[OutputInfo]] = {row.id: [] for row in rows}
    if infos:
        o = outputs.c
        found = conn.execute(sa.select(o.prediction_id, o.idx, o.content_type, o.size, o.pruned_at)
                             .where(o.prediction_id.in_(list(infos))).order_by(o.prediction_id, o.idx))
        for out in found:
            infos[out.prediction_id].append(
                OutputInfo(out.idx, out.content_type, out.size, v.utc_datetime(out.pruned_at)))
    return [_record(row._mapping, infos[row.id]) for row in rows]


def released(owner: str) -> dict[str, Any]:
    """Values that clear a lease, if `owner` holds it (a no-op otherwise)."""
    p = predictions.c
    mine = p.lease_owner == owner
    return {"lease_owner": sa.case((mine, None), else_=p.lease_owner),
            "lease_until": sa.case((mine, None), else_=p.lease_until)}


def prediction_values(prediction: Prediction) -> dict[str, Any]:
    """Columns an API answer fills. Fields the answer leaves empty are omitted, so a thin answer
    (for example `output: null` once the files expired) never erases what is already known."""
    values = {
        "model": v.storable(prediction.model, MODEL_CHARS),
        "input": json.dumps(prediction.input) if prediction.input else None,
        "prompt": v.storable(prediction.prompt),
        "error": v.storable(prediction.error, TEXT_CHARS),
        "logs_tail": v.storable(prediction.logs[-LOGS_TAIL_CHARS:]),
        "created_at": v.epoch(prediction.created_at),
        "started_at": v.epoch(prediction.started_at),
        "completed_at": v.epoch(prediction.completed_at),
        "run_time": v.duration(prediction.run_time),
        "output_urls": json.dumps([source_label(u) for u in prediction.output]) if prediction.output else None,
    }
    values = {name: value for name, value in values.items() if value not in (None, "")}
    return {**values, "status": v.storable(prediction.status, STATUS_CHARS) or STARTING,
            "data_removed": bool(prediction.data_removed)}


def lineage_values(prediction_id: str, parent: tuple[str, int] | None, batch_id: str | None) -> dict[str, Any]:
    """The lineage columns to record: a parent that is a valid id other than the prediction's own
    (a prediction cannot edit itself), its output idx when it is a whole number from 0, and a
    batch id that fits its column; anything else is left out."""
    values: dict[str, Any] = {}
    if parent is not None:
        parent_id, output = parent
        if is_valid_id(parent_id) and parent_id != prediction_id:
            values["parent_id"] = parent_id
            valid = isinstance(output, int) and not isinstance(output, bool) and 0 <= output < 2**31
            values["parent_output"] = output if valid else None
    if batch_id and len(batch_id) <= BATCH_ID_CHARS:
        values["batch_id"] = v.storable(batch_id, BATCH_ID_CHARS)
    return values


def _record(row: Any, outputs_info: list[OutputInfo]) -> Record:
    """A row as a Record, whatever it holds: a value no view could show reads as unknown (times
    None, run time None, input {}, links []), and text is cut to what its column allows."""
    values = dict(row)
    for name in _TIME_COLUMNS:
        values[name] = v.utc_datetime(values[name])
    # The times a Record always has: the first known of the three, else UNKNOWN_TIME.
    known = [values[name] for name in ("created_at", "recorded_at", "updated_at") if values[name] is not None]
    for name in ("created_at", "recorded_at", "updated_at"):
        values[name] = values[name] or (known[0] if known else UNKNOWN_TIME)
    values["model"] = v.clipped(values["model"], MODEL_CHARS) or ""
    values["status"] = v.clipped(values["status"], STATUS_CHARS) or ""
    values["prompt"] = "" if values["prompt"] is None else str(values["prompt"])
    values["error"] = v.clipped(values["error"], TEXT_CHARS)
    values["note"] = v.clipped(values["note"], TEXT_CHARS)
    values["creator"] = v.clipped(values["creator"], CREATOR_CHARS)
    values["logs_tail"] = str(values["logs_tail"] or "")[-LOGS_TAIL_CHARS:]
    values["run_time"] = v.duration(values["run_time"])
    values["input"] = v.json_value(values["input"], dict)
    values["output_urls"] = [url for url in v.json_value(values["output_urls"], list) if isinstance(url, str)]
    values["data_removed"] = bool(values["data_removed"])
    values["poll_failures"] = v.count(values["poll_failures"])
    values["output_count"] = v.count(values["output_count"])
    values["parent_id"] = values["parent_id"] if is_valid_id(values["parent_id"]) else None
    values["parent_output"] = v.index(values["parent_output"])
    values["batch_id"] = v.clipped(values["batch_id"], BATCH_ID_CHARS)
    return Record(**values, outputs=outputs_info)
