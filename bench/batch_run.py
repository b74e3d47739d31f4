"""A 200-cell batch sent by the BatchRunner against the stand-in: wall time and the most creates
in flight at once, measured at the stand-in (the server side), for each concurrency.

    python bench/batch_run.py                       # 200 cells, concurrency 1 and 4 (about 30 s)
    python bench/batch_run.py --concurrency 1 4 8 --create-delay 0.2
    python bench/batch_run.py --database-url postgresql+psycopg://postgres@127.0.0.1:55432/postgres

Each run is a fresh history database (an SQLite file in a temp folder; or the database you give,
where its batches and predictions are left), a fresh in-process stand-in (`comet.sim.Sim`)
whose creates each take `--create-delay` seconds to answer, the real `Client`, `Ledger` (every
create reserves its estimate, no limit set) and `BatchRunner`; the tracker is not running, so
only the creates are measured. "ideal" is cells x delay / concurrency: the time the stand-in
alone needs. Wall time runs from submit to the batch's last cell written.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import _util
from _util import table

from comet.batch import Batches, BatchRunner, BatchSpec, plan  # noqa: E402 (importing _util puts the repo on sys.path)
from comet.client import Client
from comet.ledger import Ledger, Limits
from comet.sim import Sim
from comet.store import Store

KEY = "sk-bench-0123456789abcdefghij"


def spec(cells: int) -> BatchSpec:
    """`cells` predictions: cells / 10 prompts x 10 variations of flux-schnell."""
    prompts = tuple(f"a lighthouse on a cliff, study {n}" for n in range(cells // 10))
    return BatchSpec(prompts=prompts, models=("black-forest-labs/flux-schnell",), variations=10, seed=1)


def run(cells: int, concurrency: int, delay: float, database_url: str | None, folder: Path) -> list[str]:
    url = database_url or f"sqlite:///{folder / f'history-{concurrency}.sqlite'}"
    store = Store(url)
    batches = Batches(store)
    planned = plan(spec(cells), max_cells=cells)
    assert planned.ok, planned.problems
    with Sim(start_delay=0.05, run_time=0.5, create_delay=delay) as sim, Client(sim.url, KEY) as client:
        runner = BatchRunner(batches, create=client.create,
                             track=lambda prediction, creator, batch_id: store.record(
                                 prediction, creator=creator, batch_id=batch_id),
                             ledger=Ledger(store), limits=Limits(), concurrency=concurrency).start()
        try:
            started = time.perf_counter()
            batch_id = runner.submit(planned, creator="bench")
            while batches.get(batch_id).active:
                time.sleep(0.01)
            wall = time.perf_counter() - started
        finally:
            runner.stop()
        batch = batches.get(batch_id)
        posts = sum(1 for r in sim.requests if r["method"] == "POST" and "/predictions" in r["path"])
        peak = sim.create_stats()["peak"]
    store.close()
    ideal = cells * delay / concurrency
    return [str(concurrency), f"{wall:.2f} s", f"{ideal:.2f} s", f"{cells / wall:.1f}", str(peak), str(posts),
            str(batch.counts.get("sent", 0))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=200, help="predictions in the batch, a multiple of 10")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--create-delay", type=float, default=0.1, help="seconds each create takes at the stand-in")
    parser.add_argument("--database-url", help="a history database to use instead of a temp SQLite file")
    args = parser.parse_args()
    _util.quiet()
    folder = Path(tempfile.mkdtemp(prefix="comet-bench-batch-"))
    try:
        rows = [run(args.cells, n, args.create_delay, args.database_url, folder) for n in args.concurrency]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"{args.cells}-cell batch, each create {args.create_delay:g} s at the stand-in; {_util.machine()}")
    print(table(["concurrency", "wall", "ideal", "creates/s", "peak in flight", "POSTs", "sent"], rows))


if __name__ == "__main__":
    main()
