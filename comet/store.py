"""History: every prediction this app has seen, and its output files.

The API has no list route and deletes output files an hour after a run, so this store is the
team's only record and keeps the images themselves. SQLAlchemy Core with portable types and
queries: the default SQLite file can be swapped for PostgreSQL (COMET_DATABASE_URL) without
touching callers. Times are stored as float epoch seconds (UTC); arguments such as `next_poll_at`
take the same unit (the tracker's clock), and Records and frames hand them back as aware UTC
datetimes. Nothing here ever sees the API key: the stored input is the model input only.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

import pandas as pd
import sqlalchemy as sa
from PIL import Image
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.schema import CreateIndex, CreateTable

from .config import Settings
from .fetch import StoredFile, source_label
from .prediction import SUCCEEDED, TERMINAL, Prediction, progress_from_logs

SCHEMA_VERSION = 1
LOGS_TAIL_CHARS = 4096
THUMBNAIL_SIDE = 128
THUMBNAIL_TYPE = "image/jpeg"
ACTIVE, DONE, GAVE_UP = "active", "done", "gave_up"
PAGE_COLUMNS = ["id", "model", "status", "prompt", "created", "run_time", "creator", "outputs", "thumbnail"]

_WRITE_ATTEMPTS = 5
_log = logging.getLogger("comet.store")
_T = TypeVar("_T")

metadata = sa.MetaData()

meta = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("model", sa.String(200), nullable=False, default=""),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("input", sa.Text, nullable=False, default="{}"),  # JSON
    sa.Column("prompt", sa.Text, nullable=False, default=""),  # from input, for filtering
    sa.Column("error", sa.Text),
    sa.Column("logs_tail", sa.Text, nullable=False, default=""),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("completed_at", sa.Float),
    sa.Column("run_time", sa.Float),
    sa.Column("creator", sa.String(200)),
    sa.Column("recorded_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("last_polled_at", sa.Float),
    sa.Column("next_poll_at", sa.Float),
    sa.Column("poll_failures", sa.Integer, nullable=False, default=0),
    sa.Column("tracking", sa.String(16), nullable=False, default=ACTIVE),
    sa.Column("note", sa.Text),  # user-facing: why tracking gave up, or the last poll problem
    sa.Column("output_urls", sa.Text, nullable=False, default="[]"),  # JSON list
    sa.Column("data_removed", sa.Boolean, nullable=False, default=False),
    sa.Column("output_count", sa.Integer, nullable=False, default=0),  # outputs stored here
)
# Every listing is "newest first" (created_at, then id to break ties), optionally filtered.
sa.Index("ix_predictions_created", predictions.c.created_at.desc(), predictions.c.id.desc())
sa.Index("ix_predictions_status", predictions.c.status, predictions.c.created_at, predictions.c.id)
sa.Index("ix_predictions_model", predictions.c.model, predictions.c.created_at, predictions.c.id)
sa.Index("ix_predictions_creator", predictions.c.creator, predictions.c.created_at, predictions.c.id)
sa.Index("ix_predictions_tracking", predictions.c.tracking, predictions.c.next_poll_at)

outputs = sa.Table(
    "outputs",
    metadata,
    sa.Column("prediction_id", sa.String(64), sa.ForeignKey("predictions.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("idx", sa.Integer, primary_key=True),
    sa.Column("content_type", sa.String(100), nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("thumbnail", sa.LargeBinary),  # None when Pillow could not make one
    sa.Column("source_url", sa.Text, nullable=False),
)


@dataclass(frozen=True)
class OutputInfo:
    idx: int
    content_type: str
    size: int


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
    outputs: list[OutputInfo]

    @property
    def is_terminal(self) -> bool:
        # Same rule as Prediction.is_terminal: `aborted` counts, and so does an error.
        return self.status in TERMINAL or self.error is not None

    @property
    def progress(self) -> float | None:
        return 1.0 if self.status == SUCCEEDED else progress_from_logs(self.logs_tail)


class Store:
    """Thread-safe: each call checks out its own pooled connection; writes are short
    transactions, retried when SQLite reports the file locked."""

    def __init__(self, url: str | sa.URL) -> None:
        self._engine = _engine(url)
        self.migrate()

    @classmethod
    def for_settings(cls, settings: Settings) -> Store:
        """The configured database, else an SQLite file in the data folder (a separate one in
        demo mode, so demo predictions never mix with real ones)."""
        if settings.database_url:
            return cls(settings.database_url)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        name = "history-demo.sqlite" if settings.demo else "history.sqlite"
        return cls(sa.URL.create("sqlite", database=str(settings.data_dir / name)))

    def close(self) -> None:
        self._engine.dispose()

    # ---- schema ---------------------------------------------------------------------------

    def migrate(self) -> None:
        """Create what is missing and check the schema version; safe to run on every open, also
        by several processes at once. Later releases add their steps here, keyed on the version."""

        def create_missing(conn: sa.Connection) -> None:
            for table in metadata.sorted_tables:
                conn.execute(CreateTable(table, if_not_exists=True))
                for index in sorted(table.indexes, key=lambda ix: ix.name):
                    conn.execute(CreateIndex(index, if_not_exists=True))

        self._write(create_missing)
        version = sa.insert(meta).values(key="schema_version", value=str(SCHEMA_VERSION))
        try:
            self._write(lambda conn: conn.execute(version))
        except IntegrityError:
            pass  # already there: written by an earlier open, or by another process just now
        if self.schema_version > SCHEMA_VERSION:
            raise RuntimeError(
                f"This history was written by a newer release (schema {self.schema_version}); update the app."
            )

    @property
    def schema_version(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.scalar(sa.select(meta.c.value).where(meta.c.key == "schema_version")))

    # ---- writes ---------------------------------------------------------------------------

    def record(self, prediction: Prediction, *, creator: str | None = None) -> None:
        """Remember a prediction the moment its id is known; a known id is updated instead."""
        now = time.time()
        values = _prediction_values(prediction)
        values.setdefault("created_at", now)  # the API normally sends it; ordering needs one
        row = {"id": prediction.id, "creator": creator, "recorded_at": now, "updated_at": now,
               "next_poll_at": now, **values}
        try:
            self._write(lambda conn: conn.execute(sa.insert(predictions).values(row)))
        except IntegrityError:
            self.update(prediction)

    def update(
        self, prediction: Prediction, *, next_poll_at: float | None = None, note: str | None = None
    ) -> None:
        """Store what a fresh answer says. A note means this poll had a problem: it is shown to
        the user and counts as a failure (for backoff); no note clears the last problem.

        Tracking ends ("done") on a final status, except a success whose outputs are not stored
        yet: that stays active until save_outputs (or give_up)."""
        p = predictions.c
        now = time.time()
        values: dict[str, Any] = {
            **_prediction_values(prediction),
            "updated_at": now,
            "last_polled_at": now,
            "note": note,
            "poll_failures": 0 if note is None else p.poll_failures + 1,
        }
        if next_poll_at is not None:
            values["next_poll_at"] = next_poll_at
        if prediction.status == SUCCEEDED:
            values["tracking"] = sa.case((p.output_count > 0, DONE), else_=p.tracking)
        elif prediction.is_terminal:
            values["tracking"] = DONE
        self._write(lambda conn: conn.execute(
            sa.update(predictions).where(p.id == prediction.id).values(values)))

    def save_outputs(self, prediction_id: str, files: list[StoredFile]) -> None:
        """Store every output file with its thumbnail and end tracking, all in one transaction."""
        rows = [
            {"prediction_id": prediction_id, "idx": idx, "content_type": file.content_type,
             "size": len(file.data), "data": file.data, "thumbnail": make_thumbnail(file.data),
             "source_url": source_label(file.source_url)}
            for idx, file in enumerate(files)
        ]  # thumbnails are made before the transaction, so the write lock is held briefly

        def work(conn: sa.Connection) -> None:
            conn.execute(
                sa.update(predictions)
                .where(predictions.c.id == prediction_id)
                .values(tracking=DONE, output_count=len(rows), note=None, updated_at=time.time())
            )
            conn.execute(sa.delete(outputs).where(outputs.c.prediction_id == prediction_id))
            if rows:
                conn.execute(sa.insert(outputs), rows)

        self._write(work)

    def mark_poll_failure(self, prediction_id: str, note: str, next_poll_at: float) -> None:
        self._set(prediction_id, note=note, next_poll_at=next_poll_at, last_polled_at=time.time(),
                  poll_failures=predictions.c.poll_failures + 1)

    def give_up(self, prediction_id: str, note: str) -> None:
        self._set(prediction_id, tracking=GAVE_UP, note=note)

    # ---- reads ----------------------------------------------------------------------------

    def get(self, prediction_id: str) -> Record | None:
        with self._engine.connect() as conn:
            found = self._records(conn, sa.select(predictions).where(predictions.c.id == prediction_id))
        return found[0] if found else None

    def output_bytes(self, prediction_id: str, idx: int) -> tuple[str, bytes] | None:
        row = self._output_row(prediction_id, idx, outputs.c.content_type, outputs.c.data)
        return (row.content_type, row.data) if row else None

    def thumbnail(self, prediction_id: str, idx: int) -> tuple[str, bytes] | None:
        row = self._output_row(prediction_id, idx, outputs.c.thumbnail)
        return (THUMBNAIL_TYPE, row.thumbnail) if row and row.thumbnail else None

    def due(
        self, now: float | None = None, limit: int = 50, *, exclude: Collection[str] = ()
    ) -> list[Record]:
        """Active predictions whose next poll time has come, most overdue first; `exclude`
        leaves out ids the caller is already polling."""
        p = predictions.c
        query = (
            sa.select(predictions)
            .where(p.tracking == ACTIVE, p.next_poll_at <= (time.time() if now is None else now))
            .order_by(p.next_poll_at)
            .limit(limit)
        )
        if exclude:
            query = query.where(p.id.not_in(list(exclude)))
        with self._engine.connect() as conn:
            return self._records(conn, query)

    def next_poll_time(self, *, exclude: Collection[str] = ()) -> float | None:
        """The earliest next_poll_at of the active predictions (epoch seconds), or None."""
        p = predictions.c
        query = sa.select(sa.func.min(p.next_poll_at)).where(p.tracking == ACTIVE)
        if exclude:
            query = query.where(p.id.not_in(list(exclude)))
        with self._engine.connect() as conn:
            return conn.scalar(query)

    def unfinished_count(self) -> int:
        with self._engine.connect() as conn:
            return conn.scalar(sa.select(sa.func.count()).select_from(predictions)
                               .where(predictions.c.tracking == ACTIVE))

    def unfinished_ids(self) -> list[str]:
        """Ids still being tracked, newest first."""
        return list(self.unfinished_statuses())

    def unfinished_statuses(self) -> dict[str, str]:
        """{id: status} of the predictions still being tracked, newest first: a cheap snapshot
        a page can compare to know when to redraw."""
        p = predictions.c
        query = sa.select(p.id, p.status).where(p.tracking == ACTIVE).order_by(p.created_at.desc(), p.id.desc())
        with self._engine.connect() as conn:
            return {row.id: row.status for row in conn.execute(query)}

    def page(
        self,
        *,
        statuses: Iterable[str] | None = None,
        models: Iterable[str] | None = None,
        text: str | None = None,
        creator: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> pd.DataFrame:
        """One page of history, newest first, filtered and paged in SQL; columns PAGE_COLUMNS.
        `thumbnail` is a data: URI of the first output's thumbnail, or None."""
        p = predictions.c
        query = (
            sa.select(p.id, p.model, p.status, p.prompt, p.created_at, p.run_time, p.creator, p.output_count)
            .where(*_filters(statuses, models, text, creator))
            .order_by(p.created_at.desc(), p.id.desc())
            .limit(limit)
            .offset(offset)
        )
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
            thumbnails = _first_thumbnails(conn, [row.id for row in rows])
        frame = pd.DataFrame([tuple(row) for row in rows], columns=PAGE_COLUMNS[:-1])
        frame["created"] = _datetimes(frame["created"])
        # object dtype keeps None for "no thumbnail" (pandas would turn it into NaN in a str column)
        frame["thumbnail"] = pd.Series([thumbnails.get(row.id) for row in rows], dtype=object)
        return frame

    def count(
        self,
        *,
        statuses: Iterable[str] | None = None,
        models: Iterable[str] | None = None,
        text: str | None = None,
        creator: str | None = None,
    ) -> int:
        query = sa.select(sa.func.count()).select_from(predictions).where(
            *_filters(statuses, models, text, creator))
        with self._engine.connect() as conn:
            return conn.scalar(query)

    def models(self) -> list[str]:
        """Models present in history, sorted."""
        p = predictions.c
        with self._engine.connect() as conn:
            return list(conn.scalars(sa.select(p.model).distinct().where(p.model != "").order_by(p.model)))

    def export_rows(
        self,
        *,
        statuses: Iterable[str] | None = None,
        models: Iterable[str] | None = None,
        text: str | None = None,
        creator: str | None = None,
    ) -> pd.DataFrame:
        """Every matching prediction, newest first, for a CSV: no paging, no image bytes."""
        p = predictions.c
        columns = [p.id, p.model, p.status, p.prompt, p.input, p.error, p.created_at, p.started_at,
                   p.completed_at, p.run_time, p.creator, p.output_count, p.output_urls, p.data_removed,
                   p.tracking, p.note]
        query = (sa.select(*columns).where(*_filters(statuses, models, text, creator))
                 .order_by(p.created_at.desc(), p.id.desc()))
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        frame = pd.DataFrame([tuple(row) for row in rows], columns=[c.name for c in columns])
        for name in ("created_at", "started_at", "completed_at"):
            frame[name] = _datetimes(frame[name])
        return frame

    # ---- internals ------------------------------------------------------------------------

    def _write(self, work: Callable[[sa.Connection], _T]) -> _T:
        """Run `work` in one transaction, retrying while SQLite says the file is locked (the
        busy timeout covers most waits; a stale read snapshot can still fail at once)."""
        attempt = 0
        while True:
            try:
                with self._engine.begin() as conn:
                    return work(conn)
            except OperationalError as exc:
                attempt += 1
                if attempt == _WRITE_ATTEMPTS or not _is_locked(exc):
                    raise
                _log.warning("database busy, retrying a write (attempt %d)", attempt)
                time.sleep(0.1 * 2 ** (attempt - 1))

    def _set(self, prediction_id: str, **values: Any) -> None:
        values["updated_at"] = time.time()
        self._write(lambda conn: conn.execute(
            sa.update(predictions).where(predictions.c.id == prediction_id).values(values)))

    def _records(self, conn: sa.Connection, query: sa.Select) -> list[Record]:
        rows = conn.execute(query).all()
        infos: dict[str, list[OutputInfo]] = {row.id: [] for row in rows}
        if infos:
            o = outputs.c
            found = conn.execute(sa.select(o.prediction_id, o.idx, o.content_type, o.size)
                                 .where(o.prediction_id.in_(list(infos))).order_by(o.prediction_id, o.idx))
            for out in found:
                infos[out.prediction_id].append(OutputInfo(out.idx, out.content_type, out.size))
        return [_record(row._mapping, infos[row.id]) for row in rows]

    def _output_row(self, prediction_id: str, idx: int, *columns: sa.ColumnElement) -> sa.Row | None:
        o = outputs.c
        with self._engine.connect() as conn:
            query = sa.select(*columns).where(o.prediction_id == prediction_id, o.idx == idx)
            return conn.execute(query).first()


