"""The Usage page at 100,000 predictions, SQLite and PostgreSQL: spend aggregated in SQL.

    python bench/usage_page.py                  # 100k predictions on each backend (about 4 min)
    python bench/usage_page.py --size 20000

The synthetic history of the History benchmarks (`_history_data.generate`: 100k predictions over
about 140 days, 40 % with a creator) is bulk-loaded into a fresh SQLite file and a fresh
PostgreSQL database (a throwaway cluster, or --postgres-url), as in history_postgres.py. Then, per
backend in its own process: the spend ledger is created and every prediction costed from its
stored input (`Ledger.backfill`: what the first start after upgrading does, on a thread), then
the table is analysed (VACUUM ANALYZE on PostgreSQL, as autovacuum would), `Ledger.usage()` for
this month and for the whole span (median of 15 runs), and the Usage page built by AppTest for
"This month" (first open, median of 5 sessions after a warm-up).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

import _util
from _history_data import SESSIONS, STORE_RUNS, fill_in_child, open_session, run_child, sqlite_url
from _util import ms, table
from history_postgres import scratch_database, throwaway_cluster

USAGE_PAGE = "pages/usage.py"


def measure(backend: str, url: str, data_dir: Path) -> dict:
    from comet import prices
    from comet.ledger import Ledger
    from comet.store import Store

    _util.app_environment(data_dir)
    if backend == "postgresql":
        os.environ["COMET_DATABASE_URL"] = url
    _util.clear_caches()
    result: dict = {"backend": backend}
    store = Store(url)
    t0 = time.perf_counter()
    ledger = Ledger(store)
    result["backfilled"] = ledger.backfill(prices.rules())
    result["backfill"] = time.perf_counter() - t0
    # The state a live database is in after autovacuum / SQLite's optimize (as history_postgres.py
    # leaves the predictions): statistics for the planner, a visibility map for index-only scans.
    with store._engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE spend" if backend == "postgresql" else "ANALYZE")
    today = datetime.now(UTC).date()
    for name, first in (("month", today.replace(day=1)), ("all", date(2000, 1, 1))):
        ledger.usage(first, today)
        times = []
        for _ in range(STORE_RUNS):
            t0 = time.perf_counter()
            frame = ledger.usage(first, today)
            times.append(time.perf_counter() - t0)
        result[name] = _util.median(times)
        result[f"{name}_groups"] = len(frame)
        result[f"{name}_usd"] = float(frame["usd"].sum())
    store.close()

    def build() -> float:
        at = open_session()
        t0 = time.perf_counter()
        at.switch_page(USAGE_PAGE).run()
        took = time.perf_counter() - t0
        if at.exception or not at.metric:
            raise RuntimeError(f"the Usage page did not build: {at.exception}")
        return took

    build()  # warm-up
    result["page"] = _util.median([build() for _ in range(SESSIONS)])
    _util.clear_caches()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--postgres-url", default=os.environ.get("COMET_BENCH_POSTGRES_URL"))
    parser.add_argument("--measure", nargs=3, metavar=("BACKEND", "URL", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    _util.quiet()
    if args.measure:
        backend, url, data_dir = args.measure
        print(json.dumps(measure(backend, url, Path(data_dir))))
        return

    print(f"Usage page at {args.size:,} predictions · {_util.machine()}")
    work = Path(tempfile.mkdtemp(prefix="comet-bench-usage-"))
    results = []
    try:
        with contextlib.ExitStack() as stack:
            server = args.postgres_url or stack.enter_context(throwaway_cluster())
            postgres = stack.enter_context(scratch_database(server))
            sqlite_dir, empty = work / "sqlite", work / "empty"
            sqlite_dir.mkdir()
            empty.mkdir()
            for backend, url, data_dir in (("sqlite", sqlite_url(sqlite_dir), sqlite_dir),
                                           ("postgresql", postgres, empty)):
                filled = fill_in_child(url, args.size)
                results.append(json.loads(run_child(__file__, "--measure", backend, url, str(data_dir))))
                print(f"  {backend}: {args.size:,} rows filled in {filled:.1f} s, measured", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(table(
        ["backend", "backfill (first start)", "usage() this month", "usage() all", "groups (month)",
         "Usage page build"],
        [[r["backend"], f"{r['backfill']:.1f} s ({r['backfilled']:,} rows)", ms(r["month"]), ms(r["all"]),
          str(r["month_groups"]), ms(r["page"])] for r in results]))
    same = abs(results[0]["all_usd"] - results[-1]["all_usd"]) < 1e-6
    print(f"\nsame total on both backends: {same} (${results[0]['all_usd']:,.2f})")


if __name__ == "__main__":
    main()
