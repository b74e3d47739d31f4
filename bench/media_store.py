"""Images inside the history database, in a folder, or in an S3 bucket, at 100k predictions.

Database size, History page build time, opening one full image, and ingest, for each.

    python bench/media_store.py                  # 100k predictions; SQLite, and PostgreSQL when
                                                 # COMET_TEST_POSTGRES_URL is set (~15 min)
    python bench/media_store.py --size 20000     # fewer predictions
    python bench/media_store.py --postgres-url postgresql+psycopg://postgres@127.0.0.1:55432/postgres

The synthetic history of the History benchmarks (`_history_data.generate`, seeded by the size:
models, statuses, prompts, logs, creators; for 90 % of the succeeded rows one stored output with
its thumbnail), except that every output is an image of its own (`distinct=True`: 512 px WebP of
~30 KB, the size of a 0.25 MP output at the default quality; the media stores key an object by
its content's hash, so reused images would be one object). Three configurations, as
COMET_MEDIA_URL sets them:

  db     `db:`: the image in `outputs.data`, the app's behaviour before media stores;
  files  `file:<folder>`: the image as a file (comet.media.FileMedia), only its key in the row;
  s3     `s3://comet-test/bench/`: the image in a bucket of moto's standalone S3 server (a real
         process on a loopback port, credentials enforced: tests/support/s3server.py), via
         comet.objectstore.S3Media, only its key in the row.

Per backend (SQLite, and PostgreSQL on a fresh schema of the server named) two databases are
bulk-loaded (`_history_data.fill`): one with the images inside, one with keys only (files and s3
share it: the key is the same for both). The first backend's load writes every image into the
folder and the bucket through the media stores' own `put`, timed one by one (the later backend's
load points at the same objects). Each database then gets its spend ledger backfilled, as the
app's first start does, and is checkpointed (SQLite) or vacuumed (PostgreSQL). Figures:

  - database size: the SQLite file plus its WAL after a checkpoint; on PostgreSQL the
    `pg_total_relation_size` (heap, TOAST, indexes) of every table of the schema; and what the
    folder (file bytes) and the bucket (object bytes, listed) hold;
  - then, per backend and configuration in a fresh process (the app configured as a user would:
    COMET_DATABASE_URL, COMET_MEDIA_URL and the AWS_* settings): `Store.output_bytes` of one
    prediction's full image, 200 different predictions, median and p90; `Store.page()` +
    `count()` (first page of 50, with thumbnails), median of 15; the History page built by
    AppTest, first open and rerun, median of 5 sessions after a warm-up;
  - ingest: the bulk load's `put` per image (folder, bucket), and the app's own path,
    `Store.save_outputs` of one new prediction with one image (thumbnail made, image placed,
    row written), 100 of them per configuration, median and p90; `make_thumbnail` alone for
    the part every configuration pays.

Timings are printed, never asserted. Everything lives in one temp folder and one moto process
(and PostgreSQL schemas), all removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import _util
from _history_data import PAGE_SIZE, SESSIONS, STORE_RUNS
from _util import mib, ms, table

CONFIGS = ("db", "files", "s3")
PREFIX = "bench/"  # the objects' prefix in the bucket
READS = 200  # output_bytes reads per configuration
SAVES = 100  # save_outputs per configuration
S3_NAMES = ("COMET_MEDIA_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
            "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


def s3_server_module():
    """tests/s3server.py (or tests/support/s3server.py): the moto server the media tests use."""
    tests = _util.REPO / "tests"
    for folder in (tests / "support", tests):
        if (folder / "s3server.py").exists():
            sys.path[:0] = [str(folder), str(tests)]  # tests/ too, for a `support.` import in it
            import s3server

            return s3server
    raise SystemExit("tests/support/s3server.py is missing: it starts the S3 server this benchmark needs")


# ---- children: filling and measuring ----------------------------------------------------------


def child(label: str, *args: str, env: dict[str, str]) -> dict:
    """The JSON last printed by this script run with `args` and `env` in a fresh interpreter; on
    failure its stderr, named by `label` only (the arguments may hold a database password)."""
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=_util.REPO,
                          env=env)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-5000:])
        raise SystemExit(f"{label} failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def media_from_environment(folder: str):
    """The media store COMET_MEDIA_URL names, opened the way the app opens it."""
    from comet.media import from_setting
    from comet.objectstore import open_media

    return open_media(from_setting(os.environ["COMET_MEDIA_URL"], data_dir=Path(folder),
                                   database_url=None, read=lambda name: os.environ.get(name, "")))


def spread(times: list[float]) -> dict[str, float]:
    return {"median": _util.median(times), "p90": _util.percentile(times, 0.9), "mean": statistics.fmean(times),
            "count": len(times)}


def pool(rounds: list[dict]) -> dict:
    """One configuration's rounds as one figure each: the samples pooled, the AppTest medians'
    median."""
    return {
        "read": spread([t for r in rounds for t in r["read"]]),
        "page_count": _util.median([t for r in rounds for t in r["page_count"]]),
        "open": _util.median([r["open"] for r in rounds]),
        "rerun": _util.median([r["rerun"] for r in rounds]),
        "rows_shipped": rounds[-1]["rows_shipped"],
        "save": spread([t for r in rounds for t in r["save"]]),
        "thumbnail": spread([t for r in rounds for t in r["thumbnail"]]),
    }


def fill_child(mode: str, url: str, size: int, folder: str) -> dict:
    """`mode` db: images inside; media: each image put into the folder and the bucket (timed),
    keys in the rows; keys: keys in the rows, the objects already there."""
    import sqlalchemy as sa
    from _history_data import fill

    from comet import prices
    from comet.ledger import Ledger
    from comet.media import FileMedia, media_key
    from comet.store import Store

    result: dict = {"mode": mode}
    place = None
    if mode == "media":
        files = FileMedia(Path(folder))
        bucket = media_from_environment(folder)
        bucket.check()
        put_times: dict[str, list[float]] = {"files": [], "s3": []}
        stored = {"bytes": 0}

        def place(data: bytes, content_type: str) -> str:
            t0 = time.perf_counter()
            key = files.put(data, content_type)
            t1 = time.perf_counter()
            if bucket.put(data, content_type) != key:
                raise RuntimeError("the folder and the bucket keyed one image differently")
            put_times["files"].append(t1 - t0)
            put_times["s3"].append(time.perf_counter() - t1)
            stored["bytes"] += len(data)
            return key
    elif mode == "keys":
        place = media_key
    result["fill"] = fill(url, size, distinct=True, place=place)
    if mode == "media":
        result["put"] = {name: spread(times) for name, times in put_times.items()}
        result["put_bytes"] = stored["bytes"]

    # The app's first start costs every prediction into the spend ledger; done here, so no
    # measurement runs beside that thread, and the database holds what a live one holds.
    store = Store(url)
    Ledger(store).backfill(prices.rules())
    with store._engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if store.backend == "sqlite":
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        else:
            tables = conn.scalars(sa.text("SELECT quote_ident(tablename) FROM pg_tables "
                                          "WHERE schemaname = current_schema()")).all()
            conn.exec_driver_sql("VACUUM ANALYZE " + ", ".join(tables))
        result["images_inside"] = conn.scalar(sa.text("SELECT count(*) FROM outputs WHERE media_key IS NULL"))
        result["images_outside"] = conn.scalar(sa.text("SELECT count(*) FROM outputs WHERE media_key IS NOT NULL"))
    store.close()
    return result


def measure_child(spec: dict) -> dict:
    """One configuration in a fresh process: reads, the store's page, the History page, ingest."""
    import sqlalchemy as sa
    from _history_data import distinct_copy, page_timings, photo_like, shows_total

    from comet.images import make_thumbnail
    from comet.media import StoredFile
    from comet.store import Store, outputs, predictions

    size, url = spec["size"], spec["url"]
    _util.app_environment(Path(spec["data_dir"]))
    os.environ["COMET_DATABASE_URL"] = url  # COMET_MEDIA_URL (and AWS_*) come from the driver
    _util.clear_caches()
    store = Store(url, media=media_from_environment(spec["data_dir"]))
    result: dict = {}

    # One prediction's full image, as the detail view and the ZIP export read it.
    ids = store._read(lambda conn: conn.scalars(
        sa.select(outputs.c.prediction_id).where(outputs.c.idx == 0).order_by(outputs.c.prediction_id)).all())
    chosen = random.Random(spec["round"]).sample(ids, min(READS + 5, len(ids)))
    times = []
    for n, prediction_id in enumerate(chosen):
        t0 = time.perf_counter()
        found = store.output_bytes(prediction_id, 0)
        elapsed = time.perf_counter() - t0
        if found is None or not found[1].startswith(b"RIFF") or prediction_id.encode() not in found[1]:
            raise RuntimeError(f"{spec['config']}: the image of {prediction_id} did not come back")
        if n >= 5:  # the first few warm the connection and the statement cache
            times.append(elapsed)
    result["read"] = times

    # The store's first page with its thumbnails, the SQL the History page runs.
    page_times = []
    for n in range(STORE_RUNS + 2):
        t0 = time.perf_counter()
        frame = store.page(limit=PAGE_SIZE)
        total = store.count()
        if n >= 2:
            page_times.append(time.perf_counter() - t0)
    if total != size or frame["thumbnail"].isna().all():
        raise RuntimeError(f"{spec['config']}: the store's page shows {total:,} rows or no thumbnails")
    result["page_count"] = page_times

    result["open"], result["rerun"], at = page_timings(shows_total(size))
    result["rows_shipped"] = len(at.dataframe[0].value)
    _util.clear_caches()

    # Ingest the way the tracker does it: one new prediction, its image saved with save_outputs.
    bases = [photo_like(f"ingest {spec['config']}", n) for n in range(4)]
    sample = [uuid.uuid4().hex[:26] for _ in range(SAVES)]
    now = time.time()
    store._write(lambda conn: conn.execute(sa.insert(predictions), [
        {"id": pid, "model": "black-forest-labs/flux-schnell", "status": "succeeded", "created_at": now,
         "recorded_at": now, "updated_at": now, "tracking": "active"} for pid in sample]))
    images = [distinct_copy(bases[n % len(bases)], pid) for n, pid in enumerate(sample)]
    thumb_times, save_times = [], []
    for pid, data in zip(sample, images):
        t0 = time.perf_counter()
        make_thumbnail(data)
        thumb_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        if not store.save_outputs(pid, [StoredFile("image/webp", data, f"https://example.com/{pid}.webp")]):
            raise RuntimeError("save_outputs stored nothing")
        save_times.append(time.perf_counter() - t0)
        if store.output_bytes(pid, 0) != ("image/webp", data):
            raise RuntimeError("a saved image did not read back")
    result["thumbnail"] = thumb_times
    result["save"] = save_times
    # Leave the database (files and s3 share it) and the media store as they were.
    placed = store._read(lambda conn: conn.scalars(
        sa.select(outputs.c.media_key).where(outputs.c.prediction_id.in_(sample))).all())
    store._write(lambda conn: (conn.execute(sa.delete(outputs).where(outputs.c.prediction_id.in_(sample))),
                               conn.execute(sa.delete(predictions).where(predictions.c.id.in_(sample)))))
    if store.media is not None:
        for key in placed:
            store.media.delete(key)
    store.close()
    return result


