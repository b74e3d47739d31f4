"""Two real demo processes (`streamlit run`) on one data folder, and a third instance in this
process, finish each other's predictions: none is given up as unknown. The stand-ins sharing
one state file underneath: tests/core/test_demo_isolation.py."""

from __future__ import annotations

import pytest
import streamlit as st
from playwright.sync_api import expect

from comet.config import Settings
from comet.store import Store
from comet.ui import context as app_context
from support.apphost import AppServer, wait_until_idle
from support.apptest import open_app
from support.waiting import wait_until


def demo_history(data_dir) -> Store:
    return Store.for_settings(Settings.from_sources({}, {"COMET_DATA_DIR": str(data_dir)}))


def generate(page, url: str, prompt: str) -> None:
    page.goto(url)
    wait_until_idle(page, timeout=60_000)
    box = page.get_by_role("textbox", name="Prompt")
    box.fill(prompt)
    box.press("Tab")  # Streamlit commits a text area on blur
    wait_until_idle(page, timeout=60_000)
    page.get_by_role("button", name="Generate").click()


@pytest.mark.e2e
def test_two_demo_processes_on_one_data_folder_each_finish_their_predictions(app_env, browser):
    with AppServer(app_env) as first, AppServer(app_env) as second:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        pages = [context.new_page(), context.new_page()]
        for page in pages:
            page.set_default_timeout(60_000)
        generate(pages[0], first.url, "a heron from the first instance")
        generate(pages[1], second.url, "a kite from the second instance")
        for page in pages:  # each shows its own result
            expect(page.get_by_test_id("stImage").first).to_be_visible(timeout=60_000)

        # A third instance (this process, through AppTest) makes one and stops while it runs, as
        # a restarted or stopped instance would: the two servers must finish it between them.
        at = open_app()
        # Its own stand-in (the cached one) runs this one longer, so it is surely unfinished at
        # the stop; the run's end is kept in the shared state, as any run's is.
        app_context._demo_sim(str(app_env / "demo-standin.json")).configure(run_time=8.0)
        at.text_area(key="param.prompt").input("a lantern from a third instance").run()
        next(b for b in at.button if b.label.startswith("Generate")).click().run()
        assert not at.exception
        history = demo_history(app_env)
        [handed_over] = [r for r in (history.get(i) for i in history.unfinished_ids())
                         if r.prompt == "a lantern from a third instance"]
        st.cache_resource.clear()  # its tracker and stand-in stop; the leases are released
        assert handed_over.tracking == "active" and handed_over.status != "succeeded"

        wait_until(lambda: history.unfinished_count() == 0, timeout=60)
        records = [history.get(i) for i in history.page(limit=10)["id"]]
        context.close()
        logs = first.log() + second.log()
    assert sorted(r.prompt for r in records) == [
        "a heron from the first instance", "a kite from the second instance", "a lantern from a third instance"]
    assert [(r.status, r.tracking, r.output_count, r.note) for r in records] == [("succeeded", "done", 1, None)] * 3
    assert "no longer knows" not in logs and "Traceback" not in logs
    history.close()
