"""History: every prediction this app has seen, and its output files.

The API has no list route and deletes output files an hour after a run, so this store is the
team's only record and keeps the images themselves. SQLAlchemy Core with portable types and
queries: the default SQLite file can be swapped for PostgreSQL (COMET_DATABASE_URL) without
touching callers. Times are stored as float epoch seconds (UTC); arguments such as `next_poll_at`
take the same unit (the tracker's clock), and Records and frames hand them back as aware UTC
datetimes. Nothing here ever sees the API key: the stored input is the model input only.

Several app processes (replicas) may share one database. Each unfinished prediction is then
polled by one tracker at a time: a tracker *claims* due predictions (`claim_due`), which writes a
lease (`lease_owner`, `lease_until`) in the same transaction that picks them (`FOR UPDATE SKIP
LOCKED` on PostgreSQL; SQLite serialises writers with `BEGIN IMMEDIATE`). The holder renews the
lease while it polls and clears it with the write that records the answer; writes that pass
`owner=` apply only while that owner still holds the claim, so a tracker that stalled past its
lease cannot overwrite what its successor stored. A holder that dies simply stops renewing, and
its predictions become claimable again when the lease runs out.

Every write is idempotent (outputs are stored only if the prediction has none), so reads and
writes are retried a few times when the database is briefly unreachable or busy; after that they
raise HistoryUnavailable.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

import pandas as pd
import sqlalchemy as sa
from PIL import Image
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.schema import CreateIndex, CreateTable

from .config import Settings
from .errors import CometError
from .media import FileMedia, StoredFile, from_setting, source_label
from .prediction import STARTING, SUCCEEDED, TERMINAL, Prediction, progress_from_logs

# 1: first release. 2: lease columns (lease_owner, lease_until) for several trackers on one database.
# 3: outputs.media_key: an image kept in the media store (comet.media) instead of outputs.data;
#    outputs.pruned_at: when retention removed the full image (the thumbnail stays).
SCHEMA_VERSION = 3
MOVE_BATCH = 50  # images moved to the media store per transaction
DEFAULT_LEASE = 60.0  # seconds a claim lasts unless renewed; the tracker renews it while it polls
LOGS_TAIL_CHARS = 4096
THUMBNAIL_SIDE = 128
THUMBNAIL_TYPE = "image/jpeg"
ACTIVE, DONE, GAVE_UP = "active", "done", "gave_up"
PAGE_COLUMNS = ["id", "model", "status", "prompt", "created", "run_time", "creator", "outputs", "thumbnail"]

# Anything the upstream sent may be stored, and older releases stored it unchecked: writes fit
# text to its column (PostgreSQL refuses a longer value, and the answer would be lost) and reads
# turn what no view can show into "unknown", so one bad row shows as bad and the others as usual.
MODEL_CHARS, STATUS_CHARS, CREATOR_CHARS = 200, 32, 200  # the column widths below
TEXT_CHARS = 4000  # error and note: a message, not a dump
# Times outside this window are unknown (None / NaT): pandas cannot hold years past 2262, and no
# prediction was made before 2000 or will be after 2100.
EARLIEST_EPOCH = 946_684_800.0  # 2000-01-01T00:00:00Z
LATEST_EPOCH = 4_102_444_800.0  # 2100-01-01T00:00:00Z
# Where a row's own times are all unknown, Records say 1970-01-01: stable (the row does not move
# between reads), plainly "no date" to a reader, and old enough that the tracker gives up on it
# rather than polling a prediction that looks newly made on every read (as "now" would).
UNKNOWN_TIME = datetime.fromtimestamp(0, timezone.utc)
# Longest text per cell of the History page's table (what every page load ships to the browser);
# the detail view and the CSV have the rest.
PAGE_TEXT_CHARS = {"id": 64, "model": 64, "status": 64, "prompt": 300, "creator": 100}
MIN_SECRET_CHARS = 8  # shorter "secrets" would match ordinary text
SCRUBBED = "***"
# Every text column an upstream answer (or a visitor) can fill: where a leaked key could sit.
_SECRET_COLUMNS = ("model", "status", "input", "prompt", "error", "logs_tail", "note", "output_urls", "creator")

# Waits between attempts of a read or write that hit a transient error (a restarting server, a
# dropped connection, a locked SQLite file): five attempts over about three seconds.
RETRY_DELAYS = (0.1, 0.3, 0.8, 1.6)
CONNECT_TIMEOUT = 5  # seconds to reach a database server before an attempt counts as failed
# pg_advisory_xact_lock key held while the schema is created or migrated ("comet" in ASCII).
_MIGRATION_LOCK = 0x636F6D6574
_WRITE_OPTION = "comet_write"  # execution option: this SQLite transaction writes (BEGIN IMMEDIATE)
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
    # Schema 2: which tracker is polling it now, and until when its claim holds (epoch seconds).
    sa.Column("lease_owner", sa.String(200)),
    sa.Column("lease_until", sa.Float),
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
    # Schema 3: where the media store keeps the image; then `data` is empty (b"").
    sa.Column("media_key", sa.String(80)),
    sa.Column("pruned_at", sa.Float),  # epoch seconds retention removed the full image, or None
)


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
    outputs: list[OutputInfo]

    @property
    def is_terminal(self) -> bool:
        # Same rule as Prediction.is_terminal: `aborted` counts, and so does an error.
        return self.status in TERMINAL or self.error is not None

    @property
    def progress(self) -> float | None:
        return 1.0 if self.status == SUCCEEDED else progress_from_logs(self.logs_tail)


class HistoryError(CometError):
    """The history database cannot be used as configured (for example its driver is missing);
    the message says what to change."""


class HistoryUnavailable(HistoryError):
    """The history database could not be reached, even after a few quick retries (a server
    restart, a network outage, a file locked for too long). Nothing is lost by trying again
    later: every write of the store is idempotent."""


class Store:
    """Thread-safe: each call checks out its own pooled connection; writes are short
    transactions. Transient database errors are retried (RETRY_DELAYS), then raise
    HistoryUnavailable."""

    def __init__(self, url: str | sa.URL, *, media: FileMedia | None = None,
                 retry_delays: tuple[float, ...] = RETRY_DELAYS) -> None:
        """`media`: where new output images go (None: inside the database, as before)."""
        url = database_url(url)
        self.media = media
        self._closed = threading.Event()
        self.backend = url.get_backend_name()  # "sqlite" or "postgresql"
        self._retry_delays = tuple(retry_delays)
        self._engine = _engine(url)
        # Writes on SQLite take the write lock when they begin (see _engine); elsewhere the same.
        self._writer = self._engine.execution_options(**{_WRITE_OPTION: True})
        try:
            self.migrate()
        except BaseException:  # e.g. HistoryUnavailable at start: the caller will try again
            self._engine.dispose()
            raise

    @classmethod
    def for_settings(cls, settings: Settings) -> Store:
        """The configured database, else an SQLite file in the data folder (a separate one in
        demo mode, so demo predictions never mix with real ones)."""
        media = from_setting(settings.media_url, data_dir=settings.data_dir, database_url=settings.database_url)
        if settings.database_url:
            return cls(settings.database_url, media=media)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        name = "history-demo.sqlite" if settings.demo else "history.sqlite"
        return cls(sa.URL.create("sqlite", database=str(settings.data_dir / name)), media=media)

    def close(self) -> None:
        self._closed.set()
        self._engine.dispose()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def wait_closed(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds, waking at once when the store is closed."""
        return self._closed.wait(timeout)

    # ---- schema ---------------------------------------------------------------------------

    def migrate(self) -> None:
        """Create what is missing and bring an older schema up to SCHEMA_VERSION, in one
        transaction that only one process runs at a time (PostgreSQL: an advisory lock; SQLite:
        the write lock), so replicas starting together neither race nor see a half-made schema.
        Each step is idempotent: it looks at what exists rather than trusting the version alone."""

        def work(conn: sa.Connection) -> None:
            if self.backend == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
            found = _stored_version(conn)
            if found is not None and found > SCHEMA_VERSION:
                raise RuntimeError(
                    f"This history was written by a newer release (schema {found}); update the app.")
            for table in metadata.sorted_tables:
                conn.execute(CreateTable(table, if_not_exists=True))
            _add_missing_columns(conn)  # 1 -> 2: the lease columns; 2 -> 3: outputs.media_key
            for table in metadata.sorted_tables:
                for index in sorted(table.indexes, key=lambda ix: ix.name):
                    conn.execute(CreateIndex(index, if_not_exists=True))
            if found is None:
                conn.execute(sa.insert(meta).values(key="schema_version", value=str(SCHEMA_VERSION)))
            elif found < SCHEMA_VERSION:
                conn.execute(sa.update(meta).where(meta.c.key == "schema_version")
                             .values(value=str(SCHEMA_VERSION)))
                _log.info("history schema migrated from version %d to %d", found, SCHEMA_VERSION)

        self._write(work)

    @property
    def schema_version(self) -> int:
        return self._read(lambda conn: int(conn.scalar(
            sa.select(meta.c.value).where(meta.c.key == "schema_version"))))

    def available(self) -> bool:
        """One quick look at the database, no retries: for a page waiting out an outage."""
        try:
            with self._engine.connect() as conn:
                conn.execute(sa.select(1))
            return True
        except DBAPIError:
            return False

    # ---- writes ---------------------------------------------------------------------------
    # Writes that take `owner` are the tracker's: they apply only while that owner still holds
    # the prediction's lease (and it is still tracked), release it, and return whether they applied.

    def record(self, prediction: Prediction, *, creator: str | None = None) -> None:
        """Remember a prediction the moment its id is known. A known id is updated instead, and
        if its tracking had stopped (gave_up) it is tracked again: asking to track an id is how
        a user revives one (its creator stays the first one recorded)."""
        now = time.time()
        values = _prediction_values(prediction)
        values.setdefault("created_at", now)  # the API normally sends it; ordering needs one
        row = {"id": prediction.id, "creator": _storable(creator, CREATOR_CHARS), "recorded_at": now, "updated_at": now,
               "next_poll_at": now, **values}
        try:
            self._write(lambda conn: conn.execute(sa.insert(predictions).values(row)))
        except IntegrityError:
            self.update(prediction, revive=True)

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
            **_prediction_values(prediction),
            "updated_at": now,
            "last_polled_at": now,
            "note": _storable(note, TEXT_CHARS),
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
                values |= {**_prediction_values(latest), "last_polled_at": now, "poll_failures": 0}
            if owner is not None:
                values |= _released(owner)
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
            "note": _storable(note, TEXT_CHARS), "next_poll_at": next_poll_at, "last_polled_at": time.time(),
            "poll_failures": predictions.c.poll_failures + 1, "updated_at": time.time()}, owner, keep_lease)

    def give_up(
        self, prediction_id: str, note: str, *, latest: Prediction | None = None, owner: str | None = None
    ) -> bool:
        """Stop tracking and say why, keeping `latest` (the last answer) if there is one."""
        now = time.time()
        values: dict[str, Any] = {"tracking": GAVE_UP, "note": _storable(note, TEXT_CHARS), "updated_at": now}
        if latest is not None:
            values = {**_prediction_values(latest), "last_polled_at": now, "poll_failures": 0, **values}
        return self._change(prediction_id, values, owner)

    def scrub_secrets(self, secrets: Iterable[str]) -> int:
        """Replace every occurrence of each secret (an API key) with "***" wherever history keeps
        upstream or visitor text: an upstream that echoed the Bearer key into its error, logs or
        request id got it stored by older releases. Secrets shorter than MIN_SECRET_CHARS are
        ignored (they would match ordinary text). One UPDATE per table, touching only rows that
        hold a secret; returns how many rows changed."""
        # Longest first, so a secret that contains another is replaced whole.
        found = sorted({s for s in secrets if isinstance(s, str) and len(s) >= MIN_SECRET_CHARS},
                       key=len, reverse=True)
        if not found:
            return 0

        def scrubbed(column: sa.ColumnElement) -> sa.ColumnElement:
            for secret in found:
                column = sa.func.replace(column, secret, SCRUBBED)
            return column

        def scrub(conn: sa.Connection, table: sa.Table, names: Iterable[str]) -> int:
            columns = [table.c[name] for name in names]
            query = (
                sa.update(table)
                # LIKE finds the candidates (autoescape: % and _ in a key match literally) ...
                .where(sa.or_(*(c.contains(s, autoescape=True) for c in columns for s in found)))
                # ... and this leaves out rows SQLite's case-insensitive LIKE matched but
                # replace() (case-sensitive) would not change, so they are neither written nor counted.
                .where(sa.or_(*(scrubbed(c) != c for c in columns)))
                .values({c.name: scrubbed(c) for c in columns})
            )
            return conn.execute(query).rowcount

        changed = self._write(lambda conn: scrub(conn, predictions, _SECRET_COLUMNS)
                              + scrub(conn, outputs, ["source_url"]))
        if changed:
            _log.warning("removed a leaked API key from %d history rows", changed)
        return changed

    # ---- leases: one tracker polls a prediction at a time ----------------------------------

    def claim_due(
        self,
        owner: str,
        *,
        now: float | None = None,
        lease: float = DEFAULT_LEASE,
        limit: int = 50,
        exclude: Collection[str] = (),
    ) -> list[Record]:
        """Atomically take up to `limit` due predictions for `owner` until `now + lease`, most
        overdue first, and return them (with the lease written). Due means active, next poll
        time come, and not leased to another owner (or that lease has run out); `exclude` leaves
        out ids the caller is polling already. Two owners claiming at once never get one id."""
        now = time.time() if now is None else now
        p = predictions.c
        pick = (
            sa.select(p.id)
            .where(p.tracking == ACTIVE, p.next_poll_at <= now,
                   sa.or_(p.lease_until.is_(None), p.lease_until <= now, p.lease_owner == owner))
            .order_by(p.next_poll_at)
            .limit(limit)
            .with_for_update(skip_locked=True)  # PostgreSQL: rows another claim holds are passed over
        )
        if exclude:
            pick = pick.where(p.id.not_in(list(exclude)))

        def work(conn: sa.Connection) -> list[Record]:
            ids = list(conn.scalars(pick))
            if not ids:
                return []
            conn.execute(sa.update(predictions).where(p.id.in_(ids))
                         .values(lease_owner=owner, lease_until=now + lease))
            return self._records(conn, sa.select(predictions).where(p.id.in_(ids)).order_by(p.next_poll_at))

        return self._write(work)

    def hold_lease(self, owner: str, prediction_id: str, until: float, *, now: float | None = None) -> bool:
        """Take the lease on one prediction for `owner` until `until`, unless another owner holds
        it: for a prediction only this tracker can poll (made with a key only it has), which it
        then keeps leased between polls (writes with keep_lease) and renews while it lives."""
        now = time.time() if now is None else now
        p = predictions.c
        query = (sa.update(predictions)
                 .where(p.id == prediction_id,
                        sa.or_(p.lease_until.is_(None), p.lease_until <= now, p.lease_owner == owner))
                 .values(lease_owner=owner, lease_until=until))
        return self._write(lambda conn: conn.execute(query).rowcount > 0)

    def renew_leases(self, owner: str, ids: Collection[str], until: float) -> set[str]:
        """Extend `owner`'s leases on `ids` to `until`; returns the ids it still holds."""
        if not ids:
            return set()
        p = predictions.c

        def work(conn: sa.Connection) -> set[str]:
            conn.execute(sa.update(predictions).where(p.id.in_(list(ids)), p.lease_owner == owner)
                         .values(lease_until=until))
            return set(conn.scalars(sa.select(p.id).where(p.id.in_(list(ids)), p.lease_owner == owner)))

        return self._write(work)

    def release_leases(self, owner: str) -> int:
        """Give back every lease `owner` holds (a tracker stopping), so others need not wait."""
        p = predictions.c
        return self._write(lambda conn: conn.execute(
            sa.update(predictions).where(p.lease_owner == owner).values(lease_owner=None, lease_until=None)
        ).rowcount)

    # ---- reads ----------------------------------------------------------------------------

    def get(self, prediction_id: str) -> Record | None:
        found = self._read(lambda conn: self._records(
            conn, sa.select(predictions).where(predictions.c.id == prediction_id)))
        return found[0] if found else None

    def output_bytes(self, prediction_id: str, idx: int) -> tuple[str, bytes] | None:
        """The stored image, from the database or the media store; None if it is not there (a
        media file that was deleted, or a store configured without the folder it went to)."""
        o = outputs.c
        row = self._output_row(prediction_id, idx, o.content_type, o.data, o.media_key, o.pruned_at)
        if row is None or row.pruned_at is not None:
            return None
        if row.media_key is None:
            return row.content_type, row.data
        data = self.media.get(row.media_key) if self.media is not None else None
        return (row.content_type, data) if data is not None else None

    def move_media(self, limit: int | None = None) -> int:
        """Move images still inside the database to the media store, MOVE_BATCH per transaction;
        returns how many moved. Resumable and safe to interrupt: a file is written (atomically)
        before its row points at it, and a row already moved is never touched again, so an
        interruption at any point loses nothing and the next run carries on."""
        if self.media is None:
            return 0
        o = outputs.c
        pending = (sa.select(o.prediction_id, o.idx, o.content_type, o.data)
                   .where(o.media_key.is_(None), sa.func.length(o.data) > 0)
                   .order_by(o.prediction_id, o.idx).limit(MOVE_BATCH))
        moved = 0
        while limit is None or moved < limit:
            rows = self._read(lambda conn: conn.execute(pending).all())
            if not rows:
                break
            placed = [(row, self.media.put(row.data, row.content_type)) for row in rows]

            def point(conn: sa.Connection) -> int:
                done = 0
                for row, key in placed:
                    done += conn.execute(
                        sa.update(outputs)
                        .where(o.prediction_id == row.prediction_id, o.idx == row.idx, o.media_key.is_(None))
                        .values(media_key=key, data=b"")).rowcount
                return done

            moved += self._write(point)
        if moved:  # a warning so the server's console shows it (info is hidden by default)
            _log.warning("moved %d stored image(s) out of the database into %r", moved, self.media)
        return moved

    def prune_media(self, before: float) -> int:
        """Retention: remove the full images of predictions that ended before `before` (epoch
        seconds), keeping rows and thumbnails; returns how many were pruned. The rows are marked
        first and a file is deleted only once no unpruned row points at it (identical images share
        one file), so an interruption leaves at worst an orphan file, never a dangling row."""
        o, p = outputs.c, predictions.c
        ended = sa.func.coalesce(p.completed_at, p.created_at)
        due = (sa.select(o.prediction_id, o.idx, o.media_key)
               .join(predictions, p.id == o.prediction_id)
               .where(o.pruned_at.is_(None), ended < before)
               .limit(MOVE_BATCH))
        pruned = 0
        while True:
            def mark(conn: sa.Connection) -> list[str]:
                rows = conn.execute(due).all()
                now = time.time()
                for row in rows:
                    conn.execute(sa.update(outputs).where(o.prediction_id == row.prediction_id, o.idx == row.idx)
                                 .values(data=b"", pruned_at=now))
                return [row.media_key for row in rows]

            keys = self._write(mark)
            if not keys:
                break
            pruned += len(keys)
            for key in {k for k in keys if k is not None}:
                still_used = self._read(lambda conn: conn.scalar(
                    sa.select(sa.func.count()).select_from(outputs).where(o.media_key == key, o.pruned_at.is_(None))))
                if not still_used and self.media is not None:
                    self.media.delete(key)
        if pruned:
            _log.warning("retention: removed %d full image(s) (thumbnails kept)", pruned)
        return pruned

    def _placed(self, data: bytes, content_type: str) -> dict[str, Any]:
        """The columns that keep an image: its bytes, or its media key (and no bytes)."""
        if self.media is None:
            return {"data": data, "media_key": None}
        return {"data": b"", "media_key": self.media.put(data, content_type)}

    def thumbnail(self, prediction_id: str, idx: int) -> tuple[str, bytes] | None:
        row = self._output_row(prediction_id, idx, outputs.c.thumbnail)
        return (THUMBNAIL_TYPE, row.thumbnail) if row and row.thumbnail else None

    def due(
        self, now: float | None = None, limit: int = 50, *, exclude: Collection[str] = ()
    ) -> list[Record]:
        """Active predictions whose next poll time has come and that no tracker holds, most
        overdue first; `exclude` leaves out ids the caller is already polling. A look only:
        trackers take their work with claim_due."""
        now = time.time() if now is None else now
        p = predictions.c
        query = (
            sa.select(predictions)
            .where(p.tracking == ACTIVE, p.next_poll_at <= now,
                   sa.or_(p.lease_until.is_(None), p.lease_until <= now))
            .order_by(p.next_poll_at)
            .limit(limit)
        )
        if exclude:
            query = query.where(p.id.not_in(list(exclude)))
        return self._read(lambda conn: self._records(conn, query))

    def next_poll_time(self, *, exclude: Collection[str] = (), owner: str | None = None) -> float | None:
        """When the next active prediction becomes claimable by `owner` (epoch seconds), or None:
        its next poll time, or later if another owner's lease still holds it then."""
        p = predictions.c
        held = sa.and_(p.lease_until > p.next_poll_at,
                       p.lease_owner != owner if owner is not None else sa.true())
        ready = sa.case((held, p.lease_until), else_=p.next_poll_at)
        query = sa.select(sa.func.min(ready)).where(p.tracking == ACTIVE)
        if exclude:
            query = query.where(p.id.not_in(list(exclude)))
        return self._read(lambda conn: conn.scalar(query))

    def unfinished_count(self) -> int:
        return self._read(lambda conn: conn.scalar(
            sa.select(sa.func.count()).select_from(predictions).where(predictions.c.tracking == ACTIVE)))

    def unfinished_ids(self) -> list[str]:
        """Ids still being tracked, newest first."""
        return list(self.unfinished_statuses())

    def unfinished_statuses(self) -> dict[str, str]:
        """{id: status} of the predictions still being tracked, newest first: a cheap snapshot
        a page can compare to know when to redraw."""
        p = predictions.c
        query = sa.select(p.id, p.status).where(p.tracking == ACTIVE).order_by(p.created_at.desc(), p.id.desc())
        return self._read(lambda conn: {row.id: row.status for row in conn.execute(query)})

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
        # Long text is cut in SQL (one character more than shown, to know it was cut): a row
        # holding a megabyte of status must not make every page load ship it.
        shortened = {name: sa.func.substr(p[name], 1, chars + 1).label(name) for name, chars in PAGE_TEXT_CHARS.items()}
        query = (
            sa.select(shortened["id"], shortened["model"], shortened["status"], shortened["prompt"], p.created_at,
                      p.run_time, shortened["creator"], p.output_count)
            .where(*_filters(statuses, models, text, creator))
            .order_by(p.created_at.desc(), p.id.desc())
            .limit(limit)
            .offset(offset)
        )

        def read(conn: sa.Connection) -> tuple[list[sa.Row], dict[str, str]]:
            rows = conn.execute(query).all()
            return rows, _first_thumbnails(conn, [row.id for row in rows])

        rows, thumbnails = self._read(read)
        frame = pd.DataFrame([tuple(row) for row in rows], columns=PAGE_COLUMNS[:-1])
        for name, chars in PAGE_TEXT_CHARS.items():
            frame[name] = frame[name].map(lambda value, chars=chars: _clipped(value, chars))
        frame["created"] = _datetimes(frame["created"])
        frame["run_time"] = _durations(frame["run_time"])
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
        return self._read(lambda conn: conn.scalar(query))

    def models(self) -> list[str]:
        """Models present in history, sorted. Read on every History page build, so it hops
        through the model index from one model to the next (a handful of index seeks) instead of
        reading every row as SELECT DISTINCT would."""
        return self._read(lambda conn: list(conn.scalars(_MODELS_QUERY)))

    def export_rows(
        self,
        *,
        statuses: Iterable[str] | None = None,
        models: Iterable[str] | None = None,
        text: str | None = None,
        creator: str | None = None,
    ) -> pd.DataFrame:
        """Every matching prediction, newest first, for a CSV: no paging, no image bytes.
        `stored_outputs` lists each stored output as (idx, content_type), in idx order."""
        p, o = predictions.c, outputs.c
        columns = [p.id, p.model, p.status, p.prompt, p.input, p.error, p.created_at, p.started_at,
                   p.completed_at, p.run_time, p.creator, p.output_count, p.output_urls, p.data_removed,
                   p.tracking, p.note]
        where = _filters(statuses, models, text, creator)
        query = sa.select(*columns).where(*where).order_by(p.created_at.desc(), p.id.desc())
        # The outputs' types, in the same transaction (the CSV names the files the ZIP holds).
        kinds = (sa.select(o.prediction_id, o.idx, o.content_type)
                 .join_from(outputs, predictions, o.prediction_id == p.id).where(*where).order_by(o.idx))

        def read(conn: sa.Connection) -> tuple[list[sa.Row], dict[str, list[tuple[int, str]]]]:
            stored: dict[str, list[tuple[int, str]]] = {}
            for out in conn.execute(kinds):
                stored.setdefault(out.prediction_id, []).append((out.idx, out.content_type))
            return conn.execute(query).all(), stored

        rows, stored = self._read(read)
        frame = pd.DataFrame([tuple(row) for row in rows], columns=[c.name for c in columns])
        frame["stored_outputs"] = pd.Series([stored.get(row.id, []) for row in rows], dtype=object)
        for name in ("created_at", "started_at", "completed_at"):
            frame[name] = _datetimes(frame[name])
        frame["run_time"] = _durations(frame["run_time"])
        return frame

    # ---- internals ------------------------------------------------------------------------

    def _write(self, work: Callable[[sa.Connection], _T]) -> _T:
        """Run `work` in one transaction (on SQLite one that holds the write lock from its
        start), retried as a whole on a transient error."""

        def attempt() -> _T:
            with self._writer.begin() as conn:
                return work(conn)

        return self._retrying(attempt)

    def _read(self, work: Callable[[sa.Connection], _T]) -> _T:
        """Run `work` on one connection (one consistent snapshot), retried on a transient error."""

        def attempt() -> _T:
            with self._engine.connect() as conn:
                return work(conn)

        return self._retrying(attempt)

    def _retrying(self, attempt: Callable[[], _T]) -> _T:
        for number, delay in enumerate((*self._retry_delays, None), start=1):
            try:
                return attempt()
            except DBAPIError as exc:
                if not self._transient(exc):
                    raise
                if delay is None:
                    raise HistoryUnavailable(
                        "History is unavailable: the database cannot be reached right now.",
                        detail=_first_line(exc.orig),
                    ) from exc
                _log.warning("history database: %s; retrying (attempt %d)", _first_line(exc.orig), number)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _transient(self, exc: DBAPIError) -> bool:
        """Worth another try: a lost or refused connection, a server shutting down, a
        serialisation conflict, or SQLite's file lock. Not: a constraint, a bad query."""
        if exc.connection_invalidated:
            return True
        if self.backend == "sqlite":
            return isinstance(exc, OperationalError) and _is_locked(exc)
        return isinstance(exc, (OperationalError, InterfaceError))

    def _change(
        self, prediction_id: str, values: dict[str, Any], owner: str | None, keep_lease: bool = False
    ) -> bool:
        """Update one prediction; with `owner`, only while that owner holds its lease and it is
        still tracked (a cancel from the page may have ended it meanwhile), releasing the lease
        in the same statement unless `keep_lease`. Returns whether a row was changed."""
        p = predictions.c
        query = sa.update(predictions).where(p.id == prediction_id)
        if owner is not None:
            query = query.where(p.lease_owner == owner, p.tracking == ACTIVE)
            if not keep_lease:
                values = {**values, **_released(owner)}
        return self._write(lambda conn: conn.execute(query.values(values)).rowcount > 0)

    def _records(self, conn: sa.Connection, query: sa.Select) -> list[Record]:
        rows = conn.execute(query).all()
        infos: dict[str, list[OutputInfo]] = {row.id: [] for row in rows}
        if infos:
            o = outputs.c
            found = conn.execute(sa.select(o.prediction_id, o.idx, o.content_type, o.size, o.pruned_at)
                                 .where(o.prediction_id.in_(list(infos))).order_by(o.prediction_id, o.idx))
            for out in found:
                infos[out.prediction_id].append(
                    OutputInfo(out.idx, out.content_type, out.size, _datetime(out.pruned_at)))
        return [_record(row._mapping, infos[row.id]) for row in rows]

    def _output_row(self, prediction_id: str, idx: int, *columns: sa.ColumnElement) -> sa.Row | None:
        o = outputs.c
        query = sa.select(*columns).where(o.prediction_id == prediction_id, o.idx == idx)
        return self._read(lambda conn: conn.execute(query).first())


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


