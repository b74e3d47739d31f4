"""CPU of the Streamlit server process while N browser sessions watch running predictions, with
Streamlit's `runner.postScriptGC` on (its default) and off (what `.streamlit/config.toml` sets).

    python bench/server_cpu.py                       # 20 s window, 1 and 10 sessions (about 2.5 min)
    python bench/server_cpu.py --sessions 1,10,20 --window 30

With `postScriptGC` on, Streamlit runs a full `gc.collect(2)` after every script run, and every
tick of a `st.fragment(run_every=...)` is a script run. The live result card (comet/ui/card.py)
ticks once a second while its prediction runs, so N people watching cost N full collections a
second in the one server process.

The app runs for real (`streamlit run streamlit_app.py`, through tests/apphost.py) in live mode
against the local stand-in `comet.sim.Sim`, whose predictions here run for 10 minutes, so every
card keeps ticking through the window. Per configuration (each N, GC on then GC off, so the two
settings of one N are measured back to back): a fresh server on a fresh data folder with
`--runner.postScriptGC true|false` on its command line (flags override config.toml); N headless
Chromium pages, one browser context each; in each, type a prompt, Tab, Generate; wait until every
page shows its ticking card ("… so far"), let it settle, then read the server's utime + stime from
/proc/<pid>/stat (all its threads) at the start and end of a fixed window. Figures:
- server CPU in cores (CPU seconds per wall second) and ms of CPU per session-second;
- card ticks per session-second, asked / served, from each page's websocket: the fragment
  `rerun_script` requests the pages sent (their timers fire every second regardless: 1.00) and the
  fragment runs the server finished (`script_finished` FINISHED_FRAGMENT_RUN_SUCCESSFULLY).
  Requests that queue up while a session is busy are folded into one run, so "served" below 1.00
  means the server fell behind (the progress lines also count runs that ended early, cut short
  by a newer request); the server's CPU per tick is computed from the served ones;
- the CPU of the browser side (Chromium and the Playwright driver, every process below this one
  except the server) and the whole machine's busy cores (/proc/stat): on 2 cores the browsers
  compete with the server, so a machine figure near the core count means the server was starved.
Every server is stopped and every browser context closed before the next configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import _util
from _util import table

sys.path.insert(0, str(_util.REPO / "tests"))
from support.apphost import AppServer, generate_in_each, launch_chromium

KEY = "sk-bench-0123456789abcdefghij"
RUN_TIME = 600.0  # the stand-in's predictions outlast every window
SETTLE = 3.0  # seconds after the last card appears before the window opens
CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """utime + stime of a process, all its threads, in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5)


