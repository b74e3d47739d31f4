"""Batches: a list of prompts, seeds and swept values planned into cells that the server sends
with bounded concurrency, durably (a restart neither loses nor repeats a cell), within the
spending limits, and that can be canceled. Against the stand-in over HTTP, on SQLite and
PostgreSQL."""

from __future__ import annotations

import threading

import pytest

from comet import prices
from comet.batch import (
    CANCELED,
    DEAD_SENDER_NOTE,
    FAILED,
    FINISHED,
    PENDING,
    REFUSED,
    SENDING,
    SENT,
    UNCERTAIN,
    Axis,
    Batches,
    BatchRunner,
    BatchSpec,
    plan,
    prompts_from_text,
    rows_from_csv,
)
from comet.config import Settings
from comet.ledger import Ledger, Limits
from support.api import api_requests
from support.waiting import wait_until

SCHNELL, DEV, PRO = "black-forest-labs/flux-schnell", "black-forest-labs/flux-dev", "black-forest-labs/flux-pro"


# ---- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def batches(store):
    return Batches(store)


@pytest.fixture
def runners(store, batches, client):
    """Makes runners on the test's database that send with the real client; stops them all."""
    made: list[BatchRunner] = []

    def make(**options) -> BatchRunner:
        options.setdefault("poll", 0.2)
        runner = BatchRunner(batches, create=client.create, cancel=client.cancel,
                             track=lambda prediction, creator, batch_id: store.record(
                                 prediction, creator=creator, batch_id=batch_id),
                             **options)
        made.append(runner)
        return runner.start()

    yield make
    for runner in made:
        runner.stop()


def creates(sim) -> list[dict]:
    return api_requests(sim, "POST", "/models/")


def sent_inputs(sim) -> list[dict]:
    return [r["json"]["input"] for r in creates(sim)]


def finished(batches, batch_id):
    return lambda: (batch := batches.get(batch_id)) is not None and not batch.active and batch


def states(batches, batch_id) -> list[str]:
    return [cell.state for cell in batches.cells(batch_id)]


def schnell_batch(prompts=("a red fox", "a paper boat", "a lighthouse"), variations=2, **spec) -> BatchSpec:
    return BatchSpec(prompts=tuple(prompts), models=(SCHNELL,), variations=variations, seed=1000, **spec)


# ---- sending ---------------------------------------------------------------------------------


def test_three_prompts_by_two_variations_make_six_predictions_never_more_than_the_limit_in_flight(
        sim, store, batches, runners):
    sim.configure(create_delay=0.3)  # each create takes a while, as real ones do
    runner = runners(concurrency=3)
    batch_id = runner.submit(plan(schnell_batch()), creator="ana", title="foxes")
    batch = wait_until(finished(batches, batch_id))

    assert batch.state == FINISHED and batch.counts == {SENT: 6} and batch.title == "foxes"
    cells = batches.cells(batch_id)
    assert len(creates(sim)) == 6
    assert sorted(c["prompt"] for c in sent_inputs(sim)) == sorted(c.input["prompt"] for c in cells)
    # Exactly what each cell holds was sent, its fixed seed included: any cell can be reproduced.
    assert sorted(map(str, sent_inputs(sim))) == sorted(str(cell.input) for cell in cells)
    assert {(cell.input["prompt"], cell.seed) for cell in cells} == {
        (p, s) for p in ("a red fox", "a paper boat", "a lighthouse") for s in (1000, 1001)}
    assert len({cell.prediction_id for cell in cells}) == 6
    assert all(sim.get_prediction(cell.prediction_id) for cell in cells)
    assert all(store.get(cell.prediction_id).creator == "ana" for cell in cells)  # tracked
    peak = sim.create_stats()["peak"]
    assert peak == 3  # the limit is used, and never passed


def test_two_replicas_on_one_database_keep_to_one_limit_together(sim, batches, runners):
    sim.configure(create_delay=0.3)
    first, second = runners(concurrency=2), runners(concurrency=2)
    batch_id = first.submit(plan(schnell_batch(prompts=[f"tower {n}" for n in range(4)])))
    second.wake()
    wait_until(finished(batches, batch_id))
    assert len(creates(sim)) == 8
    assert len({cell.prediction_id for cell in batches.cells(batch_id)}) == 8
    assert sim.create_stats()["peak"] == 2


