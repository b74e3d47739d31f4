"""Upstream status requests per minute for one running prediction, watched by 1 and by 10 sessions.

    python bench/watchers.py                 # 30 s per configuration (about 75 s in all)
    python bench/watchers.py --window 60 --sessions 1,5,20

The app runs in live mode (AppTest secrets COMETAPI_KEY + COMETAPI_BASE_URL) against the local
stand-in `comet.sim.Sim`, whose predictions here run for 10 minutes. For each configuration the
caches are cleared (which stops the previous tracker), the data folder is fresh, and one
prediction is created through the Create page (Generate). From that moment, for a fixed window,
N AppTest sessions open the History deep link `?id=<id>` and rerun it about once a second each,
like a ticking page. The figure is the number of `GET /replicate/v1/predictions/<id>` the
stand-in logged (`sim.requests`, by arrival time) during the window.

Every configuration starts its window at the same age of its prediction, because the tracker's
poll interval grows with age (1 s for 15 s, then 2 s, ...): the windows are comparable.
All AppTest sessions live in this one process, which is the deployment model (one Streamlit
server process, one tracker); AppTest cannot run scripts concurrently (it swaps process-wide
globals per run), so one driver loop reruns the sessions in turn, each when its second is up.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import _util
from _util import ms, table

KEY = "sk-bench-0123456789abcdefghij"
TICK = 1.0  # seconds between reruns of one session
RUN_TIME = 600.0  # the stand-in's prediction runs longer than any window


def status_gets(sim, prediction_id: str, start: float, end: float) -> int:
    path = f"/replicate/v1/predictions/{prediction_id}"
    return sum(1 for r in sim.requests if r["method"] == "GET" and r["path"] == path and start <= r["time"] < end)


def api_requests(sim, start: float, end: float) -> int:
    return sum(1 for r in sim.requests if r["path"].startswith("/replicate/") and start <= r["time"] < end)


def live_session(sim, query: dict | None = None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(_util.APP), default_timeout=60)
    at.secrets["COMETAPI_KEY"] = KEY
    at.secrets["COMETAPI_BASE_URL"] = sim.url
    for name, value in (query or {}).items():
        at.query_params[name] = value
    at.run()
    return at


def fail_on_exception(at, what: str) -> None:
    if at.exception:
        raise RuntimeError(f"{what} raised: {at.exception[0].value}")


def create_prediction(sim, prompt: str) -> str:
    """Generate on the Create page, as a person would; returns the new prediction's id."""
    at = live_session(sim)
    at.text_area(key="param.prompt").input(prompt).run()
    next(b for b in at.button if b.label.startswith("Generate")).click().run()
    fail_on_exception(at, "the Create page")
    groups = at.session_state["create.groups"]
    return groups[0][0]


def watch(sim, prediction_id: str, sessions: int, until: float) -> tuple[int, list[float], list]:
    """N sessions on the detail deep link, each rerun once a second until `until`; returns the
    number of page runs, the durations of the reruns, and the sessions."""
    runs = 0
    durations = []
    watchers = []
    for _ in range(sessions):  # opening a session is its first tick
        at = live_session(sim, {"id": prediction_id})
        at.switch_page(_util.HISTORY_PAGE).run()
        fail_on_exception(at, "the History detail")
        if not any(prediction_id in link.proto.label for link in at.get("page_link")):  # the card's link
            raise RuntimeError("the History detail did not show the prediction")
        watchers.append([at, time.monotonic() + TICK])
        runs += 1
    while time.time() < until:
        watchers.sort(key=lambda w: w[1])
        at, due = watchers[0]
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(min(pause, max(0.0, until - time.time())))
            if time.time() >= until:
                break
        t0 = time.perf_counter()
        at.run()
        durations.append(time.perf_counter() - t0)
        fail_on_exception(at, "the History detail")
        runs += 1
        watchers[0][1] = max(due + TICK, time.monotonic())  # never bunch up after falling behind
    return runs, durations, watchers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=30.0, help="seconds watched per configuration")
    parser.add_argument("--sessions", default="1,10", help="comma-separated numbers of watching sessions")
    args = parser.parse_args()
    counts = [int(n) for n in args.sessions.split(",")]
    _util.quiet()
    from comet.sim import Sim

    print(f"Watchers benchmark · {_util.machine()}")
    print(f"  window {args.window:g} s per configuration, each session reruns every {TICK:g} s")
    work = Path(tempfile.mkdtemp(prefix="comet-bench-watchers-"))
    results = []
    earlier: list[str] = []  # ids of the configurations before, whose trackers are released
    try:
        with Sim(start_delay=0.5, run_time=RUN_TIME) as sim:
            for n in counts:
                _util.clear_caches()  # stops the previous configuration's tracker
                released = time.time()  # from now on nothing should poll the earlier ids
                _util.app_environment(work / f"sessions-{n}")
                prediction_id = create_prediction(sim, f"a lighthouse in fog, watched by {n}")
                created = next(r["time"] for r in reversed(sim.requests) if r["method"] == "POST")
                start, end = created, created + args.window
                runs, durations, watchers = watch(sim, prediction_id, n, end)
                time.sleep(max(0.0, end - time.time()) + 0.5)  # let requests of the window arrive
                gets = status_gets(sim, prediction_id, start, end)
                stray = sum(status_gets(sim, pid, released, end) for pid in earlier)
                results.append({"n": n, "runs": runs, "rerun": _util.median(durations), "gets": gets,
                                "api": api_requests(sim, start, end),
                                "stray": stray, "id": prediction_id})
                earlier.append(prediction_id)
                del watchers
                print(f"  {n} session(s): {runs} page runs, {gets} status GETs", flush=True)
            _util.clear_caches()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    per_minute = 60.0 / args.window
    print()
    print(table(
        ["sessions", "page runs/min (all)", "runs/min per session", "median rerun", "status GETs", "GETs/min",
         "all API req/min", "GETs of older ids"],
        [[str(r["n"]), f"{r['runs'] * per_minute:.0f}", f"{r['runs'] * per_minute / r['n']:.1f}", ms(r["rerun"]),
          str(r["gets"]), f"{r['gets'] * per_minute:.1f}", f"{r['api'] * per_minute:.1f}", str(r["stray"])]
         for r in results]))
    if len(results) > 1:
        base = results[0]
        for r in results[1:]:
            print(f"\nGETs/min ratio {r['n']} / {base['n']} sessions: {r['gets'] / base['gets']:.2f}  (goal 1.0)")


if __name__ == "__main__":
    main()
