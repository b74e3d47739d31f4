"""Stored batches: the `batches` and `batch_cells` tables beside the history, and `Batches`, the
reads and the writes the runner and the page make on them."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.schema import CreateIndex, CreateTable

from ..prediction import TERMINAL
from .planning import BatchPlan, PlannedCell, spec_json

DEFAULT_CONCURRENCY = 4  # creates in flight (COMET_BATCH_CONCURRENCY)
MESSAGE_CHARS = 1000

# Cell states.
PENDING, SENDING, SENT = "pending", "sending", "sent"
FAILED, REFUSED, CANCELED, UNCERTAIN = "failed", "refused", "canceled", "uncertain"
UNSENT = (PENDING, SENDING)
RESENDABLE = (FAILED, REFUSED, UNCERTAIN)  # not sent, or maybe not: a user may send them again
# Batch states.
RUNNING, FINISHED = "running", "finished"  # and CANCELED

DEAD_SENDER_NOTE = ("The server stopped while sending this one; it may have been accepted (and billed), "
                    "so it was not sent again.")
CANCELED_NOTE = "Canceled before it was sent."
_LOCK = 0x6261746368  # pg_advisory_xact_lock key for claims and table creation ("batch")


# ---- tables ---------------------------------------------------------------------------------

batch_metadata = sa.MetaData()
batch_table = sa.Table(
    "batches",
    batch_metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),  # epoch seconds
    sa.Column("creator", sa.String(200)),
    sa.Column("title", sa.String(200), nullable=False, default=""),
    sa.Column("state", sa.String(16), nullable=False),  # RUNNING, CANCELED or FINISHED
    sa.Column("spec", sa.Text, nullable=False),  # JSON: what the user asked for (BatchSpec)
    sa.Column("cells", sa.Integer, nullable=False),
    sa.Column("estimated_usd", sa.Float),  # None: some model has no price
    sa.Column("stop_note", sa.Text),  # why the unsent cells were stopped (a spending limit)
    sa.Column("finished_at", sa.Float),  # when no cell was left to send
)
sa.Index("ix_batches_created", batch_table.c.created_at)

cell_table = sa.Table(
    "batch_cells",
    batch_metadata,
    sa.Column("batch_id", sa.String(32), primary_key=True),
    sa.Column("idx", sa.Integer, primary_key=True),  # sending order: row by row
    sa.Column("created_at", sa.Float, nullable=False),  # the batch's: older batches go first
    sa.Column("row", sa.Integer, nullable=False),
    sa.Column("col", sa.Integer, nullable=False),
    sa.Column("row_label", sa.String(300), nullable=False),
    sa.Column("col_label", sa.String(300), nullable=False),
    sa.Column("prompt_index", sa.Integer, nullable=False),
    sa.Column("variation", sa.Integer, nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("input", sa.Text, nullable=False),  # JSON: exactly what is sent, seed included
    sa.Column("seed", sa.BigInteger),
    sa.Column("sweep", sa.Text, nullable=False),  # JSON: {parameter: value} of the swept axes
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("prediction_id", sa.String(64)),
    sa.Column("error", sa.Text),
    sa.Column("reservation", sa.String(32)),  # the ledger's row while it is being sent
    sa.Column("attempts", sa.Integer, nullable=False, default=0),  # creates answered 429 / unreachable
    sa.Column("not_before", sa.Float, nullable=False, default=0.0),  # a retried cell waits until then
    sa.Column("lease_owner", sa.String(200)),
    sa.Column("lease_until", sa.Float),
    sa.Column("sent_at", sa.Float),
)
# The runner's claim (pending, oldest batch first) and its count of creates in flight.
sa.Index("ix_batch_cells_claim", cell_table.c.state, cell_table.c.created_at, cell_table.c.batch_id,
         cell_table.c.idx)
sa.Index("ix_batch_cells_lease", cell_table.c.state, cell_table.c.lease_until)
# A batch's counts; the primary key lists its cells in order.
sa.Index("ix_batch_cells_batch_state", cell_table.c.batch_id, cell_table.c.state)
sa.Index("ix_batch_cells_prediction", cell_table.c.prediction_id)

_predictions = sa.table("predictions", sa.column("id"), sa.column("status"), sa.column("batch_id"))


# ---- stored batches -------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    id: str
    created_at: datetime
    creator: str | None
    title: str
    state: str  # RUNNING, CANCELED or FINISHED
    spec: dict[str, Any]
    total: int
    counts: dict[str, int]  # cells by state
    estimated_usd: float | None
    stop_note: str | None
    finished_at: datetime | None

    @property
    def unsent(self) -> int:
        return sum(self.counts.get(state, 0) for state in UNSENT)

    @property
    def active(self) -> bool:
        """Cells are still to be sent (a canceled batch may still finish the ones in flight).
        From the batch's own row, written with its last cell: `counts` are read after it, so
        on PostgreSQL they may already be newer, never older."""
        return self.finished_at is None


@dataclass(frozen=True)
class Cell(PlannedCell):
    """A planned cell as stored: its batch, where its sending stands, and its prediction."""

    batch_id: str
    state: str
    prediction_id: str | None
    error: str | None
    attempts: int
    sent_at: datetime | None
    prediction_status: str | None = None  # the history's, once the prediction is recorded
    creator: str | None = None


@dataclass(frozen=True)
class CancelResult:
    unsent: int  # cells that will never be sent
    asked: int  # running predictions asked to cancel
    problems: tuple[str, ...] = ()  # cancels the API refused or could not take


class Batches:
    """Batches and their cells in the history's database (`store`: a comet.store.Store)."""

    def __init__(self, store: Any) -> None:
        self._store = store

        def create(conn: sa.Connection) -> None:
            if store.backend == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK)))
            for table in batch_metadata.sorted_tables:
                conn.execute(CreateTable(table, if_not_exists=True))
                for index in sorted(table.indexes, key=lambda ix: ix.name):
                    conn.execute(CreateIndex(index, if_not_exists=True))

        store._write(create)

    # ---- writes ----------------------------------------------------------------------------

    def add(self, batch_plan: BatchPlan, *, creator: str | None = None, title: str = "",
            now: float | None = None) -> str:
        """Store a planned batch, all its cells pending; returns its id. Refuses a plan with
        problems (ValueError with the first)."""
        if batch_plan.problems or not batch_plan.cells:
            raise ValueError(batch_plan.problems[0] if batch_plan.problems else "The batch has no cells.")
        now = time.time() if now is None else now
        batch_id = uuid.uuid4().hex
        head = {"id": batch_id, "created_at": now, "creator": (creator or "").strip()[:200] or None,
                "title": (title or batch_plan.spec.title or "").strip()[:200], "state": RUNNING,
                "spec": json.dumps(spec_json(batch_plan.spec, batch_plan.first_seed), default=str),
                "cells": len(batch_plan.cells), "estimated_usd": batch_plan.estimated_usd}
        rows = [{"batch_id": batch_id, "idx": c.idx, "created_at": now, "row": c.row, "col": c.col,
                 "row_label": c.row_label[:300], "col_label": c.col_label[:300], "prompt_index": c.prompt_index,
                 "variation": c.variation, "model": c.model, "input": json.dumps(c.input), "seed": c.seed,
                 "sweep": json.dumps(c.sweep), "state": PENDING, "attempts": 0, "not_before": 0.0}
                for c in batch_plan.cells]

        def work(conn: sa.Connection) -> None:
            conn.execute(sa.insert(batch_table).values(head))
            conn.execute(sa.insert(cell_table), rows)

        self._store._write(work)
        return batch_id

    def claim(self, owner: str, *, now: float | None = None, lease: float = 60.0, limit: int = 1,
              concurrency: int = DEFAULT_CONCURRENCY) -> list[Cell]:
        """Take up to `limit` pending cells (oldest batch first, in order) for `owner` until
        `now + lease`, marked `sending` in this one committed transaction, so that no more than
        `concurrency` cells of any owner are `sending` under an unexpired lease. Serialised
        (SQLite: the write lock; PostgreSQL: an advisory lock), so two claims never take one cell
        nor pass the limit together."""
        now = time.time() if now is None else now
        c = cell_table.c

        def work(conn: sa.Connection) -> list[Cell]:
            if self._store.backend == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK)))
            busy = conn.scalar(sa.select(sa.func.count()).select_from(cell_table)
                               .where(c.state == SENDING, c.lease_until > now)) or 0
            free = min(limit, concurrency - busy)
            if free <= 0:
                return []
            keys = conn.execute(sa.select(c.batch_id, c.idx)
                                .where(c.state == PENDING, c.not_before <= now)
                                .order_by(c.created_at, c.batch_id, c.idx).limit(free)).all()
            if not keys:
                return []
            chosen = sa.tuple_(c.batch_id, c.idx).in_([tuple(k) for k in keys])
            conn.execute(sa.update(cell_table).where(chosen, c.state == PENDING)
                         .values(state=SENDING, lease_owner=owner, lease_until=now + lease))
            return self._cells(conn, chosen)

        return self._store._write(work)

    def renew(self, owner: str, keys: Iterable[tuple[str, int]], until: float) -> None:
        """Extend `owner`'s leases on these cells (creates still in flight)."""
        keys = list(keys)
        if not keys:
            return
        c = cell_table.c
        self._store._write(lambda conn: conn.execute(
            sa.update(cell_table).where(sa.tuple_(c.batch_id, c.idx).in_(keys), c.lease_owner == owner,
                                         c.state.in_((SENDING, UNCERTAIN)))
            .values(lease_until=until)))

    def note_reservation(self, owner: str, cell: Cell, reservation: str) -> None:
        c = cell_table.c
        self._store._write(lambda conn: conn.execute(
            sa.update(cell_table).where(c.batch_id == cell.batch_id, c.idx == cell.idx, c.lease_owner == owner)
            .values(reservation=reservation)))

    def settle(self, owner: str, cell: Cell, state: str, *, now: float | None = None,
               prediction_id: str | None = None, error: str | None = None, not_before: float | None = None,
               attempts: int | None = None) -> str | None:
        """The outcome of `owner`'s cell: SENT (with its prediction id), FAILED, REFUSED,
        CANCELED, UNCERTAIN, or back to PENDING (not sent: a 429, a stop). Fenced by the lease
        owner; accepted also when another runner already called it uncertain (this one knows
        better). SENT also writes the batch id on the prediction's history row (History's batch
        column and filter), in the same transaction. Returns the batch's state then, or None when
        the cell was not this owner's."""
        now = time.time() if now is None else now
        c = cell_table.c
        values: dict[str, Any] = {"state": state, "error": _clip(error), "lease_owner": None, "lease_until": None}
        if state == SENT:
            values.update(prediction_id=prediction_id, sent_at=now, reservation=None)
        if state == PENDING:
            values.update(not_before=not_before or 0.0, reservation=None)
        if attempts is not None:
            values["attempts"] = attempts

        def work(conn: sa.Connection) -> str | None:
            changed = conn.execute(
                sa.update(cell_table)
                .where(c.batch_id == cell.batch_id, c.idx == cell.idx, c.lease_owner == owner,
                       c.state.in_((SENDING, UNCERTAIN)))
                .values(values)).rowcount
            if not changed:
                return None
            if state == SENT and prediction_id:  # the history row (recorded by `track`) names its batch
                conn.execute(sa.update(_predictions).where(_predictions.c.id == prediction_id,
                                                           _predictions.c.batch_id.is_(None))
                             .values(batch_id=cell.batch_id))
            self._finish(conn, [cell.batch_id], now)
            return conn.scalar(sa.select(batch_table.c.state).where(batch_table.c.id == cell.batch_id))

        return self._store._write(work)

    def stop_unsent(self, batch_id: str, message: str, *, now: float | None = None) -> int:
        """A spending limit refused a cell: every cell not yet claimed becomes REFUSED with the
        message, and claimed ones not yet sent follow (`gate`). Returns how many."""
        now = time.time() if now is None else now
        c = cell_table.c

        def work(conn: sa.Connection) -> int:
            conn.execute(sa.update(batch_table).where(batch_table.c.id == batch_id).values(stop_note=_clip(message)))
            count = conn.execute(sa.update(cell_table).where(c.batch_id == batch_id, c.state == PENDING)
                                 .values(state=REFUSED, error=_clip(message))).rowcount
            self._finish(conn, [batch_id], now)
            return count

        return self._store._write(work)

    def cancel(self, batch_id: str, *, now: float | None = None) -> int:
        """Cancel a batch: its pending cells are never sent (claimed ones not yet sent follow,
        `gate`). Returns how many cells were canceled."""
        now = time.time() if now is None else now
        c = cell_table.c

        def work(conn: sa.Connection) -> int:
            conn.execute(sa.update(batch_table).where(batch_table.c.id == batch_id, batch_table.c.state == RUNNING)
                         .values(state=CANCELED))
            count = conn.execute(sa.update(cell_table).where(c.batch_id == batch_id, c.state == PENDING)
                                 .values(state=CANCELED, error=CANCELED_NOTE)).rowcount
            self._finish(conn, [batch_id], now)
            return count

        return self._store._write(work)

    def send_again(self, batch_id: str, states: Iterable[str]) -> int:
        """A user's choice: the batch's cells in `states` (of RESENDABLE: failed, refused by a
        spending limit, or uncertain) go back to pending with the same inputs and seeds, and the
        batch runs again without its stop note. Only a finished batch that was not canceled: a
        second click (or another tab) finds it running and sends nothing more. Returns how many."""
        wanted = [state for state in states if state in RESENDABLE]
        c, b = cell_table.c, batch_table.c

        def work(conn: sa.Connection) -> int:
            row = conn.execute(sa.select(b.state, b.finished_at).where(b.id == batch_id).with_for_update()).first()
            if row is None or row.state == CANCELED or row.finished_at is None or not wanted:
                return 0
            # The lease owner goes too: an uncertain cell's first sender, alive after all, must
            # not settle the new attempt.
            count = conn.execute(sa.update(cell_table).where(c.batch_id == batch_id, c.state.in_(wanted))
                                 .values(state=PENDING, error=None, lease_owner=None, lease_until=None,
                                         reservation=None, attempts=0, not_before=0.0)).rowcount
            if count:
                conn.execute(sa.update(batch_table).where(b.id == batch_id)
                             .values(state=RUNNING, finished_at=None, stop_note=None))
            return count

        return self._store._write(work)

    def recover(self, *, now: float | None = None) -> list[tuple[str, int, str | None]]:
        """Cells left `sending` by a process whose lease ran out (it died mid-create) become
        UNCERTAIN: they may have been accepted, so they are never sent again by themselves.
        Returns (batch id, idx, reservation) of each."""
        now = time.time() if now is None else now
        c = cell_table.c

        def work(conn: sa.Connection) -> list[tuple[str, int, str | None]]:
            lost = conn.execute(sa.select(c.batch_id, c.idx, c.reservation)
                                .where(c.state == SENDING, c.lease_until <= now)
                                .with_for_update(skip_locked=True)).all()
            if not lost:
                return []
            # The owner is kept: if that process is alive after all, its answer still lands.
            conn.execute(sa.update(cell_table)
                         .where(sa.tuple_(c.batch_id, c.idx).in_([(r.batch_id, r.idx) for r in lost]),
                                c.state == SENDING)
                         .values(state=UNCERTAIN, error=DEAD_SENDER_NOTE, lease_until=None))
            self._finish(conn, sorted({r.batch_id for r in lost}), now)
            return [(r.batch_id, r.idx, r.reservation) for r in lost]

        return self._store._write(work)

    def _finish(self, conn: sa.Connection, batch_ids: list[str], now: float) -> None:
        """A batch with no cell left to send is finished (a canceled one keeps its state). Every
        transaction that moves a cell out of pending or sending calls this after doing so: the
        row lock makes them take turns here, so the last one sees the others' cells (PostgreSQL
        reads committed rows; two finishing cells would otherwise each see the other unsent)."""
        c = cell_table.c
        for batch_id in batch_ids:
            conn.execute(sa.select(batch_table.c.id).where(batch_table.c.id == batch_id).with_for_update())
            left = sa.exists().where(c.batch_id == batch_id, c.state.in_(UNSENT))
            conn.execute(sa.update(batch_table)
                         .where(batch_table.c.id == batch_id, batch_table.c.finished_at.is_(None), ~left)
                         .values(finished_at=now,
                                 state=sa.case((batch_table.c.state == RUNNING, FINISHED), else_=batch_table.c.state)))

    # ---- reads -----------------------------------------------------------------------------

    def get(self, batch_id: str) -> Batch | None:
        found = self._batches(batch_table.c.id == batch_id)
        return found[0] if found else None

    def recent(self, limit: int = 20, *, creator: str | None = None) -> list[Batch]:
        """The newest batches first, with their counts (one query for the counts of all)."""
        where = [batch_table.c.creator == creator] if creator else []
        return self._batches(*where, limit=limit)

    def cells(self, batch_id: str) -> list[Cell]:
        """A batch's cells in order, each with its prediction's status in the history."""
        return self._store._read(lambda conn: self._cells(conn, cell_table.c.batch_id == batch_id))

    def gate(self, batch_id: str) -> tuple[str | None, str | None]:
        """(state, stop note) of a batch: whether a claimed cell may still be sent."""
        row = self._store._read(lambda conn: conn.execute(
            sa.select(batch_table.c.state, batch_table.c.stop_note).where(batch_table.c.id == batch_id)).first())
        return (row.state, row.stop_note) if row else (None, None)

    def running_predictions(self, batch_id: str) -> list[str]:
        """Ids of the batch's sent predictions that have not ended (or are not recorded yet)."""
        c, p = cell_table.c, _predictions.c
        query = (sa.select(c.prediction_id)
                 .select_from(cell_table.outerjoin(_predictions, p.id == c.prediction_id))
                 .where(c.batch_id == batch_id, c.state == SENT, c.prediction_id.is_not(None),
                        sa.or_(p.status.is_(None), p.status.not_in(list(TERMINAL))))
                 .order_by(c.idx))
        return self._store._read(lambda conn: list(conn.scalars(query)))

    def _batches(self, *where: sa.ColumnElement[bool], limit: int | None = None) -> list[Batch]:
        query = sa.select(batch_table).where(*where).order_by(batch_table.c.created_at.desc())
        if limit is not None:
            query = query.limit(limit)

        def read(conn: sa.Connection) -> list[Batch]:
            rows = conn.execute(query).all()
            counts: dict[str, dict[str, int]] = {row.id: {} for row in rows}
            if counts:
                c = cell_table.c
                for batch_id, state, n in conn.execute(
                        sa.select(c.batch_id, c.state, sa.func.count()).where(c.batch_id.in_(list(counts)))
                        .group_by(c.batch_id, c.state)):
                    counts[batch_id][state] = n
            return [Batch(id=row.id, created_at=_when(row.created_at), creator=row.creator, title=row.title,
                          state=row.state, spec=_loads(row.spec, dict), total=row.cells, counts=counts[row.id],
                          estimated_usd=row.estimated_usd, stop_note=row.stop_note,
                          finished_at=_when(row.finished_at) if row.finished_at is not None else None)
                    for row in rows]

        return self._store._read(read)

    @staticmethod
    def _cells(conn: sa.Connection, where: sa.ColumnElement[bool]) -> list[Cell]:
        c, p = cell_table.c, _predictions.c
        query = (sa.select(cell_table, p.status.label("prediction_status"), batch_table.c.creator)
                 .select_from(cell_table.join(batch_table, batch_table.c.id == c.batch_id)
                              .outerjoin(_predictions, p.id == c.prediction_id))
                 .where(where).order_by(c.created_at, c.batch_id, c.idx))
        return [Cell(batch_id=r.batch_id, idx=r.idx, row=r.row, col=r.col, row_label=r.row_label,
                     col_label=r.col_label, prompt_index=r.prompt_index, variation=r.variation, model=r.model,
                     input=_loads(r.input, dict), seed=r.seed, sweep=_loads(r.sweep, dict), state=r.state,
                     prediction_id=r.prediction_id, error=r.error, attempts=r.attempts or 0,
                     sent_at=_when(r.sent_at) if r.sent_at is not None else None,
                     prediction_status=r.prediction_status, creator=r.creator)
                for r in conn.execute(query)]


def _loads(text: str | None, kind: type) -> Any:
    try:
        value = json.loads(text or "")
    except ValueError:
        return kind()
    return value if isinstance(value, kind) else kind()


def _when(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _clip(text: str | None) -> str | None:
    if text is None:
        return None
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "…"