def test_a_restart_halfway_finishes_the_batch_without_sending_a_cell_twice(sim, batches, runners):
    sim.configure(create_delay=0.2)
    runner = runners(concurrency=2)
    batch_id = runner.submit(plan(schnell_batch(prompts=[f"harbour {n}" for n in range(5)])))
    wait_until(lambda: states(batches, batch_id).count(SENT) >= 2)
    runner.stop()  # an orderly stop: the creates in flight end first

    halfway = states(batches, batch_id)
    assert PENDING in halfway and SENDING not in halfway and UNCERTAIN not in halfway
    sent_before = len(creates(sim))
    assert sent_before == halfway.count(SENT) < 10

    runners(concurrency=2)  # the server again, on the same database
    batch = wait_until(finished(batches, batch_id))
    assert batch.counts == {SENT: 10}
    assert len(creates(sim)) == 10
    assert len({(i["prompt"], i["seed"]) for i in sent_inputs(sim)}) == 10  # no cell twice


def test_two_stops_at_once_both_return_only_once_the_create_in_flight_is_written(sim, batches, runners):
    # A runner replaced by new settings ends on a thread of its own while the server shuts down
    # and stops it too: neither may return (and let the database close) before the outcome is in.
    sim.configure(create_delay=1.0)
    runner = runners(concurrency=1)
    batch_id = runner.submit(plan(schnell_batch(prompts=["a quay"], variations=1)))
    wait_until(lambda: runner.in_flight == 1)
    returned: list[list[str]] = []
    stops = [threading.Thread(target=lambda: (runner.stop(), returned.append(states(batches, batch_id))))
             for _ in range(2)]
    for stop in stops:
        stop.start()
    for stop in stops:
        stop.join(timeout=30)
    assert returned == [[SENT], [SENT]]


def test_cancel_stops_the_unsent_cells_and_cancels_the_running_predictions(sim, batches, runners):
    sim.configure(create_delay=0.2, run_time=60)  # what was sent is still running when canceled
    runner = runners(concurrency=1)
    batch_id = runner.submit(plan(schnell_batch(prompts=[f"meadow {n}" for n in range(4)])))
    wait_until(lambda: states(batches, batch_id).count(SENT) >= 2)

    result = runner.cancel(batch_id)
    batch = wait_until(finished(batches, batch_id))
    runner.stop()  # nothing left in flight: every create this runner would make has been made

    cells = batches.cells(batch_id)
    sent = [cell for cell in cells if cell.state == SENT]
    canceled = [cell for cell in cells if cell.state == CANCELED]
    assert batch.state == CANCELED
    assert len(sent) + len(canceled) == 8 and result.unsent >= 4 and len(canceled) >= result.unsent
    assert all(cell.prediction_id is None for cell in canceled)
    assert len(creates(sim)) == len(sent)  # none of the canceled ones was sent
    assert {tuple(sorted(i.items())) for i in sent_inputs(sim)} == {tuple(sorted(c.input.items())) for c in sent}
    # The running ones were asked to stop (one in flight at the cancel, as soon as it landed).
    wait_until(lambda: all(sim.get_prediction(c.prediction_id)["status"] == "canceled" for c in sent))
    assert result.asked >= 1 and not result.problems


def test_a_sweep_over_three_guidance_values_sends_those_values(sim, batches, runners):
    spec = BatchSpec(prompts=("a glass of water on a table",), models=(DEV,), seed=42,
                     axes=(Axis("guidance", (1.5, "3", 4.5)),))
    runner = runners()
    batch_id = runner.submit(plan(spec))
    wait_until(finished(batches, batch_id))
    bodies = sent_inputs(sim)
    assert sorted(body["guidance"] for body in bodies) == [1.5, 3, 4.5]
    assert {body["seed"] for body in bodies} == {42}  # only the swept value differs
    assert {body["num_inference_steps"] for body in bodies} == {28}  # dev's own default
    assert sorted(cell.sweep["guidance"] for cell in batches.cells(batch_id)) == [1.5, 3, 4.5]


