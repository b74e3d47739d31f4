"""The synthetic History shared by the history benchmarks (not a benchmark itself).

`history_page.py` (SQLite at several sizes) and `history_postgres.py` (PostgreSQL beside SQLite)
load the same rows and time them the same way (`media_store.py` too, with an image per output):

- `generate(size)`: `size` predictions in the store's own row shape, the same for the same size
  (`random.Random(size)`): ten models weighted toward the default, statuses 82 % succeeded, 7 %
  failed, 4 % canceled, 2 % aborted, 5 % unfinished rows the tracker gave up on (none active, so
  nothing polls during a measurement), prompts built from subjects, places, styles and extras,
  inputs with aspect ratio, output format and sometimes a seed, logs, notes, 40 % with a creator,
  and for 90 % of the succeeded rows one stored output: eight images rendered by the stand-in
  (512 px WebP) with thumbnails made by `comet.images.make_thumbnail`, reused;
- `generate(size, distinct=True)`: the same rows, but every stored output its own image, as real
  outputs are (the media stores keep one object per distinct image): eight photo-like 512 px WebP
  (~30 KB, the size of a 0.25 MP output), each output with its prediction id written into the
  EXIF description, so the bytes (and their SHA-256 key) differ while the size stays the same;
- `fill(url, size)`: those rows bulk-loaded into a new SQLite or PostgreSQL database (in a child
  process: `fill_in_child`); `fill(..., place=...)` hands each image to a media store instead and
  keeps only its key in the row (images outside the database);
- `store_timings(store, size)` and `page_timings(check)`: the store alone, and the History page
  built by AppTest;
- `run_child(script, ...)`: the last line a script printed in a fresh interpreter (each benchmark
  measures in child processes of itself: cold caches, its own memory figures).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import _util

if TYPE_CHECKING:
    import sqlalchemy as sa
    from streamlit.testing.v1 import AppTest

    from comet.store import Store

DB_NAME = "history-demo.sqlite"  # the file the app opens in demo mode (no key configured)
STORE_RUNS = 15
SESSIONS = 5
CHUNK = 5_000
PAGE_SIZE = 50  # comet.ui.history_view.PAGE_SIZE

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
DISTINCT_MARK = b"@" * 26  # a prediction id's length: replaced by one in each distinct image


def run_child(script: str, *args: str) -> str:
    """The last line `script` printed, run with `args` in a fresh interpreter (cold caches, its own
    memory figures); on failure its stderr, and only `args[0]` named: a URL may hold a password."""
    done = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, cwd=_util.REPO)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"{args[0]} failed (exit {done.returncode})")
    return done.stdout.strip().splitlines()[-1]


def sqlite_url(data_dir: Path) -> str:
    """The app's demo-mode history file in `data_dir`, as a URL a child process can take."""
    return f"sqlite:///{data_dir / DB_NAME}"


# ---- filling ----------------------------------------------------------------------------------


def photo_like(prompt: str, n: int) -> bytes:
    """A 512 px WebP (quality 80, as the models' default) that compresses like a photo, not like the
    stand-in's flat shapes: its render under coarse noise (light, forms) and fine grain; ~30 KB,
    with DISTINCT_MARK in its EXIF description for `distinct_copy`."""
    import io

    from PIL import Image

    from comet.sim import _render

    side, cells = 512, 96
    rng = random.Random(f"{prompt}/{n}")  # the same image in every process (its key is its hash)

    def noise(width: int) -> Image.Image:
        return Image.frombytes("RGB", (width, width), rng.randbytes(width * width * 3))

    rendered = Image.open(io.BytesIO(_render(prompt, n, 0, "png", (side, side), 80))).convert("RGB")
    coarse = noise(cells).resize((side, side), Image.BICUBIC)
    image = Image.blend(Image.blend(rendered, coarse, 0.25), noise(side), 0.02)
    exif = Image.Exif()
    exif[0x010E] = "comet-bench " + DISTINCT_MARK.decode()  # ImageDescription
    out = io.BytesIO()
    image.save(out, "WEBP", quality=80, exif=exif.tobytes())
    data = out.getvalue()
    if data.count(DISTINCT_MARK) != 1:
        raise RuntimeError("the image's placeholder is not unique in its bytes")
    return data


def distinct_copy(data: bytes, prediction_id: str) -> bytes:
    """`data` (a `photo_like` image) with `prediction_id` (26 characters) in its EXIF description:
    the same pixels and size, bytes of its own."""
    return data.replace(DISTINCT_MARK, prediction_id.encode("ascii"), 1)


