"""History page at 1k / 10k / 100k stored predictions: SQL time, page build time, memory, and
the size of the table shipped to the browser.

    python bench/history_page.py                       # 1k, 10k, 100k (about 1-2 minutes)
    python bench/history_page.py --sizes 1000,20000    # other sizes

For each size a fresh SQLite history (the app's demo-mode file, `history-demo.sqlite`) is filled
in bulk through SQLAlchemy with the store's own tables (`comet.store.predictions` / `outputs`):
a realistic mix of models, statuses, prompts and creators, and for most succeeded rows one stored
output with its thumbnail (a handful of images rendered by the stand-in, thumbnailed by the
store's own `make_thumbnail`, reused). Then, in a separate process per size (so its memory
figures are its own and its caches start cold):

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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _util
from _util import kib, mib, ms, table

DB_NAME = "history-demo.sqlite"  # the file the app opens in demo mode (no key configured)
STORE_RUNS = 15
SESSIONS = 5
CHUNK = 5_000
PAGE_SIZE = 50  # comet.ui.history_view.PAGE_SIZE

# ---- filling ----------------------------------------------------------------------------------

SUBJECTS = ["lighthouse", "red fox", "paper boat", "astronaut", "tea house", "koi pond", "cyberpunk alley",
            "mountain village", "robot gardener", "owl", "desert caravan", "glass greenhouse", "old tram",
            "jellyfish", "library", "cat in a spacesuit", "windmill", "bonsai tree", "samurai", "street market"]
ADJECTIVES = ["misty", "golden-hour", "neon-lit", "snowy", "tiny", "ancient", "isometric", "cozy", "stormy",
              "moonlit", "vibrant", "minimalist", "overgrown", "floating", "rainy"]
PLACES = ["at sunrise", "in fog", "on a cliff", "under the sea", "in a snow globe", "on Mars", "in Kyoto",
          "by a river", "in a forest", "in the clouds", "at night", "in a busy city"]
STYLES = ["watercolour", "35mm film photo", "anime style", "oil painting", "3d render, octane",
          "pencil sketch", "ukiyo-e print", "cinematic lighting, 8k", "flat vector illustration",
          "polaroid", "long exposure", "tilt-shift photography"]
EXTRAS = ["highly detailed", "soft light", "dramatic shadows", "pastel palette", "wide angle",
          "shallow depth of field", "volumetric light", "award winning", "symmetrical composition",
          "film grain", "bokeh", "muted colours", "high contrast", "golden ratio", "rim lighting"]
CREATORS = ["ana@example.com", "bo@example.com", "chen@example.com", "dara@example.com", "eli@example.com"]
# (status, weight): most runs succeed; unfinished ones are old rows the tracker gave up on, so
# no row is active and the app's tracker has nothing to poll during the measurement.
STATUS_MIX = [("succeeded", 82), ("failed", 7), ("canceled", 4), ("aborted", 2), ("processing", 3), ("starting", 2)]
MODEL_WEIGHTS = [30, 15, 6, 12, 8, 9, 4, 8, 5, 3]  # in catalog order: schnell, the default, leads
ERRORS = {"failed": "Prediction failed: NSFW content detected", "aborted": "Prediction aborted: platform interruption"}
RATIOS = ["1:1", "16:9", "3:2", "2:3", "4:5", "9:16"]
IMAGES = 8  # distinct rendered images, reused


def fill(path: Path, size: int) -> None:
    """`size` predictions into a fresh history file, in bulk, in one transaction."""
    import random

    import sqlalchemy as sa

    from comet import catalog
    from comet.sim import _render
    from comet.store import Store, make_thumbnail, outputs, predictions

    url = sa.URL.create("sqlite", database=str(path))
    Store(url).close()  # the schema exactly as the app creates it (tables, indexes, WAL, version)
    rng = random.Random(size)
    models = list(catalog.MODELS)
    statuses, status_weights = zip(*STATUS_MIX)
    images = []
    for n in range(IMAGES):
        data = _render(f"{rng.choice(ADJECTIVES)} {rng.choice(SUBJECTS)}", n, 0, "webp", (512, 512), 80)
        images.append((data, make_thumbnail(data)))
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    now = time.time()
    span = max(30 * 86400, size * 120.0)  # about one prediction every two minutes

    engine = sa.create_engine(url)

    @sa.event.listens_for(engine, "connect")
    def _fast(dbapi_connection, _record):  # bulk load only: the app's own engine is untouched
        dbapi_connection.execute("PRAGMA synchronous = OFF")

    with engine.begin() as conn:
        for start in range(0, size, CHUNK):
            rows, files = [], []
            for _ in range(min(CHUNK, size - start)):
                pid = "".join(rng.choices(alphabet, k=26))
                model = rng.choices(models, MODEL_WEIGHTS)[0]
                status = rng.choices(statuses, status_weights)[0]
                prompt = (f"{rng.choice(ADJECTIVES)} {rng.choice(SUBJECTS)} {rng.choice(PLACES)}, "
                          f"{rng.choice(STYLES)}, " + ", ".join(rng.sample(EXTRAS, rng.randint(0, 6))))
                model_input = {"prompt": prompt, "aspect_ratio": rng.choice(RATIOS),
                               "output_format": rng.choice(["webp", "jpg", "png"])}
                if rng.random() < 0.2:
                    model_input["seed"] = rng.randrange(2**32)
                created = now - rng.uniform(0, span)
                terminal = status not in ("processing", "starting")
                started = created + rng.uniform(0.3, 3) if status != "starting" else None
                run_time = rng.uniform(1.5, 25) if terminal else None
                completed = (started or created) + run_time if terminal else None
                seed = model_input.get("seed", rng.randrange(2**32))
                logs = f"Using seed: {seed}\n" if started else ""
                if status == "succeeded":
                    logs += "".join(f"{25 * k:3d}%|{'█' * (25 * k // 10):<10}| {k}/4 [00:0{k}<00:0{4 - k}, "
                                    "1.02it/s]\n" for k in range(1, 5))
                    logs += f"Generated 1 image(s) in {run_time:.2f}s\n"
                elif status in ERRORS:
                    logs += ERRORS[status] + "\n"
                stored = status == "succeeded" and rng.random() < 0.9  # else it expired unsaved
                note = None
                if status == "succeeded" and not stored:
                    note = "The outputs expired before they could be saved."
                elif not terminal:
                    note = "Gave up after 45 min without a final status."
                fmt = model_input["output_format"]
                rows.append({
                    "id": pid, "model": model, "status": status, "input": json.dumps(model_input),
                    "prompt": prompt, "error": ERRORS.get(status), "logs_tail": logs,
                    "created_at": created, "started_at": started, "completed_at": completed,
                    "run_time": run_time, "creator": rng.choice(CREATORS) if rng.random() < 0.4 else None,
                    "recorded_at": created + 0.2, "updated_at": (completed or created) + 1.0,
                    "last_polled_at": (completed or created) + 0.5, "next_poll_at": None, "poll_failures": 0,
                    "tracking": "done" if terminal else "gave_up", "note": note,
                    "output_urls": json.dumps([f"https://replicate.delivery/xezq/{pid}/out-0.{fmt}"]
                                              if status == "succeeded" else []),
                    "data_removed": status == "succeeded" and not stored,
                    "output_count": 1 if stored else 0,
                })
                if stored:
                    data, thumbnail = rng.choice(images)
                    files.append({"prediction_id": pid, "idx": 0, "content_type": "image/webp",
                                  "size": len(data), "data": data, "thumbnail": thumbnail,
                                  "source_url": f"https://replicate.delivery/xezq/{pid}/out-0.{fmt}"})
            conn.execute(sa.insert(predictions), rows)
            if files:
                conn.execute(sa.insert(outputs), files)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()


# ---- measuring (one process per size) ---------------------------------------------------------


def measure(data_dir: Path, size: int) -> dict:
    import gc
    import tracemalloc

    import sqlalchemy as sa
    from streamlit.testing.v1 import AppTest

    from comet.store import Store

    _util.app_environment(data_dir)
    _util.clear_caches()
    result: dict = {"size": size, "file_bytes": (data_dir / DB_NAME).stat().st_size}

    # (a) the store alone
    store = Store(sa.URL.create("sqlite", database=str(data_dir / DB_NAME)))
    last_offset = (size - 1) // PAGE_SIZE * PAGE_SIZE
    calls = {
        "page_count": lambda: (store.page(limit=PAGE_SIZE), store.count()),
        "models": store.models,
        "last_page": lambda: store.page(limit=PAGE_SIZE, offset=last_offset),
        "search": lambda: (store.page(text="fox", limit=PAGE_SIZE), store.count(text="fox")),
    }
    for name, call in calls.items():
        call(), call()  # warm the page cache and the statement cache
        times = []
        for _ in range(STORE_RUNS):
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
        result[name] = _util.median(times)
    assert store.count() == size, (store.count(), size)
    store.close()

    # (b) the page, built by AppTest
    def open_session() -> AppTest:
        at = AppTest.from_file(str(_util.APP), default_timeout=120)
        at.run()  # the default page (Create): the session is open, not measured
        return at

    def check(at: AppTest) -> None:
        if at.exception:
            raise RuntimeError(f"the History page raised: {at.exception[0].value}")
        if not any(f"{size:,} prediction" in c.value for c in at.caption):
            raise RuntimeError("the History table did not show the expected total")

    warm = open_session()
    check(warm.switch_page(_util.HISTORY_PAGE).run())
    warm.run()
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

    # (c) memory of one first open, and the table shipped
    at = open_session()
    gc.collect()
    tracemalloc.start()
    at.switch_page(_util.HISTORY_PAGE).run()
    result["traced_peak"] = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    check(at)
    shown = at.dataframe[0]
    result["rows_shipped"] = len(shown.value)
    result["arrow_bytes"] = len(shown.proto.arrow_data.data)
    result["frame_bytes"] = int(shown.value.memory_usage(deep=True).sum())
    result["rss"] = _util.rss_bytes()
    result["peak_rss"] = _util.peak_rss_bytes()
    _util.clear_caches()
    return result


# ---- the driver -------------------------------------------------------------------------------


def run_child(*args: str) -> str:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=_util.REPO)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"{' '.join(args)} failed (exit {done.returncode})")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated history sizes")
    parser.add_argument("--fill", nargs=2, metavar=("FILE", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--measure", nargs=2, metavar=("DIR", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    _util.quiet()
    if args.fill:
        fill(Path(args.fill[0]), int(args.fill[1]))
        return
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
            t0 = time.perf_counter()
            run_child("--fill", str(data_dir / DB_NAME), str(size))
            filled = time.perf_counter() - t0
            result = json.loads(run_child("--measure", str(data_dir), str(size)).strip().splitlines()[-1])
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
