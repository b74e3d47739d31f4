"""History page at 100k stored predictions: PostgreSQL beside SQLite.

    python bench/history_postgres.py                       # 100k rows, a throwaway PostgreSQL cluster
    python bench/history_postgres.py --postgres-url URL    # a server you run (a scratch database is
                                                           # created on it and dropped at the end)
    python bench/history_postgres.py --size 20000

The same 100k predictions, from the generator history_page.py uses (`_history_data`, seeded by
the size: models, statuses, prompts, logs, creators, and for most succeeded rows one stored output
with its thumbnail), are bulk-loaded into a fresh SQLite file (the app's demo-mode file) and a
fresh PostgreSQL database, each with the schema exactly as `Store` creates it. PostgreSQL then
gets `VACUUM ANALYZE`, the state autovacuum keeps a live database in. Then, in a separate process
per backend (cold caches, its own memory):

  (a) the store alone, median of 15 runs: `Store.page()` (first page of 50) + `Store.count()`,
      `models()` (read by the filters on every build), the last page (OFFSET paging), and a prompt
      search (`page(text="fox")` + `count(text="fox")`);
  (b) the History page built by AppTest from `streamlit_app.py`, the app configured as a user
      would (PostgreSQL through COMET_DATABASE_URL): first open and a plain rerun, median of 5
      sessions after one warm-up session.

Without --postgres-url (or COMET_BENCH_POSTGRES_URL) it starts its own cluster on a free loopback
port from Debian's `postgresql` package (default settings, durability off for the load only).
Timings are printed, never asserted. Everything lives in one temp folder, removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import _util
from _history_data import PAGE_SIZE, SESSIONS, STORE_RUNS, fill_in_child, page_timings, run_child, sqlite_url, store_timings
from _util import mib, ms, table

# ---- the PostgreSQL server --------------------------------------------------------------------


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[str]:
    """A PostgreSQL cluster of Debian's newest installed version on a free loopback port."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: float(p.parts[-3]))
    if not found:
        raise SystemExit("No PostgreSQL server: apt-get install postgresql, or pass --postgres-url")
    bin_dir = found[-1].parent
    work = Path(tempfile.mkdtemp(prefix="comet-bench-cluster-"))
    data = work / "data"
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # initdb refuses root
    if as_pg:
        shutil.chown(work, "postgres", "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ctl = [*as_pg, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(work / "server.log"), "-w"]
    try:
        subprocess.run([*as_pg, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                        "-E", "UTF8", "--no-sync"], check=True, capture_output=True)
        options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={work} -c fsync=off"
        subprocess.run([*ctl, "-o", options, "start"], check=True, capture_output=True)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    import sqlalchemy as sa

    server = sa.make_url(server_url)
    name = f"comet_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


# ---- measuring (one process per backend) ------------------------------------------------------


def measure(backend: str, url: str, size: int, data_dir: Path) -> dict:
    from streamlit.testing.v1 import AppTest

    from comet.store import Store

    _util.app_environment(data_dir)  # demo mode, no settings from the developer's environment
    if backend == "postgresql":
        os.environ["COMET_DATABASE_URL"] = url
    _util.clear_caches()
    result: dict = {"backend": backend, "size": size}

    store = Store(url)
    result |= store_timings(store, size)
    store.close()

    def check(at: AppTest) -> None:
        if at.exception:
            raise RuntimeError(f"the History page raised: {at.exception[0].value}")
        if not at.dataframe:
            raise RuntimeError("the History page shows no table")

    result["open"], result["rerun"], at = page_timings(check)
    result["rows_shipped"] = len(at.dataframe[0].value)
    _util.clear_caches()
    return result


def database_bytes(backend: str, url: str) -> int:
    import sqlalchemy as sa

    if backend == "sqlite":
        return Path(sa.make_url(url).database).stat().st_size
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        size = conn.scalar(sa.text("SELECT pg_database_size(current_database())"))
    engine.dispose()
    return size


# ---- the driver -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000, help="predictions in history")
    parser.add_argument("--postgres-url", default=os.environ.get("COMET_BENCH_POSTGRES_URL"),
                        help="a PostgreSQL server to use (default: start a throwaway cluster)")
    parser.add_argument("--measure", nargs=4, metavar=("BACKEND", "URL", "N", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    _util.quiet()
    if args.measure:
        backend, url, size, data_dir = args.measure
        print(json.dumps(measure(backend, url, int(size), Path(data_dir))))
        return

    print(f"History page, PostgreSQL beside SQLite · {_util.machine()}")
    work = Path(tempfile.mkdtemp(prefix="comet-bench-postgres-"))
    results = []
    try:
        with contextlib.ExitStack() as stack:
            server = args.postgres_url or stack.enter_context(throwaway_cluster())
            postgres = stack.enter_context(scratch_database(server))
            from sqlalchemy import create_engine, text

            engine = create_engine(postgres)
            with engine.connect() as conn:
                version = conn.scalar(text("SHOW server_version")).split()[0]
            engine.dispose()
            sqlite_dir = work / "sqlite"
            sqlite_dir.mkdir()
            targets = [("sqlite", sqlite_url(sqlite_dir), sqlite_dir),
                       ("postgresql", postgres, work / "empty")]
            (work / "empty").mkdir()
            for backend, url, data_dir in targets:
                filled = fill_in_child(url, args.size)
                result = json.loads(run_child(__file__, "--measure", backend, url, str(args.size), str(data_dir)))
                result |= {"fill": filled, "bytes": database_bytes(backend, url)}
                results.append(result)
                print(f"  {backend}: {args.size:,} rows filled in {filled:.1f} s, measured", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    names = {"sqlite": "SQLite (WAL file)", "postgresql": f"PostgreSQL {version} (loopback)"}
    print()
    print(f"(a) Store at {args.size:,} predictions, median of {STORE_RUNS} runs (page = first {PAGE_SIZE} rows)")
    print(table(
        ["backend", "database", "page()+count()", "models()", "last page", "search 'fox'"],
        [[names[r["backend"]], mib(r["bytes"]), ms(r["page_count"]), ms(r["models"]), ms(r["last_page"]),
          ms(r["search"])] for r in results]))
    print()
    print(f"(b) History page via AppTest at {args.size:,} predictions, median of {SESSIONS} sessions")
    print(table(
        ["backend", "first open", "rerun", "rows shipped"],
        [[names[r["backend"]], ms(r["open"]), ms(r["rerun"]), str(r["rows_shipped"])] for r in results]))


if __name__ == "__main__":
    main()
