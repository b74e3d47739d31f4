"""The history databases the store and tracker tests run on: an SQLite file, and PostgreSQL.

PostgreSQL tests use the server named by COMET_TEST_POSTGRES_URL (`.ci/run` starts a throwaway
cluster on a loopback port and sets it, e.g. postgresql+psycopg://postgres@127.0.0.1:54329/postgres).
Each test gets a schema of its own, created empty and dropped afterwards, so tests never see
each other's rows. Without the variable the PostgreSQL variants are skipped on a laptop, and fail
when CI=true (a CI run must test both backends).

COMET_TEST_POSTGRES_CTL, when set, is a command that takes `stop` or `start` (pg_ctl for that
cluster, as `.ci/run` writes it): the tests that restart the server under a running app use it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

BACKENDS = ("sqlite", "postgresql")
URL_VARIABLE = "COMET_TEST_POSTGRES_URL"
CTL_VARIABLE = "COMET_TEST_POSTGRES_CTL"


def _missing(what: str) -> None:
    """Skip on a laptop; fail in CI, where a skipped backend would pass unnoticed."""
    message = f"{what} is not set: PostgreSQL tests need a server (see tests/support/backends.py)"
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(message + " and CI=true", pytrace=False)
    pytest.skip(message)


def postgres_server_url() -> sa.URL:
    url = os.environ.get(URL_VARIABLE, "").strip()
    if not url:
        _missing(URL_VARIABLE)
    return sa.make_url(url)


@contextlib.contextmanager
def fresh_database(backend: str, tmp_path: Path) -> Iterator[str]:
    """The URL of a new, empty history database on `backend`, removed afterwards. On PostgreSQL
    that is a schema of its own (creating one takes milliseconds, a database most of a second):
    the URL sets it as the search path, so the store's unqualified tables land there, and as the
    application name, which lets a test find and cut exactly these connections."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'history.sqlite'}"
        return
    server = postgres_server_url()
    name = f"comet_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {name}")
        url = server.update_query_dict({"options": f"-csearch_path={name}", "application_name": name})
        yield url.render_as_string(hide_password=False)
    finally:
        with contextlib.suppress(sa.exc.DBAPIError), admin.connect() as conn:
            terminate_connections(conn, name)
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        admin.dispose()


def terminate_connections(conn: sa.Connection, application_name: str) -> int:
    """Cut every connection a test's database URL opened, from the server side, as a restart
    would; returns how many were cut."""
    return len(conn.execute(sa.text(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = :name AND pid <> pg_backend_pid()"), {"name": application_name}).all())


def cut_connections(url: str) -> int:
    """terminate_connections for the database of `url` (a fresh_database URL)."""
    target = sa.make_url(url)
    admin = sa.create_engine(target.set(query={}), isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    try:
        with admin.connect() as conn:
            return terminate_connections(conn, target.query["application_name"])
    finally:
        admin.dispose()


def postgres_ctl(action: str) -> None:
    """Stop or start the test cluster (COMET_TEST_POSTGRES_CTL)."""
    command = os.environ.get(CTL_VARIABLE, "").strip()
    if not command:
        _missing(CTL_VARIABLE)
    subprocess.run([*shlex.split(command), action], check=True, capture_output=True, timeout=60)