# ---- the driver: databases and sizes ----------------------------------------------------------


@contextlib.contextmanager
def fresh_schema(server_url: str) -> Iterator[str]:
    """A URL whose tables land in a new, empty schema of the server (as tests/backends.py does),
    dropped at the end."""
    import sqlalchemy as sa

    server = sa.make_url(server_url)
    name = f"comet_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {name}")
    try:
        url = server.update_query_dict({"options": f"-csearch_path={name}", "application_name": name})
        yield url.render_as_string(hide_password=False)
    finally:
        with contextlib.suppress(sa.exc.DBAPIError), admin.connect() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE application_name = :name AND pid <> pg_backend_pid()"), {"name": name})
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        admin.dispose()


def database_bytes(url: str) -> tuple[int, str]:
    """(bytes, what they are): SQLite, the file and its WAL (checkpointed by the fill);
    PostgreSQL, every table of the schema with its TOAST and indexes."""
    import sqlalchemy as sa

    target = sa.make_url(url)
    if target.get_backend_name() == "sqlite":
        path = Path(target.database)
        return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists()), "SQLite (WAL file)"
    engine = sa.create_engine(target, poolclass=sa.NullPool)
    with engine.connect() as conn:
        size = conn.scalar(sa.text("SELECT sum(pg_total_relation_size(format('%I.%I', schemaname, tablename))) "
                                   "FROM pg_tables WHERE schemaname = current_schema()"))
        version = conn.scalar(sa.text("SHOW server_version")).split()[0]
    engine.dispose()
    return int(size), f"PostgreSQL {version} (loopback)"


