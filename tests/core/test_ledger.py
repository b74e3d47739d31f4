"""Spending limits a shared key can trust: estimates are reserved before a create is sent, in one
serialised decision, and count as the prediction turns out. On SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta

import pytest

from comet import prices
from comet.ledger import ANONYMOUS, Ledger, Limits, Refusal
from comet.prediction import Prediction

SCHNELL, DEV = "black-forest-labs/flux-schnell", "black-forest-labs/flux-dev"
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.fixture
def ledger(store):
    return Ledger(store)


def made(store, ledger, reservation, n, status="succeeded", creator=None):
    prediction_id = f"pred{n}".ljust(26, "0")
    store.record(Prediction(id=prediction_id, model=SCHNELL, status=status, input={"prompt": "x"}), creator=creator)
    ledger.attach(reservation, prediction_id)
    return prediction_id


def test_twenty_racing_creates_against_a_limit_for_five_reserve_exactly_five(ledger):
    limits = Limits(monthly=5 * 0.04 + 0.001)
    start = threading.Barrier(20)
    results = []

    def click():
        start.wait()
        results.append(ledger.reserve("ana", DEV, 0.04, limits, now=NOW))

    threads = [threading.Thread(target=click) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    granted = [r for r in results if isinstance(r, str)]
    refused = [r for r in results if isinstance(r, Refusal)]
    assert (len(granted), len(refused)) == (5, 15)
    assert ledger.left("ana", limits, now=NOW).monthly == pytest.approx(0.001)


def test_a_refusal_says_which_limit_what_is_left_and_when_it_resets(ledger):
    monthly = ledger.reserve("ana", DEV, 0.04, Limits(monthly=0.03), now=NOW)
    daily = ledger.reserve("ana", DEV, 0.04, Limits(daily_per_person=0.03), now=NOW)
    assert isinstance(monthly, Refusal) and monthly.limit == "monthly"
    assert monthly.resets == datetime(2026, 12, 1, tzinfo=UTC)
    assert "$0.03 is left" in monthly.message and "2026-12-01 00:00 UTC" in monthly.message
    assert isinstance(daily, Refusal) and daily.resets == datetime(2026, 12, 1, tzinfo=UTC)
    assert "your spending limit for today" in daily.message
    assert isinstance(ledger.reserve("ana", DEV, 0.04, Limits(monthly=0.05), now=NOW), str)  # fits


def test_failed_canceled_and_aborted_predictions_and_refused_creates_give_the_money_back(store, ledger):
    limits = Limits(monthly=0.10)
    for n, status in enumerate(["failed", "canceled", "aborted"]):
        made(store, ledger, ledger.reserve("ana", DEV, 0.04, limits, now=NOW), n, status)
    refused_create = ledger.reserve("ana", DEV, 0.04, limits, now=NOW)
    ledger.release(refused_create)
    assert ledger.left("ana", limits, now=NOW).monthly == pytest.approx(0.10)
    made(store, ledger, ledger.reserve("ana", DEV, 0.04, limits, now=NOW), 7, "succeeded")
    running = ledger.reserve("ana", DEV, 0.04, limits, now=NOW)
    made(store, ledger, running, 8, "processing")
    lost = ledger.reserve("ana", DEV, 0.01, limits, now=NOW)
    ledger.unconfirmed(lost)  # the answer was lost: it may have been billed
    assert ledger.left("ana", limits, now=NOW).monthly == pytest.approx(0.01)


def test_the_daily_limit_is_per_person_and_anonymous_visitors_share_one(ledger):
    limits = Limits(daily_per_person=0.05)
    assert isinstance(ledger.reserve("ana", DEV, 0.04, limits, now=NOW), str)
    assert isinstance(ledger.reserve("ana", DEV, 0.04, limits, now=NOW), Refusal)
    assert isinstance(ledger.reserve("ben", DEV, 0.04, limits, now=NOW), str)  # another person
    assert isinstance(ledger.reserve(None, DEV, 0.04, limits, now=NOW), str)
    assert isinstance(ledger.reserve("", DEV, 0.04, limits, now=NOW), Refusal)  # the same anonymous
    tomorrow = NOW + timedelta(days=1)
    assert isinstance(ledger.reserve("ana", DEV, 0.04, limits, now=tomorrow), str)  # a new day


def test_predictions_recorded_before_spend_get_their_cost_from_their_input_once(store):
    store.record(Prediction(id="old0".ljust(26, "0"), model=SCHNELL, status="succeeded",
                            input={"prompt": "x", "num_outputs": 3}, created_at=NOW), creator="ana")
    store.record(Prediction(id="old1".ljust(26, "0"), model=DEV, status="failed", input={"prompt": "x"},
                            created_at=NOW))
    ledger = Ledger(store)
    rules = prices.rules()
    assert ledger.backfill(rules) == 2 and ledger.backfill(rules) == 0
    costs = ledger.costs(["old0".ljust(26, "0"), "old1".ljust(26, "0")])
    assert costs["old0".ljust(26, "0")] == pytest.approx(0.009) and costs["old1".ljust(26, "0")] == pytest.approx(0.025)
    usage = ledger.usage(date(2026, 11, 1), date(2026, 11, 30))
    assert list(usage["person"]) == ["ana"] and usage["usd"].sum() == pytest.approx(0.009)  # the failure is free


def test_usage_is_grouped_by_day_person_and_model_and_equals_a_hand_sum(store, ledger):
    rows = [("ana", SCHNELL, 0.003, 0, "succeeded"), ("ana", SCHNELL, 0.003, 0, "succeeded"),
            ("ben", DEV, 0.025, 0, "succeeded"), ("ben", DEV, 0.025, 1, "failed"),
            (None, DEV, 0.025, 2, "processing"), ("ana", DEV, 0.025, 40, "succeeded")]
    expected: dict[tuple[str, str, str], float] = {}
    for n, (person, model, usd, days_ago, status) in enumerate(rows):
        moment = NOW - timedelta(days=days_ago)
        reservation = ledger.reserve(person, model, usd, Limits(), now=moment)
        made(store, ledger, reservation, n, status, creator=person)
        if status != "failed" and days_ago < 30:
            key = (moment.strftime("%Y-%m-%d"), person or ANONYMOUS, model)
            expected[key] = expected.get(key, 0.0) + usd
    usage = ledger.usage(date(2026, 11, 1), date(2026, 11, 30))
    got = {(r.day, r.person, r.model): r.usd for r in usage.itertuples()}
    assert got == pytest.approx(expected)


def test_a_saved_success_is_spent_with_its_images_and_a_given_up_run_stays_counted(store, ledger):
    import io

    from PIL import Image

    from comet.fetch import StoredFile

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    limits = Limits(monthly=1.0)
    done = made(store, ledger, ledger.reserve("ana", DEV, 0.04, limits, now=NOW), 1, "succeeded")
    store.save_outputs(done, [StoredFile("image/png", buffer.getvalue(), "https://x/a.png")] * 2)
    lost = made(store, ledger, ledger.reserve("ana", DEV, 0.04, limits, now=NOW), 2, "processing")
    store.give_up(lost, "Gave up after 45 min without a final status.")
    usage = ledger.usage(date(2026, 11, 1), date(2026, 11, 30))
    assert (int(usage["succeeded"].sum()), int(usage["images"].sum())) == (1, 2)
    assert usage["usd"].sum() == pytest.approx(0.08)  # the given-up run may have been billed