def generate(size: int, *, distinct: bool = False) -> Iterator[tuple[list[dict], list[dict]]]:
    """`size` predictions and their stored outputs, in chunks of CHUNK; the same for the same size.
    `distinct`: every output its own `photo_like` image (else the stand-in's renders, reused)."""
    from comet import catalog
    from comet.images import make_thumbnail
    from comet.sim import _render

    rng = random.Random(size)
    models = list(catalog.MODELS)
    statuses, status_weights = zip(*STATUS_MIX)
    images = []
    for n in range(IMAGES):
        prompt = f"{rng.choice(ADJECTIVES)} {rng.choice(SUBJECTS)}"
        data = photo_like(prompt, n) if distinct else _render(prompt, n, 0, "webp", (512, 512), 80)
        images.append((data, make_thumbnail(data)))
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    now = time.time()
    span = max(30 * 86400, size * 120.0)  # about one prediction every two minutes
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
                if distinct:
                    data = distinct_copy(data, pid)
                files.append({"prediction_id": pid, "idx": 0, "content_type": "image/webp",
                              "size": len(data), "data": data, "thumbnail": thumbnail,
                              "source_url": f"https://replicate.delivery/xezq/{pid}/out-0.{fmt}"})
        yield rows, files


def fill(url: str | sa.URL, size: int, *, distinct: bool = False,
         place: Callable[[bytes, str], str] | None = None) -> float:
    """Load `size` predictions into the new, empty SQLite or PostgreSQL database at `url`, in bulk,
    in one transaction; returns the seconds taken. `distinct`: see `generate`. `place`: each image
    is handed to it (a media store's `put`: bytes, content type -> key) and the row keeps the key
    and no bytes, as a store with a media store writes it."""
    import sqlalchemy as sa

    from comet.store import Store, outputs, predictions

    started = time.perf_counter()
    Store(url).close()  # the schema exactly as the app creates it (tables, indexes, WAL, version)
    engine = sa.create_engine(url)
    sqlite = engine.dialect.name == "sqlite"
    if sqlite:
        @sa.event.listens_for(engine, "connect")
        def _fast(dbapi_connection, _record):  # bulk load only: the app's own engine is untouched
            dbapi_connection.execute("PRAGMA synchronous = OFF")
    with engine.begin() as conn:
        for rows, files in generate(size, distinct=distinct):
            if place is not None:
                files = [{**file, "data": b"", "media_key": place(file["data"], file["content_type"])}
                         for file in files]
            conn.execute(sa.insert(predictions), rows)
            if files:
                conn.execute(sa.insert(outputs), files)
    if sqlite:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")  # all in the main file, WAL emptied
    else:
        # The state autovacuum keeps a live database in; VACUUM refuses to run in a transaction.
        # Only the tables of the history's schema: the server may hold other schemas.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            tables = conn.scalars(sa.text("SELECT quote_ident(tablename) FROM pg_tables "
                                          "WHERE schemaname = current_schema()")).all()
            conn.exec_driver_sql("VACUUM ANALYZE " + ", ".join(tables))
    engine.dispose()
    return time.perf_counter() - started


def fill_in_child(url: str, size: int) -> float:
    """`fill` in a fresh interpreter, like the measuring: the driver never imports the app."""
    return json.loads(run_child(__file__, "--fill", url, str(size)))


# ---- measuring --------------------------------------------------------------------------------


def store_timings(store: Store, size: int) -> dict[str, float]:
    """The store alone, median of STORE_RUNS runs each: first page + count, `models()` (read by
    the filters on every build), the last page (OFFSET paging) and a prompt search."""
    from comet.store import HistoryFilter

    last_offset = (size - 1) // PAGE_SIZE * PAGE_SIZE
    fox = HistoryFilter(text="fox")
    calls = {
        "page_count": lambda: (store.page(limit=PAGE_SIZE), store.count()),
        "models": store.models,
        "last_page": lambda: store.page(limit=PAGE_SIZE, offset=last_offset),
        "search": lambda: (store.page(fox, limit=PAGE_SIZE), store.count(fox)),
    }
    result = {}
    for name, call in calls.items():
        call(), call()  # warm the page cache and the statement cache
        times = []
        for _ in range(STORE_RUNS):
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
        result[name] = _util.median(times)
    assert store.count() == size, (store.count(), size)
    return result


def open_session() -> AppTest:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(_util.APP), default_timeout=120)
    at.run()  # the default page (Create): the session is open, not measured
    return at


def shows_total(size: int) -> Callable[[AppTest], None]:
    """A check for page_timings: the page ran without an exception and shows `size` predictions."""
    def check(at: AppTest) -> None:
        if at.exception:
            raise RuntimeError(f"the History page raised: {at.exception[0].value}")
        if not any(f"{size:,} prediction" in c.value for c in at.caption):
            raise RuntimeError("the History table did not show the expected total")

    return check


def page_timings(check: Callable[[AppTest], None]) -> tuple[float, float, AppTest]:
    """The History page's first open and a plain rerun, median of SESSIONS fresh sessions after
    one warm-up session, each build passed to `check`; also the last session, to read its table."""
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
    return _util.median(opens), _util.median(reruns), at


if __name__ == "__main__":  # fill_in_child's child: --fill URL N
    _util.quiet()
    print(json.dumps(fill(sys.argv[2], int(sys.argv[3]))))
