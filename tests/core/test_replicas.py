"""Several app processes (replicas) on one history database, as separate OS processes: they start
together without tripping over the schema, share the polling so that each prediction is polled by
one of them at a time, store every output exactly once, and lose nothing when one is killed.

Runs on PostgreSQL (the team store) and on an SQLite file (several processes on one machine)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from comet.store import Store, outputs
from support import ROOT
from support.api import KEY
from support.waiting import wait_until

WORKER = ROOT / "tests" / "support" / "replica_worker.py"
SCHNELL = "black-forest-labs/flux-schnell"


def spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def read_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.endswith("}")]  # a killed writer may leave half a line



def poll_spans(entries: list[dict], cut_at: float) -> list[tuple[str, str, float, float]]:
    """(id, owner, start, end) of every poll; one still open when its process was killed
    lasted until the kill."""
    opened: dict[tuple[str, str], float] = {}
    spans = []
    for entry in sorted(entries, key=lambda e: e["time"]):
        key = (entry["id"], entry["owner"])
        if entry["event"] == "start":
            opened[key] = entry["time"]
        else:
            spans.append((*key, opened.pop(key), entry["time"]))
    spans += [(*key, start, cut_at) for key, start in opened.items()]
    return spans


def test_replicas_starting_together_on_a_new_database_create_the_schema_once(database_url):
    start_at = time.time() + 3.0  # after every process has imported the app's modules
    starting = [spawn("open", database_url, str(start_at)) for _ in range(4)]
    results = [process.communicate(timeout=60) for process in starting]

    assert [process.returncode for process in starting] == [0] * 4, [err for _, err in results]
    assert [out.strip() for out, _ in results] == ["4"] * 4
    history = Store(database_url)
    assert history.count() == 0 and history.schema_version == 4
    history.close()


def test_two_replicas_share_fifty_predictions_and_survive_one_being_killed(sim, client, database_url, tmp_path):
    store = Store(database_url)
    made = []
    for n in range(50):  # runs of 3 to 7 s: still going when a replica dies
        sim.configure(start_delay=0.2, run_time=3.0 + n % 5)
        prediction = client.create(SCHNELL, {"prompt": f"replica test {n}"})
        store.record(prediction)
        made.append(prediction.id)
    logs = {"a": tmp_path / "a.jsonl", "b": tmp_path / "b.jsonl"}
    replicas = {name: spawn("track", database_url, sim.url, KEY, str(log), "--lease", "1.5")
                for name, log in logs.items()}

    try:
        # Kill replica a mid-way: once it has done a good share of polls, with runs unfinished.
        wait_until(lambda: sum(e["event"] == "start" for e in read_log(logs["a"])) >= 20, timeout=40)
        replicas["a"].send_signal(signal.SIGKILL)
        killed_at = time.time()
        replicas["a"].wait(timeout=10)
        assert store.unfinished_count() > 0, "killed mid-way, not after the work was done"
        _, b_errors = replicas["b"].communicate(timeout=45)  # b exits once nothing is unfinished
        assert replicas["b"].returncode == 0, b_errors
    finally:
        for process in replicas.values():
            if process.poll() is None:
                process.kill()
                process.wait()

    # Nothing lost: every prediction ended with its image, stored exactly once.
    records = [store.get(pid) for pid in made]
    assert [(r.status, r.tracking, r.output_count) for r in records] == [("succeeded", "done", 1)] * 50
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        stored = dict(conn.execute(sa.select(outputs.c.prediction_id, sa.func.count())
                                   .group_by(outputs.c.prediction_id)).all())
    engine.dispose()
    assert stored == dict.fromkeys(made, 1)

    # One tracker at a time: no two polls of one prediction overlap, across the two processes.
    entries = read_log(logs["a"]) + read_log(logs["b"])
    owners = {name: read_log(log)[0]["owner"] for name, log in logs.items()}
    spans = poll_spans(entries, cut_at=killed_at)
    by_id: dict[str, list[tuple[float, float, str]]] = {}
    for pid, owner, start, end in spans:
        by_id.setdefault(pid, []).append((start, end, owner))
    overlaps = [pid for pid, polls in by_id.items()
                for (_, end, _), (start, _, _) in pairwise(sorted(polls)) if start < end]
    assert overlaps == []
    assert {owner for _, owner, _, _ in spans} == set(owners.values()), "both replicas polled"

    # What a held when it died was taken over by b (after a's lease ran out) and finished.
    cut_short = {pid for pid, owner, _, end in spans if owner == owners["a"] and end == killed_at}
    assert cut_short, "a died in the middle of polls"
    # (A poll whose final write landed just before the kill, its log line not yet written, had
    # nothing left to take over.)
    finished_by_a = {pid for pid in cut_short if store.get(pid).updated_at.timestamp() <= killed_at}
    assert all(any(o == owners["b"] and s > killed_at for s, _, o in by_id[pid]) for pid in cut_short - finished_by_a)

    # Outputs downloaded once; only a download cut short by the kill may have been repeated.
    downloads = Counter(r["path"].split("/")[2] for r in sim.requests if r["path"].startswith("/files/"))
    assert all(downloads[pid] == 1 for pid in made if pid not in cut_short), downloads
    assert all(downloads[pid] <= 2 for pid in cut_short)

    # Every replica's History page reads the same table.
    other = Store(database_url)
    pd.testing.assert_frame_equal(store.page(limit=50), other.page(limit=50))
    assert store.count() == other.count() == 50
    other.close()
    store.close()