def database_url(url: str | sa.URL) -> sa.URL:
    """The URL to open. Hosted PostgreSQL services hand out `postgres://` or `postgresql://`
    URLs: both mean the psycopg (3) driver here, the one requirements.txt names."""
    url = sa.make_url(url)
    if url.drivername in ("postgres", "postgresql"):
        url = url.set(drivername="postgresql+psycopg")
    return url


def _engine(url: sa.URL) -> sa.Engine:
    if url.get_backend_name() != "sqlite":
        if url.get_backend_name() == "postgresql" and url.get_driver_name() == "psycopg":
            try:
                import psycopg  # noqa: F401  (only to give a clear message when it is missing)
            except ImportError:
                raise HistoryError(
                    "COMET_DATABASE_URL points to PostgreSQL, but its driver is not installed: "
                    "add psycopg[binary] to requirements.txt (or pip install \"psycopg[binary]\")."
                ) from None
        connect_args = {"connect_timeout": CONNECT_TIMEOUT} if url.get_driver_name() in ("psycopg", "psycopg2") else {}
        # pre-ping: a pooled connection the server dropped (a restart, an idle timeout) is
        # noticed and replaced before use, not reported as an error.
        return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    # Browser sessions and the tracker share the engine from several threads.
    engine = sa.create_engine(url, connect_args={"check_same_thread": False})

    @sa.event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        # The store begins its own transactions (below): pysqlite's implicit BEGIN comes only
        # before the first write statement, too late to make a read-then-write atomic.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 10000")  # first: switching to WAL may have to wait
        cursor.execute("PRAGMA journal_mode = WAL")  # readers never block the writer
        cursor.execute("PRAGMA synchronous = NORMAL")  # safe with WAL, much faster
        cursor.execute("PRAGMA foreign_keys = ON")  # off by default in SQLite
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _sqlite_begin(conn: sa.Connection) -> None:
        # A write takes the write lock at once (waiting up to busy_timeout for another writer),
        # so SQLite runs write transactions one after another: claims and migrations are atomic.
        write = conn.get_execution_options().get(_WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _is_locked(exc: OperationalError) -> bool:
    text = str(exc.orig).lower()
    return "database is locked" in text or "database is busy" in text


def _first_line(error: BaseException | None) -> str:
    text = str(error or "").strip()
    return text.splitlines()[0] if text else type(error).__name__


def _released(owner: str) -> dict[str, Any]:
    """Values that clear a lease, if `owner` holds it (a no-op otherwise)."""
    p = predictions.c
    mine = p.lease_owner == owner
    return {"lease_owner": sa.case((mine, None), else_=p.lease_owner),
            "lease_until": sa.case((mine, None), else_=p.lease_until)}


def _stored_version(conn: sa.Connection) -> int | None:
    """The schema version written in `meta`, or None on an empty database."""
    if not sa.inspect(conn).has_table(meta.name):
        return None
    value = conn.scalar(sa.select(meta.c.value).where(meta.c.key == "schema_version"))
    return None if value is None else int(value)


def _add_missing_columns(conn: sa.Connection) -> None:
    """Add the columns of `predictions` and `outputs` that an older schema lacks (all nullable,
    so existing rows need no value)."""
    preparer = conn.dialect.identifier_preparer
    for table in (predictions, outputs):
        present = {column["name"] for column in sa.inspect(conn).get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            assert column.nullable, f"a new column must be nullable: {column.name}"
            conn.execute(sa.text(f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN "
                                 f"{preparer.format_column(column)} {column.type.compile(conn.dialect)}"))


def _prediction_values(prediction: Prediction) -> dict[str, Any]:
    """Columns an API answer fills. Fields the answer leaves empty are omitted, so a thin answer
    (for example `output: null` once the files expired) never erases what is already known."""
    values = {
        "model": _storable(prediction.model, MODEL_CHARS),
        "input": json.dumps(prediction.input) if prediction.input else None,
        "prompt": _storable(prediction.prompt),
        "error": _storable(prediction.error, TEXT_CHARS),
        "logs_tail": _storable(prediction.logs[-LOGS_TAIL_CHARS:]),
        "created_at": _epoch(prediction.created_at),
        "started_at": _epoch(prediction.started_at),
        "completed_at": _epoch(prediction.completed_at),
        "run_time": _duration(prediction.run_time),
        "output_urls": json.dumps([source_label(u) for u in prediction.output]) if prediction.output else None,
    }
    values = {name: value for name, value in values.items() if value not in (None, "")}
    return {**values, "status": _storable(prediction.status, STATUS_CHARS) or STARTING,
            "data_removed": bool(prediction.data_removed)}


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


def _distinct_models() -> sa.Select:
    """WITH RECURSIVE m: the smallest model name, then repeatedly the next larger one."""
    p, later = predictions.c, predictions.alias("later").c
    first = sa.select(sa.func.min(p.model).label("model")).where(p.model > "")
    hops = first.cte("models_present", recursive=True)
    following = sa.select(sa.func.min(later.model)).where(later.model > hops.c.model).scalar_subquery()
    hops = hops.union_all(sa.select(following).where(hops.c.model.is_not(None)))
    return sa.select(hops.c.model).where(hops.c.model.is_not(None)).order_by(hops.c.model)


_MODELS_QUERY = _distinct_models()


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
                 "last_polled_at", "next_poll_at", "lease_until")


def _record(row: Any, outputs_info: list[OutputInfo]) -> Record:
    """A row as a Record, whatever it holds: a value no view could show reads as unknown (times
    None, run time None, input {}, links []), and text is cut to what its column allows."""
    values = dict(row)
    for name in _TIME_COLUMNS:
        values[name] = _datetime(values[name])
    # The times a Record always has: the first known of the three, else UNKNOWN_TIME.
    known = [values[name] for name in ("created_at", "recorded_at", "updated_at") if values[name] is not None]
    for name in ("created_at", "recorded_at", "updated_at"):
        values[name] = values[name] or (known[0] if known else UNKNOWN_TIME)
    values["model"] = _clipped(values["model"], MODEL_CHARS) or ""
    values["status"] = _clipped(values["status"], STATUS_CHARS) or ""
    values["prompt"] = "" if values["prompt"] is None else str(values["prompt"])
    values["error"] = _clipped(values["error"], TEXT_CHARS)
    values["note"] = _clipped(values["note"], TEXT_CHARS)
    values["creator"] = _clipped(values["creator"], CREATOR_CHARS)
    values["logs_tail"] = str(values["logs_tail"] or "")[-LOGS_TAIL_CHARS:]
    values["run_time"] = _duration(values["run_time"])
    values["input"] = _json(values["input"], dict)
    values["output_urls"] = [url for url in _json(values["output_urls"], list) if isinstance(url, str)]
    values["data_removed"] = bool(values["data_removed"])
    values["poll_failures"] = _count(values["poll_failures"])
    values["output_count"] = _count(values["output_count"])
    return Record(**values, outputs=outputs_info)


def _storable(text: str | None, limit: int | None = None) -> str | None:
    """Text as both databases take it: cut to `limit` characters (its column's width), without
    NUL (PostgreSQL refuses it) or lone surrogates (not UTF-8: neither driver can send them)."""
    if text is None:
        return None
    text = str(text)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def _clipped(value: object, limit: int) -> str | None:
    """Stored text cut to `limit` characters for showing (an ellipsis says it was cut)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None  # pandas 3 reads NULL in a text column as NaN: not the text "nan"
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _json(text: object, kind: type) -> Any:
    """A stored JSON column as `kind` (dict or list); an empty one if unreadable or of another kind."""
    try:
        value = json.loads(text)  # type: ignore[arg-type]
    except (TypeError, ValueError, RecursionError):
        return kind()
    return value if isinstance(value, kind) else kind()


def _count(value: object) -> int:
    try:
        return max(int(value), 0)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return 0


def _number(value: object) -> float | None:
    """A stored number as a finite float, or None (NULL, NaN, infinite, text)."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _duration(value: object) -> float | None:
    """A run time in seconds: finite and not negative, else unknown."""
    number = _number(value)
    return number if number is not None and number >= 0 else None


def _epoch_seconds(value: object) -> float | None:
    """Epoch seconds inside EARLIEST_EPOCH..LATEST_EPOCH, else None."""
    number = _number(value)
    return number if number is not None and EARLIEST_EPOCH <= number < LATEST_EPOCH else None


def _epoch(moment: datetime | None) -> float | None:
    return _epoch_seconds(moment.timestamp()) if moment else None


def _datetime(seconds: object) -> datetime | None:
    """A stored time as an aware UTC datetime; None when unknown or outside the window."""
    seconds = _epoch_seconds(seconds)
    return datetime.fromtimestamp(seconds, timezone.utc) if seconds is not None else None


def _datetimes(column: pd.Series) -> pd.Series:
    """A column of stored times as datetimes; NaT where a value is unknown or outside the window
    (pandas would raise OutOfBoundsDatetime for year 9999, and fail the whole page or export)."""
    numbers = pd.to_numeric(column, errors="coerce").astype("float64")
    numbers = numbers.where((numbers >= EARLIEST_EPOCH) & (numbers < LATEST_EPOCH))
    return pd.to_datetime(numbers, unit="s", utc=True)


def _durations(column: pd.Series) -> pd.Series:
    """A column of run times as floats; NaN where a value is unknown, infinite or negative."""
    numbers = pd.to_numeric(column, errors="coerce").astype("float64")
    return numbers.where(numbers.between(0, math.inf, inclusive="left"))