def test_a_429_is_tried_again_after_its_retry_after_without_duplicates(sim, batches, runners):
    sim.add_fault("create", "429", times=2, retry_after=0.3)
    runner = runners(concurrency=1)
    batch_id = runner.submit(plan(schnell_batch(prompts=["rain"], variations=3)))
    batch = wait_until(finished(batches, batch_id))

    assert batch.counts == {SENT: 3}
    posts = creates(sim)
    assert len(posts) == 5  # two throttled, then the three cells once each
    assert len(sim.predictions) == 3
    assert len({(i["prompt"], i["seed"]) for i in sent_inputs(sim)[2:]}) == 3
    for throttled, following in zip(posts[:2], posts[1:3]):  # the server's Retry-After was waited
        assert following["time"] - throttled["time"] >= 0.3 - 0.02


@pytest.mark.parametrize("limit, expected_sent", [(1.00, 5), (0.003 * 2 + 0.0001, 2)])
def test_a_spending_limit_refusal_stops_the_remaining_cells_with_its_message(
        sim, store, batches, runners, limit, expected_sent):
    ledger = Ledger(store)
    runner = runners(concurrency=2, ledger=ledger, limits=Limits(monthly=limit))
    batch_id = runner.submit(plan(schnell_batch(prompts=["dune"], variations=5)), creator="ana")
    batch = wait_until(finished(batches, batch_id))

    cells = batches.cells(batch_id)
    assert len(creates(sim)) == expected_sent == [c.state for c in cells].count(SENT)
    refused = [c for c in cells if c.state == REFUSED]
    assert len(refused) == 5 - expected_sent
    assert all("this month's spending limit for the app" in c.error for c in refused)
    assert (batch.stop_note is not None) == bool(refused)
    assert ledger.left("ana", Limits(monthly=limit)).monthly == pytest.approx(limit - 0.003 * expected_sent)


def test_a_create_that_may_have_been_accepted_is_never_resent_and_a_certain_failure_gives_the_money_back(
        sim, store, batches, runners):
    sim.add_fault("create", "500")  # no definite answer: it may have been accepted
    sim.add_fault("create", "500-invalid")  # refused for sure
    ledger = Ledger(store)
    runner = runners(concurrency=1, ledger=ledger, limits=Limits(monthly=1.0))
    batch_id = runner.submit(plan(schnell_batch(prompts=["frost"], variations=3)), creator="ana")
    batch = wait_until(finished(batches, batch_id))

    assert [c.state for c in batches.cells(batch_id)] == [UNCERTAIN, FAILED, SENT]
    assert batch.state == FINISHED and len(creates(sim)) == 3
    uncertain, failed, _ = batches.cells(batch_id)
    assert "may still have been accepted" in uncertain.error and "refused the request" in failed.error
    # The uncertain one stays counted (it may have been billed), the failed one does not.
    assert ledger.left("ana", Limits(monthly=1.0)).monthly == pytest.approx(1.0 - 2 * 0.003)


# ---- sending again ---------------------------------------------------------------------------


def test_cells_a_spending_limit_refused_are_sent_once_more_when_asked_after_the_limit_is_raised(
        sim, store, batches, runners):
    ledger = Ledger(store)
    tight = runners(concurrency=1, ledger=ledger, limits=Limits(monthly=0.003 * 2 + 0.0001))
    batch_id = tight.submit(plan(schnell_batch(prompts=["dune"], variations=5)), creator="ana")
    wait_until(finished(batches, batch_id))
    refused = [c for c in batches.cells(batch_id) if c.state == REFUSED]
    assert len(refused) == 3 and len(creates(sim)) == 2
    tight.stop()

    raised = runners(concurrency=1, ledger=ledger, limits=Limits(monthly=1.0))  # the operator raised it
    assert raised.send_again(batch_id) == 3
    assert raised.send_again(batch_id) == 0  # a second click (or tab) while it runs sends nothing more
    batch = wait_until(finished(batches, batch_id))

    assert batch.counts == {SENT: 5} and batch.stop_note is None and batch.state == FINISHED
    assert len(creates(sim)) == 5
    # The very cells that were refused went out, with their recorded inputs and seeds.
    assert sorted(str(i) for i in sent_inputs(sim)[2:]) == sorted(str(c.input) for c in refused)
    assert raised.send_again(batch_id) == 0  # nothing is left to send again


