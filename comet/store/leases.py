"""Leases: one tracker polls a prediction at a time.

Several app processes (replicas) may share one database. A tracker *claims* due predictions
(`claim_due`), which writes a lease (`lease_owner`, `lease_until`) in the same transaction that
picks them (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite serialises writers with `BEGIN
IMMEDIATE`). The holder renews the lease while it polls and clears it with the write that records
the answer (see records: writes that pass `owner=`), so a tracker that stalled past its lease
cannot overwrite what its successor stored. A holder that dies simply stops renewing, and its
predictions become claimable again when the lease runs out.
"""

from __future__ import annotations

import time
from collections.abc import Collection

import sqlalchemy as sa

from .db import Database
from .records import Record, read_records
from .schema import ACTIVE, GAVE_UP, predictions

DEFAULT_LEASE = 60.0  # seconds a claim lasts unless renewed; the tracker renews it while it polls


class Leases(Database):
    """What is due, who polls it, and what is still unfinished."""

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
            return read_records(conn, sa.select(predictions).where(p.id.in_(ids)).order_by(p.next_poll_at))

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

    def resume_stopped(self, note_prefix: str, *, since: float, limit: int | None = None,
                       now: float | None = None) -> int:
        """Predictions whose tracking stopped (gave_up) since `since` with a note starting with
        `note_prefix` (the tracker's: a key the API refused), newest first, up to `limit`, back
        under the trackers: due at once, unleased. Returns how many."""
        now = time.time() if now is None else now
        p = predictions.c
        pick = (sa.select(p.id)
                .where(p.tracking == GAVE_UP, p.updated_at >= since, p.note.startswith(note_prefix, autoescape=True))
                .order_by(p.created_at.desc(), p.id.desc()).limit(limit))

        def work(conn: sa.Connection) -> int:
            ids = list(conn.scalars(pick))
            if not ids:
                return 0
            return conn.execute(sa.update(predictions).where(p.id.in_(ids), p.tracking == GAVE_UP)
                                .values(tracking=ACTIVE, next_poll_at=now, lease_owner=None, lease_until=None,
                                        poll_failures=0)).rowcount

        return self._write(work)

    def release_leases(self, owner: str) -> int:
        """Give back every lease `owner` holds (a tracker stopping), so others need not wait."""
        p = predictions.c
        return self._write(lambda conn: conn.execute(
            sa.update(predictions).where(p.lease_owner == owner).values(lease_owner=None, lease_until=None)
        ).rowcount)

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
        return self._read(lambda conn: read_records(conn, query))

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
