"""The database: opening it (SQLite pragmas, PostgreSQL's driver), creating and migrating the
schema, and running each read or write with a few quick retries when the database is briefly
unreachable or busy; after that they raise HistoryUnavailable. Every write of the store is
idempotent, so retrying one whole is safe.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.schema import CreateIndex, CreateTable

from ..errors import CometError
from .schema import SCHEMA_VERSION, meta, metadata, outputs, predictions

# Waits between attempts of a read or write that hit a transient error (a restarting server, a
# dropped connection, a locked SQLite file): five attempts over about three seconds.
RETRY_DELAYS = (0.1, 0.3, 0.8, 1.6)
CONNECT_TIMEOUT = 5  # seconds to reach a database server before an attempt counts as failed
# pg_advisory_xact_lock key held while the schema is created or migrated ("comet" in ASCII).
_MIGRATION_LOCK = 0x636F6D6574
_WRITE_OPTION = "comet_write"  # execution option: this SQLite transaction writes (BEGIN IMMEDIATE)
_log = logging.getLogger(__name__)
_T = TypeVar("_T")


class HistoryError(CometError):
    """The history database cannot be used as configured (for example its driver is missing);
    the message says what to change."""


class HistoryUnavailable(HistoryError):
    """The history database could not be reached, even after a few quick retries (a server
    restart, a network outage, a file locked for too long). Nothing is lost by trying again
    later: every write of the store is idempotent."""


def database_url(url: str | sa.URL) -> sa.URL:
    """The URL to open. Hosted PostgreSQL services hand out `postgres://` or `postgresql://`
    URLs: both mean the psycopg (3) driver here, the one requirements.txt names."""
    url = sa.make_url(url)
    if url.drivername in ("postgres", "postgresql"):
        url = url.set(drivername="postgresql+psycopg")
    return url


class Database:
    """One database, opened and migrated. Thread-safe: each call checks out its own pooled
    connection; writes are short transactions. The store's parts run their SQL through
    `_read` and `_write`."""

    def __init__(self, url: str | sa.URL, *, retry_delays: tuple[float, ...] = RETRY_DELAYS) -> None:
        url = database_url(url)
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

    def close(self) -> None:
        self._closed.set()
        self._engine.dispose()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def wait_closed(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds, waking at once when the store is closed."""
        return self._closed.wait(timeout)

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
            _add_missing_columns(conn)  # 1 -> 2: leases; 2 -> 3: outputs.media_key; 3 -> 4: lineage, batch
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