def test_uncertain_cells_are_sent_again_only_when_asked_for_by_name(sim, store, batches, runners):
    sim.add_fault("create", "500")  # may have been accepted: uncertain
    sim.add_fault("create", "500-invalid")  # refused for sure: failed
    runner = runners(concurrency=1)
    batch_id = runner.submit(plan(schnell_batch(prompts=["frost"], variations=3)))
    wait_until(finished(batches, batch_id))
    assert states(batches, batch_id) == [UNCERTAIN, FAILED, SENT]

    assert runner.send_again(batch_id) == 1  # the failed one; the uncertain one may be billed already
    wait_until(finished(batches, batch_id))
    assert states(batches, batch_id) == [UNCERTAIN, SENT, SENT] and len(creates(sim)) == 4

    assert runner.send_again(batch_id, uncertain=True) == 1
    batch = wait_until(finished(batches, batch_id))
    assert batch.counts == {SENT: 3} and len(creates(sim)) == 5
    first = batches.cells(batch_id)[0]
    assert first.error is None and sent_inputs(sim)[-1] == first.input


def test_a_canceled_batch_or_one_still_running_is_not_sent_again(sim, batches, runners):
    sim.configure(create_delay=0.3)
    runner = runners(concurrency=1)
    running = runner.submit(plan(schnell_batch(prompts=["reef"], variations=3)))
    wait_until(lambda: SENT in states(batches, running))
    assert runner.send_again(running, uncertain=True) == 0  # still sending: nothing to send again

    runner.cancel(running)
    wait_until(finished(batches, running))
    made = len(creates(sim))
    assert CANCELED in states(batches, running)
    assert runner.send_again(running, uncertain=True) == 0
    assert batches.get(running).state == CANCELED and len(creates(sim)) == made


def test_a_cell_left_sending_by_a_dead_process_becomes_uncertain_and_is_not_resent(sim, batches, runners):
    batch_id = batches.add(plan(schnell_batch(prompts=["orchard"], variations=4)))
    [dead] = batches.claim("crashed-replica", lease=0.3, limit=1)  # then the process died
    runners()
    wait_until(finished(batches, batch_id))

    cells = {cell.idx: cell for cell in batches.cells(batch_id)}
    assert cells[dead.idx].state == UNCERTAIN and cells[dead.idx].error == DEAD_SENDER_NOTE
    assert cells[dead.idx].prediction_id is None
    assert len(creates(sim)) == 3
    assert dead.input["seed"] not in {i["seed"] for i in sent_inputs(sim)}


def test_a_cell_another_live_replica_is_sending_is_left_alone_and_counts_against_the_limit(
        sim, batches, runners):
    sim.configure(create_delay=0.2)
    batch_id = batches.add(plan(schnell_batch(prompts=["canal"], variations=4)))
    [held] = batches.claim("live-replica", lease=60, limit=1)
    runners(concurrency=2)
    wait_until(lambda: states(batches, batch_id).count(SENT) == 3)

    assert batches.cells(batch_id)[held.idx].state == SENDING  # its owner's answer is still due
    assert batches.get(batch_id).active
    assert sim.create_stats()["peak"] == 1  # 2 in flight for the app: the other replica's and one


# ---- planning --------------------------------------------------------------------------------


@pytest.mark.parametrize("variations, ok", [(20, True), (21, False)])
def test_a_batch_over_the_maximum_is_refused_before_anything_is_stored(variations, ok):
    spec = BatchSpec(prompts=tuple(f"prompt {n}" for n in range(5)), models=(SCHNELL, DEV), variations=variations)
    planned = plan(spec, max_cells=200)
    assert planned.count == 10 * variations
    assert planned.ok is ok
    if ok:
        assert len(planned.cells) == 200
    else:
        assert planned.cells == ()
        assert planned.problems == ("210 predictions is more than the maximum of 200 per batch: use fewer "
                                    "prompts, variations, models or values.",)


