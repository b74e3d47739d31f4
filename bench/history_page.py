"""History page at 1k / 10k / 100k stored predictions: SQL time, page build time, memory, and
the size of the table shipped to the browser.

    python bench/history_page.py                       # 1k, 10k, 100k (about 1-2 minutes)
    python bench/history_page.py --sizes 1000,20000    # other sizes

For each size a fresh SQLite history (the app's demo-mode file, `history-demo.sqlite`) is filled
in bulk through SQLAlchemy with the store's own tables (`comet.store.predictions` / `outputs`)
by `_history_data.fill`: a realistic mix of models, statuses, prompts, logs and creators, the
same for the same size, and for most succeeded rows one stored output with its thumbnail (a
handful of images rendered by the stand-in, thumbnailed by the store's own `make_thumbnail`,
reused). Then, in a separate process per size (so its memory figures are its own and its caches
start cold):

  (a) `Store.page()` (first page of 50) + `Store.count()`, median of 15 runs; also `models()`
      (read by the filters on every build), the last page (OFFSET paging) and a prompt search;
  (b) the History page built by AppTest from `streamlit_app.py`: first open
      (`switch_page("pages/history.py").run()`) and a plain rerun, median of 5 sessions after one
      warm-up session;
  (c) tracemalloc peak during one first open, the process RSS after the builds and its peak;
  plus the table shipped: rows, Arrow bytes of the st.dataframe proto, and the pandas deep
  memory of `at.dataframe[0].value`.

Timings are printed, never asserted. Everything lives in one temp folder, removed at the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import _util
from _history_data import (
    DB_NAME,
    PAGE_SIZE,
    SESSIONS,
    STORE_RUNS,
    fill_in_child,
    open_session,
    page_timings,
    run_child,
    shows_total,
    sqlite_url,
    store_timings,
)
from _util import kib, mib, ms, table

# ---- measuring (one process per size) ---------------------------------------------------------


def measure(data_dir: Path, size: int) -> dict:
    import gc
    import tracemalloc

    from comet.store import Store

    _util.app_environment(data_dir)
    _util.clear_caches()
    result: dict = {"size": size, "file_bytes": (data_dir / DB_NAME).stat().st_size}

    # (a) the store alone
    store = Store(sqlite_url(data_dir))
    result |= store_timings(store, size)
    store.close()

    # (b) the page, built by AppTest
    result["open"], result["rerun"], _ = page_timings(shows_total(size))

    # (c) memory of one first open, and the table shipped
    at = open_session()
    gc.collect()
    tracemalloc.start()
    at.switch_page(_util.HISTORY_PAGE).run()
    result["traced_peak"] = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    shows_total(size)(at)
    shown = at.dataframe[0]
    result["rows_shipped"] = len(shown.value)
    result["arrow_bytes"] = len(shown.proto.arrow_data.data)
    result["frame_bytes"] = int(shown.value.memory_usage(deep=True).sum())
    result["rss"] = _util.rss_bytes()
    result["peak_rss"] = _util.peak_rss_bytes()
    _util.clear_caches()
    return result


# ---- the driver -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated history sizes")
    parser.add_argument("--measure", nargs=2, metavar=("DIR", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    _util.quiet()
    if args.measure:
        print(json.dumps(measure(Path(args.measure[0]), int(args.measure[1]))))
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"History page benchmark · {_util.machine()}")
    results = []
    work = Path(tempfile.mkdtemp(prefix="comet-bench-history-"))
    try:
        for size in sizes:
            data_dir = work / str(size)
            data_dir.mkdir()
            filled = fill_in_child(sqlite_url(data_dir), size)
            result = json.loads(run_child(__file__, "--measure", str(data_dir), str(size)))
            result["fill"] = filled
            results.append(result)
            shutil.rmtree(data_dir)
            print(f"  {size:,} rows: filled in {filled:.1f} s, measured", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def label(r: dict) -> str:
        return f"{r['size']:,}"

    print()
    print(f"(a) Store, median of {STORE_RUNS} runs (page = first {PAGE_SIZE} rows, newest first)")
    print(table(
        ["rows", "db file", "page()+count()", "models()", "last page", "search 'fox'"],
        [[label(r), mib(r["file_bytes"]), ms(r["page_count"]), ms(r["models"]), ms(r["last_page"]),
          ms(r["search"])] for r in results]))
    print()
    print(f"(b, c) History page via AppTest, median of {SESSIONS} sessions; memory of one first open")
    print(table(
        ["rows", "first open", "rerun", "tracemalloc peak", "RSS after", "peak RSS"],
        [[label(r), ms(r["open"]), ms(r["rerun"]), mib(r["traced_peak"]), mib(r["rss"]), mib(r["peak_rss"])]
         for r in results]))
    print()
    print("Table shipped to the browser (st.dataframe of the History page)")
    print(table(
        ["rows stored", "rows shipped", "Arrow bytes", "DataFrame deep memory"],
        [[label(r), str(r["rows_shipped"]), kib(r["arrow_bytes"]), kib(r["frame_bytes"])] for r in results]))
    if len(results) > 1:
        first, last = results[0], results[-1]
        print()
        print(f"Ratios {label(last)} / {label(first)} rows")
        keys = [("page()+count()", "page_count"), ("models()", "models"), ("last page", "last_page"),
                ("search 'fox'", "search"), ("page first open", "open"), ("page rerun", "rerun"),
                ("tracemalloc peak", "traced_peak"), ("RSS after", "rss"), ("Arrow bytes shipped", "arrow_bytes")]
        print(table(["figure", "ratio"], [[name, f"{last[key] / first[key]:.2f}x"] for name, key in keys]))


if __name__ == "__main__":
    main()
