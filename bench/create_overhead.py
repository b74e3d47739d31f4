"""The app's own overhead from pressing Generate to the create request leaving, against the network
floor of a bare `requests.post` of the same body to the same stand-in.

    python bench/create_overhead.py              # 20 presses (about 1 minute)
    python bench/create_overhead.py --repeat 50

The Create page runs in live mode (AppTest secrets COMETAPI_KEY + COMETAPI_BASE_URL) against the
local stand-in `comet.sim.Sim`. Each repetition is a fresh session (a person's first Generate, so
the page does not grow a gallery of earlier results): open the page, type a prompt, wait until the
tracker has nothing in flight (so background polling and image saving do not overlap the
measurement), then time from the moment `.click().run()` starts to the moment the stand-in logged
the POST (`time.time()` at arrival, the same clock), and the whole rerun. Two warm-up presses are
not counted.

The floor: `requests.post` (a new connection each time, as a fresh thread of the app's Client
makes) and a kept-alive `requests.Session`, same URL, body and Authorization header, timed the
same way: from the call to the stand-in's arrival time, and the full round trip.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import _util
from _util import ms, table

from comet.client import MAX_IDLE_SESSIONS  # noqa: E402 (importing _util puts the repo on sys.path)

KEY = "sk-bench-0123456789abcdefghij"
WARMUP = 2


def live_session(sim):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(_util.APP), default_timeout=60)
    at.secrets["COMETAPI_KEY"] = KEY
    at.secrets["COMETAPI_BASE_URL"] = sim.url
    at.run()
    return at


def wait_idle(store, timeout: float = 20.0) -> None:
    """Until the tracker has finished every prediction (outputs saved)."""
    deadline = time.monotonic() + timeout
    while store.unfinished_count() and time.monotonic() < deadline:
        time.sleep(0.05)


def posts_since(sim, mark: int) -> list[dict]:
    return [r for r in sim.requests[mark:] if r["method"] == "POST" and r["path"].startswith("/replicate/")]


def press_generate(sim, store, n: int) -> tuple[float, float, dict]:
    at = live_session(sim)
    at.text_area(key="param.prompt").input(f"a paper boat at sunrise, take {n}").run()
    button = next(b for b in at.button if b.label.startswith("Generate"))
    wait_idle(store)
    mark = len(sim.requests)
    started = time.time()
    t0 = time.perf_counter()
    button.click().run()
    full = time.perf_counter() - t0
    if at.exception:
        raise RuntimeError(f"the Create page raised: {at.exception[0].value}")
    posts = posts_since(sim, mark)
    if len(posts) != 1:
        raise RuntimeError(f"expected one create request, the stand-in got {len(posts)}")
    return posts[0]["time"] - started, full, posts[0]


def floor(sim, post: dict, repeat: int, *, keep_alive: bool) -> tuple[list[float], list[float]]:
    import requests

    url = sim.url + post["path"]
    headers = {"Authorization": f"Bearer {KEY}"}
    session = requests.Session() if keep_alive else None
    send = session.post if session else requests.post
    to_arrival, round_trip = [], []
    try:
        for n in range(WARMUP + repeat):
            mark = len(sim.requests)
            started = time.time()
            t0 = time.perf_counter()
            response = send(url, json=post["json"], headers=headers, timeout=30)
            elapsed = time.perf_counter() - t0
            response.raise_for_status()
            arrived = posts_since(sim, mark)[0]["time"]
            if n >= WARMUP:
                to_arrival.append(arrived - started)
                round_trip.append(elapsed)
    finally:
        if session:
            session.close()
    return to_arrival, round_trip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="measured presses (after 2 warm-ups)")
    args = parser.parse_args()
    _util.quiet()
    import sqlalchemy as sa

    from comet.sim import Sim
    from comet.store import Store

    print(f"Create overhead benchmark · {_util.machine()}")
    work = Path(tempfile.mkdtemp(prefix="comet-bench-create-"))
    try:
        with Sim(start_delay=0.05, run_time=0.2) as sim:
            _util.app_environment(work)
            _util.clear_caches()
            live_session(sim)  # creates the data folder and the history file
            store = Store(sa.URL.create("sqlite", database=str(work / "history.sqlite")))
            to_post, full = [], []
            for n in range(WARMUP + args.repeat):
                overhead, rerun, post = press_generate(sim, store, n)
                if n >= WARMUP:
                    to_post.append(overhead)
                    full.append(rerun)
            wait_idle(store)
            new_conn = floor(sim, post, args.repeat, keep_alive=False)
            kept = floor(sim, post, args.repeat, keep_alive=True)
            from comet.ui import context

            client = context._client(sim.url, context._fingerprint(sim.url, KEY), _key=KEY)
            client_sessions = sum(len(idle) for idle in client._idle.values())
            store.close()
            _util.clear_caches()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def row(name: str, arrival: list[float], whole: list[float]) -> list[str]:
        return [name, ms(_util.median(arrival)), ms(_util.percentile(arrival, 0.9)),
                ms(_util.median(whole)), ms(_util.percentile(whole, 0.9))]

    print()
    print(f"{args.repeat} presses (after {WARMUP} warm-ups); 'to POST' = from the call to the stand-in's arrival time")
    print(table(["what", "to POST median", "to POST p90", "full median", "full p90"], [
        row("app: Generate .click().run()", to_post, full),
        row("floor: requests.post (new connection)", *new_conn),
        row("floor: requests.Session (kept alive)", *kept),
    ]))
    app, bare = _util.median(to_post), _util.median(new_conn[0])
    print()
    print(f"App overhead before the request leaves (median): {ms(app - bare)} over requests.post, "
          f"{ms(app - _util.median(kept[0]))} over a kept-alive session")
    print(f"requests.Session objects pooled by the shared Client after {WARMUP + args.repeat} presses: "
          f"{client_sessions} (at most {MAX_IDLE_SESSIONS} per kind, however many script threads used it)")


if __name__ == "__main__":
    main()
