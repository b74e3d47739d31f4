"""One app replica, as a separate process, for tests/core/test_replicas.py.

    python tests/support/replica_worker.py track DATABASE_URL SIM_URL KEY LOG_FILE [--lease S] [--poll-delay S]
        runs a Tracker (the one poller an app process has) on the shared history until nothing is
        unfinished, noting the start and end of every poll in LOG_FILE (JSON lines, wall clock);
    python tests/support/replica_worker.py open DATABASE_URL START_AT
        opens the history at START_AT (epoch seconds), as a replica starting together with others,
        and prints the schema version it found.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script: the repository, for comet

from comet.client import Client, RetryPolicy, Timeouts  # noqa: E402
from comet.store import Record, Store  # noqa: E402
from comet.tracker import Tracker  # noqa: E402


class LoggingTracker(Tracker):
    def __init__(self, *args, log_file: str, poll_delay: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._log_file = open(log_file, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        self._log_lock = threading.Lock()
        self._poll_delay = poll_delay

    def _note(self, record: Record, event: str) -> None:
        with self._log_lock:
            self._log_file.write(json.dumps({"id": record.id, "owner": self.owner, "event": event,
                                             "time": time.time()}) + "\n")

    def _poll(self, record: Record) -> None:
        self._note(record, "start")
        try:
            time.sleep(self._poll_delay)  # a poll that takes a while: overlaps would show
            super()._poll(record)
        finally:
            self._note(record, "end")


def track(args: argparse.Namespace) -> int:
    client = Client(args.sim_url, args.key, retry=RetryPolicy(attempts=2, backoff=0.05, backoff_max=0.2, jitter=0.0),
                    timeouts=Timeouts(connect=2, read_status=5, read_create=5))
    store = Store(args.database_url)
    tracker = LoggingTracker(client, store, allow_private_downloads=True, workers=4, lease=args.lease,
                             schedule=((math.inf, 0.1),), backoff=(0.1, 0.5), max_sleep=0.1,
                             log_file=args.log_file, poll_delay=args.poll_delay)
    print(f"tracking as {tracker.owner}", flush=True)
    deadline = time.monotonic() + args.seconds
    with tracker:
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if store.unfinished_count() == 0:
                break
    store.close()
    client.close()
    return 0


def open_store(args: argparse.Namespace) -> int:
    time.sleep(max(0.0, args.start_at - time.time()))
    store = Store(args.database_url)
    print(store.schema_version, flush=True)
    store.close()
    return 0


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(process)d %(name)s %(message)s")
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("track")
    run.add_argument("database_url")
    run.add_argument("sim_url")
    run.add_argument("key")
    run.add_argument("log_file")
    run.add_argument("--lease", type=float, default=1.5)
    run.add_argument("--poll-delay", type=float, default=0.1)
    run.add_argument("--seconds", type=float, default=60.0)
    run.set_defaults(work=track)
    opening = commands.add_parser("open")
    opening.add_argument("database_url")
    opening.add_argument("start_at", type=float)
    opening.set_defaults(work=open_store)
    args = parser.parse_args()
    return args.work(args)


if __name__ == "__main__":
    raise SystemExit(main())