@pytest.mark.parametrize("spec, problem", [
    (BatchSpec(prompts=(), models=(SCHNELL,)), "Add at least one prompt."),
    (BatchSpec(prompts=("a cat", "  "), models=(SCHNELL,)), "Prompt 2 is empty."),
    (BatchSpec(prompts=("a cat",), models=()), "Choose at least one model."),
    (BatchSpec(prompts=("a cat",), models=(SCHNELL,), variations=0),
     "Variations per prompt must be a whole number of at least 1 (got 0)."),
])
def test_a_batch_without_prompts_models_or_variations_is_refused(spec, problem):
    planned = plan(spec)
    assert problem in planned.problems and not planned.ok
    good = plan(BatchSpec(prompts=prompts_from_text("a cat\n\n a dog \n"), models=(SCHNELL,)))
    assert good.ok and [c.input["prompt"] for c in good.cells] == ["a cat", "a dog"]


@pytest.mark.parametrize("models, axis, problem", [
    ((DEV,), Axis("guidance", ()), "Give at least one value for Guidance."),
    ((DEV,), Axis("guidance", (3, 3.0)), "The values of Guidance repeat one another: each value once."),
    ((DEV,), Axis("guidance", (2, "strong")), "Guidance: 'strong' is not a number."),
    ((DEV,), Axis("guidance", (4, 12)), "FLUX.1 [dev]: Guidance must be between 0 and 10 (got 12)."),
    ((DEV, PRO), Axis("guidance", (1.5, 3)), "FLUX.1 [pro]: Guidance must be between 2 and 5 (got 1.5)."),
    ((DEV, SCHNELL), Axis("guidance", (2, 3)),
     "Guidance is not a parameter of FLUX.1 [schnell]: choose models that all take it, or sweep another parameter."),
    ((DEV,), Axis("num_inference_steps", (10, 20.5)), "Inference steps: 20.5 is not a whole number."),
    ((DEV,), Axis("aspect_ratio", ("1:1", "7:3")), "FLUX.1 [dev]: Aspect ratio must be one of"),
    ((DEV,), Axis("seed", (1, 2)), "Seeds come from Variations per prompt: sweep another parameter."),
])
def test_bad_sweep_values_are_refused_with_a_message_and_good_ones_are_sent(models, axis, problem):
    bad = plan(BatchSpec(prompts=("a cat",), models=models, axes=(axis,)))
    assert not bad.ok and any(p.startswith(problem) for p in bad.problems), bad.problems
    good_values = {"guidance": (2, 3.5, 5), "num_inference_steps": (10, 20), "aspect_ratio": ("1:1", "16:9"),
                   "seed": None}[axis.param]
    if good_values:
        good = plan(BatchSpec(prompts=("a cat",), models=models if SCHNELL not in models else (DEV,),
                              axes=(Axis(axis.param, good_values),)))
        assert good.ok, good.problems
        assert sorted({c.input[axis.param] for c in good.cells}, key=str) == sorted(good_values, key=str)


def test_two_axes_make_rows_of_the_second_and_columns_of_the_first():
    spec = BatchSpec(prompts=("a cat", "a dog"), models=(DEV,), seed=7,
                     axes=(Axis("guidance", (2, 4)), Axis("num_inference_steps", (10, 20, 30))))
    planned = plan(spec)
    assert planned.ok and len(planned.cells) == 12
    assert planned.rows == ("a cat · Inference steps 10", "a cat · Inference steps 20", "a cat · Inference steps 30",
                            "a dog · Inference steps 10", "a dog · Inference steps 20", "a dog · Inference steps 30")
    assert planned.columns == ("Guidance 2", "Guidance 4")
    for cell in planned.cells:
        assert cell.input["guidance"] == cell.sweep["guidance"] == (2, 4)[cell.col]
        assert cell.input["num_inference_steps"] == (10, 20, 30)[cell.row % 3]
    assert [c.idx for c in planned.cells] == list(range(12))
    assert [(c.row, c.col) for c in planned.cells] == sorted((c.row, c.col) for c in planned.cells)
    same_axis = plan(BatchSpec(prompts=("a cat",), models=(DEV,),
                               axes=(Axis("guidance", (2,)), Axis("guidance", (3,)))))
    assert same_axis.problems == ("Sweep a parameter on one axis only.",)