def descendants_cpu(root: int, exclude: int) -> dict[int, float]:
    """CPU seconds of every process below `root` (Chromium and the Playwright driver), except the
    server and its own children, by pid."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError), \
                    open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                parents[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
    below, todo = set(), [root]
    while todo:
        parent = todo.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid != exclude and pid not in below:
                below.add(pid)
                todo.append(pid)
    cpu = {}
    for pid in below:
        with contextlib.suppress(OSError, IndexError, ValueError):
            cpu[pid] = process_cpu(pid)
    return cpu


def machine_busy() -> float:
    """Non-idle CPU seconds of the whole machine, all cores."""
    with open("/proc/stat", encoding="ascii") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLK_TCK  # guest time is already in user


class TickCounter:
    """Card ticks of one page, from its websocket: `asked` counts the fragment reruns the page
    requested (its timer fires every second whatever happens), `served` the fragment runs the
    server finished. Streamlit folds a fragment's requests that queue up while its session is busy
    into one run, so a server that falls behind serves fewer ticks than were asked."""

    def __init__(self, page) -> None:
        self.asked = self.served = self.cut_short = 0
        page.on("websocket", self._attach)

    def _attach(self, ws) -> None:
        ws.on("framesent", self._sent)
        ws.on("framereceived", self._received)

    def _sent(self, payload) -> None:
        from streamlit.proto.BackMsg_pb2 import BackMsg

        if isinstance(payload, bytes):
            with contextlib.suppress(Exception):
                msg = BackMsg.FromString(payload)
                if msg.WhichOneof("type") == "rerun_script" and msg.rerun_script.fragment_id:
                    self.asked += 1

    def _received(self, payload) -> None:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        if isinstance(payload, bytes):
            with contextlib.suppress(Exception):
                msg = ForwardMsg.FromString(payload)
                if msg.WhichOneof("type") == "script_finished":
                    if msg.script_finished == ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY:
                        self.served += 1
                    elif msg.script_finished == ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                        self.cut_short += 1


def open_watchers(browser, url: str, sessions: int, label: str, contexts: list) -> list[TickCounter]:
    """N pages, one context each (appended to `contexts`, for the caller to close), each with its
    own running prediction and ticking card."""
    contexts.extend(browser.new_context(viewport={"width": 1280, "height": 900}) for _ in range(sessions))
    pages = [context.new_page() for context in contexts]
    counters = [TickCounter(page) for page in pages]
    generate_in_each(pages, url, [f"a lighthouse in fog, {label}, session {n}" for n in range(sessions)],
                     timeout=180_000)
    for page in pages:
        page.get_by_text("so far").first.wait_for(timeout=180_000)
    return counters


def measure(playwright_browser, sim, work: Path, sessions: int, gc_on: bool, window: float) -> dict:
    label = f"{sessions} session{'s' if sessions != 1 else ''}, GC {'on' if gc_on else 'off'}"
    data_dir = work / f"{sessions}-{'on' if gc_on else 'off'}"
    server = AppServer(data_dir, env={"COMETAPI_KEY": KEY, "COMETAPI_BASE_URL": sim.url},
                       options=["--runner.postScriptGC", "true" if gc_on else "false"]).start()
    contexts = []
    try:
        counters = open_watchers(playwright_browser, server.url, sessions, label, contexts)
        pages = [context.pages[0] for context in contexts]
        pages[0].wait_for_timeout(SETTLE * 1000)
        pages[0].evaluate("1")  # deliver the websocket events that are still queued
        pid = server.process.pid
        asked0, served0, cut0 = (sum(getattr(c, name) for c in counters)
                                 for name in ("asked", "served", "cut_short"))
        clients0 = descendants_cpu(os.getpid(), exclude=pid)
        cpu0, busy0, t0 = process_cpu(pid), machine_busy(), time.monotonic()
        # Waiting inside Playwright (not time.sleep) keeps the websocket events flowing to the counters.
        pages[0].wait_for_timeout(window * 1000)
        cpu1, busy1, t1 = process_cpu(pid), machine_busy(), time.monotonic()
        clients1 = descendants_cpu(os.getpid(), exclude=pid)
        pages[0].evaluate("1")
        asked = sum(c.asked for c in counters) - asked0
        served = sum(c.served for c in counters) - served0
        cut_short = sum(c.cut_short for c in counters) - cut0
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited during the window:\n{server.log()}")
        errors = sum(page.get_by_test_id("stException").count() for page in pages)
        running = sum(page.get_by_text("so far").count() > 0 for page in pages)
    finally:
        for context in contexts:
            with contextlib.suppress(Exception):
                context.close()
        server.stop()
    wall = t1 - t0
    result = {"n": sessions, "gc": gc_on, "wall": wall, "cpu": cpu1 - cpu0, "busy": busy1 - busy0,
              "clients": sum(cpu - clients0[p] for p, cpu in clients1.items() if p in clients0),
              "asked": asked, "ticks": served, "cut": cut_short, "errors": errors, "running": running}
    print(f"  {label}: server {result['cpu'] / wall:.2f} cores, browser + driver {result['clients'] / wall:.2f} "
          f"cores, machine {result['busy'] / wall:.2f} cores; in {wall:.1f} s ticks asked {asked}, served {served}, "
          f"runs cut short for a rerun {cut_short}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=20.0, help="seconds measured per configuration")
    parser.add_argument("--sessions", default="1,10", help="comma-separated numbers of browser sessions")
    args = parser.parse_args()
    counts = [int(n) for n in args.sessions.split(",")]
    _util.quiet()
    from playwright.sync_api import sync_playwright

    from comet.sim import Sim

    print(f"Server CPU benchmark · {_util.machine()}")
    print(f"  window {args.window:g} s per configuration after {SETTLE:g} s settling; "
          f"each session watches its own running prediction (card ticks every 1 s)")
    started = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory(prefix="comet-bench-server-cpu-") as work, \
            Sim(start_delay=0.5, run_time=RUN_TIME) as sim, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            for n in counts:
                for gc_on in (True, False):
                    results.append(measure(browser, sim, Path(work), n, gc_on, args.window))
        finally:
            browser.close()

    print()
    def row(r: dict) -> list[str]:
        session_seconds = r["wall"] * r["n"]
        return [str(r["n"]), "on" if r["gc"] else "off", f"{r['cpu'] / r['wall']:.2f}",
                f"{r['cpu'] * 1000 / session_seconds:.1f}",
                f"{r['asked'] / session_seconds:.2f} / {r['ticks'] / session_seconds:.2f}",
                f"{r['clients'] / r['wall']:.2f}", f"{r['busy'] / r['wall']:.2f}"]

    print(table(
        ["sessions", "postScriptGC", "server CPU (cores)", "ms CPU per session-second",
         "ticks per session-second (asked / served)", "browser + driver (cores)", "machine busy (cores)"],
        [row(r) for r in results]))
    print()
    for r in results:  # the window must have watched what it claims to
        if r["running"] < r["n"] or r["errors"]:
            print(f"warning: {r['n']} sessions, GC {'on' if r['gc'] else 'off'}: {r['running']}/{r['n']} cards still "
                  f"running at the end of the window, {r['errors']} exceptions on screen")
        if r["ticks"] < 0.9 * r["asked"]:
            print(f"note: {r['n']} sessions, GC {'on' if r['gc'] else 'off'}: the server finished {r['ticks']} of the "
                  f"{r['asked']} card ticks asked ({r['cut']} runs cut short by a newer request): it fell behind, "
                  f"so its CPU figure is a floor of what that load needs")
    for n in counts:
        on = next(r for r in results if r["n"] == n and r["gc"])
        off = next(r for r in results if r["n"] == n and not r["gc"])
        ratio = (on["cpu"] / on["wall"]) / (off["cpu"] / off["wall"]) if off["cpu"] else float("inf")
        per_tick = ""
        if all(r["ticks"] >= 0.9 * r["asked"] > 0 for r in (on, off)):  # per tick only while both kept up
            saved = on["cpu"] / on["ticks"] - off["cpu"] / off["ticks"]
            per_tick = f"  (server CPU per served tick: {on['cpu'] / on['ticks'] * 1000:.1f} ms on, " \
                       f"{off['cpu'] / off['ticks'] * 1000:.1f} ms off, {saved * 1000:.1f} ms difference)"
        print(f"ratio on/off at {n} session{'s' if n != 1 else ''}: {ratio:.1f}{per_tick}")
    print(f"\ntotal runtime {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
