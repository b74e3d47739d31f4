"""History page at 100k stored predictions: PostgreSQL beside SQLite.

    python bench/history_postgres.py                       # 100k rows, a throwaway PostgreSQL cluster
    python bench/history_postgres.py --postgres-url URL    # a server you run (a scratch database is
                                                           # created on it and dropped at the end)
    python bench/history_postgres.py --size 20000

The same 100k predictions (same seed: models, statuses, prompts, creators, and for most succeeded
rows one stored output with its thumbnail) are bulk-loaded into a fresh SQLite file (the app's
demo-mode file) and a fresh PostgreSQL database, each with the schema exactly as `Store` creates
it. PostgreSQL then gets `VACUUM ANALYZE`, the state autovacuum keeps a live database in. Then, in
a separate process per backend (cold caches, its own memory):

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
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import _util
from _util import mib, ms, table

SQLITE_NAME = "history-demo.sqlite"  # the file the app opens in demo mode (no key configured)
STORE_RUNS = 15
SESSIONS = 5
CHUNK = 5_000
PAGE_SIZE = 50  # comet.ui.history_view.PAGE_SIZE

MODELS = ["black-forest-labs/flux-schnell", "black-forest-labs/flux-dev", "black-forest-labs/flux-pro",
          "black-forest-labs/flux-1.1-pro", "black-forest-labs/flux-1.1-pro-ultra",
          "black-forest-labs/flux-kontext-pro", "black-forest-labs/flux-kontext-max",
          "black-forest-labs/flux-2-pro", "black-forest-labs/flux-2-dev", "black-forest-labs/flux-2-flex"]
MODEL_WEIGHTS = [30, 15, 6, 12, 8, 9, 4, 8, 5, 3]
STATUS_MIX = [("succeeded", 82), ("failed", 7), ("canceled", 4), ("aborted", 2), ("processing", 3), ("starting", 2)]
SUBJECTS = ["lighthouse", "red fox", "paper boat", "astronaut", "tea house", "koi pond", "owl", "library",
            "windmill", "bonsai tree", "street market", "jellyfish", "old tram", "robot gardener"]
ADJECTIVES = ["misty", "golden-hour", "neon-lit", "snowy", "tiny", "ancient", "isometric", "cozy", "moonlit"]
STYLES = ["watercolour", "35mm film photo", "anime style", "oil painting", "3d render", "pencil sketch"]
CREATORS = ["ana@example.com", "bo@example.com", "chen@example.com", "dara@example.com", "eli@example.com"]
ERRORS = {"failed": "Prediction failed: NSFW content detected", "aborted": "Prediction aborted: platform interruption"}


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


# ---- filling ----------------------------------------------------------------------------------


def rows(size: int, images: list[tuple[bytes, bytes]]) -> Iterator[tuple[list[dict], list[dict]]]:
    """`size` predictions (and their stored outputs) in chunks; the same for the same size."""
    rng = random.Random(size)
    statuses, weights = zip(*STATUS_MIX)
    now = time.time()
    span = max(30 * 86400, size * 120.0)
    for start in range(0, size, CHUNK):
        predictions, outputs = [], []
        for _ in range(min(CHUNK, size - start)):
            pid = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=26))
            status = rng.choices(statuses, weights)[0]
            prompt = f"{rng.choice(ADJECTIVES)} {rng.choice(SUBJECTS)}, {rng.choice(STYLES)}"
            created = now - rng.uniform(0, span)
            terminal = status not in ("processing", "starting")
            run_time = rng.uniform(1.5, 25) if terminal else None
            stored = status == "succeeded" and rng.random() < 0.9
            url = f"https://replicate.delivery/xezq/{pid}/out-0.webp"
            predictions.append({
                "id": pid, "model": rng.choices(MODELS, MODEL_WEIGHTS)[0], "status": status,
                "input": json.dumps({"prompt": prompt, "aspect_ratio": "1:1"}), "prompt": prompt,
                "error": ERRORS.get(status), "logs_tail": "", "created_at": created,
                "started_at": created + 1.0, "completed_at": created + 1.0 + run_time if terminal else None,
                "run_time": run_time, "creator": rng.choice(CREATORS) if rng.random() < 0.4 else None,
                "recorded_at": created + 0.2, "updated_at": created + 30.0, "last_polled_at": created + 29.0,
                "next_poll_at": None, "poll_failures": 0, "tracking": "done" if terminal else "gave_up",
                "note": None, "output_urls": json.dumps([url] if status == "succeeded" else []),
                "data_removed": status == "succeeded" and not stored, "output_count": 1 if stored else 0,
            })
            if stored:
                data, thumbnail = rng.choice(images)
                outputs.append({"prediction_id": pid, "idx": 0, "content_type": "image/webp", "size": len(data),
                                "data": data, "thumbnail": thumbnail, "source_url": url})
        yield predictions, outputs


def fill(url: str, size: int) -> float:
    """Load `size` predictions into the (new, empty) database at `url`; returns the seconds taken."""
    import sqlalchemy as sa

    from comet.sim import _render
    from comet.store import Store, make_thumbnail, outputs, predictions

    started = time.perf_counter()
    Store(url).close()  # the schema exactly as the app creates it
    images = []
    for n in range(8):
        data = _render(f"bench image {n}", n, 0, "webp", (512, 512), 80)
        images.append((data, make_thumbnail(data)))
    engine = sa.create_engine(url)
    if engine.dialect.name == "sqlite":
        @sa.event.listens_for(engine, "connect")
        def _fast(dbapi_connection, _record):  # the load only; the app's own engine is untouched
            dbapi_connection.execute("PRAGMA synchronous = OFF")
    with engine.begin() as conn:
        for chunk, files in rows(size, images):
            conn.execute(sa.insert(predictions), chunk)
            if files:
                conn.execute(sa.insert(outputs), files)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    else:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return time.perf_counter() - started


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
    last_offset = (size - 1) // PAGE_SIZE * PAGE_SIZE
    calls = {
        "page_count": lambda: (store.page(limit=PAGE_SIZE), store.count()),
        "models": store.models,
        "last_page": lambda: store.page(limit=PAGE_SIZE, offset=last_offset),
        "search": lambda: (store.page(text="fox", limit=PAGE_SIZE), store.count(text="fox")),
    }
    for name, call in calls.items():
        call(), call()  # warm the caches
        times = []
        for _ in range(STORE_RUNS):
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
        result[name] = _util.median(times)
    assert store.count() == size, (store.count(), size)
    store.close()

    def open_session() -> AppTest:
        at = AppTest.from_file(str(_util.APP), default_timeout=120)
        at.run()  # the default page: the session is open, not measured
        return at

    def check(at: AppTest) -> None:
        if at.exception:
            raise RuntimeError(f"the History page raised: {at.exception[0].value}")
        if not at.dataframe:
            raise RuntimeError("the History page shows no table")

    warm = open_session()
    check(warm.switch_page(_util.HISTORY_PAGE).run())
    opens, reruns = [], []
    for _ in range(SESSIONS):
        at = open_session()
        t0 = time.perf_counter()
        at.switch_page(_util.HISTORY_PAGE).run()
        opens.append(time.perf_counter() - t0)
        check(at)
        t0 = time.perf_counter()
        at.run()
        reruns.append(time.perf_counter() - t0)
        check(at)
    result["open"] = _util.median(opens)
    result["rerun"] = _util.median(reruns)
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


def run_child(*args: str) -> str:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=_util.REPO)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"{args[0]} failed (exit {done.returncode})")
    return done.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000, help="predictions in history")
    parser.add_argument("--postgres-url", default=os.environ.get("COMET_BENCH_POSTGRES_URL"),
                        help="a PostgreSQL server to use (default: start a throwaway cluster)")
    parser.add_argument("--fill", nargs=2, metavar=("URL", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--measure", nargs=4, metavar=("BACKEND", "URL", "N", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    _util.quiet()
    if args.fill:
        print(json.dumps(fill(args.fill[0], int(args.fill[1]))))
        return
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
            from sqlalchemy import text, create_engine

            engine = create_engine(postgres)
            with engine.connect() as conn:
                version = conn.scalar(text("SHOW server_version")).split()[0]
            engine.dispose()
            sqlite_dir = work / "sqlite"
            sqlite_dir.mkdir()
            targets = [("sqlite", f"sqlite:///{sqlite_dir / SQLITE_NAME}", sqlite_dir),
                       ("postgresql", postgres, work / "empty")]
            (work / "empty").mkdir()
            for backend, url, data_dir in targets:
                filled = json.loads(run_child("--fill", url, str(args.size)))
                result = json.loads(run_child("--measure", backend, url, str(args.size), str(data_dir)))
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
