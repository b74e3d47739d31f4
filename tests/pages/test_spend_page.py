"""Spend in the app: the estimate beside Generate, refusals that send nothing, what is left in the
sidebar, the cost in History and its CSV, and the Usage page's figures."""

from __future__ import annotations

import pytest

from comet import export
from comet.config import Settings
from comet.ledger import Ledger, Limits
from comet.store import Store
from support.api import KEY, api_requests
from support.apptest import open_app

pytestmark = pytest.mark.usefixtures("app_env")
SCHNELL, DEV = "black-forest-labs/flux-schnell", "black-forest-labs/flux-dev"


def live(sim, **extra):
    return open_app(COMETAPI_KEY=KEY, COMETAPI_BASE_URL=sim.url, **extra)


def prompt(at, text="a lighthouse"):
    at.text_area(key="param.prompt").input(text).run()
    return at


def generate(at):
    next(b for b in at.button if b.label.startswith("Generate")).click().run()
    return at


def captions(at) -> str:
    return " ".join(str(c.value) for c in at.caption).replace("\\", "").replace("**", "")


def spent_already(data_dir, usd: float, person: str | None = None) -> None:
    """As if this month's spend so far were `usd` (a reservation made by another session)."""
    store = Store.for_settings(Settings.from_sources({"COMETAPI_KEY": KEY}, {"COMET_DATA_DIR": str(data_dir)}))
    Ledger(store).reserve(person, DEV, usd, Limits())
    store.close()


def test_the_estimated_cost_is_shown_beside_generate_and_totalled_for_a_compare(sim):
    at = prompt(live(sim))
    assert "Estimated cost: $0.003" in captions(at)
    at.multiselect(key="compare.models").select(DEV).run()
    assert "Estimated cost: $0.028 in total" in captions(at)


def test_price_overrides_from_secrets_and_the_environment_change_the_estimate(sim, monkeypatch):
    monkeypatch.setenv("COMET_PRICES", '{"flux-schnell": 0.5}')
    assert "Estimated cost: $0.5" in captions(prompt(live(sim)))
    at = prompt(live(sim, prices={"flux-schnell": 0.25}))  # the secrets' [prices] table wins
    assert "Estimated cost: $0.25" in captions(at)


def test_a_create_that_would_pass_the_monthly_limit_is_refused_and_nothing_is_sent(sim, app_env):
    spent_already(app_env, 0.009)
    at = generate(prompt(live(sim, SPEND_LIMIT_MONTHLY="0.01")))
    shown = " ".join(e.value for e in at.error).replace("\\", "")
    assert "this month's spending limit for the app ($0.01)" in shown and "$0.001 is left" in shown
    assert api_requests(sim, "POST") == []
    assert "$0.001 of $0.01 left this month" in " ".join(str(c.value) for c in at.sidebar.caption)


def test_a_create_within_the_limit_goes_and_its_cost_is_counted(sim, app_env):
    at = generate(prompt(live(sim, SPEND_LIMIT_MONTHLY="0.01")))
    assert len(api_requests(sim, "POST")) == 1 and not at.error
    at.run()
    assert "$0.007 of $0.01 left this month" in " ".join(str(c.value) for c in at.sidebar.caption)


def test_history_and_its_csv_carry_the_estimated_cost(sim, app_env):
    at = generate(prompt(live(sim), "a costed fox"))
    prediction_id = next(iter(sim.predictions))
    at.switch_page("pages/history.py").run()
    table = at.dataframe[0].value
    assert table.loc[table["id"] == prediction_id, "cost"].iloc[0] == pytest.approx(0.003)
    store = Store.for_settings(Settings.from_sources({"COMETAPI_KEY": KEY}, {"COMET_DATA_DIR": str(app_env)}))
    csv = export.history_csv(Ledger(store).with_costs(store.export_rows()))
    store.close()
    assert "estimated_usd" in csv.splitlines()[0] and "0.003" in csv


def test_the_usage_page_shows_the_periods_spend_by_person_and_model(sim, app_env):
    spent_already(app_env, 0.025, person="ana")
    spent_already(app_env, 0.050, person="ben")
    at = live(sim)
    at.switch_page("pages/usage.py").run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Estimated spend"] == "$0.075" and metrics["People"] == "2"
    by_person = at.dataframe[0].value
    spent = dict(zip(by_person["person"], by_person["usd"], strict=True))
    assert spent == {"ben": pytest.approx(0.05), "ana": pytest.approx(0.025)}
    assert [b.proto.label for b in at.get("download_button")] == ["Export the table as CSV"]