def test_each_model_gets_the_users_choices_and_its_own_defaults():
    spec = BatchSpec(prompts=("a cat",), models=(DEV, SCHNELL), seed=5, base={"num_inference_steps": 40, "guidance": 6})
    planned = plan(spec)
    dev, schnell = planned.cells
    assert dev.input["num_inference_steps"] == 40 and dev.input["guidance"] == 6
    assert schnell.input["num_inference_steps"] == 4 and "guidance" not in schnell.input  # its own max, no guidance
    assert any("FLUX.1 [schnell]" in note and "Guidance" in note for note in planned.notes)
    assert dev.seed == schnell.seed == 5 and planned.columns == ("FLUX.1 [dev]", "FLUX.1 [schnell]")


def test_variations_have_fixed_seeds_so_any_cell_can_be_made_again():
    spec = BatchSpec(prompts=("a cat",), models=(SCHNELL,), variations=3)
    first, again = plan(spec), plan(spec)
    assert [c.seed for c in first.cells] == [c.seed for c in again.cells]  # the same spec, the same seeds
    assert len({c.seed for c in first.cells}) == 3
    assert all(c.input["seed"] == c.seed for c in first.cells)
    chosen = plan(BatchSpec(prompts=("a cat",), models=(SCHNELL,), variations=2, seed=2**32 - 1))
    assert [c.seed for c in chosen.cells] == [2**32 - 1, 0]  # wraps within the seed range


def test_the_estimated_cost_is_the_sum_of_each_cells_estimate():
    spec = schnell_batch()
    assert plan(spec).estimated_usd == pytest.approx(6 * 0.003)
    rules = prices.rules({"flux-schnell": 0.01})  # the operator's [prices], as the Connection knows them
    with_overrides = plan(spec, estimate=lambda model, body: prices.estimate(model, body, rules))
    assert with_overrides.estimated_usd == pytest.approx(6 * 0.01)
    two = plan(BatchSpec(prompts=("a cat",), models=(SCHNELL, DEV), base={"num_outputs": 2}))
    assert two.estimated_usd == pytest.approx(2 * 0.003 + 2 * 0.025)


def test_csv_rows_map_their_columns_to_the_models_inputs():
    rows, problems = rows_from_csv(b"\xef\xbb\xbfPrompt,Guidance,seed\na harbour at dawn,2.5,77\n,,\na bridge,,\n",
                                   [DEV])
    assert problems == []
    assert rows == [{"prompt": "a harbour at dawn", "guidance": 2.5, "seed": 77}, {"prompt": "a bridge"}]
    planned = plan(BatchSpec(prompts=tuple(rows), models=(DEV,), variations=2, seed=1))
    assert planned.ok
    harbour = [c for c in planned.cells if c.prompt_index == 0]
    assert [c.input["seed"] for c in harbour] == [77, 78] and {c.input["guidance"] for c in harbour} == {2.5}
    bridge = [c for c in planned.cells if c.prompt_index == 1]
    assert [c.input["seed"] for c in bridge] == [1, 2] and {c.input["guidance"] for c in bridge} == {3}


@pytest.mark.parametrize("text, problem", [
    ("guidance\n3\n", "The CSV file has no prompt column."),
    ("prompt,colour\na cat,red\n", "Column 'colour' is not a parameter of the chosen models"),
    ("prompt,guidance\na cat,lots\n", "Row 2: Guidance: 'lots' is not a number."),
    ("prompt,guidance\n,3\n", "Row 2 has no prompt."),
    ("", "The CSV file is empty"),
])
def test_a_csv_that_does_not_fit_the_models_is_refused(text, problem):
    rows, problems = rows_from_csv(text, [DEV])
    assert any(p.startswith(problem) for p in problems), problems


