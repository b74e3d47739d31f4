"""Spend: what each create is estimated to cost, reserved before it is sent, so spending limits
hold for a team sharing one key, across sessions and replicas.

One row per create in the `spend` table, beside the history in the same database. A create's
estimate is *reserved* in one serialised transaction that first sums what the period already
holds (SQLite: the write lock; PostgreSQL: an advisory lock), so concurrent clicks cannot all pass
the last dollar: they overshoot by at most the estimate of the create that took the last of it.
A reservation follows the prediction it is attached to: once the tracker has finished with a
success it is *spent* (with its image count); a failure, cancel or abort *releases* it (not
counted); anything unfinished stays *reserved* (counted), and one the tracker gave up on becomes
*unconfirmed* (still counted; resuming it later does not give the money back). The ledger settles those itself, from
the history, before every decision and read (the tracker stays the only writer of predictions),
so its sums need no join and run on a covering index. A create that failed for sure is released
at once; one whose answer was lost stays counted (it may have been billed). Amounts are
estimates (comet.prices); the bill is CometAPI's.

Periods are in UTC: a calendar month for the app, a calendar day per person. All anonymous
visitors together are one person (ANONYMOUS)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.schema import CreateIndex, CreateTable

from .prediction import ABORTED, CANCELED, FAILED, SUCCEEDED
from .prices import Rule, estimate, usd

ANONYMOUS = "anonymous"
RESERVED, SPENT, RELEASED, UNCONFIRMED = "reserved", "spent", "released", "unconfirmed"
_LOCK = 0x7370656E64  # pg_advisory_xact_lock key held while a reservation is decided ("spend")
_BACKFILL_BATCH = 5000


spend_metadata = sa.MetaData()
spend = sa.Table(
    "spend",
    spend_metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("prediction_id", sa.String(64), unique=True),  # None until the create answers
    sa.Column("person", sa.String(200), nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("usd", sa.Float, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # RESERVED, SPENT, RELEASED or UNCONFIRMED
    sa.Column("images", sa.Integer, nullable=False, default=0),  # stored images, once SPENT
    sa.Column("created_at", sa.Float, nullable=False),  # epoch seconds
    sa.Column("day", sa.String(10), nullable=False),  # UTC date, for grouping on any backend
)
# Covering indexes: the month's and a person's day's sums, and Usage's groups, read no table rows.
sa.Index("ix_spend_day_cover", spend.c.day, spend.c.person, spend.c.model, spend.c.state, spend.c.usd,
         spend.c.images)
sa.Index("ix_spend_person_day", spend.c.person, spend.c.day, spend.c.state, spend.c.usd)
sa.Index("ix_spend_state", spend.c.state)


@dataclass(frozen=True)
class Limits:
    monthly: float | None = None  # USD for the whole app per UTC calendar month
    daily_per_person: float | None = None  # USD per person per UTC day

    @property
    def any(self) -> bool:
        return self.monthly is not None or self.daily_per_person is not None


@dataclass(frozen=True)
class Refusal:
    """A create that would pass a limit: which, what is left, and when it resets."""

    limit: str  # "monthly" or "daily"
    amount: float
    left: float
    resets: datetime

    @property
    def message(self) -> str:
        which = ("this month's spending limit for the app" if self.limit == "monthly"
                 else "your spending limit for today")
        return (f"Not sent: this would pass {which} ({usd(self.amount)}); {usd(max(self.left, 0.0))} is left, "
                f"and it resets {self.resets:%Y-%m-%d %H:%M} UTC.")


@dataclass(frozen=True)
class Left:
    """What the limits leave now (None where there is no limit)."""

    monthly: float | None
    daily: float | None


def person_of(creator: str | None) -> str:
    return (creator or "").strip()[:200] or ANONYMOUS


def _day(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


def _month_start(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-01")


def _next_month(moment: datetime) -> datetime:
    first = moment.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (first + timedelta(days=32)).replace(day=1)


def _next_day(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)


class Ledger:
    """Spend rows in the history's database (`store`: a comet.store.Store)."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self._predictions = sa.table("predictions", sa.column("id"), sa.column("status"),
                                     sa.column("model"), sa.column("input"), sa.column("creator"),
                                     sa.column("created_at"), sa.column("output_count"),
                                     sa.column("tracking"))

        def create(conn: sa.Connection) -> None:
            if store.backend == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK)))
            conn.execute(CreateTable(spend, if_not_exists=True))
            for index in sorted(spend.indexes, key=lambda ix: ix.name):
                conn.execute(CreateIndex(index, if_not_exists=True))

        store._write(create)

    # ---- the counted amount ---------------------------------------------------------------

    def _settle(self, conn: sa.Connection) -> None:
        """Bring reservations in step with their predictions: released when it failed, was
        canceled or aborted; spent (with its image count) once the tracker is done with a
        success; unconfirmed (still counted: it may have been billed) when the tracker gave up
        on it without an outcome. So only predictions still being followed keep a reservation,
        and each settling looks at those few rows only (ix_spend_state)."""
        p = self._predictions.c
        mine = p.id == spend.c.prediction_id
        status = sa.select(p.status).where(mine).scalar_subquery()
        tracking = sa.select(p.tracking).where(mine).scalar_subquery()
        ended = sa.exists().where(mine, sa.or_(p.tracking != "active", p.status.in_([FAILED, CANCELED, ABORTED])))
        conn.execute(
            sa.update(spend)
            .where(spend.c.state == RESERVED, spend.c.prediction_id.is_not(None), ended)
            .values(state=sa.case((status.in_([FAILED, CANCELED, ABORTED]), RELEASED),
                                  (sa.and_(status == SUCCEEDED, tracking == "done"), SPENT),
                                  else_=UNCONFIRMED),
                    images=sa.func.coalesce(sa.select(p.output_count).where(mine).scalar_subquery(), 0))
        )

    def _sum(self, conn: sa.Connection, *where: sa.ColumnElement[bool]) -> float:
        query = sa.select(sa.func.coalesce(sa.func.sum(spend.c.usd), 0.0)).where(spend.c.state != RELEASED, *where)
        return float(conn.scalar(query) or 0.0)

    # ---- reservations ----------------------------------------------------------------------

    def reserve(self, person: str, model: str, usd: float, limits: Limits, *,
                now: datetime | None = None) -> str | Refusal:
        """Reserve `usd` for one create, or refuse it if it would pass a limit. Returns the
        reservation id (attach the prediction to it once the create answers)."""
        now = now or datetime.now(UTC)
        person = person_of(person)
        today, month = _day(now), _month_start(now)

        def decide(conn: sa.Connection) -> str | Refusal:
            if self._store.backend == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK)))
            self._settle(conn)  # money a failure gave back counts for this decision
            if limits.monthly is not None:
                used = self._sum(conn, spend.c.day >= month)
                if used + usd > limits.monthly + 1e-9:
                    return Refusal("monthly", limits.monthly, limits.monthly - used, _next_month(now))
            if limits.daily_per_person is not None:
                used = self._sum(conn, spend.c.day == today, spend.c.person == person)
                if used + usd > limits.daily_per_person + 1e-9:
                    return Refusal("daily", limits.daily_per_person, limits.daily_per_person - used, _next_day(now))
            reservation = uuid.uuid4().hex
            conn.execute(sa.insert(spend).values(id=reservation, person=person, model=model, usd=usd,
                                                 state=RESERVED, images=0, created_at=now.timestamp(), day=today))
            return reservation

        return self._store._write(decide)

    def attach(self, reservation: str, prediction_id: str) -> None:
        """The create answered with this prediction: its outcome now decides the reservation."""
        self._store._write(lambda conn: conn.execute(
            sa.update(spend).where(spend.c.id == reservation).values(prediction_id=prediction_id)))

    def release(self, reservation: str) -> None:
        """The create certainly was not accepted: nothing is owed."""
        self._set_state(reservation, RELEASED)

    def unconfirmed(self, reservation: str) -> None:
        """The create's answer was lost: it may have been accepted and billed, so it stays counted."""
        self._set_state(reservation, UNCONFIRMED)

    def _set_state(self, reservation: str, state: str) -> None:
        self._store._write(lambda conn: conn.execute(
            sa.update(spend).where(spend.c.id == reservation).values(state=state)))

    def left(self, person: str, limits: Limits, *, now: datetime | None = None) -> Left:
        now = now or datetime.now(UTC)
        person = person_of(person)

        def read(conn: sa.Connection) -> Left:
            monthly = daily = None
            if limits.monthly is not None:
                monthly = limits.monthly - self._sum(conn, spend.c.day >= _month_start(now))
            if limits.daily_per_person is not None:
                daily = limits.daily_per_person - self._sum(conn, spend.c.day == _day(now), spend.c.person == person)
            return Left(monthly, daily)

        self._store._write(self._settle)
        return self._store._read(read)

    # ---- reads ----------------------------------------------------------------------------

    def costs(self, prediction_ids: Iterable[str]) -> dict[str, float]:
        """The estimated cost of these predictions (those with a spend row)."""
        ids = list(prediction_ids)
        if not ids:
            return {}
        query = sa.select(spend.c.prediction_id, spend.c.usd).where(spend.c.prediction_id.in_(ids))
        return self._store._read(lambda conn: {row.prediction_id: row.usd for row in conn.execute(query)})

    def with_costs(self, frame: pd.DataFrame) -> pd.DataFrame:
        """`frame` (one row per prediction, an `id` column) with an `estimated_usd` column: for
        an export of any size, one read of the spend rows rather than one query per id."""
        query = sa.select(spend.c.prediction_id, spend.c.usd).where(spend.c.prediction_id.is_not(None))
        costs = self._store._read(lambda conn: dict(conn.execute(query).all()))
        return frame.assign(estimated_usd=frame["id"].map(costs))

    def usage(self, start: date, end: date) -> pd.DataFrame:
        """Counted spend from `start` to `end` (UTC days, inclusive), aggregated in SQL by day,
        person and model: columns day, person, model, predictions (counted), usd (estimated),
        succeeded (predictions), images (stored images of those)."""
        query = (
            sa.select(spend.c.day, spend.c.person, spend.c.model,
                      sa.func.count().label("predictions"),
                      sa.func.sum(spend.c.usd).label("usd"),
                      sa.func.sum(sa.case((spend.c.state == SPENT, 1), else_=0)).label("succeeded"),
                      sa.func.sum(spend.c.images).label("images"))
            .where(spend.c.state != RELEASED, spend.c.day >= start.isoformat(), spend.c.day <= end.isoformat())
            .group_by(spend.c.day, spend.c.person, spend.c.model)
            .order_by(spend.c.day, spend.c.person, spend.c.model)
        )

        self._store._write(self._settle)
        rows = self._store._read(lambda conn: conn.execute(query).all())
        return pd.DataFrame([tuple(r) for r in rows],
                            columns=["day", "person", "model", "predictions", "usd", "succeeded", "images"])

    # ---- predictions recorded before spend existed ----------------------------------------

    def backfill(self, rules: Mapping[str, Rule]) -> int:
        """Give every prediction without a spend row one, its cost estimated from its stored input
        (predictions made before this release, or by a script and tracked here). Idempotent."""
        p = self._predictions.c
        missing = (sa.select(p.id, p.model, p.input, p.creator, p.created_at)
                   .where(~sa.exists().where(spend.c.prediction_id == p.id))
                   .limit(_BACKFILL_BATCH))

        def batch(conn: sa.Connection) -> int:
            # Under the lock, so replicas starting together never insert a row twice.
            if self._store.backend == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK)))
            rows = conn.execute(missing).all()
            if rows:
                conn.execute(sa.insert(spend), [self._backfilled(row, rules) for row in rows])
                self._settle(conn)
            return len(rows)

        added = 0
        while count := self._store._write(batch):
            added += count
        return added

    @staticmethod
    def _backfilled(row: Any, rules: Mapping[str, Rule]) -> dict[str, Any]:
        try:
            model_input = json.loads(row.input or "{}")
        except ValueError:
            model_input = {}
        found = estimate(row.model or "", model_input if isinstance(model_input, dict) else {}, rules)
        created = row.created_at if isinstance(row.created_at, (int, float)) else time.time()
        try:
            day = _day(datetime.fromtimestamp(created, UTC))
        except (OverflowError, OSError, ValueError):
            day = "1970-01-01"
        return {"id": uuid.uuid4().hex, "prediction_id": row.id, "person": person_of(row.creator),
                "model": row.model or "", "usd": found.usd if found else 0.0,
                "state": RESERVED, "images": 0, "created_at": created, "day": day}
