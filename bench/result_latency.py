"""How long after a job ends upstream its image is on the user's screen, in a real browser.

    python bench/result_latency.py                 # 9 predictions of 3.8 s each (about 1.5 min)
    python bench/result_latency.py --runs 15 --run-time 5

The app runs for real (`streamlit run streamlit_app.py`, through tests/apphost.py) in live mode
against the local stand-in `comet.sim.Sim` of this process, whose internal record holds the
moment each job ends (`completed`, epoch seconds). One headless Chromium page types a prompt,
presses Generate, and a script in the page notes (`Date.now()`, the same clock on one machine)
the first animation frame in which the result card's image has been decoded (`img.complete`
and `naturalWidth > 0`). Latency = that moment - the job's end. The runs follow one another in
the same page (each a new prompt, so each Generate sends). Figures: median and p90 of the
latency, and the upstream status GETs per prediction (the tracker's polls, from `sim.requests`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import _util
from _util import table

sys.path.insert(0, str(_util.REPO / "tests"))
from support.apphost import AppServer, launch_chromium, wait_until_idle

KEY = "sk-bench-0123456789abcdefghij"

# Resolves with the epoch ms of the first frame showing a decoded image of this prediction's card.
WATCH = """(id) => new Promise(resolve => {
  const look = () => {
    const link = [...document.querySelectorAll('a')].find(a => a.href.includes(id));
    const card = link && link.closest('[data-testid="stVerticalBlockBorderWrapper"], [data-testid="stVerticalBlock"]');
    const img = card && card.querySelector('[data-testid="stImage"] img, [data-testid="stFullScreenFrame"] img');
    if (img && img.complete && img.naturalWidth > 0) { resolve(Date.now()); return; }
    requestAnimationFrame(look);
  };
  look();
})"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--run-time", type=float, default=3.8, help="seconds each job runs upstream")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from comet.sim import Sim

    latencies, gets = [], []
    with tempfile.TemporaryDirectory() as tmp, Sim(start_delay=0.5, run_time=args.run_time) as sim, \
            sync_playwright() as playwright:
        env = {"COMETAPI_KEY": KEY, "COMETAPI_BASE_URL": sim.url}
        with AppServer(Path(tmp), env=env) as app:
            browser = launch_chromium(playwright)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(app.url)
            wait_until_idle(page)
            for run in range(args.runs + 1):  # the first run warms the server up: not counted
                before = {p for p in sim.predictions}
                box = page.get_by_role("textbox", name="Prompt")
                box.fill(f"latency run {run} of a lighthouse at dusk")
                box.press("Tab")
                wait_until_idle(page)
                page.get_by_role("button", name="Generate").click()
                deadline = time.monotonic() + 30
                while not (new := set(sim.predictions) - before) and time.monotonic() < deadline:
                    time.sleep(0.02)
                (prediction_id,) = new
                shown_ms = page.evaluate(WATCH, prediction_id)
                ended = sim.predictions[prediction_id]["completed"]
                if run:
                    latencies.append(shown_ms / 1000 - ended)
                    gets.append(sum(1 for r in sim.requests if r["method"] == "GET"
                                    and r["path"].endswith(f"/predictions/{prediction_id}")))
                time.sleep(1.0)  # let the page settle (the card's final rerun) before the next one
            browser.close()
    print(f"{args.runs} predictions of {args.run_time:g} s upstream, one Chromium page, live mode against the stand-in")
    print(table(["What", "Median", "p90"], [
        ["Job end -> image on screen (s)", f"{_util.median(latencies):.2f}", f"{_util.percentile(latencies, 0.9):.2f}"],
        ["Status GETs per prediction", f"{_util.median(gets):.1f}", f"{_util.percentile(gets, 0.9):.0f}"],
    ]))
    print("latencies:", " ".join(f"{x:.2f}" for x in latencies))


if __name__ == "__main__":
    main()