def folder_bytes(folder: Path) -> tuple[int, int, int]:
    """(files, their bytes, the disk blocks they take) under `folder`."""
    count = total = blocks = 0
    for path in folder.rglob("*"):
        if path.is_file():
            stat = path.stat()
            count, total, blocks = count + 1, total + stat.st_size, blocks + stat.st_blocks * 512
    return count, total, blocks


def bucket_bytes(server, bucket: str) -> tuple[int, int]:
    """(objects, their bytes) under PREFIX, as the bucket lists them."""
    count = total = 0
    # moto honours a large page; 1,000 a page would make it sort the whole bucket 100 times.
    for page in server.client().get_paginator("list_objects_v2").paginate(
            Bucket=bucket, PaginationConfig={"PageSize": 100_000}):
        for item in page.get("Contents", []):
            if item["Key"].startswith(PREFIX):
                count, total = count + 1, total + item["Size"]
    return count, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000, help="predictions in history")
    parser.add_argument("--postgres-url", default=os.environ.get("COMET_TEST_POSTGRES_URL"),
                        help="a PostgreSQL server (a fresh schema on it); default COMET_TEST_POSTGRES_URL, "
                             "else SQLite only")
    parser.add_argument("--rounds", type=int, default=3, help="measuring rounds over all configurations")
    parser.add_argument("--fill", nargs=4, metavar=("MODE", "URL", "N", "FOLDER"), help=argparse.SUPPRESS)
    parser.add_argument("--measure", metavar="JSON", help=argparse.SUPPRESS)
    args = parser.parse_args()
    _util.quiet()
    if args.fill:
        mode, url, size, folder = args.fill
        print(json.dumps(fill_child(mode, url, int(size), folder)))
        return
    if args.measure:
        print(json.dumps(measure_child(json.loads(args.measure))))
        return

    s3server = s3_server_module()
    size = args.size
    print(f"Media store benchmark · {size:,} predictions · {_util.machine()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="comet-bench-media-"))
    folder = work / "media"
    started = time.perf_counter()
    server = s3server.S3Server()
    base_env = {name: value for name, value in os.environ.items()
                if name not in S3_NAMES and name not in _util.APP_SETTINGS}
    s3_env = {**base_env, **server.settings(PREFIX)}
    envs = {"db": {**base_env, "COMET_MEDIA_URL": "db:"},
            "files": {**base_env, "COMET_MEDIA_URL": f"file:{folder}"}, "s3": s3_env}
    backends = ["sqlite", "postgresql"] if args.postgres_url else ["sqlite"]
    fills: dict[tuple[str, str], dict] = {}
    sizes: dict[tuple[str, str], int] = {}
    versions: dict[str, str] = {}
    results: list[dict] = []

    def elapsed() -> str:
        return f"[{time.perf_counter() - started:5.0f} s]"

    try:
        with contextlib.ExitStack() as stack:
            urls: dict[tuple[str, str], str] = {}
            for backend in backends:
                for layout in ("inside", "outside"):
                    if backend == "sqlite":
                        urls[backend, layout] = f"sqlite:///{work / f'{layout}.sqlite'}"
                    else:
                        urls[backend, layout] = stack.enter_context(fresh_schema(args.postgres_url))

            for n, backend in enumerate(backends):
                for layout in ("inside", "outside"):
                    mode = "db" if layout == "inside" else ("media" if n == 0 else "keys")
                    url = urls[backend, layout]
                    fills[backend, layout] = child(f"loading {backend} ({mode})", "--fill", mode, url, str(size),
                                                   str(folder), env=s3_env)
                    sizes[backend, layout], versions[backend] = database_bytes(url)
                    print(f"  {elapsed()} {backend}, images {layout}: loaded in "
                          f"{fills[backend, layout]['fill']:.0f} s, {mib(sizes[backend, layout])}", flush=True)
            folder_count, folder_total, folder_disk = folder_bytes(folder)
            bucket_count, bucket_total = bucket_bytes(server, s3server.BUCKET)
            print(f"  {elapsed()} folder {folder_count:,} files, bucket {bucket_count:,} objects", flush=True)

            # Rounds in alternating order, so a busy moment of the machine falls on every
            # configuration alike rather than on one.
            plan = [(backend, config) for backend in backends for config in CONFIGS]
            rounds: dict[tuple[str, str], list[dict]] = {pair: [] for pair in plan}
            for n in range(args.rounds):
                for backend, config in plan if n % 2 == 0 else plan[::-1]:
                    layout = "inside" if config == "db" else "outside"
                    data_dir = work / f"data-{backend}-{config}-{n}"
                    data_dir.mkdir()
                    spec = {"backend": backend, "config": config, "url": urls[backend, layout], "size": size,
                            "data_dir": str(data_dir), "round": n}
                    label = f"measuring {backend}, {config}"
                    rounds[backend, config].append(child(label, "--measure", json.dumps(spec), env=envs[config]))
                print(f"  {elapsed()} round {n + 1} of {args.rounds} measured", flush=True)
            for (backend, config), measured in rounds.items():
                results.append({"backend": backend, "config": config, **pool(measured)})
    finally:
        server.close()
        shutil.rmtree(work, ignore_errors=True)

    # ---- the tables ---------------------------------------------------------------------------
    first = backends[0]
    put = fills[first, "outside"]["put"]
    images = fills[first, "outside"]["images_outside"]
    image_mean = fills[first, "outside"]["put_bytes"] / max(1, images)
    print()
    print(f"Stored images: {images:,} of {size:,} predictions, one each, WebP 512 px, "
          f"{image_mean / 1024:.1f} KiB on average ({mib(fills[first, 'outside']['put_bytes'])} in all); "
          f"thumbnails in the database in every configuration")
    print()
    print("(a) Where the bytes are")
    rows = []
    for backend in backends:
        for config in CONFIGS:
            layout = "inside" if config == "db" else "outside"
            held = {"db": "-", "files": f"{mib(folder_total)} in {folder_count:,} files ({mib(folder_disk)} on disk)",
                    "s3": f"{mib(bucket_total)} in {bucket_count:,} objects"}[config]
            rows.append([f"{versions[backend]}, {config}", mib(sizes[backend, layout]), held])
    print(table(["backend, images", "database", "media store"], rows))
    print()
    print(f"(b) History page and one full image, rounds: {args.rounds}; page()+count() median of "
          f"{STORE_RUNS} x {args.rounds}; AppTest median of the rounds' medians of {SESSIONS} sessions; "
          f"output_bytes of {READS} x {args.rounds} predictions")
    print(table(
        ["backend, images", "page()+count()", "page first open", "page rerun", "rows shipped",
         "full image median", "full image p90"],
        [[f"{versions[r['backend']]}, {r['config']}", ms(r["page_count"]), ms(r["open"]), ms(r["rerun"]),
          str(r["rows_shipped"]), ms(r["read"]["median"]), ms(r["read"]["p90"])] for r in results]))
    print()
    print(f"(c) Ingest per image: the bulk load's put ({put['files']['count']:,} images, one at a time), and "
          f"Store.save_outputs of one new prediction ({SAVES} x {args.rounds} per row; incl. make_thumbnail)")
    rows = [["folder: FileMedia.put (fsync, rename)", ms(put["files"]["median"]), ms(put["files"]["p90"]),
             ms(put["files"]["mean"])],
            ["bucket: S3Media.put (signed PUT)", ms(put["s3"]["median"]), ms(put["s3"]["p90"]), ms(put["s3"]["mean"])]]
    rows += [[f"{versions[r['backend']]}, {r['config']}: save_outputs", ms(r["save"]["median"]),
              ms(r["save"]["p90"]), ms(r["save"]["mean"])] for r in results]
    thumbs = [r["thumbnail"]["median"] for r in results]
    rows.append(["make_thumbnail alone (every configuration)", ms(_util.median(thumbs)), "", ""])
    print(table(["what", "median", "p90", "mean"], rows))
    print()
    loads = [[f"{versions[backend]}, images {layout}", f"{fills[backend, layout]['fill']:.0f} s"]
             for backend in backends for layout in ("inside", "outside")]
    print("Bulk loads, one transaction each (the first with images outside includes every put into the folder "
          "and the bucket; the later ones point at the same objects)")
    print(table(["database", "load"], loads))
    print(f"\nTotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