def make_thumbnail(data: bytes) -> bytes | None:
    """A JPEG at most THUMBNAIL_SIDE px on its long side; None if Pillow cannot decode the image
    (the original is kept all the same: a missing thumbnail must not lose an output)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            small = image.convert("RGB")  # JPEG has no alpha or palette
    except Exception:  # Pillow reports bad data with many exception types
        _log.warning("could not make a thumbnail", exc_info=True)
        return None
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def _engine(url: str | sa.URL) -> sa.Engine:
    if sa.make_url(url).get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True)
    # Browser sessions and the tracker share the engine from several threads.
    engine = sa.create_engine(url, connect_args={"check_same_thread": False})

    @sa.event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 10000")  # first: switching to WAL may have to wait
        cursor.execute("PRAGMA journal_mode = WAL")  # readers never block the writer
        cursor.execute("PRAGMA synchronous = NORMAL")  # safe with WAL, much faster
        cursor.execute("PRAGMA foreign_keys = ON")  # off by default in SQLite
        cursor.close()

    return engine


def _is_locked(exc: OperationalError) -> bool:
    text = str(exc.orig).lower()
    return "database is locked" in text or "database is busy" in text


def _prediction_values(prediction: Prediction) -> dict[str, Any]:
    """Columns an API answer fills. Fields the answer leaves empty are omitted, so a thin answer
    (for example `output: null` once the files expired) never erases what is already known."""
    values = {
        "model": prediction.model,
        "input": json.dumps(prediction.input) if prediction.input else None,
        "prompt": prediction.prompt,
        "error": prediction.error,
        "logs_tail": prediction.logs[-LOGS_TAIL_CHARS:],
        "created_at": _epoch(prediction.created_at),
        "started_at": _epoch(prediction.started_at),
        "completed_at": _epoch(prediction.completed_at),
        "run_time": prediction.run_time,
        "output_urls": json.dumps([source_label(u) for u in prediction.output]) if prediction.output else None,
    }
    values = {name: value for name, value in values.items() if value not in (None, "")}
    return {**values, "status": prediction.status, "data_removed": prediction.data_removed}


def _filters(
    statuses: Iterable[str] | None, models: Iterable[str] | None, text: str | None, creator: str | None
) -> list[sa.ColumnElement[bool]]:
    """WHERE clauses shared by page, count and export; an empty filter means "all"."""
    p = predictions.c
    clauses = []
    if statuses:
        clauses.append(p.status.in_(list(statuses)))
    if models:
        clauses.append(p.model.in_(list(models)))
    if text:
        # Case-insensitive substring; autoescape makes % and _ in the text match literally.
        clauses.append(p.prompt.icontains(text, autoescape=True))
    if creator:
        clauses.append(p.creator == creator)
    return clauses


def _first_thumbnails(conn: sa.Connection, ids: list[str]) -> dict[str, str]:
    """data: URIs of the first output's thumbnail, for just these ids (one page)."""
    if not ids:
        return {}
    o = outputs.c
    rows = conn.execute(sa.select(o.prediction_id, o.thumbnail)
                        .where(o.prediction_id.in_(ids), o.idx == 0, o.thumbnail.is_not(None)))
    return {row.prediction_id: f"data:{THUMBNAIL_TYPE};base64,{base64.b64encode(row.thumbnail).decode()}"
            for row in rows}


_TIME_COLUMNS = ("created_at", "started_at", "completed_at", "recorded_at", "updated_at",
                 "last_polled_at", "next_poll_at")


def _record(row: Any, outputs_info: list[OutputInfo]) -> Record:
    values = dict(row)
    for name in _TIME_COLUMNS:
        values[name] = _datetime(values[name])
    values["input"] = json.loads(values["input"])
    values["output_urls"] = json.loads(values["output_urls"])
    values["data_removed"] = bool(values["data_removed"])
    return Record(**values, outputs=outputs_info)


def _epoch(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment else None


def _datetime(seconds: float | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, timezone.utc) if seconds is not None else None


def _datetimes(column: pd.Series) -> pd.Series:
    return pd.to_datetime(column.astype("float64"), unit="s", utc=True)