def test_uploads_too_large_to_store_for_every_cell_are_refused():
    upload = "data:image/png;base64," + "A" * 300_000  # about 220 KB, sent in each of 80 cells
    spec = BatchSpec(prompts=tuple(f"edit {n}" for n in range(80)), models=("black-forest-labs/flux-kontext-pro",),
                     images=(upload,))
    assert any(p.startswith("The batch's inputs are too large to store") for p in plan(spec).problems)
    by_url = plan(BatchSpec(prompts=spec.prompts, models=spec.models, images=("https://example.com/cat.png",)))
    assert by_url.ok and by_url.cells[0].input["input_image"] == "https://example.com/cat.png"


def test_a_plan_with_problems_cannot_be_stored(batches):
    with pytest.raises(ValueError, match="Add at least one prompt"):
        batches.add(plan(BatchSpec(prompts=(), models=(SCHNELL,))))
    assert batches.recent() == []
    batch_id = batches.add(plan(schnell_batch()), creator="ana")
    assert [b.id for b in batches.recent()] == [batch_id] and batches.get(batch_id).counts == {PENDING: 6}


# ---- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize("name, text, value", [
    ("COMET_BATCH_CONCURRENCY", "", 4), ("COMET_BATCH_CONCURRENCY", "8", 8), ("COMET_BATCH_CONCURRENCY", "32", 32),
    ("COMET_BATCH_MAX", "", 200), ("COMET_BATCH_MAX", "50", 50),
])
def test_batch_settings_take_whole_numbers_in_range(name, text, value):
    settings = Settings.from_sources({}, {name: text})
    assert getattr(settings, name.removeprefix("COMET_").lower()) == value


@pytest.mark.parametrize("name, text", [
    ("COMET_BATCH_CONCURRENCY", "0"), ("COMET_BATCH_CONCURRENCY", "33"), ("COMET_BATCH_CONCURRENCY", "four"),
    ("COMET_BATCH_MAX", "0"), ("COMET_BATCH_MAX", "2.5"),
])
def test_batch_settings_out_of_range_are_refused_with_the_setting_named(name, text):
    with pytest.raises(ValueError, match=f"{name} must be a whole number from"):
        Settings.from_sources({}, {name: text})


# ---- downloads -------------------------------------------------------------------------------


@pytest.mark.parametrize("sizes, limit, parts", [
    ([], 100, []),
    ([30, 30, 30], 100, [range(0, 3)]),  # a small batch: one ZIP
    ([60, 30, 30, 90], 100, [range(0, 2), range(2, 3), range(3, 4)]),
    ([0, 250, 10, 10], 100, [range(0, 1), range(1, 2), range(2, 4)]),  # one too large alone, never split
])
def test_a_batch_zip_is_cut_into_parts_of_whole_cells_under_the_size_limit(sizes, limit, parts):
    from comet.export import zip_parts

    assert zip_parts(sizes, limit) == parts
    for part in parts:  # every part keeps to the limit unless it is one cell
        assert len(part) == 1 or sum(sizes[i] for i in part) <= limit


def test_each_cells_stored_bytes_are_known_before_a_zip_is_built(sim, store, batches, client):
    from comet.tracker import Tracker

    sim.add_fault("create", "500-invalid")  # the first cell is never sent: it has no image
    with Tracker(client, store, allow_private_downloads=True) as tracker, \
            BatchRunner(batches, create=client.create, track=tracker.track, concurrency=1, poll=0.2) as runner:
        batch_id = runner.submit(plan(schnell_batch(prompts=["kelp"], variations=3)))
        wait_until(finished(batches, batch_id))
        cells = batches.cells(batch_id)
        wait_until(lambda: all(store.get(c.prediction_id).tracking == "done" for c in cells if c.prediction_id))

    stored = store.stored_sizes([c.prediction_id for c in cells if c.prediction_id] + ["neverstoredanything"])
    sizes = [stored.get(c.prediction_id, 0) for c in cells]  # what the batch ZIP's parts are cut by
    expected = [sum(o.size for o in store.get(c.prediction_id).outputs) if c.prediction_id else 0 for c in cells]
    assert sizes == expected and sizes[0] == 0 and all(size > 0 for size in sizes[1:])
