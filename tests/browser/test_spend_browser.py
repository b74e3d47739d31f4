"""A shared key's monthly limit, in a real browser: with the limit nearly used, Generate is refused
with the limit named and the stand-in receives no create."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from comet.config import Settings
from comet.ledger import Ledger, Limits
from comet.sim import Sim
from comet.store import Store
from support.api import KEY, api_requests
from support.apphost import AppServer, wait_until_idle

pytestmark = pytest.mark.e2e


def test_with_the_monthly_limit_nearly_used_generate_is_refused_and_nothing_is_sent(tmp_path, browser):
    with Sim(start_delay=0.1, run_time=0.5) as sim:
        env = {"COMETAPI_KEY": KEY, "COMETAPI_BASE_URL": sim.url, "SPEND_LIMIT_MONTHLY": "0.05"}
        store = Store.for_settings(Settings.from_sources(env, {"COMET_DATA_DIR": str(tmp_path)}))
        Ledger(store).reserve("someone else", "black-forest-labs/flux-dev", 0.048, Limits())
        store.close()
        with AppServer(tmp_path, env=env) as app:
            page = browser.new_page(viewport={"width": 1360, "height": 1000})
            page.goto(app.url)
            wait_until_idle(page)
            expect(page.get_by_test_id("stSidebar")).to_contain_text("$0.002 of $0.05 left this month")
            box = page.get_by_role("textbox", name="Prompt")
            box.fill("one image too many")
            box.press("Tab")
            wait_until_idle(page)
            page.get_by_role("button", name="Generate").click()
            refusal = page.get_by_test_id("stAlert").filter(has_text="spending limit")
            expect(refusal).to_contain_text("Not sent: this would pass this month's spending limit for the app")
            expect(refusal).to_contain_text("$0.002 is left")
            page.close()
        assert api_requests(sim, "POST") == []
